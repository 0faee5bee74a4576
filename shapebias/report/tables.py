"""The reproduction tables: cells of runs in, the seed's tables out, published values beside, verdicts.

What each table reads (the run schema):

* **Table 1** (task ``train_resnet``): params ``model_spec``, ``sparsity``, ``stem_stride``,
  ``dataset``, ``seed``; metrics ``test_acc``, ``stylized_acc`` (fractions). A row per model
  spec x sparsity (x stem stride, and x any other parameter, where it varies), a column per
  dataset; cells ``mean ± std (stylized mean ± std)`` in percent, std over seeds with n - 1,
  ``n=..`` shown where n is not 3.
* **Table 2a/2b** (``train_fastgan``): params ``dataset`` (or the folder name of ``data_dir``),
  ``sparsity``, ``topk``, ``noise_injection``; metric ``fid``. Table 2a holds the seed's four
  few-shot sets, 2b its two ImageNet class sets, others go to a third table.
* **Shape bias** (``shape_bias``): params ``model``, ``sparsity``, ``topk``; metric
  ``shape_bias``. Runs tagged ``shapebias.weights=random`` go to a separate table that is
  labelled as such and never compared with the published values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from shapebias import reference
from shapebias.report import formatting as fmt
from shapebias.report import stats
from shapebias.report.runs import (
    SHAPE_BIAS,
    SPARSITY_ONLY_PARAMS,
    TABLE1,
    TABLE2,
    Cell,
    LeftOut,
    RowKey,
    Run,
    canonical_value,
    column_order,
    group_cells,
)
from shapebias.report.verdicts import Verdict, compare_cells, trend_verdict

TABLE1_DATASETS = ("IN-S1", "IN-S2", "IN-S3", "IN-S4", "synthetic")
TABLE2A_DATASETS = ("jeep", "fish", "train", "table")
TABLE2B_DATASETS = ("IN-S1-C5", "IN-S3-C1")


@dataclasses.dataclass
class Section:
    """One table of the report."""

    key: str  # file stem of its CSV
    title: str
    table: pd.DataFrame  # display strings
    data: pd.DataFrame | None = None  # numbers for the CSV (defaults to ``table``)
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TableResult:
    """What one table builder returns: its sections, the claims it tested, the runs it superseded,
    and what its plot draws."""

    sections: list[Section] = dataclasses.field(default_factory=list)
    verdicts: list[Verdict] = dataclasses.field(default_factory=list)
    superseded: list[LeftOut] = dataclasses.field(default_factory=list)
    plot_data: dict[str, Any] = dataclasses.field(default_factory=dict)


def wide_table(
    rows: Sequence[RowKey],
    columns: Sequence[str],
    index: Mapping[tuple, Cell],
    labels: Mapping,
    cell_text: Callable[[Cell], str],
    first: str,
    headers: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The printed table: a label per row, a cell per column ("–" where no run)."""
    body = [[labels[r]] + [cell_text(index[(r, c)]) if (r, c) in index else fmt.MISSING for c in columns] for r in rows]
    return pd.DataFrame(body, columns=[first, *(headers or columns)])


def with_varying(notes: list[str], varying: Sequence[str]) -> list[str]:
    if varying:
        notes.append("parameters that vary between runs and so split rows: " + ", ".join(varying))
    return notes


def _rank(value: str, order: Sequence[str]) -> int:
    return order.index(value) if value in order else 9


# --- Table 1 -----------------------------------------------------------------------------------


