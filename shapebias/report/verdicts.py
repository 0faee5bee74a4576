"""Verdicts: a claim tested in one cell, then decided with Holm's correction across the claim's cells."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from shapebias.report import stats
from shapebias.report.formatting import MISSING, p_value, signed
from shapebias.report.runs import Cell
from shapebias.report.stats import Claim, TestResult

COLUMNS = [
    "claim",
    "scope",
    "metric",
    "n (claim)",
    "n (baseline)",
    "mean (claim)",
    "mean (baseline)",
    "difference",
    "test",
    "p",
    "p (Holm)",
    "verdict",
    "published difference",
]
NO_TEST = TestResult("none", float("nan"), float("nan"), False)


@dataclasses.dataclass
class Verdict:
    """One row of the verdict table before the correction: what was compared and the raw test."""

    claim: Claim
    scope: str
    n_claim: int | str
    n_baseline: int | str
    mean_claim: str
    mean_baseline: str
    difference: str
    result: TestResult
    published_difference: str


def compare_cells(claim: Claim, scope: str, a: Cell | None, b: Cell | None, published_difference: float) -> Verdict:
    """The claim in one cell: claimed group ``a`` against baseline ``b`` (either may be missing)."""
    scale = 100.0 if claim.unit == "pp" else 1.0
    unit = f" {claim.unit}" if claim.unit else ""
    digits = 1 if unit else 2
    published = MISSING if not math.isfinite(published_difference) else f"{signed(published_difference, digits)}{unit}"
    if a is None or b is None:
        side = "the claim" if a is None else "the baseline"
        missing = dataclasses.replace(NO_TEST, untestable=f"no runs for {side}")
        return Verdict(claim, scope, a.n if a else 0, b.n if b else 0, MISSING, MISSING, MISSING, missing, published)
    va, vb = a.values[claim.metric], b.values[claim.metric]
    return Verdict(
        claim,
        scope,
        a.n,
        b.n,
        f"{np.mean(va) * scale:.{digits}f}",
        f"{np.mean(vb) * scale:.{digits}f}",
        f"{signed((np.mean(va) - np.mean(vb)) * scale, digits)}{unit}",
        stats.welch_test(va, vb, claim.direction),
        published,
    )


def trend_verdict(
    claim: Claim, scope: str, levels: Sequence[tuple[float, float]], published_levels: Sequence[tuple[float, float]]
) -> Verdict:
    """Does the metric fall as k rises (Spearman, one-sided)? Needs three levels."""
    published = MISSING
    if len(published_levels) >= 3:
        ks, values = zip(*sorted(published_levels), strict=True)
        published = f"rho={stats.spearman_test(ks, values, 'less')[0]:+.2f}"
    if len(levels) < 3:
        result = dataclasses.replace(NO_TEST, untestable=f"not testable, {len(levels)} level(s) (needs 3)")
        return Verdict(claim, scope, len(levels), MISSING, MISSING, MISSING, MISSING, result, published)
    ks, values = zip(*sorted(levels), strict=True)
    rho, p = stats.spearman_test(ks, values, "less")  # smaller k, higher shape bias
    result = TestResult(stats.SPEARMAN, p, float("nan"), rho < 0)
    return Verdict(claim, scope, len(levels), MISSING, MISSING, MISSING, f"rho={rho:+.2f}", result, published)


def decide(verdicts: Sequence[Verdict]) -> pd.DataFrame:
    """The verdict table: Holm's correction within each claim, the verdict read from the adjusted p.

    The opposite-direction p-values (is the effect significantly the other way?) are a family of
    their own, adjusted the same way.
    """
    adjusted = [float("nan")] * len(verdicts)
    adjusted_opposite = list(adjusted)
    for claim in dict.fromkeys(v.claim for v in verdicts):
        members = [i for i, v in enumerate(verdicts) if v.claim == claim]
        for i, p, q in zip(
            members,
            stats.holm([verdicts[i].result.p for i in members]),
            stats.holm([verdicts[i].result.p_opposite for i in members]),
            strict=True,
        ):
            adjusted[i], adjusted_opposite[i] = p, q
    rows = []
    for v, p, q in zip(verdicts, adjusted, adjusted_opposite, strict=True):
        r = v.result
        rows.append(
            {
                "claim": v.claim.text,
                "scope": v.scope,
                "metric": v.claim.metric,
                "n (claim)": v.n_claim,
                "n (baseline)": v.n_baseline,
                "mean (claim)": v.mean_claim,
                "mean (baseline)": v.mean_baseline,
                "difference": v.difference,
                "test": r.test,
                "p": p_value(r.p),
                "p (Holm)": p_value(p),
                "verdict": r.untestable or stats.verdict(p, q, r.as_claimed),
                "published difference": v.published_difference,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS)


def claim_summary(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Per claim: in how many cells it holds, is not significant, is contradicted, is untestable."""
    columns = ["claim", "cells", "holds", "not significant", "does not hold / contradicted", "not testable"]
    rows = []
    for claim, group in verdicts.groupby("claim", sort=False):
        v = group["verdict"]
        rows.append(
            {
                "claim": claim,
                "cells": len(group),
                "holds": int((v == "holds").sum()),
                "not significant": int(v.str.startswith("not significant").sum()),
                "does not hold / contradicted": int(v.str.startswith(("does not", "contradicted")).sum()),
                "not testable": int(v.str.startswith(("not testable", "no runs")).sum()),
            }
        )
    return pd.DataFrame(rows, columns=columns)
