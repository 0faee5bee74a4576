"""How numbers, cells and row labels are printed in the tables (the seed report's own formats)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from shapebias.report.runs import Cell

SPEC_LABEL = {"code": "CS", "paper": "PS"}
RESNET_SPARSITY_LABEL = {"none": "", "topk": " w. Top-K", "topk_mean": " w. Top-K Mean Rpl."}
GAN_SPARSITY_LABEL = {"none": "Baseline", "topk": "Top K", "topk_mean": "Top K Mean Rpl."}
MISSING = "–"


def percent(fraction: float) -> str:
    """0.884 -> "88.4"; NaN -> "–"."""
    return MISSING if not math.isfinite(fraction) else f"{100 * fraction:.1f}"


def p_value(p: float) -> str:
    """Three significant digits, "<0.0001" below that; no test -> "–"."""
    if not math.isfinite(p):
        return MISSING
    return "<0.0001" if p < 1e-4 else f"{p:.3g}"


def signed(x: float, digits: int = 1) -> str:
    """A difference with its sign; a zero is "+0.0" (never "-0.0")."""
    if not math.isfinite(x):
        return MISSING
    s = f"{x:+.{digits}f}"
    return s.replace("-0." + "0" * digits, "+0." + "0" * digits) if set(s[1:]) <= {"0", "."} else s


def accuracy_cell(cell: Cell) -> str:
    """``88.4 ± 0.3 (67.2 ± 1.8)``; ``n=2`` appended where n is not 3; one seed: no ±."""
    if cell.n == 1:
        text = f"{percent(cell.mean('test_acc'))} ({percent(cell.mean('stylized_acc'))})"
    else:
        text = (
            f"{percent(cell.mean('test_acc'))} ± {percent(cell.std('test_acc'))} "
            f"({percent(cell.mean('stylized_acc'))} ± {percent(cell.std('stylized_acc'))})"
        )
    return text if cell.n == 3 else f"{text} n={cell.n}"


def fid_cell(cell: Cell) -> str:
    """``50.65`` for one run (the seed's Table 2); ``50.65 ± 1.20 n=3`` for several."""
    if cell.n == 1:
        return f"{cell.mean('fid'):.2f}"
    return f"{cell.mean('fid'):.2f} ± {cell.std('fid'):.2f} n={cell.n}"


def shape_bias_cell(cell: Cell) -> str:
    """``72.1`` for one run; ``72.1 ± 1.0 n=3`` for several."""
    if cell.n == 1:
        return percent(cell.mean("shape_bias"))
    return f"{percent(cell.mean('shape_bias'))} ± {percent(cell.std('shape_bias'))} n={cell.n}"


def other_params(row: Mapping[str, str], shown: Iterable[str]) -> str:
    """`` [epochs=5, lr=0.1]``: the row's parameters that its label does not already name."""
    rest = [f"{k}={v or MISSING}" for k, v in row.items() if k not in shown]
    return f" [{', '.join(rest)}]" if rest else ""


def resnet_label(row: Mapping[str, str], varying: Sequence[str]) -> str:
    """``CS ResNet-18 w. Top-K`` (the seed's row names), the stride where it varies."""
    spec = row["model_spec"]
    sparsity = RESNET_SPARSITY_LABEL.get(row["sparsity"], " w. " + row["sparsity"])
    label = f"{SPEC_LABEL.get(spec, spec)} ResNet-18{sparsity}"
    if "stem_stride" in varying:
        label += f" (stride {row['stem_stride']})"
    return label + other_params(row, {"model_spec", "sparsity", "stem_stride"})


def number_or_inf(value: str) -> float:
    """The value as a number; not a number sorts last (inf)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


def gan_label(row: Mapping[str, str], topk_varies: bool) -> str:
    """``Top K=15 + Noise`` (the seed's Table 2 row names); k shown where it varies."""
    label = GAN_SPARSITY_LABEL.get(row["sparsity"], row["sparsity"])
    if row["sparsity"] != "none" and topk_varies and row.get("topk"):
        k = number_or_inf(row["topk"])
        label += f"={k * 100:g}" if math.isfinite(k) else f"={row['topk']}"
    if row.get("noise_injection") == "true":
        label += " + Noise"
    return label + other_params(row, {"sparsity", "topk", "noise_injection"})


def shape_bias_label(row: Mapping[str, str]) -> str:
    return f"{row['model']} {row['sparsity']}{other_params(row, {'model', 'sparsity'})}"


def level_label(topk: str) -> str:
    """A Top-K fraction as a percentage: "0.1" -> "10%"."""
    try:
        return f"{float(topk) * 100:g}%"
    except ValueError:
        return topk or MISSING
