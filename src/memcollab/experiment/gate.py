"""The development phase and the per-model utility gate (opt-in: the [dev] table).

Between the memory and the evaluation phase, every evaluated model solves development
tasks (`[dev] tasks`: benchmark -> dataset spec; tasks of the [train] pool, and source
tasks of an imported memory, are left out and counted) without memory ("vanilla") and
with each gated condition's memory (`[dev] gate`). A rule fixed in advance (`[dev] rule`,
a name of `GATE_RULES`) then decides, per (condition, model, domain), whether that
condition serves memory at evaluation. The decision goes to gate.json in the run folder
and, as the note `gate:CONDITION`, into the condition's memory namespace (exported and
imported with it). At evaluation a gated condition hands a (model, domain) the gate said
no to nothing, and its trajectory's retrieval note says `"gate": "withheld"`.
`[dev] follow` lets a condition (a placebo) serve memory exactly where a gated one does.

Development trajectories are stored in dev/trajectories.sqlite, keyed like evaluation
ones, so the phase resumes and computes nothing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scipy.stats import binomtest

from memcollab.atomic import write_json
from memcollab.collect import Job, TrajectoryStore, run_jobs
from memcollab.errors import UserError
from memcollab.experiment.conditions import Condition, EvalContext, FleetView, Note, Vanilla
from memcollab.experiment.config import DevSettings
from memcollab.memory.api import Memory
from memcollab.memory.gate_note import NOTE_PREFIX
from memcollab.memory.guidance import Guidance
from memcollab.memory.record import task_hash
from memcollab.memory.store import read_jsonl
from memcollab.tasks.datasets import load_task_specs
from memcollab.tasks.task import Task

if TYPE_CHECKING:
    from memcollab.experiment.runner import Experiment

BASELINE = "vanilla"
GATE_FILE = "gate.json"


class GateError(UserError):
    """[dev] settings that cannot be used, or an evaluation the gate has not decided."""


# -- rules ---------------------------------------------------------------------------------
Decide = Callable[[Sequence[bool], Sequence[bool]], bool]


@dataclass(frozen=True)
class GateRule:
    """A rule fixed in advance: given the paired dev verdicts without and with memory (same
    tasks, same order), whether the (model, domain) gets memory."""

    name: str
    description: str
    decide: Decide


GATE_RULES: dict[str, GateRule] = {}


def register_gate_rule(name: str, description: str) -> Callable[[Decide], Decide]:
    """Register a gate rule under `name` (usable as `[dev] rule = "name"`)."""

    def wrap(decide: Decide) -> Decide:
        GATE_RULES[name] = GateRule(name, description, decide)
        return decide

    return wrap


def _discordant(without: Sequence[bool], with_memory: Sequence[bool]) -> tuple[int, int]:
    """(only without memory right, only with memory right)."""
    pairs = list(zip(without, with_memory, strict=True))
    return sum(a and not b for a, b in pairs), sum(b and not a for a, b in pairs)


@register_gate_rule("non_negative", "memory iff dev accuracy with memory >= without")
def _non_negative(without: Sequence[bool], with_memory: Sequence[bool]) -> bool:
    only_without, only_with = _discordant(without, with_memory)
    return only_with >= only_without  # paired: the same as comparing the two accuracies


@register_gate_rule("positive", "memory iff dev accuracy with memory > without")
def _positive(without: Sequence[bool], with_memory: Sequence[bool]) -> bool:
    only_without, only_with = _discordant(without, with_memory)
    return only_with > only_without


HARM_ALPHA = 0.05


@register_gate_rule(
    "no_significant_harm",
    "memory unless a one-sided exact sign test on the discordant tasks says memory hurts"
    f" (p < {HARM_ALPHA})",
)
def _no_significant_harm(without: Sequence[bool], with_memory: Sequence[bool]) -> bool:
    only_without, only_with = _discordant(without, with_memory)
    if only_without + only_with == 0:
        return True
    p = binomtest(only_without, only_without + only_with, 0.5, alternative="greater").pvalue
    return bool(p >= HARM_ALPHA)


# -- the development sets ------------------------------------------------------------------
def _text(task: Task) -> str:
    return " ".join(task.prompt.split())


@dataclass
class DevSets:
    """The development tasks per benchmark, and how many were left out as pool tasks."""

    sets: dict[str, list[Task]]
    excluded: dict[str, int]

    def tasks(self) -> list[Task]:
        return [t for ts in self.sets.values() for t in ts]

    def digest(self) -> str:
        """The SHA-256 of the development task ids (the decision holds for these only)."""
        ids = "\n".join(sorted(t.id for t in self.tasks()))
        return hashlib.sha256(ids.encode("utf-8")).hexdigest()


def load_dev_sets(
    settings: DevSettings,
    data_dir: Path | None,
    seed: int,
    pool: Sequence[Task],
    imported: Sequence[str],
    eval_sets: Mapping[str, Sequence[Task]],
    source: str,
) -> DevSets:
    """The [dev] tasks less the memory pool (the [train] tasks and the source tasks of the
    imported exports, by id or text); a development task that is an evaluation task, a
    benchmark left with no task, or an evaluated domain without development tasks is an
    error."""
    pool_ids = {t.id for t in pool}
    pool_hashes = {task_hash(t.prompt) for t in pool}
    for path in imported:
        pool_hashes |= {r.task_hash for r in read_jsonl(path)}
    held_out = {t.id for ts in eval_sets.values() for t in ts}
    held_out_texts = {_text(t) for ts in eval_sets.values() for t in ts}
    sets: dict[str, list[Task]] = {}
    excluded: dict[str, int] = {}
    for bench, spec in settings.tasks.items():
        tasks = load_task_specs([spec], data_dir, seed)
        leaked = [t.id for t in tasks if t.id in held_out or _text(t) in held_out_texts]
        if leaked:
            raise GateError(
                f"{source}: development task {leaked[0]} of [dev] {bench!r} is also an"
                f" evaluation task ({len(leaked)} in all)",
                "develop on training or validation splits only",
            )
        kept = [t for t in tasks if t.id not in pool_ids and task_hash(t.prompt) not in pool_hashes]
        if not kept:
            raise GateError(
                f"{source}: [dev] {bench!r} ({spec}) selects no task outside the memory pool"
            )
        sets[bench], excluded[bench] = kept, len(tasks) - len(kept)
    evaluated = {t.domain for ts in eval_sets.values() for t in ts}
    missing = sorted(evaluated - {t.domain for ts in sets.values() for t in ts})
    if missing:
        raise GateError(
            f"{source}: [dev] tasks hold no task of domain {', '.join(missing)}, which [eval]"
            " evaluates",
            "add a development slice of each evaluated domain to [dev.tasks]",
        )
    return DevSets(sets, excluded)


def check_dev_settings(
    settings: DevSettings,
    conditions: Sequence[Condition],
    models: Sequence[str],
    fleet: FleetView,
    source: str,
) -> None:
    """One clear error for [dev] settings that cannot be used (checked before any task is
    loaded)."""
    where = f"{source}: [dev]"
    if settings.rule not in GATE_RULES:
        raise GateError(
            f"{where} rule {settings.rule!r} is not a gate rule",
            f"use one of: {', '.join(GATE_RULES)}",
        )
    by_name = {c.name: c for c in conditions}
    if len(set(settings.gate)) != len(settings.gate):
        raise GateError(f"{where} gate lists a condition twice")
    for name in [*settings.gate, *settings.follow]:
        condition = by_name.get(name)
        if condition is None:
            raise GateError(
                f"{where} names condition {name!r}, which is not in `conditions`",
                f"conditions: {', '.join(by_name)}",
            )
        recipes = [condition.memories(m, fleet) for m in models]
        if condition.kind == BASELINE or any(len(r) != 1 for r in recipes):
            raise GateError(
                f"{where} condition {name!r} does not serve one memory, so there is nothing"
                " to gate",
                "gate conditions that retrieve from a memory (memcollab, placebo, own, ...)",
            )
    for follower, leader in settings.follow.items():
        if follower in settings.gate or leader not in settings.gate:
            raise GateError(
                f"{where} follow: {follower!r} must be an ungated condition and {leader!r} a"
                " gated one",
                'follow = { placebo = "memcollab" } with memcollab in gate',
            )


# -- the phase -----------------------------------------------------------------------------
class DevPhase:
    """The development phase of one experiment: its jobs, its run and the decisions."""

    def __init__(self, experiment: Experiment, settings: DevSettings, sets: DevSets) -> None:
        self.experiment = experiment
        self.settings = settings
        self.sets = sets
        self.rule = GATE_RULES[settings.rule]
        by_name = {c.name: c for c in experiment.conditions}
        self.gated = [by_name[name] for name in settings.gate]

    @property
    def folder(self) -> Path:
        return self.experiment.out / "dev"

    def plan(self) -> dict[str, Any]:
        """The development part of plan.json."""
        return {
            "benchmarks": {b: [t.id for t in ts] for b, ts in self.sets.sets.items()},
            "excluded_pool_tasks": dict(self.sets.excluded),
            "gate": list(self.settings.gate),
            "rule": self.rule.name,
            "follow": dict(self.settings.follow),
        }

    def jobs(self, ctx: EvalContext | None) -> list[Job]:
        """Every (development task, vanilla or gated condition, model), task-major, the
        benchmarks interleaved (as evaluation jobs): memory is always served here."""
        exp = self.experiment
        baseline = Vanilla(name=BASELINE)
        jobs: list[Job] = []
        sets = list(self.sets.sets.values())
        for i in range(max(len(ts) for ts in sets)):
            for task in [ts[i] for ts in sets if i < len(ts)]:
                for condition in [baseline, *self.gated]:
                    for model in exp.eval_models:
                        guide = None
                        if ctx is not None and condition is not baseline:
                            guide = _served(condition, task, model, exp.info, ctx)
                        jobs.append(Job(exp.agent(model), task, condition.name, guide=guide))
        return jobs

    def run(self, ctx: EvalContext, memory: Memory, on_event: Any, redo: bool) -> int:
        """Collect the development trajectories, decide, write gate.json and store the
        decisions with the memory; returns the trajectories computed."""
        store = TrajectoryStore.in_dir(self.folder)
        store.put_tasks(self.sets.tasks())
        jobs = self.jobs(ctx)
        computed, _ = run_jobs(
            jobs, store, redo=redo, workers=self.experiment.config.workers, on_event=on_event
        )
        store.export_jsonl(self.folder / "trajectories.jsonl")
        keys = {job.key() for job in jobs}
        gate = self.decide({t.key(): t.correct for t in store if t.key() in keys})
        write_json(self.experiment.out / GATE_FILE, gate)
        self.store(memory, gate)
        return computed

    def decide(self, verdicts: Mapping[tuple[str, str, str, int], bool]) -> dict[str, Any]:
        """gate.json: per gated condition, model and domain, the paired dev accuracies and
        the rule's verdict (`memory`)."""
        exp = self.experiment
        decisions: dict[str, Any] = {}
        for condition in self.gated:
            per_model: dict[str, Any] = {}
            for model in exp.eval_models:
                per_domain: dict[str, Any] = {}
                for domain in sorted({t.domain for t in self.sets.tasks()}):
                    tasks = [t for t in self.sets.tasks() if t.domain == domain]
                    without = [verdicts[(t.id, model, BASELINE, 0)] for t in tasks]
                    with_memory = [verdicts[(t.id, model, condition.name, 0)] for t in tasks]
                    only_without, only_with = _discordant(without, with_memory)
                    per_domain[domain] = {
                        "n": len(tasks),
                        "accuracy_without": round(sum(without) / len(tasks), 4),
                        "accuracy_with": round(sum(with_memory) / len(tasks), 4),
                        "only_without_right": only_without,
                        "only_with_right": only_with,
                        "memory": self.rule.decide(without, with_memory),
                    }
                per_model[model] = per_domain
            namespaces = {m: self._namespace(condition, m) for m in exp.eval_models}
            decisions[condition.name] = {"namespaces": namespaces, "decisions": per_model}
        return {
            "rule": self.rule.name,
            "rule_description": self.rule.description,
            "dev_tasks": {b: len(ts) for b, ts in self.sets.sets.items()},
            "excluded_pool_tasks": dict(self.sets.excluded),
            "dev_tasks_sha256": self.sets.digest(),
            "conditions": decisions,
            "follow": dict(self.settings.follow),
        }

    def _namespace(self, condition: Condition, model: str) -> str:
        return condition.memories(model, self.experiment.info)[0].namespace

    def store(self, memory: Memory, gate: Mapping[str, Any]) -> None:
        """Each gated condition's decisions, as a note of the namespace(s) it serves (only
        the models served from that namespace), and the namespace exported again."""
        for name, entry in gate["conditions"].items():
            by_namespace: dict[str, dict[str, Any]] = {}
            for model, namespace in entry["namespaces"].items():
                by_namespace.setdefault(namespace, {})[model] = entry["decisions"][model]
            for namespace, decisions in by_namespace.items():
                memory.set_note(
                    namespace,
                    NOTE_PREFIX + name,
                    {
                        "condition": name,
                        "rule": gate["rule"],
                        "dev_tasks": gate["dev_tasks"],
                        "dev_tasks_sha256": gate["dev_tasks_sha256"],
                        "decisions": decisions,
                    },
                )
                export = self.experiment.out / "memories" / f"{namespace}.jsonl"
                export.parent.mkdir(parents=True, exist_ok=True)
                memory.export(export, namespace)