def resnet_accuracy_table(runs: Sequence[Run]) -> TableResult:
    """Table 1: ResNet-18 clean and stylized accuracy, beside the seed's published values."""
    grouping = group_cells(runs, TABLE1)
    index = grouping.index()
    columns = column_order((c.column for c in grouping.cells), TABLE1_DATASETS)
    rows = sorted(
        {c.row for c in grouping.cells},
        key=lambda r: (
            _rank(dict(r)["model_spec"], ("code", "paper")),
            dict(r)["model_spec"],
            r[2:],
            _rank(dict(r)["sparsity"], ("none", "topk", "topk_mean")),
            dict(r)["sparsity"],
        ),
    )
    strides = {dict(r)["stem_stride"] for r in rows}
    shown_varying = list(grouping.varying) + (["stem_stride"] if len(strides) > 1 else [])
    labels = {r: fmt.resnet_label(dict(r), shown_varying) for r in rows}
    published = {
        (p.model_spec, p.sparsity, canonical_value(p.stem_stride), p.dataset): p
        for p in reference.load("seed_table1").itertuples()
    }
    beside, data = [], []
    for r in rows:
        d = dict(r)
        for c in columns:
            cell = index.get((r, c))
            if cell is None:
                continue
            p = published.get((d["model_spec"], d["sparsity"], d["stem_stride"], c))
            beside.append(
                {
                    "Model": labels[r],
                    "dataset": c,
                    "n": cell.n,
                    "reproduced": fmt.accuracy_cell(cell),
                    "published": (
                        f"{p.test_acc_mean:.1f} ± {p.test_acc_std:.1f} ({p.stylized_acc_mean:.1f} "
                        f"± {p.stylized_acc_std:.1f})"
                    )
                    if p
                    else fmt.MISSING,
                    "Δ clean (pp)": fmt.signed(cell.mean("test_acc") * 100 - p.test_acc_mean if p else math.nan),
                    "Δ stylized (pp)": fmt.signed(
                        cell.mean("stylized_acc") * 100 - p.stylized_acc_mean if p else math.nan
                    ),
                }
            )
            data.append(
                {
                    "setting": labels[r],
                    **d,
                    "dataset": c,
                    "n": cell.n,
                    "seeds": ",".join(canonical_value(x.params.get("seed", "")) for x in cell.runs),
                    "test_acc_mean": cell.mean("test_acc"),
                    "test_acc_std": cell.std("test_acc"),
                    "stylized_acc_mean": cell.mean("stylized_acc"),
                    "stylized_acc_std": cell.std("stylized_acc"),
                    **{
                        f"published_{m}_{s}": getattr(p, f"{m}_{s}") / 100 if p else None
                        for m in ("test_acc", "stylized_acc")
                        for s in ("mean", "std")
                    },
                    "run_ids": cell.run_ids(),
                }
            )
    notes = [
        "Top-1 accuracy (%), mean ± std over seeds (std with n - 1), stylized accuracy in parentheses; "
        "n shown where it is not 3.",
        "Final-epoch accuracies (test_acc, stylized_acc), as the prior reproduction reported them; each run "
        "also logs its best epoch's (best_test_acc, best_stylized_acc), as the authors kept them.",
    ]
    wide = wide_table(rows, columns, index, labels, fmt.accuracy_cell, "Model")
    sections = [
        Section(
            "table1",
            "Table 1: ResNet-18 top-1 accuracy (%), stylized in parentheses",
            wide,
            pd.DataFrame(data),
            with_varying(notes, grouping.varying),
        ),
        Section(
            "table1_vs_published",
            "Table 1 beside the published values (Rungseesiripak et al., Table 1)",
            pd.DataFrame(beside),
            None,
            ["Δ = reproduced mean − published mean, in percentage points."],
        ),
    ]
    return TableResult(
        sections,
        _table1_verdicts(rows, columns, index, labels, published),
        grouping.superseded,
        {"cells": grouping.cells, "labels": labels, "cols": columns, "pub": published},
    )


