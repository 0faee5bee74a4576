"""The whole report: runs in, every table that has runs, the verdicts decided, the plots drawn."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence

import pandas as pd

from shapebias.report import onprotocol
from shapebias.report.runs import LeftOut, Run, select_runs
from shapebias.report.shape_bias_table import shape_bias_tables
from shapebias.report.study import study_figures, study_table
from shapebias.report.table1 import resnet_accuracy_table
from shapebias.report.table2 import fastgan_fid_tables
from shapebias.report.tables import Section, TableResult
from shapebias.report.verdicts import Verdict, decide

BUILDERS: dict[str, Callable[[Sequence[Run]], TableResult]] = {
    "table1": resnet_accuracy_table,
    "table2": fastgan_fid_tables,
    "shape_bias": shape_bias_tables,
    "synthetic": study_table,
}
LEFT_OUT_COLUMNS = [f.name for f in dataclasses.fields(LeftOut)]


@dataclasses.dataclass
class Report:
    """The tables, the verdict per claim and cell, the runs left out (with why), notes and plots."""

    sections: list[Section]
    verdicts: pd.DataFrame
    left_out: pd.DataFrame
    notes: list[str]
    plots: dict[str, bytes]
    n_runs: int

    @property
    def built(self) -> list[str]:
        return [s.key for s in self.sections]


def build_report(runs: Iterable[Run], plots: bool = True) -> Report:
    """Every table its runs allow; verdicts with Holm's correction within each claim.

    Runs on a published protocol sit beside its value; the others go to "other settings" sections.
    """
    runs = list(runs)
    by_table, left_out, notes = select_runs(runs)
    sections: list[Section] = []
    verdicts: list[Verdict] = []
    plot_data = {}
    for name, builder in BUILDERS.items():
        on, off = onprotocol.split(name, by_table.get(name, []))
        if on:  # beside the published values, with verdicts
            result = builder(on)
            sections += result.sections
            verdicts += result.verdicts
            left_out += result.superseded
            plot_data[name] = result.plot_data
        if off:  # other settings: their numbers only
            other = builder(off)
            sections += onprotocol.other_settings(other, off)
            left_out += other.superseded
    figures = {}
    if plots:
        from shapebias.plots import report_figures

        figures = report_figures(plot_data)
        if "synthetic" in plot_data:
            figures.update(study_figures(plot_data["synthetic"]))
    left = pd.DataFrame([dataclasses.asdict(x) for x in left_out], columns=LEFT_OUT_COLUMNS)
    return Report(sections, decide(verdicts), left, notes, figures, len(runs))


def build_study_report(runs: Iterable[Run], plots: bool = True) -> Report:
    """The synthetic study alone (its table, verdicts and plots), on its protocols or not.

    What the study command logs to its parent run: a miniature with other settings is tested the
    same way (its table notes the settings that vary); ``compare`` keeps such runs apart.
    """
    runs = list(runs)
    by_table, left_out, notes = select_runs(runs)
    result = study_table(by_table["synthetic"]) if by_table.get("synthetic") else TableResult()
    left_out += result.superseded
    figures = study_figures(result.plot_data) if plots else {}
    left = pd.DataFrame([dataclasses.asdict(x) for x in left_out], columns=LEFT_OUT_COLUMNS)
    return Report(result.sections, decide(result.verdicts), left, notes, figures, len(runs))
