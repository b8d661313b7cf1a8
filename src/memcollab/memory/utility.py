"""Per-model help and harm: does a record help the model it is served to, or hurt it?

Counts. Each time a record is served to a model and the outcome comes back,
`Memory.record_outcome(record_id, model, helped)` counts it per (record, model): `helped`
is a success of the task with the record served, `harmed` a failure (memory_usage). The
model's own success rate without memory is counted per (namespace, model, bucket) by
`Memory.record_baseline` (memory_baselines, schema 4): outcomes of tasks of that bucket
the model solved with no record served (a vanilla run, a shadow share of traffic, or the
requests for which nothing was found). Baselines cannot be derived from the usage counts,
which are all outcomes *with* some record.

The estimate (a Beta-binomial model, not paired shadow runs). For one record r and model
m: p_with ~ Beta(1 + helped, 1 + harmed) and p_without ~ Beta(1 + s, 1 + f), where s, f
are m's baseline successes and failures in r's bucket (subcategory; when it holds fewer
than `min_baseline` outcomes, its category, then its domain), each under a uniform
Beta(1, 1) prior, independent. `utility` is the difference of the posterior means,
`p_harm` = P(p_with < p_without), computed exactly (the integer-parameter closed form of
Cook (2005) / Miller, summed over the fewer of the record's successes or failures).

Confident harm (the record is withheld from m): at least `min_outcomes` outcomes of r with
m, a baseline of at least `min_baseline` outcomes (at the domain level if need be), and
p_harm >= `confidence`. Confident help is the mirror image (reported, never acted
on). The defaults come from benchmarks/utility_simulation.py (results and the rule that
chose them: benchmarks/results/utility/). Withholding is per model: the same record is
still served to a model it helps. A withheld record gets no new outcomes from that model,
so the decision stands until its baseline moves or its counts are changed; flags
(`Memory.flag`) are the person's tool, withholding the evidence's.

Retrieval (opt-in, `Memory.search(..., utility=True)` or a `UtilityPolicy`): candidates
are ranked by relevance + `weight` x utility (utility counted only from `min_outcomes`
outcomes on, 0 before), and a candidate whose harm for the querying model is confident is
passed over and reported in `Retrieved.withheld` (record, model, reason, estimate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import betaln

from memcollab.memory.record import MemoryRecord

PRIOR = (1.0, 1.0)
"""The Beta prior (alpha, beta) of both success rates: uniform."""
DEFAULT_CONFIDENCE = 0.99
"""P(p_with < p_without) at or above which harm is confident (chosen by the simulation)."""
DEFAULT_MIN_OUTCOMES = 80
"""Outcomes of a record with a model before any decision about it (chosen by the simulation:
benchmarks/results/utility/; its rule, written before the run, values the share of harmful
records withheld within 200 outcomes over speed, and 80 is the largest minimum it swept.
`UtilityPolicy(confidence=0.995, min_outcomes=10)` withholds a record of effect -0.3 after
a median 23 outcomes instead of 80, with the same false-withhold limits met)."""
DEFAULT_MIN_BASELINE = 20
"""A bucket's baseline is used alone from this many outcomes on; fewer: its category's."""

Verdict = Literal["harm", "help", "unsure"]
BaselineLevel = Literal["subcategory", "category", "domain"]


@dataclass(frozen=True)
class UtilityPolicy:
    """The thresholds of per-model withholding and the weight of utility in ranking."""

    confidence: float = DEFAULT_CONFIDENCE
    min_outcomes: int = DEFAULT_MIN_OUTCOMES
    min_baseline: int = DEFAULT_MIN_BASELINE
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1.0:
            raise ValueError("confidence must be above 0.5 and below 1")
        if self.min_outcomes < 1 or self.min_baseline < 0:
            raise ValueError("min_outcomes must be at least 1 and min_baseline at least 0")
        if self.weight < 0:
            raise ValueError("weight must not be negative")


@dataclass(frozen=True)
class Estimate:
    """One record's utility for one model, with the evidence behind it."""

    model: str
    helped: int
    harmed: int
    baseline_successes: int
    baseline_failures: int
    baseline_level: BaselineLevel
    p_with: float
    p_without: float
    utility: float
    p_harm: float
    verdict: Verdict

    @property
    def outcomes(self) -> int:
        """Outcomes of the record with this model."""
        return self.helped + self.harmed

    @property
    def withhold(self) -> bool:
        """Whether the harm is confident: the record is withheld from this model."""
        return self.verdict == "harm"

    def as_dict(self) -> dict[str, Any]:
        """JSON-native fields."""
        return {**asdict(self), "outcomes": self.outcomes}


@dataclass(frozen=True)
class Withheld:
    """A record that retrieval passed over for a model, and why."""

    record_id: str
    model: str
    reason: str
    estimate: Estimate


# --------------------------------------------------------------------------- the mathematics


