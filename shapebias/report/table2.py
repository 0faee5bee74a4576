"""Table 2a/2b (task ``train_fastgan``): FastGAN FID per sparsity, Top-K and noise setting and data
set, beside the seed's published values; Top-K against the baseline, noise against Top-K.

Reads params ``dataset`` (or the folder name of ``data_dir``), ``sparsity``, ``topk``,
``noise_injection`` and metric ``fid``. Table 2a holds the seed's four few-shot sets, 2b its two
ImageNet class sets, others go to a third table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from shapebias import reference
from shapebias.report import formatting as fmt
from shapebias.report import stats
from shapebias.report.runs import TABLE2, Cell, Run, canonical_value, column_order, group_cells
from shapebias.report.tables import Section, TableResult, find_row, present_cells, wide_table, with_varying
from shapebias.report.verdicts import Verdict, compare_cells

TABLE2A_DATASETS = ("jeep", "fish", "train", "table")
TABLE2B_DATASETS = ("IN-S1-C5", "IN-S3-C1")
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
    for r, c, cell in present_cells(rows, columns, index):
        d = dict(r)
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


def _fid_verdicts(rows, columns, index, labels, published: PublishedFID) -> list[Verdict]:
    """Top-K against the baseline, and Top-K + noise against Top-K, with the same other settings."""
    verdicts = []
    for r in rows:
        d = dict(r)
        if d["sparsity"] != "topk":
            continue
        rest = {k: v for k, v in d.items() if k not in ("sparsity", "topk", "noise_injection")}
        if d["noise_injection"] != "true":
            base, claim = find_row(rows, rest, sparsity="none", noise_injection=d["noise_injection"]), stats.CLAIM_FID
        else:
            base = find_row(rows, rest, sparsity="topk", topk=d["topk"], noise_injection="false")
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