def _table1_verdicts(rows, columns, index, labels, published) -> list[Verdict]:
    """Top-K (and mean replacement) against the dense row with the same other settings, per dataset."""

    def rest(r: RowKey) -> tuple:
        return tuple((k, v) for k, v in r if k != "sparsity" and k not in SPARSITY_ONLY_PARAMS)

    bases = {rest(r): r for r in rows if dict(r)["sparsity"] == "none"}
    claims_of = {"topk": (stats.CLAIM_TOPK_STYLIZED, stats.CLAIM_TOPK_CLEAN), "topk_mean": (stats.CLAIM_MEAN_STYLIZED,)}
    verdicts = []
    for claim in (stats.CLAIM_TOPK_STYLIZED, stats.CLAIM_TOPK_CLEAN, stats.CLAIM_MEAN_STYLIZED):
        for r in rows:
            d = dict(r)
            if claim not in claims_of.get(d["sparsity"], ()):
                continue
            base = bases.get(rest(r))
            for c in columns:
                a = index.get((r, c))
                if a is None:
                    continue
                pa = published.get((d["model_spec"], d["sparsity"], d["stem_stride"], c))
                pb = published.get((d["model_spec"], "none", d["stem_stride"], c))
                key = claim.metric + "_mean"
                pdiff = getattr(pa, key) - getattr(pb, key) if pa and pb else math.nan
                verdicts.append(
                    compare_cells(claim, f"{labels[r]}, {c}", a, index.get((base, c)) if base else None, pdiff)
                )
    return verdicts


# --- Table 2 -----------------------------------------------------------------------------------

TABLE2_GROUPS = (
    ("table2a", "Table 2a: FastGAN FID on the seed's few-shot sets", TABLE2A_DATASETS),
    ("table2b", "Table 2b: FastGAN FID on the seed's new ImageNet class sets", TABLE2B_DATASETS),
    ("table2_other", "Table 2 (other data sets): FastGAN FID", None),
)


class PublishedFID:
    """The seed's Table 2a/2b values, looked up by a row's settings."""

    def __init__(self) -> None:
        pub = pd.concat([reference.load("seed_table2a"), reference.load("seed_table2b")], ignore_index=True)
        self.fid = {
            (
                p.dataset,
                p.sparsity,
                canonical_value(p.noise_injection),
                canonical_value(p.topk) if p.topk else "",
            ): float(p.fid)
            for p in pub.itertuples()
        }

    def __call__(self, row: Mapping[str, str], dataset: str) -> float:
        """Same sparsity and noise, same k (or the seed's unstated k); NaN if not published."""
        noise = row.get("noise_injection") or "false"
        topk = row.get("topk", "") if row["sparsity"] != "none" else ""
        for k in (topk, ""):
            if (dataset, row["sparsity"], noise, k) in self.fid:
                return self.fid[(dataset, row["sparsity"], noise, k)]
        return math.nan


def fastgan_fid_tables(runs: Sequence[Run]) -> TableResult:
    """Table 2a/2b (and other data sets): FastGAN FID, beside the seed's published values."""
    grouping = group_cells(runs, TABLE2)
    published = PublishedFID()
    known = set(TABLE2A_DATASETS) | set(TABLE2B_DATASETS)
    result = TableResult(superseded=grouping.superseded, plot_data={"rows": []})
    for key, title, datasets in TABLE2_GROUPS:
        cells = [c for c in grouping.cells if (c.column in datasets if datasets else c.column not in known)]
        if cells:
            _fid_table(
                result,
                key,
                title,
                cells,
                column_order((c.column for c in cells), datasets or ()),
                grouping.varying,
                published,
            )
    return result


