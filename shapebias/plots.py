"""The shape-bias figures: model-vs-human's per-category plot and the paper's sparsity curve.

* :func:`plot_category_shape_bias` follows model-vs-human's ``shape-bias matrixplot``
  (Geirhos et al. 2021): one row per shape category, the fraction of 'shape' decisions on the
  x axis (fraction of 'texture' decisions on the reversed top axis), one marker per decision
  maker per category, and a vertical line at each decision maker's overall shape bias.
* :func:`plot_sparsity_curve` is Li et al. (2023), Fig. 1: shape bias against the Top-K
  fraction kept, for AlexNet and VGG-16, with the dense networks and humans as references.
* :func:`report_figures` draws the compare report's figures (Table 1 bars, Table 2 FID bars, shape
  bias against k), each with the published values beside the reproduced ones.
* :func:`sample_grid_figure`, :func:`confusion_figure` and :func:`curves_figure` draw a training
  run's figures (labelled samples with predictions, the test confusion matrix, per-epoch curves);
  they return the matplotlib figure for the caller to log and :func:`close`.

:func:`reference_decision_makers` reads the authors' published decisions
(``shared/reference/li2023-raw-cue-conflict``, one model-vs-human CSV per decision maker) and
turns them into the same entries, so that a new run is drawn beside the published one.
Everything uses matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shapebias.metrics import shape_bias as sb

HUMAN_COLOR = "#a51e37"  # model-vs-human draws humans in this red
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
MODEL_NAMES = {"alexnet": "AlexNet", "vgg": "VGG-16", "vgg16": "VGG-16"}


@dataclasses.dataclass
class DecisionMaker:
    """One line of a plot: a label, overall and per-category shape bias, how to draw it."""

    label: str
    shape_bias: float
    by_category: dict[str, float]
    color: str = "#1f77b4"
    marker: str = "o"

    @classmethod
    def from_cues(cls, label: str, predicted, shape, texture, **style) -> DecisionMaker:
        return cls(
            label,
            sb.shape_bias_score(predicted, shape, texture),
            sb.shape_bias_by_category(predicted, shape, texture),
            **style,
        )


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_category_shape_bias(entries: Sequence[DecisionMaker], path: str | Path, title: str = "") -> Path:
    """model-vs-human's per-category shape-bias plot; categories ordered by the first entry
    whose label is ``humans`` (as model-vs-human orders them), else alphabetically."""
    plt = _pyplot()
    path = Path(path)
    categories = sorted({c for e in entries for c in e.by_category})
    humans = next((e for e in entries if e.label == "humans"), None)
    if humans is not None:
        categories.sort(key=lambda c: -_nan_low(humans.by_category.get(c)))
    n = len(categories)
    fig, ax = plt.subplots(figsize=(7, 0.42 * n + 2.2))
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.5, n - 0.5)
    ax.set_yticks(range(n))
    ax.set_yticklabels(categories)
    ax.set_ylabel("Shape categories")
    ax.set_xlabel("Fraction of 'shape' decisions")
    top = ax.secondary_xaxis("top", functions=(lambda x: 1 - x, lambda x: 1 - x))
    top.set_xlabel("Fraction of 'texture' decisions")
    for i in range(n - 1):
        ax.axhline(i + 0.5, color="gray", linestyle=":", alpha=0.4, linewidth=0.8)
    for e in entries:
        if not math.isnan(e.shape_bias):
            ax.axvline(e.shape_bias, color=e.color, linewidth=1.2, alpha=0.8)
        xs = [e.by_category.get(c, math.nan) for c in categories]
        ax.scatter(
            xs,
            range(n),
            color=e.color,
            marker=e.marker,
            s=55,
            zorder=3,
            clip_on=False,
            edgecolors=(0.3, 0.3, 0.3, 0.3),
            linewidths=0.3,
            label=f"{e.label} ({e.shape_bias:.2f})",
        )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.09), ncol=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def _save(plt, fig, path: Path) -> Path:
    """Lay the figure out, write it to ``path`` (its folder made) at 120 dpi and close it."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _nan_low(v) -> float:
    return -1.0 if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def plot_sparsity_curve(
    curves: Mapping[str, Sequence[tuple[float, float]]],
    path: str | Path,
    *,
    references: Mapping[str, float] | None = None,
    title: str = "Shape bias with Top-K at inference (Li et al. 2023, Fig. 1)",
) -> Path:
    """Shape bias against the fraction kept (x in %, 'dense' = 100 %), one line per curve.

    ``curves``: label -> [(fraction kept in (0, 1], shape bias)]; a label containing
    ``published`` is drawn dashed. ``references``: label -> value, drawn as horizontal lines
    (humans, dense networks).
    """
    plt = _pyplot()
    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (label, points) in enumerate(curves.items()):
        pts = sorted((k, v) for k, v in points if not math.isnan(v))
        if not pts:
            continue
        style = "--" if "published" in label else "-"
        ax.plot(
            [100 * k for k, _ in pts],
            [v for _, v in pts],
            style,
            marker="o",
            color=PALETTE[i % len(PALETTE)],
            label=label,
        )
    for j, (label, value) in enumerate((references or {}).items()):
        if math.isnan(value):
            continue
        color = HUMAN_COLOR if "human" in label else PALETTE[(len(curves) + j) % len(PALETTE)]
        ax.axhline(value, color=color, linestyle=":", linewidth=1.2, label=f"{label} ({value:.2f})")
    ax.set_xlabel("Top-K: fraction of positions kept per channel (%)")
    ax.set_ylabel("Shape bias")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_title(title, fontsize=10)
    return _save(plt, fig, path)


