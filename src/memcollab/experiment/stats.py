"""Paired statistics for comparing a condition with vanilla on the same tasks.

* `mcnemar_exact`: the exact (conditional, binomial) McNemar test on the discordant pairs,
  two-sided: p = min(1, 2 * P[X <= min(b, c)]) with X ~ Binomial(b + c, 1/2). scipy's
  `binomtest` gives the tail; the doubling is McNemar's exact test as usually defined
  (Fagerland et al. 2013), which `binomtest`'s own two-sided rule also equals at p = 1/2.
* `paired_bootstrap_ci`: percentile interval of the mean paired difference, resampling
  tasks (pairs) with replacement; numpy, seeded, vectorised.
* `detectable_difference`: the smallest paired difference the exact McNemar test finds
  with a given power, from Connor's (1987) normal approximation of its power, for a design
  of n pairs whose discordant share is psi. Written here (a bisection over a closed form)
  rather than taken from statsmodels, which has no McNemar power function.
* `holm_adjust`: Holm's step-down adjustment of a family of p-values (family-wise error).
  Written here rather than taken from statsmodels, which would be a large dependency for
  ten lines; checked against worked values in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import sqrt
from statistics import NormalDist

import numpy as np
from scipy.stats import binomtest


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (only the first
    right) and c (only the second right). 1.0 when there is no discordant pair."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts cannot be negative")
    n = b + c
    if n == 0:
        return 1.0
    tail = binomtest(min(b, c), n, 0.5, alternative="less").pvalue
    return float(min(1.0, 2.0 * tail))


def mcnemar_power(n: int, discordant: float, difference: float, alpha: float = 0.05) -> float:
    """Power of the two-sided McNemar test at level `alpha` for n pairs whose discordant
    share is `discordant` (psi) and whose true accuracy difference is `difference`
    (Connor 1987: Phi((sqrt(n) |d| - z sqrt(psi)) / sqrt(psi - d^2)))."""
    d = abs(difference)
    if n < 1 or not 0 < discordant <= 1 or d > discordant:
        raise ValueError("need n >= 1, 0 < discordant <= 1 and |difference| <= discordant")
    z = NormalDist().inv_cdf(1 - alpha / 2)
    top, spread = sqrt(n) * d - z * sqrt(discordant), sqrt(discordant - d * d)
    if spread == 0:  # psi = d = 1: every pair discordant, all one way
        return 1.0 if top > 0 else 0.0
    return NormalDist().cdf(top / spread)


def detectable_difference(
    n: int, discordant: float, alpha: float = 0.05, power: float = 0.8
) -> float | None:
    """The smallest |difference| with at least `power` (see `mcnemar_power`); for n = 200
    and psi = 0.15 about 0.076, for n = 500 about 0.048. None when no difference the
    discordant share allows (|d| <= psi) reaches that power."""
    if mcnemar_power(n, discordant, discordant, alpha) < power:
        return None
    low, high = 0.0, discordant
    for _ in range(60):
        mid = (low + high) / 2
        if mcnemar_power(n, discordant, mid, alpha) >= power:
            high = mid
        else:
            low = mid
    return high


def paired_bootstrap_ci(
    first: Sequence[float],
    second: Sequence[float],
    *,
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(mean of second - first, low, high): a percentile bootstrap interval over pairs."""
    a = np.asarray(first, dtype=float)
    b = np.asarray(second, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("paired samples need the same length")
    if len(a) == 0:
        raise ValueError("no pairs to compare")
    diff = b - a
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // len(diff))  # bound memory at about 16 MB per block
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        idx = rng.integers(0, len(diff), size=(stop - start, len(diff)))
        means[start:stop] = diff[idx].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(diff.mean()), float(low), float(high)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order: the i-th smallest of m is multiplied by
    (m - i), made non-decreasing along the sorted order, and capped at 1."""
    m = len(p_values)
    if any(not 0.0 <= p <= 1.0 for p in p_values):
        raise ValueError("p-values must lie in [0, 1]")
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


@dataclass(frozen=True)
class PairedComparison:
    """A condition against a baseline on the same tasks (binary verdicts)."""

    n: int
    baseline_correct: int
    condition_correct: int
    only_baseline: int  # b: baseline right, condition wrong
    only_condition: int  # c: condition right, baseline wrong
    difference: float  # accuracy(condition) - accuracy(baseline)
    ci_low: float
    ci_high: float
    p_value: float


def compare_paired(
    baseline: Sequence[bool], condition: Sequence[bool], *, seed: int = 0
) -> PairedComparison:
    """Paired difference, its 95% bootstrap interval and the exact McNemar p-value."""
    base = [bool(x) for x in baseline]
    cond = [bool(x) for x in condition]
    diff, low, high = paired_bootstrap_ci(base, cond, seed=seed)
    b = sum(x and not y for x, y in zip(base, cond, strict=True))
    c = sum(y and not x for x, y in zip(base, cond, strict=True))
    return PairedComparison(
        n=len(base),
        baseline_correct=sum(base),
        condition_correct=sum(cond),
        only_baseline=b,
        only_condition=c,
        difference=diff,
        ci_low=low,
        ci_high=high,
        p_value=mcnemar_exact(b, c),
    )
