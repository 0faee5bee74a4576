"""Table 1 (task ``train_resnet``): ResNet-18 clean and stylized accuracy per model spec x sparsity
and dataset, beside the seed's published values; Top-K against the dense row per dataset.

Reads params ``model_spec``, ``sparsity``, ``stem_stride``, ``dataset``, ``seed`` and metrics
``test_acc``, ``stylized_acc`` (fractions); cells ``mean ± std (stylized mean ± std)`` in percent,
std over seeds with n - 1, ``n=..`` shown where n is not 3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from shapebias import reference
from shapebias.report import formatting as fmt
from shapebias.report import stats
from shapebias.report.runs import SPARSITY_ONLY_PARAMS, TABLE1, RowKey, Run, canonical_value, column_order, group_cells
from shapebias.report.tables import Section, TableResult, present_cells, rank, wide_table, with_varying
from shapebias.report.verdicts import Verdict, compare_cells

TABLE1_DATASETS = ("IN-S1", "IN-S2", "IN-S3", "IN-S4", "synthetic")


def resnet_accuracy_table(runs: Sequence[Run]) -> TableResult:
    """Table 1: ResNet-18 clean and stylized accuracy, beside the seed's published values."""
    grouping = group_cells(runs, TABLE1)
    index = grouping.index()
    columns = column_order((c.column for c in grouping.cells), TABLE1_DATASETS)
    rows = sorted(
        {c.row for c in grouping.cells},
        key=lambda r: (
            rank(dict(r)["model_spec"], ("code", "paper")),
            dict(r)["model_spec"],
            r[2:],
            rank(dict(r)["sparsity"], ("none", "topk", "topk_mean")),
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
    for r, c, cell in present_cells(rows, columns, index):
        d = dict(r)
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
                "Δ stylized (pp)": fmt.signed(cell.mean("stylized_acc") * 100 - p.stylized_acc_mean if p else math.nan),
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
        claimed = [r for r in rows if claim in claims_of.get(dict(r)["sparsity"], ())]
        for r, c, a in present_cells(claimed, columns, index):
            d = dict(r)
            base = bases.get(rest(r))
            pa = published.get((d["model_spec"], d["sparsity"], d["stem_stride"], c))
            pb = published.get((d["model_spec"], "none", d["stem_stride"], c))
            key = claim.metric + "_mean"
            pdiff = getattr(pa, key) - getattr(pb, key) if pa and pb else math.nan
            verdicts.append(compare_cells(claim, f"{labels[r]}, {c}", a, index.get((base, c)) if base else None, pdiff))
    return verdicts
