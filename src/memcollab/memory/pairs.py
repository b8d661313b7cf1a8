"""Contrastive pairs: which trajectory of a task is preferred (tau+) and which is not (tau-).

MemCollab distils memory from *success vs failure* pairs. This module chooses the pairs;
`memory.distill` turns each pair into constraints.

The ranking rule (ours, for fleets of more than two models; the paper's v2 says "the best and
the worst"): the trajectories of one task are ordered by a single key fixed before any task is
seen,

    model strength (descending), then turns (ascending), then model name (ascending),

with `strengths` from the fleet file (higher is stronger). Then

* mixed task (some right, some wrong): tau+ = the *first* correct trajectory in that order (the
  strongest model that succeeded; among equally strong ones the most direct), tau- = the *last*
  incorrect one (the weakest model that failed; among equals the one that wasted most turns);
* all right / all wrong: no pair, unless `tie_break=True`: then tau+ = the first trajectory
  and tau- = the last one (the strongest model's against the weakest's), pair type
  "tie_break", and its use is counted.

One order for both rules keeps ell+/ell- consistent across pair types and makes the choice
deterministic whatever order the trajectories arrive in. The price: with a very weak model in
the fleet, tau- is often that model's failure, which can be less informative than a stronger
model's near-miss.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from memcollab.memory.record import PairType
from memcollab.trajectory import Trajectory


@dataclass(frozen=True)
class Pair:
    """A preferred and an unpreferred trajectory of one task (either may be missing for the
    single-trajectory "own" conditions), with the models that produced them."""

    task_id: str
    positive: Trajectory | None
    negative: Trajectory | None
    model_pos: str | None
    model_neg: str | None
    pair_type: PairType

    def __post_init__(self) -> None:
        if self.positive is None and self.negative is None:
            raise ValueError(f"pair for task {self.task_id!r} has no trajectory")
        for traj in (self.positive, self.negative):
            if traj is not None and traj.task_id != self.task_id:
                raise ValueError(
                    f"pair for task {self.task_id!r} holds a trajectory of {traj.task_id!r}"
                )

    def trajectories(self) -> tuple[Trajectory, ...]:
        """The trajectories of the pair, tau+ first."""
        return tuple(t for t in (self.positive, self.negative) if t is not None)


@dataclass(frozen=True)
class PairingResult:
    """The pairs of one condition, and what happened to every task.

    `tasks` counts tasks seen; `mixed` tasks had both a success and a failure; `all_right` /
    `all_wrong` had only one kind (for `own_pairs`: the model was right / wrong);
    `single_model` tasks had one trajectory only (no contrast possible, never paired by
    `make_pairs`); `tie_breaks_used` counts the all-right/all-wrong tasks paired anyway;
    `ignored` counts trajectories not considered (other sample indices, other models).
    Near-miss pairing also counts `below_floor` (mixed tasks left unpaired because every
    failing model was under the accuracy floor) and names the `excluded` (domain, model)
    pairs under the floor.
    """

    pairs: tuple[Pair, ...] = ()
    tasks: int = 0
    mixed: int = 0
    all_right: int = 0
    all_wrong: int = 0
    single_model: int = 0
    tie_breaks_used: int = 0
    ignored: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    below_floor: int = 0
    excluded: tuple[str, ...] = ()
    rule: str = ""

    def summary(self) -> dict[str, int]:
        """The counts as a flat dict (for logs and summary files)."""
        counts = {
            "tasks": self.tasks,
            "pairs": len(self.pairs),
            "mixed": self.mixed,
            "all_right": self.all_right,
            "all_wrong": self.all_wrong,
            "single_model": self.single_model,
            "tie_breaks_used": self.tie_breaks_used,
            "ignored": self.ignored,
        }
        counts.update({f"type_{k}": v for k, v in sorted(self.by_type.items())})
        if self.rule == "near_miss":
            counts["below_floor"] = self.below_floor
            counts["excluded_negatives"] = len(self.excluded)
        return counts


def _rank_key(strengths: dict[str, int]) -> Callable[[Trajectory], tuple[int, int, str]]:
    def key(t: Trajectory) -> tuple[int, int, str]:
        return (-strengths[t.model], t.turns, t.model)

    return key


def _group(trajectories: Iterable[Trajectory]) -> dict[str, list[Trajectory]]:
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        groups[t.task_id].append(t)
    return dict(sorted(groups.items()))


def _one_condition(trajectories: list[Trajectory]) -> None:
    conditions = sorted({t.condition for t in trajectories})
    if len(conditions) > 1:
        raise ValueError(f"pair one condition at a time; got trajectories of {conditions}")


def _ranked_tasks(
    items: list[Trajectory], strengths: dict[str, int]
) -> tuple[list[Trajectory], dict[str, list[Trajectory]]]:
    """The cross-model rules' common start: the sample-0 trajectories of one condition and,
    per task, them ranked strongest model first. Raises on a model with no strength or a
    task with two sample-0 trajectories of one model."""
    _one_condition(items)
    missing = sorted({t.model for t in items} - strengths.keys())
    if missing:
        raise ValueError(f"no strength given for model(s) {missing}")
    used = [t for t in items if t.sample_index == 0]
    key = _rank_key(strengths)
    ranked: dict[str, list[Trajectory]] = {}
    for task_id, group in _group(used).items():
        models = [t.model for t in group]
        if len(set(models)) != len(models):
            raise ValueError(f"task {task_id!r} has several sample-0 trajectories of one model")
        ranked[task_id] = sorted(group, key=key)
    return used, ranked


def _by_type(pairs: list[Pair]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for p in pairs:
        counts[p.pair_type] += 1
    return dict(counts)


def make_pairs(
    trajectories: Iterable[Trajectory], strengths: dict[str, int], tie_break: bool = False
) -> PairingResult:
    """Cross-model pairs: per task, tau+ = a success and tau- = a failure (see the module doc
    for the ranking rule with more than two models). Uses sample index 0 only; all
    trajectories must share one condition; every model needs a strength."""
    items = list(trajectories)
    used, groups = _ranked_tasks(items, strengths)
    ignored = len(items) - len(used)
    pairs: list[Pair] = []
    mixed = all_right = all_wrong = single = ties = 0
    for task_id, ranked in groups.items():
        right = [t for t in ranked if t.correct]
        wrong = [t for t in ranked if not t.correct]
        if len(ranked) < 2:
            single += 1
            if right:
                all_right += 1
            else:
                all_wrong += 1
            continue
        kind: PairType
        if right and wrong:
            mixed += 1
            pos, neg, kind = right[0], wrong[-1], "mixed"
        else:
            if right:
                all_right += 1
            else:
                all_wrong += 1
            if not tie_break:
                continue
            ties += 1
            pos, neg, kind = ranked[0], ranked[-1], "tie_break"
        pairs.append(Pair(task_id, pos, neg, pos.model, neg.model, kind))
    return PairingResult(
        pairs=tuple(pairs),
        tasks=len(groups),
        mixed=mixed,
        all_right=all_right,
        all_wrong=all_wrong,
        single_model=single,
        tie_breaks_used=ties,
        ignored=ignored,
        by_type=_by_type(pairs),
    )


def own_pairs(trajectories: Iterable[Trajectory], model: str) -> PairingResult:
    """The "own memory" condition: each of `model`'s trajectories (sample 0) alone; a success
    becomes an own_success pair (tau+ only), a failure an own_failure pair (tau- only)."""
    items = list(trajectories)
    mine = [t for t in items if t.model == model and t.sample_index == 0]
    _one_condition(mine)
    pairs: list[Pair] = []
    right = wrong = 0
    groups = _group(mine)
    for task_id, group in groups.items():
        if len(group) > 1:
            raise ValueError(f"task {task_id!r} has several sample-0 trajectories of {model!r}")
        t = group[0]
        if t.correct:
            right += 1
            pairs.append(Pair(task_id, t, None, model, None, "own_success"))
        else:
            wrong += 1
            pairs.append(Pair(task_id, None, t, None, model, "own_failure"))
    return PairingResult(
        pairs=tuple(pairs),
        tasks=len(groups),
        all_right=right,
        all_wrong=wrong,
        ignored=len(items) - len(mine),
        by_type=_by_type(pairs),
    )


def self_contrast_pairs(trajectories: Iterable[Trajectory], model: str) -> PairingResult:
    """The self-contrast baseline: `model`'s several samples of a task, tau+ = the correct
    sample with the lowest sample index, tau- = the incorrect one with the lowest index.
    Tasks whose samples are all right or all wrong (or that have one sample) give no pair."""
    items = list(trajectories)
    mine = [t for t in items if t.model == model]
    _one_condition(mine)
    pairs: list[Pair] = []
    mixed = all_right = all_wrong = single = 0
    groups = _group(mine)
    for task_id, group in groups.items():
        samples = sorted(group, key=lambda t: t.sample_index)
        indices = [t.sample_index for t in samples]
        if len(set(indices)) != len(indices):
            raise ValueError(f"task {task_id!r} has repeated sample indices for {model!r}")
        right = [t for t in samples if t.correct]
        wrong = [t for t in samples if not t.correct]
        if len(samples) < 2:
            single += 1
        if right and wrong:
            mixed += 1
            pairs.append(Pair(task_id, right[0], wrong[0], model, model, "self_contrast"))
        elif right:
            all_right += 1
        else:
            all_wrong += 1
    return PairingResult(
        pairs=tuple(pairs),
        tasks=len(groups),
        mixed=mixed,
        all_right=all_right,
        all_wrong=all_wrong,
        single_model=single,
        ignored=len(items) - len(mine),
        by_type=_by_type(pairs),
    )


# --------------------------------------------------------------------------- pairing rules

SAMPLE_CONDITION = "self-sample"
"""The condition of the training trajectories sampled (temperature > 0) for self-contrast."""


@dataclass(frozen=True)
class PairingRule:
    """Which pairs a memory is built from: a registered rule and its settings.

    `model`: whose trajectories (own, self_contrast); `samples`: sampled trajectories per
    task (self_contrast); `tie_break`: also pair all-right / all-wrong tasks (contrastive);
    `floor`: a model whose training accuracy in a domain is under it gives no tau- there
    (near_miss).
    """

    name: str = "contrastive"
    model: str | None = None
    samples: int = 0
    tie_break: bool = False
    floor: float = 0.05


PairingFunction = Callable[[Sequence[Trajectory], PairingRule, Mapping[str, int]], PairingResult]
PAIRING_RULES: dict[str, PairingFunction] = {}


def register_pairing(name: str) -> Callable[[PairingFunction], PairingFunction]:
    """Register a pairing rule: (trajectories, rule, model strengths) -> PairingResult."""

    def wrap(function: PairingFunction) -> PairingFunction:
        PAIRING_RULES[name] = function
        return function

    return wrap


def pair_by_rule(
    trajectories: Iterable[Trajectory],
    rule: PairingRule | str = "contrastive",
    strengths: Mapping[str, int] | None = None,
) -> PairingResult:
    """The pairs `rule` takes from a pool of training trajectories (any conditions: each
    rule picks the trajectories it uses)."""
    if isinstance(rule, str):
        rule = PairingRule(rule)
    function = PAIRING_RULES.get(rule.name)
    if function is None:
        raise ValueError(
            f"unknown pairing rule {rule.name!r} (registered: {', '.join(sorted(PAIRING_RULES))})"
        )
    return function(list(trajectories), rule, strengths or {})


def _vanilla(trajectories: Sequence[Trajectory]) -> list[Trajectory]:
    return [t for t in trajectories if t.condition == "vanilla"]


def _whose(rule: PairingRule) -> str:
    if not rule.model:
        raise ValueError(f"the {rule.name} pairing rule needs the model whose trajectories to use")
    return rule.model


@register_pairing("contrastive")
def _contrastive(
    trajectories: Sequence[Trajectory], rule: PairingRule, strengths: Mapping[str, int]
) -> PairingResult:
    """The paper's cross-model contrast over the fleet's vanilla trajectories."""
    mine = [t for t in _vanilla(trajectories) if t.model in strengths]
    return make_pairs(mine, dict(strengths), tie_break=rule.tie_break)


@register_pairing("own")
def _own(
    trajectories: Sequence[Trajectory], rule: PairingRule, strengths: Mapping[str, int]
) -> PairingResult:
    """One model's own vanilla trajectories, each alone."""
    return own_pairs(_vanilla(trajectories), _whose(rule))