# ------------------------------------------------------------------------ published decisions

# AlexNet-topK-10, AlexNet-topK-10-Revert, VGG-topK-5, AlexNet-normal / VGG-normal. Other names in
# the folder (VGG-topK0..10, ViT, CLIP) are not points of the Fig. 1 curve.
_MODEL_RUN = re.compile(r"^(?P<model>alexnet|vgg)[-_](?:(?P<normal>normal)|topk[-_](?P<k>\d+)(?P<revert>[-_]revert)?)$")


def parse_reference_name(subj: str) -> tuple[str, str, float] | None:
    """``AlexNet_topK_10_Revert`` -> (``alexnet``, ``complement``, 0.10); ``VGG_normal`` ->
    (``vgg16``, ``none``, 1.0); None for names that are not a point of the sparsity curve."""
    m = _MODEL_RUN.match(subj.lower())
    if m is None:
        return None
    model = "vgg16" if m["model"] == "vgg" else "alexnet"
    if m["normal"]:
        return model, "none", 1.0
    return model, "complement" if m["revert"] else "topk", int(m["k"]) / 100


@dataclasses.dataclass
class Reference:
    """The published decision makers, ready to plot."""

    humans: DecisionMaker | None
    curves: dict[tuple[str, str], list[tuple[float, float]]]  # (model, mode) -> [(k, shape bias)]
    makers: dict[tuple[str, str, float], DecisionMaker]  # (model, mode, k) -> entry


def reference_decision_makers(folder: str | Path | None) -> Reference | None:
    """Read the authors' published decisions; None when the folder is absent."""
    if folder is None or not Path(folder).is_dir():
        return None
    frames = sb.read_results_dir(folder)
    human_frames = [df for subj, df in frames.items() if sb.is_human(subj)]
    humans = (
        DecisionMaker.from_cues("humans", *sb.pooled(human_frames), color=HUMAN_COLOR, marker="D")
        if human_frames
        else None
    )
    curves: dict[tuple[str, str], list[tuple[float, float]]] = {}
    makers: dict[tuple[str, str, float], DecisionMaker] = {}
    for subj, df in frames.items():
        key = parse_reference_name(subj)
        if key is None or key in makers:  # AlexNet_normal and alexnet_normal are the same decisions
            continue
        model, mode, k = key
        label = f"{MODEL_NAMES[model]} {'dense' if mode == 'none' else f'{mode} {int(round(k * 100))}%'} (published)"
        makers[key] = DecisionMaker.from_cues(label, *sb.cues_of_frame(df), color="#7f7f7f", marker="s")
        if mode != "none":
            curves.setdefault((model, mode), []).append((k, makers[key].shape_bias))
    return Reference(humans, {k: sorted(v) for k, v in curves.items()}, makers)


