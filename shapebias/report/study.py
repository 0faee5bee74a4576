"""The synthetic shape-bias study's table: every variant as mean with a 95 % interval over seeds,
Top-K against the dense model tested per level, a verdict per claim, and two plots.

Reads the runs of the ``synthetic.*`` protocols (``shapebias.protocols.synthetic``): task
``train_resnet`` on the generated benchmark, with metrics ``shape_bias``, ``test_acc``,
``stylized_acc``, ``cue_conflict_shape_acc`` and ``cue_conflict_texture_acc`` (fractions).

* A row per sparsity x k (the dense model has no k); each metric as ``mean [low, high]`` in
  percent: the mean over seeds and its two-sided 95 % t-interval (``scipy.stats.t``, n - 1
  degrees of freedom), ``n`` the number of seeds.
* Claims, each tested per level k with Welch's one-sided t-test over the seeds and corrected with
  Holm's method across the levels (:mod:`shapebias.report.stats`, :func:`~shapebias.report.verdicts.decide`):
  Top-K raises shape bias over the dense model; Top-K raises stylized accuracy over the dense
  model; Top-K mean replacement raises stylized accuracy over Top-K at the same k (further).
  Clean accuracy against the dense model is tested the same way: the cost side of the claim.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from shapebias.report import formatting as fmt
from shapebias.report import stats
from shapebias.report.runs import STUDY, Cell, Run, canonical_value, group_cells
from shapebias.report.tables import Section, TableResult, with_varying
from shapebias.report.verdicts import Verdict, compare_cells

CONFIDENCE = 0.95
METRICS = (
    ("shape_bias", "shape bias"),
    ("test_acc", "clean acc."),
    ("stylized_acc", "stylized acc."),
    ("cue_conflict_shape_acc", "cue-conflict: shape"),
    ("cue_conflict_texture_acc", "cue-conflict: texture"),
)
SPARSITY_ORDER = ("none", "topk", "topk_mean")
LABEL = {"none": "dense", "topk": "Top-K", "topk_mean": "Top-K Mean Rpl."}
PREFIX = "Synthetic study: "
CLAIM_SB = stats.Claim(PREFIX + "Top-K raises shape bias over the dense baseline", "shape_bias", "greater", "pp")
CLAIM_STYLIZED = stats.Claim(
    PREFIX + "Top-K raises stylized accuracy over the dense baseline", "stylized_acc", "greater", "pp"
)
CLAIM_MEAN = stats.Claim(
    PREFIX + "Top-K mean replacement raises stylized accuracy further (over Top-K, same k)",
    "stylized_acc",
    "greater",
    "pp",
)
CLAIM_CLEAN = stats.Claim(PREFIX + "Top-K raises clean accuracy over the dense baseline", "test_acc", "greater", "pp")
CLAIMS = (CLAIM_SB, CLAIM_STYLIZED, CLAIM_MEAN, CLAIM_CLEAN)


def interval(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(mean, low, high): the two-sided t-interval of the mean, clipped to [0, 1] (every metric of
    the study is a fraction, and an interval past 100 % says nothing); NaN bounds for one value."""
    from scipy import stats as st

    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(st.t.ppf(0.5 + confidence / 2, len(values) - 1) * st.sem(values))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def interval_text(values: np.ndarray) -> str:
    """``12.3 [10.1, 14.5]`` in percent; one value: ``12.3`` alone."""
    mean, low, high = interval(values)
    if not math.isfinite(low):
        return fmt.percent(mean)
    return f"{fmt.percent(mean)} [{fmt.percent(low)}, {fmt.percent(high)}]"


def level(row: Mapping[str, str], column: str) -> str:
    return "" if row["sparsity"] == "none" else column


def label(row: Mapping[str, str], column: str) -> str:
    text = LABEL.get(row["sparsity"], row["sparsity"])
    if row["sparsity"] != "none":
        text += f", k={fmt.level_label(column)}"
    return text + fmt.other_params(row, {"sparsity"})


def _order(cell: Cell) -> tuple:
    row = dict(cell.row)
    return (
        tuple(v for k, v in cell.row if k != "sparsity"),
        SPARSITY_ORDER.index(row["sparsity"]) if row["sparsity"] in SPARSITY_ORDER else 9,
        fmt.number_or_inf(cell.column),
    )


def study_table(runs: Sequence[Run]) -> TableResult:
    """The study's table, its verdicts and its plot data (see the module docstring)."""
    grouping = group_cells(runs, STUDY)
    cells = sorted(grouping.cells, key=_order)
    shown, data = [], []
    for cell in cells:
        row = dict(cell.row)
        shown.append(
            {
                "variant": label(row, cell.column),
                "n": cell.n,
                **{title: interval_text(cell.values[m]) for m, title in METRICS},
            }
        )
        numbers = {}
        for m, _ in METRICS:
            numbers[f"{m}_mean"], numbers[f"{m}_ci_low"], numbers[f"{m}_ci_high"] = interval(cell.values[m])
        data.append(
            {
                "variant": label(row, cell.column),
                **row,
                "topk": level(row, cell.column),
                "n": cell.n,
                "seeds": ",".join(canonical_value(r.params.get("seed", "")) for r in cell.runs),
                **numbers,
                "run_ids": cell.run_ids(),
            }
        )
    notes = [
        f"Percent, mean over seeds [{CONFIDENCE:.0%} t-interval of the mean, n - 1 degrees of freedom, "
        "clipped to [0, 100]]; "
        "n = seeds. k = fraction of positions kept per channel by Top-K.",
        "Generated benchmark (shapebias.data.synthetic): 'stylized' fills each class's shape with a texture of "
        "no class; 'cue-conflict' gives a shape one class and the texture another (shape bias = shape "
        "decisions / (shape + texture decisions)).",
    ]
    sections = [
        Section(
            "synthetic_study",
            "Synthetic shape-bias study",
            pd.DataFrame(shown),
            pd.DataFrame(data),
            with_varying(notes, grouping.varying),
        )
    ]
    return TableResult(sections, _verdicts(cells), grouping.superseded, {"cells": cells})


