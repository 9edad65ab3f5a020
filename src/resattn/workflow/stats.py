"""Statistics over seeds: per-variant summaries and seed-paired differences against a baseline.

Runs of two variants with the same seed share their data (subset, order, augmentation draws,
flipped labels; see :mod:`resattn.workflow.train`), so the per-seed differences d_i = a_i - b_i remove the
seed-to-seed variation the two runs have in common. Over the n seeds that both variants finished:

    mean difference  d̄ = (1/n) Σ d_i
    std of d         s_d (sample standard deviation, n - 1 in the denominator)
    95% CI           d̄ ± t_{0.975, n-1} · s_d / √n     (Student t, scipy.stats.t)

The verdict word at this budget is ``better`` when the CI lies above 0, ``worse`` when it lies
below 0 and ``indistinguishable`` otherwise (for a metric where lower is better the signs of
``better``/``worse`` swap). With n < 2 no spread or CI exists: the summary says ``n=1`` and the
verdict is ``n<2``.

The decision rule of a study (:func:`paired_tests`, :func:`holm`, :func:`decide`) goes further:

    difference   two-sided test of mean d = 0 (p_diff)
    equivalence  two one-sided tests (TOST) of mean d <= -delta and mean d >= +delta (p_equiv =
                 the larger p); delta is the pre-registered smallest effect of interest
    method       Student t (scipy.stats.ttest_1samp) when n >= MIN_PAIRS_T (5) and the spread is
                 not zero; otherwise the exact paired permutation test (sign flips of the n
                 differences, scipy.stats.permutation_test), so a zero spread never gives a
                 verdict from a CI of width 0 (with n pairs the smallest two-sided p is 2 / 2^n:
                 no verdict at alpha = 0.05 below n = 6)
    family       Holm's step-down adjustment over every p-value of a study's tests (:func:`holm`)
    outcome      equivalent (adjusted p_equiv < alpha), else better / worse (adjusted p_diff <
                 alpha; the sign of the mean and the metric's direction), else inconclusive
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .sinks import is_finite_number

__all__ = ["Summary", "Paired", "summarise_values", "paired_difference", "t_quantile", "format_mean",
           "CellTest", "paired_tests", "holm", "decide", "OUTCOMES", "MIN_PAIRS_T"]

#: Outcomes of one cell (and of a hypothesis): ``better``/``worse`` name the hypothesis's
#: ``better`` variant's side; ``invalid``: a validity gate failed; ``incomplete``: a pair was lost.
OUTCOMES = ("better", "worse", "equivalent", "inconclusive", "invalid", "incomplete")
#: Fewest pairs for the Student-t tests; below it (or with zero spread) the exact permutation test.
MIN_PAIRS_T = 5


def t_quantile(confidence: float, df: int) -> float:
    """Two-sided Student-t quantile: t such that P(|T| <= t) = ``confidence`` with ``df`` degrees
    of freedom (``scipy.stats.t.ppf((1 + confidence) / 2, df)``; 4.303 for 0.95 and df = 2).

    Raises:
        ValueError: ``confidence`` outside (0, 1) or ``df < 1``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
    if df < 1:
        raise ValueError(f"df={df!r} must be >= 1 (a CI needs at least 2 values)")
    from scipy.stats import t
    return float(t.ppf((1.0 + confidence) / 2.0, df))


@dataclass
class Summary:
    """n, mean and sample std (None when n < 2) of one variant's values."""

    n: int
    mean: Optional[float]
    std: Optional[float]


def summarise_values(values: Sequence[float]) -> Summary:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return Summary(0, None, None)
    return Summary(len(vals), statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else None)


@dataclass
class Paired:
    """Seed-paired difference a - b: n pairs, mean, std of the differences, CI, verdict."""

    n: int
    mean_diff: Optional[float]
    std_diff: Optional[float]
    ci_low: Optional[float]
    ci_high: Optional[float]
    confidence: float
    verdict: str  # better | worse | indistinguishable | n<2

    @property
    def has_ci(self) -> bool:
        return self.ci_low is not None


def paired_difference(a: dict[int, float], b: dict[int, float], *, confidence: float = 0.95,
                      higher_is_better: bool = True) -> Paired:
    """Paired difference of ``a`` minus ``b`` over the seeds both have (seed -> value).

    Returns:
        :class:`Paired`; with fewer than 2 pairs the spread and CI are None and the verdict ``n<2``.
    """
    seeds = sorted(s for s in set(a) & set(b) if is_finite_number(a[s]) and is_finite_number(b[s]))
    diffs = [float(a[s]) - float(b[s]) for s in seeds]
    n = len(diffs)
    if n == 0:
        return Paired(0, None, None, None, None, confidence, "n<2")
    mean = statistics.fmean(diffs)
    if n < 2:
        return Paired(1, mean, None, None, None, confidence, "n<2")
    sd = statistics.stdev(diffs)
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    lo, hi = mean - half, mean + half
    if lo > 0:
        verdict = "better" if higher_is_better else "worse"
    elif hi < 0:
        verdict = "worse" if higher_is_better else "better"
    else:
        verdict = "indistinguishable"
    return Paired(n, mean, sd, lo, hi, confidence, verdict)