def figure_curves(
    ours: Mapping[str, Sequence[tuple[float, float]]], reference: Reference | None
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, float]]:
    """Curves and reference lines for :func:`plot_sparsity_curve`: this run's curve(s), the
    published AlexNet and VGG-16 curves (Top-K and complement), dense networks and humans."""
    curves = {label: list(points) for label, points in ours.items()}
    refs: dict[str, float] = {}
    if reference is not None:
        for (model, mode), points in sorted(reference.curves.items()):
            curves[f"{MODEL_NAMES[model]} {mode} (published)"] = points
        for (model, mode, _k), maker in sorted(reference.makers.items()):
            if mode == "none":
                refs[f"{MODEL_NAMES[model]} dense (published)"] = maker.shape_bias
        if reference.humans is not None:
            refs["humans (published)"] = reference.humans.shape_bias
    return curves, refs


# ------------------------------------------------------------------------ the compare report


def report_figures(data: Mapping[str, Any]) -> dict[str, bytes]:
    """PNG bytes by file name for the tables present in ``data`` (``TableResult.plot_data`` by table)."""
    plt = _pyplot()
    figures = {
        "table1": ("table1.png", _table1_figure),
        "table2": ("table2.png", _table2_figure),
        "shape_bias": ("shape_bias.png", _shape_bias_figure),
    }
    out: dict[str, bytes] = {}
    for table, (name, draw) in figures.items():
        if table not in data:
            continue
        fig = draw(plt, data[table])
        if fig is not None:
            out[name] = png_bytes(fig)
    return out


def png_bytes(fig) -> bytes:
    """The figure laid out as a 90 dpi PNG, as the report embeds it; the figure is closed."""
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    close(fig)
    return buf.getvalue()


def _table1_figure(plt, d: Mapping[str, Any]):
    """Clean and stylized accuracy per dataset, a bar per row (std over seeds), black ticks: published."""
    cells = {(x.row, x.column): x for x in d["cells"]}
    rows = list(d["labels"])
    width = 0.8 / max(1, len(rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, metric, title in zip(axes, ("test_acc", "stylized_acc"), ("clean", "stylized"), strict=True):
        for i, r in enumerate(rows):
            bars = [(j + i * width, cells[(r, c)]) for j, c in enumerate(d["cols"]) if (r, c) in cells]
            ax.bar(
                [x for x, _ in bars],
                [cell.mean(metric) * 100 for _, cell in bars],
                width,
                yerr=[0 if cell.n < 2 else cell.std(metric) * 100 for _, cell in bars],
                label=d["labels"][r],
                capsize=2,
            )
            row = dict(r)
            for j, c in enumerate(d["cols"]):
                published = d["pub"].get((row["model_spec"], row["sparsity"], row["stem_stride"], c))
                if published is not None:
                    ax.plot(j + i * width, getattr(published, metric + "_mean"), "k_", markersize=10)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(d["cols"]))], d["cols"])
        ax.set_title(f"Table 1, {title} accuracy (black ticks: published)")
        ax.set_ylabel("top-1 accuracy (%)")
    axes[0].legend(fontsize=7)
    return fig


def _table2_figure(plt, d: Mapping[str, Any]):
    """FID per row and data set, black ticks: published."""
    rows = d["rows"]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(range(len(rows)), [r[2] for r in rows], label="reproduced")
    ax.plot(range(len(rows)), [r[3] for r in rows], "k_", markersize=14, label="published")
    ax.set_xticks(range(len(rows)), [f"{label}\n{ds}" for label, ds, _, _ in rows], fontsize=6, rotation=90)
    ax.set_ylabel("FID")
    ax.set_title("Table 2: FastGAN FID")
    ax.legend()
    return fig


