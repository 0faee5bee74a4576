"""The statistics behind the verdicts: one-sided tests from ``scipy.stats`` and Holm's correction.

* A claim that one group beats another (Top-K over the dense baseline, say) is tested per cell
  with Welch's t-test (``scipy.stats.ttest_ind(equal_var=False, alternative=...)``), one-sided
  in the claimed direction, over the seeds of the two cells.
* A trend claim (shape bias rises as k falls) is Spearman's rank correlation
  (``scipy.stats.spearmanr(alternative=...)``), one-sided.
* Each claim is tested in many cells, so each claim is one family of tests: its p-values are
  adjusted with Holm's step-down method (:func:`holm`), which keeps the chance of any false
  "holds" in the family at most ``ALPHA``. The verdict is read from the adjusted p-value; the raw
  one is shown beside it.

scipy.stats is imported inside the functions: it alone takes seconds to import.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

ALPHA = 0.05
WELCH = "Welch's t-test, one-sided"
SPEARMAN = "Spearman rank correlation, one-sided"
ONE_SEED = "not testable, one seed"
NO_VARIANCE = "not testable, no variance between seeds"


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim of the paper (or the seed report), as one metric moving in one direction."""

    text: str
    metric: str
    direction: str  # "greater": the claimed group is higher; "less": lower
    unit: str  # "pp" (percentage points of a fraction) or "" (FID)


CLAIM_TOPK_STYLIZED = Claim("Top-K raises stylized accuracy over the dense baseline", "stylized_acc", "greater", "pp")
CLAIM_TOPK_CLEAN = Claim("Top-K raises clean accuracy over the dense baseline", "test_acc", "greater", "pp")
CLAIM_MEAN_STYLIZED = Claim(
    "Top-K mean replacement beats the baseline on stylized images", "stylized_acc", "greater", "pp"
)
CLAIM_FID = Claim("Top-K lowers FID", "fid", "less", "")
CLAIM_NOISE = Claim("Noise injection lowers FID further with Top-K", "fid", "less", "")
CLAIM_SB = Claim("Top-K at inference raises shape bias over the dense model", "shape_bias", "greater", "pp")
CLAIM_SB_TREND = Claim("Shape bias rises as Top-K gets sparser (smaller k; dense = k 1)", "shape_bias", "greater", "")


@dataclasses.dataclass
class TestResult:
    """One test of a claim in one cell, before the correction across the claim's cells.

    ``p`` is one-sided in the claimed direction, ``p_opposite`` one-sided the other way (NaN where
    a significant opposite effect is not looked for); both NaN when there is no test, and then
    ``untestable`` says why.
    """

    test: str
    p: float
    p_opposite: float
    as_claimed: bool
    untestable: str = ""


def welch_test(a: np.ndarray, b: np.ndarray, direction: str) -> TestResult:
    """Is ``a`` <direction> than ``b``? Welch's t-test; one seed or no variance: no test."""
    from scipy import stats

    difference = float(np.mean(a) - np.mean(b))
    as_claimed = difference > 0 if direction == "greater" else difference < 0
    nan = float("nan")
    if len(a) < 2 or len(b) < 2:
        where = "direction as claimed" if as_claimed else "opposite direction"
        return TestResult("none", nan, nan, as_claimed, f"{ONE_SEED} ({where})")
    if np.std(a) == 0 and np.std(b) == 0:
        return TestResult("none", nan, nan, as_claimed, NO_VARIANCE)
    p = float(stats.ttest_ind(a, b, equal_var=False, alternative=direction).pvalue)
    return TestResult(WELCH, p, 1.0 - p, as_claimed)  # t is continuous: the two one-sided p sum to 1


def spearman_test(x: Sequence[float], y: Sequence[float], direction: str) -> tuple[float, float]:
    """Spearman's rho (ties averaged) and its one-sided p-value (t approximation), from scipy."""
    from scipy import stats

    result = stats.spearmanr(x, y, alternative=direction)
    return float(result.statistic), float(result.pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values; NaN entries (no test) stay NaN and do not count.

    With the m finite p-values sorted ascending, p(1) <= ... <= p(m), the adjusted value of p(i)
    is max over j <= i of min(1, (m - j + 1) * p(j)). Rejecting where the adjusted value is
    below alpha is Holm's procedure (Holm 1979), which controls the family-wise error rate.
    """
    order = sorted((p, i) for i, p in enumerate(pvalues) if math.isfinite(p))
    adjusted = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        adjusted[i] = running
    return adjusted


def verdict(p_adjusted: float, p_opposite_adjusted: float, as_claimed: bool) -> str:
    """The verdict wording, from Holm-adjusted p-values (alpha = ``ALPHA``)."""
    if p_adjusted < ALPHA:
        return "holds"
    if as_claimed:
        return "not significant (direction as claimed)"
    if p_opposite_adjusted < ALPHA:
        return "contradicted (significant the other way)"
    return "does not hold"
