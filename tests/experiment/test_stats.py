"""Paired statistics against known values."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest

from memcollab.experiment.stats import (
    compare_paired,
    detectable_difference,
    holm_adjust,
    mcnemar_exact,
    mcnemar_power,
    paired_bootstrap_ci,
)


def test_mcnemar_exact_on_a_published_table() -> None:
    # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91, Table 1 (Bentur et
    # al., airway hyper-responsiveness before/after stem cell transplantation in 21
    # children: 1 / 1 / 7 / 12): discordant pairs n12 = 1, n21 = 7, and the exact
    # conditional p-value 2 * binomcdf(1, 8, 0.5) = 0.070.
    assert mcnemar_exact(1, 7) == pytest.approx(0.0703125, abs=1e-12)
    assert round(mcnemar_exact(1, 7), 3) == 0.070


def test_mcnemar_exact_by_hand() -> None:
    # p = 2 * sum_{k <= min(b, c)} C(n, k) / 2^n, capped at 1; symmetric in b and c
    for b, c in [(0, 6), (2, 9), (9, 2), (5, 5), (0, 1), (12, 30)]:
        n = b + c
        expected = min(1.0, 2 * sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n)
        assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == 1.0
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)


def test_paired_bootstrap_interval_covers_the_truth_about_95_percent() -> None:
    # Synthetic paired verdicts with a known difference of accuracies: 0.6 vs 0.7, with
    # correlated outcomes (the second is right whenever the first is, plus 25% of the
    # rest). Over 300 repetitions of 200 tasks, the 95% interval should hold the true
    # difference 0.1 in about 95% of them (binomial sd about 1.3%).
    rng = np.random.default_rng(7)
    hits = 0
    reps = 300
    for rep in range(reps):
        first = rng.random(200) < 0.6
        second = first | (rng.random(200) < 0.25)
        _, low, high = paired_bootstrap_ci(
            first.tolist(), second.tolist(), resamples=2000, seed=rep
        )
        hits += low <= 0.1 <= high
    assert 0.91 <= hits / reps <= 0.985


def test_bootstrap_is_seeded_and_checks_its_input() -> None:
    a = [True, False, True, True, False, False, True, False]
    b = [True, True, True, False, True, False, True, True]
    assert paired_bootstrap_ci(a, b, seed=1) == paired_bootstrap_ci(a, b, seed=1)
    mean, low, high = paired_bootstrap_ci(a, b, seed=1)
    assert mean == pytest.approx(2 / 8) and low <= mean <= high
    with pytest.raises(ValueError):
        paired_bootstrap_ci([1, 0], [1])
    with pytest.raises(ValueError):
        paired_bootstrap_ci([], [])


def test_compare_paired_counts_discordant_pairs() -> None:
    base = [True, True, False, False, False, True]
    cond = [True, False, True, True, False, True]
    c = compare_paired(base, cond)
    assert (c.n, c.baseline_correct, c.condition_correct) == (6, 3, 4)
    assert (c.only_baseline, c.only_condition) == (1, 2)
    assert c.difference == pytest.approx(1 / 6)
    assert c.p_value == pytest.approx(1.0)  # 2 * P[X <= 1], X ~ Bin(3, 1/2) = 1


def test_holm_adjust_worked_by_hand() -> None:
    # sorted: 0.005 x4 = 0.02, 0.01 x3 = 0.03, 0.03 x2 = 0.06, 0.04 x1 = 0.04 -> raised to 0.06
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm_adjust([]) == []
    with pytest.raises(ValueError):
        holm_adjust([1.5])


def test_holm_is_never_below_raw_nor_above_bonferroni() -> None:
    rng = np.random.default_rng(3)
    p = list(rng.uniform(0, 1, size=40))
    adjusted = holm_adjust(p)
    for raw, adj in zip(p, adjusted, strict=True):
        assert raw <= adj <= min(1.0, 40 * raw)


def test_mcnemar_power_and_detectable_difference_worked_by_hand() -> None:
    """Connor's approximation at n = 200, psi = 0.15, d = 0.076:
    (sqrt(200) * 0.076 - 1.95996 * sqrt(0.15)) / sqrt(0.15 - 0.076^2)
    = (1.07480 - 0.75909) / 0.37979 = 0.83127 -> Phi = 0.7971 (just under 80%); the issue's
    figures (7.6 pp for 200 tasks, 4.8 pp for 500) come back from the inverse."""
    assert mcnemar_power(200, 0.15, 0.076) == pytest.approx(0.7971, abs=5e-4)
    assert detectable_difference(200, 0.15) == pytest.approx(0.0763, abs=5e-4)
    assert detectable_difference(500, 0.15) == pytest.approx(0.0484, abs=5e-4)
    assert mcnemar_power(200, 0.15, -0.076) == mcnemar_power(200, 0.15, 0.076)
    assert detectable_difference(6, 0.5) is None  # 3 discordant tasks: never significant
    assert mcnemar_power(10, 1.0, 1.0) == 1.0  # every pair discordant, all one way
    with pytest.raises(ValueError):
        mcnemar_power(100, 0.1, 0.2)  # a difference larger than the discordant share