def _p_greater(a1: np.ndarray, b1: np.ndarray, a2: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """P(X1 > X2) for X1 ~ Beta(a1, b1), X2 ~ Beta(a2, b2), integer a1 >= 1, exactly:
    sum_{i < a1} B(a2 + i, b1 + b2) / ((b1 + i) B(1 + i, b1) B(a2, b2))."""
    if a1.size == 0:
        return np.zeros(0)
    n = int(a1.max())
    i = np.arange(n, dtype=float)[None, :]
    a1c, b1c, a2c, b2c = (x.astype(float)[:, None] for x in (a1, b1, a2, b2))
    logs = betaln(a2c + i, b1c + b2c) - np.log(b1c + i) - betaln(1 + i, b1c) - betaln(a2c, b2c)
    logs = np.where(i < a1c, logs, -np.inf)
    return np.asarray(np.exp(logs).sum(axis=1))


def prob_worse(
    helped: Any, harmed: Any, base_successes: Any, base_failures: Any
) -> np.ndarray | float:
    """P(p_with < p_without) under uniform priors, for counts (scalars or arrays).

    Exact for integer counts: the sum runs over the record's successes or its failures,
    whichever is fewer (P(X1 < X2) = 1 - P(X1 > X2) = P(1 - X1 > 1 - X2))."""
    scalar = np.ndim(helped) == 0
    h, x, s, f = (
        np.atleast_1d(np.asarray(v, dtype=np.int64))
        for v in (helped, harmed, base_successes, base_failures)
    )
    if np.any(h < 0) or np.any(x < 0) or np.any(s < 0) or np.any(f < 0):
        raise ValueError("counts must not be negative")
    a1, b1 = h + int(PRIOR[0]), x + int(PRIOR[1])
    a2, b2 = s + int(PRIOR[0]), f + int(PRIOR[1])
    out = np.empty(h.shape, dtype=float)
    by_successes = a1 <= b1
    if by_successes.any():
        m = by_successes
        out[m] = 1.0 - _p_greater(a1[m], b1[m], a2[m], b2[m])
    if (~by_successes).any():
        m = ~by_successes
        out[m] = _p_greater(b1[m], a1[m], b2[m], a2[m])
    out = np.clip(out, 0.0, 1.0)
    return float(out[0]) if scalar else out


def decide(
    outcomes: int, p_harm: float, policy: UtilityPolicy, baseline: int | None = None
) -> Verdict:
    """Confident harm, confident help, or not enough evidence (fewer than `min_outcomes`
    outcomes with the record, or a baseline of fewer than `min_baseline` outcomes even at
    the domain level: a model that fails everywhere is not harmed by a record)."""
    if outcomes < policy.min_outcomes:
        return "unsure"
    if baseline is not None and baseline < policy.min_baseline:
        return "unsure"
    if p_harm >= policy.confidence:
        return "harm"
    if 1.0 - p_harm >= policy.confidence:
        return "help"
    return "unsure"


# --------------------------------------------------------------------------- estimates

Baselines = Mapping[tuple[str, str, str, str], tuple[int, int]]


def baseline_for(
    baselines: Baselines, model: str, record: MemoryRecord, min_baseline: int
) -> tuple[int, int, BaselineLevel]:
    """The model's (successes, failures) without memory for a record's bucket, backing off
    to the category, then the domain, while fewer than `min_baseline` outcomes are there."""
    sub = cat = dom = (0, 0)
    for (m, d, c, s), (k, f) in baselines.items():
        if m != model or d != record.domain:
            continue
        dom = (dom[0] + k, dom[1] + f)
        if c == record.category:
            cat = (cat[0] + k, cat[1] + f)
            if s == record.subcategory:
                sub = (sub[0] + k, sub[1] + f)
    if sum(sub) >= min_baseline:
        return (*sub, "subcategory")
    if sum(cat) >= min_baseline:
        return (*cat, "category")
    return (*dom, "domain")


def estimates(
    records: Sequence[MemoryRecord],
    model: str,
    usage: Mapping[tuple[str, str], tuple[int, int]],
    baselines: Baselines,
    policy: UtilityPolicy,
) -> list[Estimate]:
    """Each record's estimate for `model` from its usage counts and the model's baselines."""
    if not records:
        return []
    counts = [usage.get((r.id, model), (0, 0)) for r in records]
    bases = [baseline_for(baselines, model, r, policy.min_baseline) for r in records]
    h = np.array([c[0] for c in counts])
    x = np.array([c[1] for c in counts])
    s = np.array([b[0] for b in bases])
    f = np.array([b[1] for b in bases])
    p_harm = np.asarray(prob_worse(h, x, s, f))
    out = []
    for k in range(len(records)):
        p_with = (h[k] + PRIOR[0]) / (h[k] + x[k] + PRIOR[0] + PRIOR[1])
        p_without = (s[k] + PRIOR[0]) / (s[k] + f[k] + PRIOR[0] + PRIOR[1])
        ph = float(p_harm[k])
        out.append(
            Estimate(
                model=model,
                helped=int(h[k]),
                harmed=int(x[k]),
                baseline_successes=int(s[k]),
                baseline_failures=int(f[k]),
                baseline_level=bases[k][2],
                p_with=float(p_with),
                p_without=float(p_without),
                utility=float(p_with - p_without),
                p_harm=ph,
                verdict=decide(int(h[k] + x[k]), ph, policy, int(s[k] + f[k])),
            )
        )
    return out


def ranking_bonus(estimate: Estimate, policy: UtilityPolicy) -> float:
    """What utility adds to a record's relevance in ranking: weight x utility once the
    record has `min_outcomes` outcomes with the model, 0 before."""
    if estimate.outcomes < policy.min_outcomes or math.isnan(estimate.utility):
        return 0.0
    return policy.weight * estimate.utility