def _fid_table(
    result: TableResult,
    key: str,
    title: str,
    cells: list[Cell],
    columns: list[str],
    varying: Sequence[str],
    published: PublishedFID,
) -> None:
    index = {(c.row, c.column): c for c in cells}
    topk_varies = len({dict(c.row).get("topk") for c in cells if dict(c.row)["sparsity"] != "none"}) > 1
    rows = sorted(
        {c.row for c in cells},
        key=lambda r: (
            dict(r)["sparsity"] != "none",
            dict(r)["sparsity"],
            fmt.number_or_inf(dict(r)["topk"]),
            dict(r)["noise_injection"],
            r,
        ),
    )
    labels = {r: fmt.gan_label(dict(r), topk_varies) for r in rows}
    beside, data = [], []
    for r in rows:
        d = dict(r)
        for c in columns:
            cell = index.get((r, c))
            if cell is None:
                continue
            p = published(d, c)
            beside.append(
                {
                    "Model (FastGAN)": labels[r],
                    "dataset": c,
                    "n": cell.n,
                    "reproduced": fmt.fid_cell(cell),
                    "published": fmt.MISSING if math.isnan(p) else f"{p:.2f}",
                    "Δ FID": fmt.signed(cell.mean("fid") - p, 2),
                }
            )
            data.append(
                {
                    "setting": labels[r],
                    **d,
                    "dataset": c,
                    "n": cell.n,
                    "fid_mean": cell.mean("fid"),
                    "fid_std": cell.std("fid"),
                    "published_fid": None if math.isnan(p) else p,
                    "run_ids": cell.run_ids(),
                }
            )
            result.plot_data["rows"].append((labels[r], c, cell.mean("fid"), p))
    notes = ["FID (lower is better); one run per cell as in the seed, mean ± std and n where there are several."]
    wide = wide_table(rows, columns, index, labels, fmt.fid_cell, "Model (FastGAN)")
    result.sections.append(Section(key, title, wide, pd.DataFrame(data), with_varying(notes, varying)))
    result.sections.append(
        Section(
            f"{key}_vs_published",
            f"{title.split(':')[0]} beside the published values",
            pd.DataFrame(beside),
            None,
            ["Δ = reproduced − published FID."],
        )
    )
    result.verdicts += _fid_verdicts(rows, columns, index, labels, published)


def _find_row(rows, rest: dict, **want: str) -> RowKey | None:
    """The first row whose settings include ``rest`` and ``want``."""
    return next((q for q in rows if all(dict(q).get(k) == v for k, v in {**rest, **want}.items())), None)


def _fid_verdicts(rows, columns, index, labels, published: PublishedFID) -> list[Verdict]:
    """Top-K against the baseline, and Top-K + noise against Top-K, with the same other settings."""
    verdicts = []
    for r in rows:
        d = dict(r)
        if d["sparsity"] != "topk":
            continue
        rest = {k: v for k, v in d.items() if k not in ("sparsity", "topk", "noise_injection")}
        if d["noise_injection"] != "true":
            base, claim = _find_row(rows, rest, sparsity="none", noise_injection=d["noise_injection"]), stats.CLAIM_FID
        else:
            base = _find_row(rows, rest, sparsity="topk", topk=d["topk"], noise_injection="false")
            claim = stats.CLAIM_NOISE
        if base is None:
            continue
        for c in columns:
            a, b = index.get((r, c)), index.get((base, c))
            if a is None and b is None:
                continue
            pdiff = published(d, c) - published(dict(base), c)
            verdicts.append(compare_cells(claim, f"{labels[r]} vs {labels[base]}, {c}", a, b, pdiff))
    return verdicts


# --- shape bias --------------------------------------------------------------------------------


def shape_bias_tables(runs: Sequence[Run]) -> TableResult:
    """Shape bias by model and Top-K level beside Li et al.'s values; random-weight runs apart."""
    pub = reference.load("li2023_shape_bias")
    pub = pub[pub.reproduces == "true"]
    published = {(p.model, p.sparsity, canonical_value(p.topk)): float(p.shape_bias) for p in pub.itertuples()}
    result = TableResult(plot_data={"real": [], "random": [], "published": published})
    for random_weights in (False, True):
        subset = [r for r in runs if r.random_weights == random_weights]
        if subset:
            _shape_bias_table(result, subset, random_weights, published)
    return result


