"""The shape-bias tables (task ``shape_bias``): shape bias by model and Top-K level beside Li et al.'s
values; per Top-K level against the dense model, and the trend over levels.

Reads params ``model``, ``sparsity``, ``topk`` and metric ``shape_bias``. Runs tagged
``shapebias.weights=random`` go to a separate table that is labelled as such and never compared
with the published values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from shapebias import reference
from shapebias.report import formatting as fmt
from shapebias.report import stats
from shapebias.report.runs import SHAPE_BIAS, Run, canonical_value, column_order, group_cells
from shapebias.report.tables import Section, TableResult, find_row, present_cells, rank, wide_table, with_varying
from shapebias.report.verdicts import Verdict, compare_cells, trend_verdict


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
        key=lambda r: (dict(r)["model"], rank(dict(r)["sparsity"], ("none", "topk", "complement")), r),
    )
    labels = {r: fmt.shape_bias_label(dict(r)) for r in rows}
    beside, data = [], []
    for r, c, cell in present_cells(rows, columns, index):
        d = dict(r)
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
        base = find_row(rows, {k: v for k, v in d.items() if k != "sparsity"}, sparsity="none")
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
