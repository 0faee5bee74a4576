"""ResNet-18's settings as plain data: the specifications, stages and sparsity modes.

No torch here: the jobs' ``Config`` offers these as choices, and ``--help`` reads them without
loading the network code (:mod:`shapebias.models.resnet`, which re-exports every name).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shapebias.errors import ConfigError, check_choice

STAGES = ("layer1", "layer2", "layer3", "layer4")
SPARSITY = ("none", "topk", "topk_mean")


@dataclass(frozen=True)
class Spec:
    """What distinguishes the two ResNet-18 specifications."""

    pool: str  # "flatten": average pooling by 4 / stem_stride, then flatten; "global": global average pooling
    momentum: float
    weight_decay: float


SPECS: dict[str, Spec] = {
    "code": Spec(pool="flatten", momentum=0.9, weight_decay=5e-4),
    "paper": Spec(pool="global", momentum=0.0, weight_decay=0.0),
}


def parse_layers(topk_layers: str | Sequence[str]) -> tuple[str, ...]:
    """``"layer2,layer3"`` or a sequence -> validated tuple of stage names."""
    names = [s.strip() for s in topk_layers.split(",")] if isinstance(topk_layers, str) else list(topk_layers)
    names = [n for n in names if n]
    if not names:
        raise ConfigError(f"topk_layers={topk_layers!r} names no stage; choose from: {', '.join(STAGES)}")
    for name in names:
        check_choice("topk_layers", name, STAGES)
    return tuple(dict.fromkeys(names))