def _verdicts(cells: Sequence[Cell]) -> list[Verdict]:
    """Per Top-K level: against the dense model (same other settings); mean replacement against Top-K."""

    def rest(cell: Cell) -> tuple:
        return tuple((k, v) for k, v in cell.row if k not in ("sparsity", "topk_layers"))

    def find(sparsity: str, column: str, like: Cell) -> Cell | None:
        return next(
            (
                c
                for c in cells
                if dict(c.row)["sparsity"] == sparsity
                and rest(c) == rest(like)
                and (sparsity == "none" or c.column == column)
            ),
            None,
        )

    out = []
    for cell in cells:
        row = dict(cell.row)
        scope = label(row, cell.column)
        if row["sparsity"] == "topk":
            dense = find("none", "", cell)
            for claim in (CLAIM_SB, CLAIM_STYLIZED, CLAIM_CLEAN):
                out.append(compare_cells(claim, f"{scope} vs dense", cell, dense, math.nan))
        elif row["sparsity"] == "topk_mean":
            out.append(compare_cells(CLAIM_MEAN, f"{scope} vs Top-K", cell, find("topk", cell.column, cell), math.nan))
    return out


# --- plots -------------------------------------------------------------------------------------


def study_figures(data: Mapping[str, Any]) -> dict[str, bytes]:
    """PNG bytes by name: shape bias against k (95 % intervals), accuracy against shape bias."""
    from shapebias.plots import _pyplot, png_bytes

    plt = _pyplot()
    cells = list(data.get("cells", ()))
    if not cells:
        return {}
    return {
        name: png_bytes(draw(plt, cells))
        for name, draw in (
            ("synthetic_shape_bias_vs_k.png", _shape_bias_vs_k),
            ("synthetic_accuracy_vs_shape_bias.png", _accuracy_vs_shape_bias),
        )
    }


def _errors(cell: Cell, metric: str) -> tuple[float, float, float]:
    """(mean, lower error, upper error) in percent; no interval: zero errors."""
    mean, low, high = interval(cell.values[metric])
    if not math.isfinite(low):
        return mean * 100, 0.0, 0.0
    return mean * 100, (mean - low) * 100, (high - mean) * 100


def _shape_bias_vs_k(plt, cells: Sequence[Cell]):
    fig, ax = plt.subplots(figsize=(6, 4))
    levels: set[float] = set()
    # The two series sit a little apart at each k (x 0.97 and x 1.03) so that their intervals do not overlap.
    for sparsity, colour, shift in (("topk", "#1f77b4", 0.97), ("topk_mean", "#ff7f0e", 1.03)):
        chosen = [c for c in cells if dict(c.row)["sparsity"] == sparsity]
        if chosen:
            levels.update(float(c.column) * 100 for c in chosen)
            x = [float(c.column) * 100 * shift for c in chosen]
            m, lo, hi = zip(*(_errors(c, "shape_bias") for c in chosen), strict=True)
            ax.errorbar(x, m, yerr=[lo, hi], marker="o", capsize=3, color=colour, label=LABEL[sparsity])
    for c in (c for c in cells if dict(c.row)["sparsity"] == "none"):
        mean, below, above = _errors(c, "shape_bias")
        ax.axhline(mean, color="k", lw=1, label=f"dense (n={c.n})")
        ax.axhspan(mean - below, mean + above, color="k", alpha=0.1)
    ax.set_xscale("log")
    ax.set_xticks(sorted(levels), [f"{v:g}" for v in sorted(levels)])
    ax.minorticks_off()
    ax.set_xlabel("Top-K: positions kept per channel (%)")
    ax.set_ylabel("shape bias (%)")
    ax.set_title(f"Synthetic study: shape bias against k (mean, {CONFIDENCE:.0%} interval)")
    ax.legend(fontsize=8)
    return fig


def _accuracy_vs_shape_bias(plt, cells: Sequence[Cell]):
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, metric, title in zip(axes, ("test_acc", "stylized_acc"), ("clean", "stylized"), strict=True):
        for c in cells:
            x, xlo, xhi = _errors(c, "shape_bias")
            y, ylo, yhi = _errors(c, metric)
            ax.errorbar(
                [x],
                [y],
                xerr=[[xlo], [xhi]],
                yerr=[[ylo], [yhi]],
                marker="o",
                capsize=2,
                label=label(dict(c.row), c.column),
            )
        ax.set_xlabel("shape bias (%)")
        ax.set_ylabel(f"{title} accuracy (%)")
        ax.set_title(f"{title} accuracy against shape bias")
    axes[1].legend(fontsize=6, ncol=2)
    return fig
