"""Shape bias as model-vs-human (Geirhos et al.) computes it.

Shape bias = shape decisions / (shape decisions + texture decisions), over the trials whose
shape class differs from their texture class. Decisions that are neither cue do not count.
"""

from __future__ import annotations

from collections.abc import Sequence


def shape_bias_score(predicted: Sequence, shape: Sequence, texture: Sequence) -> float:
    """Fraction of shape decisions among shape-or-texture decisions (cue-conflict trials only).

    Returns NaN when no trial was decided by either cue.
    """
    if not (len(predicted) == len(shape) == len(texture)):
        raise ValueError("predicted, shape and texture must have the same length")
    n_shape = n_texture = 0
    for p, s, t in zip(predicted, shape, texture):
        if s == t:
            continue
        if p == s:
            n_shape += 1
        elif p == t:
            n_texture += 1
    total = n_shape + n_texture
    return n_shape / total if total else float("nan")