def _shape_bias_table(
    result: TableResult, runs: Sequence[Run], random_weights: bool, published: Mapping[tuple, float]
) -> None:
    grouping = group_cells(runs, SHAPE_BIAS)
    result.superseded += grouping.superseded
    index = grouping.index()
    columns = column_order((c.column for c in grouping.cells), ())
    rows = sorted(
        {c.row for c in grouping.cells},
        key=lambda r: (dict(r)["model"], _rank(dict(r)["sparsity"], ("none", "topk", "complement")), r),
    )
    labels = {r: fmt.shape_bias_label(dict(r)) for r in rows}
    beside, data = [], []
    for r in rows:
        d = dict(r)
        for c in columns:
            cell = index.get((r, c))
            if cell is None:
                continue
            p = math.nan if random_weights else published.get((d["model"], d["sparsity"], c), math.nan)
            beside.append(
                {
                    "model": d["model"],
                    "sparsity": d["sparsity"],
                    "topk": fmt.level_label(c),
                    "n": cell.n,
                    "reproduced": fmt.shape_bias_cell(cell),
                    "published": fmt.percent(p),
                    "Δ (pp)": fmt.signed((cell.mean("shape_bias") - p) * 100),
                }
            )
            data.append(
                {
                    **d,
                    "topk": c,
                    "n": cell.n,
                    "shape_bias_mean": cell.mean("shape_bias"),
                    "shape_bias_std": cell.std("shape_bias"),
                    "random_weights": random_weights,
                    "published_shape_bias": None if math.isnan(p) else p,
                    "run_ids": cell.run_ids(),
                }
            )
            result.plot_data["random" if random_weights else "real"].append(
                (d["model"], d["sparsity"], c, cell.mean("shape_bias"))
            )
    notes = ["Shape bias (%) on the cue-conflict set, by model and Top-K level (fraction of activations kept)."]
    if random_weights:
        notes.append(
            "These runs used random weights (tag shapebias.weights=random): a pipeline check, "
            "never compared with the published values."
        )
    else:
        notes.append("Published: Li et al. (NeurIPS 2023) raw decisions, scored with model-vs-human's rule.")
    wide = wide_table(
        rows, columns, index, labels, fmt.shape_bias_cell, "model / sparsity", [fmt.level_label(c) for c in columns]
    )
    if random_weights:
        result.sections.append(
            Section(
                "shape_bias_random_weights",
                "Shape bias (RANDOM WEIGHTS: not a reproduction)",
                wide,
                pd.DataFrame(data),
                with_varying(notes, grouping.varying),
            )
        )
        return
    result.sections.append(
        Section("shape_bias", "Shape bias", wide, pd.DataFrame(data), with_varying(notes, grouping.varying))
    )
    result.sections.append(
        Section(
            "shape_bias_vs_published",
            "Shape bias beside the published values (Li et al. 2023)",
            pd.DataFrame(beside),
            None,
            ["Δ = reproduced − published, percentage points."],
        )
    )
    result.verdicts += _shape_bias_verdicts(rows, columns, index, published)


def _shape_bias_verdicts(rows, columns, index, published: Mapping[tuple, float]) -> list[Verdict]:
    """Per Top-K row: each level against the dense model, and the trend over levels (dense = k 1)."""
    verdicts = []
    for r in rows:
        d = dict(r)
        if d["sparsity"] != "topk":
            continue
        base = next(
            (
                q
                for q in rows
                if dict(q)["sparsity"] == "none" and all(dict(q).get(k) == v for k, v in d.items() if k != "sparsity")
            ),
            None,
        )
        dense = next((index[(base, c)] for c in columns if base is not None and (base, c) in index), None)
        for c in columns:
            if (r, c) in index:
                pdiff = published.get((d["model"], "topk", c), math.nan) - published.get(
                    (d["model"], "none", "1"), math.nan
                )
                verdicts.append(
                    compare_cells(
                        stats.CLAIM_SB, f"{d['model']}, k={fmt.level_label(c)}", index[(r, c)], dense, pdiff * 100
                    )
                )
        levels = [(float(c), index[(r, c)].mean("shape_bias")) for c in columns if (r, c) in index]
        if dense is not None and all(k != 1.0 for k, _ in levels):
            levels.append((1.0, dense.mean("shape_bias")))
        published_levels = [
            (float(k), v) for (m, s, k), v in published.items() if m == d["model"] and s in ("topk", "none")
        ]
        verdicts.append(trend_verdict(stats.CLAIM_SB_TREND, d["model"], levels, published_levels))
    return verdicts
