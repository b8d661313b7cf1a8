"""The plan's estimate: jobs, model calls, tokens and wall time per phase of an
experiment, before spending any. Stored jobs are done; jobs whose first call the call
cache holds are replayed (no model call), as are evaluation jobs that the decided gate runs
without memory (they ask exactly what the vanilla jobs ask); time comes from each model's
measured speed. What each number rests on: experiment/estimate.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from memcollab.collect import Job, TrajectoryStore
from memcollab.experiment.estimate import (
    LABEL_TOKENS,
    FirstCalls,
    JobCost,
    TrajectoryProfile,
    cache_timings,
    phase_seconds,
    prompt_tokens_per_call,
)
from memcollab.experiment.gate import Gate, GateError
from memcollab.memory.api import Memory
from memcollab.trajectory import Trajectory

if TYPE_CHECKING:
    from memcollab.experiment.runner import Experiment

Phase = Literal["train", "memory", "dev", "eval"]
PHASES: tuple[Phase, ...] = ("train", "memory", "dev", "eval")  # dev: only with [dev]
LABEL_CALLS_PER_TASK = 2  # the LLM classifier asks for the category, then the subcategory


@dataclass
class PhaseEstimate:
    """What a phase will cost: jobs, model calls, tokens and wall time (estimated; what
    each number rests on: experiment/estimate.py)."""

    jobs: int
    done: int
    calls: int
    completion_tokens: int
    prompt_tokens: int | None
    basis: str
    replayed: int = 0  # jobs left that the call cache answers (or another job's calls)
    seconds: float | None = None  # wall time (None: a model with work has no known speed)
    seconds_high: float | None = None  # its upper bound (the models one after another)


def estimate_plan(exp: Experiment) -> dict[Phase, PhaseEstimate]:
    """Jobs, model calls, tokens and wall time per phase, before spending any: stored
    jobs are done, jobs whose first call the cache holds are replayed (no model call), as
    are evaluation jobs the decided gate runs without memory (they repeat the vanilla
    jobs' calls), and time comes from each model's measured speed (experiment/estimate.py)."""
    max_tokens = exp.config.agent.max_tokens or max(
        exp.fleet.spec(m).decoding.max_tokens for m in exp.info.models
    )
    models = {m: exp.fleet.model(m) for m in exp.info.models}
    timings = cache_timings(exp.gateway)
    stored = _stored(exp.out / "train")
    profile = TrajectoryProfile(
        stored,
        fallback=JobCost(
            float(exp.config.agent.max_turns),
            prompt_tokens_per_call(models.values(), timings),
            float(max_tokens),
        ),
    )
    first_calls = FirstCalls(exp.gateway)
    tokens: dict[Phase, defaultdict[str, float]] = {p: defaultdict(float) for p in PHASES}

    def solves(
        phase: Phase,
        jobs: list[Job],
        folder: Path,
        guided: Callable[[Job], bool],
        repeats: Callable[[Job], bool] = lambda job: False,
    ) -> tuple[PhaseEstimate, list[Job]]:
        keys = _stored_keys(folder)
        todo = [j for j in jobs if j.key() not in keys]
        # A job with memory guidance has no first call known before its memory is built;
        # one that `repeats` another job's calls makes none of its own.
        live = [j for j in todo if not repeats(j) and (guided(j) or not first_calls.answered(j))]
        calls = completion = 0.0
        prompt: float | None = 0.0
        for job in live:
            cost = profile.cost(job.agent.client.name, job.task.domain)
            tokens[phase][job.agent.client.name] += cost.calls * cost.completion_per_call
            calls += cost.calls
            completion += cost.calls * cost.completion_per_call
            if prompt is not None and cost.prompt_per_call is not None:
                prompt += cost.calls * cost.prompt_per_call
            else:
                prompt = None
        estimate = PhaseEstimate(
            len(jobs),
            len(jobs) - len(todo),
            round(calls),
            round(completion),
            round(prompt) if prompt is not None else None,
            profile.basis(),
            replayed=len(todo) - len(live),
        )
        return estimate, todo

    train, _ = solves("train", exp.train_jobs(), exp.out / "train", lambda job: False)

    def guided(job: Job) -> bool:
        return exp.condition(job.condition).kind != "vanilla"

    gate = _decided_gate(exp)

    def withheld(job: Job) -> bool:
        return gate is not None and gate.withholds(
            job.condition, job.agent.client.name, job.task.domain
        )

    evaluation, eval_todo = solves("eval", exp.eval_jobs(None), exp.out / "eval", guided, withheld)
    _add_label_calls(exp, evaluation, eval_todo, tokens["eval"])
    label_calls = 0 if exp.config.memory.labeller == "trained" else LABEL_CALLS_PER_TASK
    memory = _estimate_memory(exp, stored, train, label_calls, tokens["memory"])
    phases: dict[Phase, PhaseEstimate] = {"train": train, "memory": memory, "eval": evaluation}
    if exp.dev is not None:
        dev, dev_todo = solves("dev", exp.dev.jobs(None), exp.dev.folder, guided)
        _add_label_calls(exp, dev, dev_todo, tokens["dev"])
        phases["dev"] = dev
    speeds = exp.model_speeds()
    for phase, e in phases.items():
        e.seconds, e.seconds_high = phase_seconds(
            tokens[phase], speeds, side_by_side=phase != "memory"
        )
    return {p: phases[p] for p in PHASES if p in phases}


def _add_label_calls(
    exp: Experiment, estimate: PhaseEstimate, todo: list[Job], tokens: defaultdict[str, float]
) -> None:
    """Add the calls the LLM labeller makes for these jobs' task-aware queries (each
    model labels a task once, memoised, whatever condition asks)."""
    labelled = set()
    for job in todo:
        described = exp.condition(job.condition).describe()
        kind = described.get("labeller") or exp.config.memory.labeller
        if (
            described["kind"] != "vanilla"
            and described.get("retrieval") != "global_tfidf"
            and kind == "llm"
        ):
            labelled.add((job.agent.client.name, job.task.id))
    estimate.calls += LABEL_CALLS_PER_TASK * len(labelled)
    estimate.completion_tokens += LABEL_CALLS_PER_TASK * len(labelled) * LABEL_TOKENS
    for model, _ in labelled:
        tokens[model] += LABEL_CALLS_PER_TASK * LABEL_TOKENS


def _estimate_memory(
    exp: Experiment,
    stored: list[Trajectory],
    train: PhaseEstimate,
    label_calls: int,
    tokens: defaultdict[str, float],
) -> PhaseEstimate:
    """The memory phase: a distillation per pair left (pairs of the stored trajectories,
    scaled to the whole pool while it is partly collected), and its labels. Imported
    memories (a condition's `memory = EXPORT`) cost nothing."""
    built = {ns: r for ns, r in exp.recipes.items() if r.built}
    pairs = {ns: len(exp.pairs(r, stored).pairs) for ns, r in built.items()}
    if not stored:
        pairs = dict.fromkeys(built, len(exp.train_tasks))
        basis = "upper bound: a pair per training task, none asked of the cache"
    elif train.done < train.jobs:  # scale the pairs found so far to the whole pool
        pairs = {ns: round(n * train.jobs / max(train.done, 1)) for ns, n in pairs.items()}
        basis = f"pairs of {len(stored)} trajectories, scaled"
    else:
        basis = "pairs of the stored trajectories"
    total, records = sum(pairs.values()), exp.records_stored(list(built))
    if exp.memory_built() and exp.gateway.cache is not None:
        return PhaseEstimate(total, total, 0, 0, 0, "built: the cache answers it again")
    left = max(0, total - records) / max(total, 1)  # pairs with a record are skipped
    distillers = {r.distiller for r in built.values()}
    for ns, recipe in built.items():
        tokens[recipe.distiller] += pairs[ns] * left * exp.config.memory.reply_tokens
    for distiller in distillers:
        tokens[distiller] += label_calls * len(exp.train_tasks) * LABEL_TOKENS
    distilled = round(total * left)
    labels = label_calls * len(exp.train_tasks) * len(distillers)
    return PhaseEstimate(
        total,
        records,
        distilled + labels,
        distilled * exp.config.memory.reply_tokens + labels * LABEL_TOKENS,
        # a request is at most prompt_chars characters, about a quarter as many tokens
        distilled * exp.config.memory.prompt_chars // 4,
        basis + "; replies at most reply_tokens",
    )


def _decided_gate(exp: Experiment) -> Gate | None:
    """The gate's decisions once the dev phase has made them, where the plan has vanilla
    jobs for withheld jobs to repeat and a call cache to repeat them from; else None."""
    if exp.gateway.cache is None or not exp.memory_built():
        return None
    if not any(c.kind == "vanilla" for c in exp.conditions):
        return None
    with Memory.open(exp.memory_path()) as memory:
        try:
            return exp.load_gate(memory)
        except GateError:
            return None


def _stored_keys(folder: Path) -> set[tuple[str, str, str, int]]:
    """The keys stored in `folder` (one SQL query; no trajectory is parsed)."""
    store = TrajectoryStore.if_present(folder)
    return store.keys() if store is not None else set()


def _stored(folder: Path) -> list[Trajectory]:
    """The trajectories stored in `folder` (a dry run must not create a store)."""
    store = TrajectoryStore.if_present(folder)
    return list(store) if store is not None else []