@register_pairing("self_contrast")
def _self_contrast(
    trajectories: Sequence[Trajectory], rule: PairingRule, strengths: Mapping[str, int]
) -> PairingResult:
    """One model's sampled trajectories contrasted with each other."""
    samples = [
        t for t in trajectories if t.condition == SAMPLE_CONDITION and t.sample_index < rule.samples
    ]
    return self_contrast_pairs(samples, _whose(rule))


def near_miss_pairs(
    trajectories: Iterable[Trajectory], strengths: dict[str, int], floor: float = 0.05
) -> PairingResult:
    """Near-miss pairs: per task, tau+ = the best success (as `make_pairs`) and tau- = the
    *strongest* failing model, so the contrast is between two attempts that nearly agree.

    A model whose accuracy over these trajectories in a domain is under `floor` gives no
    tau- in that domain (its failures are mostly degenerate: a repeated line, an echo); a
    mixed task whose only failures come from such models is left unpaired and counted in
    `below_floor`. Uses sample index 0 only; all trajectories share one condition."""
    items = list(trajectories)
    used, groups = _ranked_tasks(items, strengths)
    tally: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for t in used:
        tally[(t.domain, t.model)][0] += int(t.correct)
        tally[(t.domain, t.model)][1] += 1
    excluded = {key for key, (right, seen) in tally.items() if right < floor * seen}
    pairs: list[Pair] = []
    mixed = all_right = all_wrong = single = below = 0
    for task_id, ranked in groups.items():
        right = [t for t in ranked if t.correct]
        wrong = [t for t in ranked if not t.correct]
        if len(ranked) < 2:
            single += 1
        if not (right and wrong):
            all_right += int(bool(right))
            all_wrong += int(not right)
            continue
        mixed += 1
        usable = [t for t in wrong if (t.domain, t.model) not in excluded]
        if not usable:
            below += 1
            continue
        pos, neg = right[0], usable[0]
        pairs.append(Pair(task_id, pos, neg, pos.model, neg.model, "near_miss"))
    return PairingResult(
        pairs=tuple(pairs),
        tasks=len(groups),
        mixed=mixed,
        all_right=all_right,
        all_wrong=all_wrong,
        single_model=single,
        ignored=len(items) - len(used),
        by_type=_by_type(pairs),
        below_floor=below,
        excluded=tuple(f"{domain}:{model}" for domain, model in sorted(excluded)),
        rule="near_miss",
    )


@register_pairing("near_miss")
def _near_miss(
    trajectories: Sequence[Trajectory], rule: PairingRule, strengths: Mapping[str, int]
) -> PairingResult:
    """Best success vs the strongest failure, weak models under the floor excluded."""
    mine = [t for t in _vanilla(trajectories) if t.model in strengths]
    return near_miss_pairs(mine, dict(strengths), floor=rule.floor)
