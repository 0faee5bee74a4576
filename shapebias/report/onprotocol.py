"""Which runs may sit beside a published value: those on the protocol they claim.

A table that has protocols (``shapebias.protocols``: Table 1, the shape-bias levels) compares a
run with a published value, and puts it into a verdict, only when the run claims a protocol and
its settings equal that protocol's. Every other run of the table goes to the table's "other
settings" section: its numbers, no published value, no Δ, no verdict, and a note saying which
settings differ from which protocol. Runs with random weights or a ``limit`` are off-protocol
like any other difference. Table 2 has its protocols too (``table2.<dataset>.<variant>``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from shapebias import protocols
from shapebias.report.runs import Run
from shapebias.report.tables import Section, TableResult

PROTOCOL_TABLES = frozenset(p.table for p in protocols.REGISTRY.values())
KEEP_KEYS = ("_random_weights",)  # sections that are already apart and say so


def difference(run: Run) -> str:
    """Why a run is off-protocol, in one line: its claim and the settings that differ."""
    result = protocols.check_run(run.task, run.tags, run.params)
    if result.protocol is not None or result.claimed != protocols.NONE:
        return result.describe()
    nearest, diff = protocols.nearest(run.task, run.params)
    if nearest is None:
        return result.describe()
    return f"claims no protocol; nearest {nearest.name}: {protocols.describe_differences(diff) or 'same settings'}"


def split(table: str, runs: Sequence[Run]) -> tuple[list[Run], list[Run]]:
    """(on-protocol runs, the others) of a table; a table without protocols keeps all its runs."""
    if table not in PROTOCOL_TABLES:
        return list(runs), []
    on: list[Run] = []
    off: list[Run] = []
    for run in runs:
        check = protocols.check_run(run.task, run.tags, run.params)
        fits = check.on_protocol and check.protocol is not None and check.protocol.table == table
        (on if fits else off).append(run)
    return on, off


def other_settings(result: TableResult, runs: Sequence[Run]) -> list[Section]:
    """The sections of a table built from off-protocol runs, renamed, without published values."""
    reasons = Counter(difference(r) for r in runs)
    lines = [f"{n} run(s): {why}" for why, n in reasons.most_common()]
    out = []
    for section in result.sections:
        if section.key.endswith("_vs_published"):
            continue
        kept = section.key.endswith(KEEP_KEYS)
        key = section.key if kept else f"{section.key}_other_settings"
        title = section.title if kept else f"{section.title}: other settings (not compared with published values)"
        notes = [
            *section.notes,
            "Not on a published protocol (`shapebias protocols`), so no published value, Δ or verdict. What differs:",
            *lines,
        ]
        out.append(Section(key, title, section.table, section.data, notes))
    return out