def _shape_bias_figure(plt, d: Mapping[str, Any]):
    """Shape bias against k per model: published dashed, reproduced solid, random weights dotted."""
    models = sorted({m for m, *_ in d["real"] + d["random"]})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for sparsity, colour in (("topk", "tab:red"), ("complement", "tab:blue"), ("none", "tab:gray")):
            published = sorted((float(k), v) for (m, s, k), v in d["published"].items() if m == model and s == sparsity)
            if published:
                ax.plot(*zip(*published, strict=True), "--o", color=colour, alpha=0.5, label=f"{sparsity}, published")
            for kind, style in (("real", "-s"), ("random", ":x")):
                points = sorted((float(k), v) for m, s, k, v in d[kind] if m == model and s == sparsity)
                if points:
                    ax.plot(
                        *zip(*points, strict=True),
                        style,
                        color=colour,
                        label=f"{sparsity}, reproduced" + (" (RANDOM WEIGHTS)" if kind == "random" else ""),
                    )
        ax.set_xlabel("Top-K fraction kept")
        ax.set_ylabel("shape bias")
        ax.set_ylim(0, 1)
        ax.set_title(f"{model}: shape bias vs sparsity")
        ax.legend(fontsize=7)
    return fig


# ------------------------------------------------------------------------ a training run

CORRECT, WRONG = "#1a7f37", "#cf222e"


def close(fig) -> None:
    _pyplot().close(fig)


def sample_grid_figure(rows: Mapping[str, Sequence[tuple[Any, str, bool]]], title: str = ""):
    """One row per split: images (H x W x 3, values in [0, 1]) captioned (true/predicted class),
    the caption green where the prediction is right, red where it is wrong."""
    plt = _pyplot()
    width = max(len(items) for items in rows.values())
    fig, axes = plt.subplots(len(rows), width, figsize=(1.35 * width + 0.6, 1.75 * len(rows)), squeeze=False)
    for ax_row, (split, items) in zip(axes, rows.items(), strict=True):
        for c, ax in enumerate(ax_row):
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(items):
                ax.axis("off")
                continue
            image, caption, correct = items[c]
            ax.imshow(image, interpolation="nearest")
            ax.set_title(caption, fontsize=6, color=CORRECT if correct else WRONG)
        ax_row[0].set_ylabel(split, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def confusion_figure(true: Sequence[int], predicted: Sequence[int], class_names: Sequence[str], title: str = ""):
    """Counts of (true class, predicted class), rows true, with each cell's count written in."""
    import numpy as np

    plt = _pyplot()
    n = len(class_names)
    counts = np.bincount(np.asarray(true) * n + np.asarray(predicted), minlength=n * n).reshape(n, n)
    side = 2.5 + 0.45 * n
    fig, ax = plt.subplots(figsize=(side + 1, side))
    shown = ax.imshow(counts, cmap="Blues")
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for i, j in np.ndindex(n, n):
        if counts[i, j]:
            ax.text(
                j,
                i,
                str(counts[i, j]),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if counts[i, j] > counts.max() / 2 else "black",
            )
    ax.set_title(title or "confusion matrix", fontsize=9)
    fig.tight_layout()
    return fig


def curves_figure(histories: Mapping[str, Sequence[tuple[int, float]]], title: str = ""):
    """Per-epoch curves: losses on the left, accuracies and shape bias (fractions) on the right.

    ``histories``: metric name -> [(step, value)], step = epoch from 0 (drawn 1-based).
    """
    plt = _pyplot()
    fig, (loss_ax, frac_ax) = plt.subplots(1, 2, figsize=(10, 3.8))
    for name, points in histories.items():
        points = sorted(points)
        if not points:
            continue
        ax = loss_ax if "loss" in name else frac_ax
        ax.plot([s + 1 for s, _ in points], [v for _, v in points], marker="o", markersize=3, label=name)
    loss_ax.set_ylabel("loss")
    frac_ax.set_ylabel("fraction")
    frac_ax.set_ylim(0, 1)
    for ax in (loss_ax, frac_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
