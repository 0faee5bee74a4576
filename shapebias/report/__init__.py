"""The compare step's report: the seed's tables rebuilt from runs, published values beside, verdicts.

Pure Python with pandas and scipy (matplotlib only for the plots, in :mod:`shapebias.plots`):
no MLflow. ``training/compare.py`` reads the runs from a tracking store and hands them here as
:class:`Run` records, so the same functions serve a notebook that builds runs by hand::

    from shapebias.report import Run, build_report, render_text
    print(render_text(build_report(runs)))

* :mod:`~shapebias.report.runs`: run records, which table each feeds, cells of seeds;
* :mod:`~shapebias.report.stats`: the tests (scipy.stats) and Holm's correction;
* :mod:`~shapebias.report.verdicts`: a claim tested per cell, decided per claim;
* :mod:`~shapebias.report.tables`: :class:`Section` and :class:`TableResult`, the tables' skeleton;
* :mod:`~shapebias.report.table1`, :mod:`~shapebias.report.table2`,
  :mod:`~shapebias.report.shape_bias_table`: Table 1, Table 2a/2b, shape bias (each a :class:`TableResult`);
* :mod:`~shapebias.report.build`: the whole :class:`Report`;
* :mod:`~shapebias.report.render`: text, Markdown, HTML and CSV files.
"""

from shapebias.report.build import Report, build_report
from shapebias.report.render import render_html, render_markdown, render_text, write_outputs
from shapebias.report.runs import Run, canonical_value, dataset_of
from shapebias.report.tables import Section, TableResult

__all__ = [
    "Report",
    "Run",
    "Section",
    "TableResult",
    "build_report",
    "canonical_value",
    "dataset_of",
    "render_html",
    "render_markdown",
    "render_text",
    "write_outputs",
]
