"""What every table of the report is made of: :class:`Section` (one printed table and its CSV),
:class:`TableResult` (what a table builder returns), the wide-table layout they share, and the walk
over the cells that have runs (:func:`present_cells`) and the look-up of a comparison row
(:func:`find_row`) that their builders and verdicts use.

The builders, one module per table family, and the run schema each reads:

* :mod:`~shapebias.report.table1`: **Table 1** (task ``train_resnet``): params ``model_spec``,
  ``sparsity``, ``stem_stride``, ``dataset``, ``seed``; metrics ``test_acc``, ``stylized_acc``
  (fractions). A row per model spec x sparsity (x stem stride, and x any other parameter, where it
  varies), a column per dataset; cells ``mean ± std (stylized mean ± std)`` in percent, std over
  seeds with n - 1, ``n=..`` shown where n is not 3.
* :mod:`~shapebias.report.table2`: **Table 2a/2b** (``train_fastgan``): params ``dataset`` (or the
  folder name of ``data_dir``), ``sparsity``, ``topk``, ``noise_injection``; metric ``fid``. Table
  2a holds the seed's four few-shot sets, 2b its two ImageNet class sets, others go to a third table.
* :mod:`~shapebias.report.shape_bias_table`: **Shape bias** (``shape_bias``): params ``model``,
  ``sparsity``, ``topk``; metric ``shape_bias``. Runs tagged ``shapebias.weights=random`` go to a
  separate table that is labelled as such and never compared with the published values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pandas as pd

from shapebias.report import formatting as fmt
from shapebias.report.runs import Cell, LeftOut, RowKey
from shapebias.report.verdicts import Verdict


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


def present_cells(
    rows: Sequence[RowKey], columns: Sequence[str], index: Mapping[tuple, Cell]
) -> Iterator[tuple[RowKey, str, Cell]]:
    """``(row, column, cell)`` for each cell that has runs: row by row, each row's columns in order."""
    for r in rows:
        for c in columns:
            if (r, c) in index:
                yield r, c, index[(r, c)]


def find_row(rows: Sequence[RowKey], rest: Mapping[str, str], **want: str) -> RowKey | None:
    """The first row whose settings include ``rest`` and ``want``."""
    return next((q for q in rows if all(dict(q).get(k) == v for k, v in {**rest, **want}.items())), None)


def with_varying(notes: list[str], varying: Sequence[str]) -> list[str]:
    if varying:
        notes.append("parameters that vary between runs and so split rows: " + ", ".join(varying))
    return notes


def rank(value: str, order: Sequence[str]) -> int:
    """Sort key: the position of ``value`` in ``order``, after them all if absent."""
    return order.index(value) if value in order else 9
