"""The report as text, Markdown and one self-contained HTML page, and the files ``compare`` writes.

Tables are laid out by pandas: ``DataFrame.to_markdown`` (tabulate) in its ``simple`` format for
the terminal and ``pipe`` format for Markdown, ``Styler.to_html`` for the page. Cells are printed
exactly as the tables built them (no number parsing).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from shapebias.report import stats
from shapebias.report.build import Report
from shapebias.report.formatting import MISSING
from shapebias.report.tables import Section
from shapebias.report.verdicts import claim_summary

VERDICT_NOTE = (
    f"Test: {stats.WELCH} in the claimed direction (Welch-Satterthwaite df). Trend claim: Spearman's rank "
    "correlation of shape bias with k, one-sided. Each claim is one family: its p-values are adjusted with "
    f"Holm's step-down method across the cells where it was tested ('p (Holm)'); adjusted p < {stats.ALPHA} = "
    f"holds. 'p' is the unadjusted value. With one seed in either group there is no test: '{stats.ONE_SEED}' "
    "(the direction is still reported). 'published difference' is the same difference in the published table."
)
VERDICT_COLOURS = {"holds": "background-color: #d9f2d9", "contradicted": "background-color: #f6d3d3"}
PAGE_STYLE = (
    "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#eee}"
)


def all_sections(report: Report) -> list[Section]:
    """The tables, then the verdicts, the per-claim summary and the runs left out."""
    return report.sections + [
        Section("verdicts", "Verdicts per claim", report.verdicts, None, [VERDICT_NOTE]),
        Section("claims", "Claims: summary over cells", claim_summary(report.verdicts)),
        Section("left_out", "Runs left out (and why)", report.left_out),
    ]


def text_table(df: pd.DataFrame) -> str:
    """Left-aligned columns two spaces apart, a rule under the header."""
    if df.empty:
        return "(empty)"
    return df.to_markdown(
        index=False, tablefmt="simple", disable_numparse=True, stralign="left", numalign="left", missingval=MISSING
    )


def markdown_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(empty)_"
    escaped = df.map(lambda v: str(v).replace("|", "\\|")).rename(columns=lambda c: str(c).replace("|", "\\|"))
    return escaped.to_markdown(
        index=False, tablefmt="pipe", disable_numparse=True, stralign="left", numalign="left", missingval=MISSING
    )


def html_table(section: Section) -> str:
    styler = section.table.style.hide(axis="index").format(na_rep=MISSING, escape="html")
    if section.key == "verdicts" and not section.table.empty:
        styler = styler.map(
            lambda v: next((css for start, css in VERDICT_COLOURS.items() if str(v).startswith(start)), ""),
            subset=["verdict"],
        )
    return styler.to_html()


def render_text(report: Report, header: Sequence[str] = ()) -> str:
    parts = [*header, *(f"note: {n}" for n in report.notes)]
    for s in all_sections(report):
        if s.key == "left_out" and s.table.empty:
            parts.append("\nAll runs were used.")
            continue
        parts += [f"\n{s.title}\n{'=' * len(s.title)}", text_table(s.table), *(f"  {n}" for n in s.notes)]
    return "\n".join(parts) + "\n"


def render_markdown(report: Report, header: Sequence[str] = ()) -> str:
    parts = ["# Reproduction tables", "", *[f"{h}  " for h in header], ""]
    parts += [f"> note: {n}\n" for n in report.notes]
    for s in all_sections(report):
        parts += [f"## {s.title}", "", markdown_table(s.table), "", *(f"- {n}" for n in s.notes), ""]
    parts += [f"![{name}]({name})" for name in report.plots]
    return "\n".join(parts) + "\n"


def render_html(report: Report, header: Sequence[str] = ()) -> str:
    """One self-contained page: tables, notes and the plots inline as base64 PNG."""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>shapebias: reproduction tables</title>",
        f"<style>{PAGE_STYLE}</style></head><body>",
        "<h1>Reproduction tables</h1>",
    ]
    parts += [f"<p>{html.escape(h)}</p>" for h in header]
    parts += [f"<p><em>note: {html.escape(n)}</em></p>" for n in report.notes]
    for s in all_sections(report):
        parts += [f"<h2>{html.escape(s.title)}</h2>", html_table(s), *(f"<p>{html.escape(n)}</p>" for n in s.notes)]
    for name, png in report.plots.items():
        parts.append(
            f"<h2>{html.escape(name)}</h2><img alt='{html.escape(name)}' "
            f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_outputs(report: Report, out_dir: str | Path, header: Sequence[str] = ()) -> list[str]:
    """report.txt, tables.md, report.html, one CSV per table, the plots; returns the file names."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (
        ("report.txt", render_text(report, header)),
        ("tables.md", render_markdown(report, header)),
        ("report.html", render_html(report, header)),
    ):
        (out / name).write_text(text, encoding="utf-8")
        written.append(name)
    for s in all_sections(report):
        (s.data if s.data is not None else s.table).to_csv(out / f"{s.key}.csv", index=False)
        written.append(f"{s.key}.csv")
    for name, png in report.plots.items():
        (out / name).write_bytes(png)
        written.append(name)
    return written