def format_mean(s: Summary, digits: int = 2, pm: str = "±") -> str:
    """``mean ± std (n=3)``, or ``mean (n=1)`` with no spread; ``-`` when empty."""
    if s.n == 0 or s.mean is None:
        return "-"
    if s.std is None:
        return f"{s.mean:.{digits}f} (n=1)"
    return f"{s.mean:.{digits}f} {pm} {s.std:.{digits}f} (n={s.n})"


def format_paired(p: Paired, digits: int = 2) -> str:
    """``+0.53 [+0.12, +0.94]`` or ``+0.53 (n=1)``; ``-`` when no pair."""
    if p.mean_diff is None:
        return "-"
    if not p.has_ci:
        return f"{p.mean_diff:+.{digits}f} (n=1)"
    return f"{p.mean_diff:+.{digits}f} [{p.ci_low:+.{digits}f}, {p.ci_high:+.{digits}f}]"




# ----------------------------------------------------------------------------- decision rule

@dataclass
class CellTest:
    """The tests of one cell's paired differences d (better - worse, in the metric's units)."""

    n: int
    diff: Optional[float]
    std: Optional[float]
    ci_low: Optional[float]     # Student-t CI at ``confidence``; None with n < 2 or zero spread
    ci_high: Optional[float]
    method: str                 # t | permutation | none (n < 2)
    p_diff: Optional[float]     # two-sided, H0: mean d = 0
    p_equiv: Optional[float]    # TOST, H0: |mean d| >= delta; None without delta


def _perm_p(values: Sequence[float], alternative: str) -> float:
    """Exact sign-flip permutation p-value of the mean of ``values`` (H0: symmetric about 0)."""
    import numpy as np
    from scipy.stats import permutation_test
    res = permutation_test((np.asarray(values, dtype=float),),
                           lambda x, axis: np.mean(x, axis=axis), vectorized=True,
                           permutation_type="samples", alternative=alternative, n_resamples=np.inf)
    return float(min(1.0, res.pvalue))


def paired_tests(diffs: Sequence[float], *, delta: Optional[float] = None,
                 confidence: float = 0.95) -> CellTest:
    """Difference and equivalence tests of paired differences ``diffs`` (see the module
    docstring). ``delta``: the smallest effect of interest (> 0), or None for no equivalence test.

    Raises:
        ValueError: ``delta`` not > 0, or ``confidence`` outside (0, 1).
    """
    if delta is not None and not delta > 0:
        raise ValueError(f"delta={delta!r} must be > 0 (the smallest effect of interest)")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r} must be in (0, 1)")
    d = [float(x) for x in diffs]
    n = len(d)
    if n < 2:
        return CellTest(n, d[0] if d else None, None, None, None, "none", None, None)
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    lo = hi = None
    if sd > 0:
        half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
        lo, hi = mean - half, mean + half
    if n >= MIN_PAIRS_T and sd > 0:
        from scipy.stats import ttest_1samp
        p_diff = float(ttest_1samp(d, 0.0).pvalue)
        p_equiv = None if delta is None else max(
            float(ttest_1samp(d, -delta, alternative="greater").pvalue),
            float(ttest_1samp(d, delta, alternative="less").pvalue))
        return CellTest(n, mean, sd, lo, hi, "t", p_diff, p_equiv)
    p_diff = _perm_p(d, "two-sided")
    p_equiv = None if delta is None else max(_perm_p([x + delta for x in d], "greater"),
                                             _perm_p([x - delta for x in d], "less"))
    return CellTest(n, mean, sd, lo, hi, "permutation", p_diff, p_equiv)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): sort p ascending, multiply the
    i-th smallest (0-based) by m - i, keep the running maximum, cap at 1. Rejecting where the
    adjusted p < alpha controls the family-wise error rate at alpha (Holm 1979)."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted


def decide(tests: Sequence[Optional[CellTest]], *, higher_is_better: Sequence[bool],
           alpha: float = 0.05) -> list[dict[str, Any]]:
    """Outcomes of a family of cell tests (one study), Holm-adjusted over all their p-values.

    ``tests[i]`` None: the cell is decided elsewhere (invalid, incomplete) and is left out of the
    family; its entry is None. ``higher_is_better[i]``: the direction of cell i's metric.

    Returns:
        Per cell ``{"outcome", "p_diff_adj", "p_equiv_adj"}`` (None for a None test).
    """
    slots = [(i, k) for i, t in enumerate(tests) if t is not None
             for k in ("p_diff", "p_equiv") if getattr(t, k) is not None]
    adjusted = dict(zip(slots, holm([getattr(tests[i], k) for i, k in slots])))
    out: list[Optional[dict[str, Any]]] = []
    for i, t in enumerate(tests):
        if t is None:
            out.append(None)
            continue
        pd, pe = adjusted.get((i, "p_diff")), adjusted.get((i, "p_equiv"))
        if pe is not None and pe < alpha:
            outcome = "equivalent"
        elif pd is not None and pd < alpha:
            outcome = "better" if (t.diff > 0) == bool(higher_is_better[i]) else "worse"
        else:
            outcome = "inconclusive"
        out.append({"outcome": outcome, "p_diff_adj": pd, "p_equiv_adj": pe})
    return out
