"""Statistics over seeds: per-variant summaries and seed-paired differences against a baseline.

Runs of two variants with the same seed share their data (subset, order, augmentation draws,
flipped labels; see :mod:`resattn.train`), so the per-seed differences d_i = a_i - b_i remove the
seed-to-seed variation the two runs have in common. Over the n seeds that both variants finished:

    mean difference  d̄ = (1/n) Σ d_i
    std of d         s_d (sample standard deviation, n - 1 in the denominator)
    95% CI           d̄ ± t_{0.975, n-1} · s_d / √n     (Student t, scipy.stats.t)

The verdict word at this budget is ``better`` when the CI lies above 0, ``worse`` when it lies
below 0 and ``indistinguishable`` otherwise (for a metric where lower is better the signs of
``better``/``worse`` swap). With n < 2 no spread or CI exists: the summary says ``n=1`` and the
verdict is ``n<2``.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from .sinks import is_finite_number

__all__ = ["Summary", "Paired", "summarise_values", "paired_difference", "t_quantile", "format_mean"]


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