def _served(condition: Condition, task: Task, model: str, info: FleetView, ctx: EvalContext):  # type: ignore[no-untyped-def]
    return lambda: condition.guide(task, model, info, ctx)


# -- the gate at evaluation ----------------------------------------------------------------
@dataclass
class Gate:
    """The decisions an evaluation applies: (condition, model, domain) -> memory or not;
    a following condition takes its leader's."""

    decisions: dict[tuple[str, str, str], bool]
    follow: dict[str, str]

    def governs(self, condition: str) -> bool:
        return condition in self.follow or any(c == condition for c, _, _ in self.decisions)

    def serves(self, condition: str, model: str, domain: str) -> bool:
        leader = self.follow.get(condition, condition)
        return self.decisions.get((leader, model, domain), True)

    def withholds(self, condition: str, model: str, domain: str) -> bool:
        """Whether this condition's jobs run without memory for (model, domain): then they
        ask the model exactly what the vanilla jobs ask."""
        return self.governs(condition) and not self.serves(condition, model, domain)

    def guide(  # type: ignore[no-untyped-def]
        self, condition: Condition, task: Task, model: str, info: FleetView, ctx: EvalContext
    ):
        """The job's guide: the condition's own where the gate serves memory, else none
        (the note says the gate withheld it)."""
        leader = self.follow.get(condition.name, condition.name)

        def guide() -> tuple[tuple[Guidance, ...], Note | None]:
            if not self.serves(condition.name, model, task.domain):
                namespace = condition.memories(model, info)[0].namespace
                note: Note = {
                    "namespace": namespace,
                    "mode": "gated",
                    "level": None,
                    "record_ids": [],
                    "constraints": 0,
                    "gate": "withheld",
                    "gated_by": leader,
                }
                return (), note
            guidance, served = condition.guide(task, model, info, ctx)
            return guidance, {**(served or {}), "gate": "served", "gated_by": leader}

        return guide

    @classmethod
    def load(
        cls,
        memory: Memory,
        settings: DevSettings,
        conditions: Sequence[Condition],
        models: Sequence[str],
        info: FleetView,
        digest: str,
    ) -> Gate:
        """The decisions stored with the memory; one clear error when the dev phase has not
        decided them (or decided them on other development tasks, or by another rule)."""
        by_name = {c.name: c for c in conditions}
        decisions: dict[tuple[str, str, str], bool] = {}
        for name in settings.gate:
            for model in models:
                namespace = by_name[name].memories(model, info)[0].namespace
                note = memory.note(namespace, NOTE_PREFIX + name)
                stale = note is None or model not in note.get("decisions", {})
                if not stale and note is not None:
                    stale = (
                        note.get("rule") != settings.rule or note.get("dev_tasks_sha256") != digest
                    )
                if stale or note is None:
                    raise GateError(
                        f"the utility gate of {name!r} for {model} is not decided for this"
                        f" [dev] (memory {namespace})",
                        "run the dev phase first (or the whole experiment)",
                    )
                for domain, verdict in note["decisions"][model].items():
                    decisions[(name, model, domain)] = bool(verdict["memory"])
        return cls(decisions, dict(settings.follow))
