"""Run an experiment: training trajectories -> memories -> evaluation of every condition.

Layout of the output folder (everything resumable; a second run skips what is stored):

    plan.json                   the resolved experiment, conditions, benchmark -> task ids
    train/trajectories.sqlite   training trajectories (condition "vanilla", plus the
                                "self-sample" ones self-contrast needs)
    memory.sqlite               every memory, one namespace per MemoryRecipe (an imported
                                export: its own namespace)
    dev/trajectories.sqlite     with [dev]: development trajectories (vanilla and each gated
                                condition); gate.json: the utility gate's decisions
    eval/trajectories.sqlite    one trajectory per (task, model, condition)
    results.jsonl               one row per (task, model, condition): the per-task table
    memories/NAMESPACE.jsonl    each memory, exported
    build_summary.json          pairing and distillation counters per memory
    parts.jsonl                 one line per invocation: when, how long, what it computed
                                (experiment/parts.py)

Memory is built from the training tasks only; evaluation tasks are never collected for it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memcollab.agent import Agent, fleet_agent
from memcollab.atomic import write_json
from memcollab.collect import CollectEvent, Job, TrajectoryStore, run_jobs
from memcollab.errors import UserError
from memcollab.experiment.conditions import Condition, MemoryRecipe, make_condition
from memcollab.experiment.config import ExperimentConfig, excluded_task_ids
from memcollab.experiment.estimate import ModelSpeed, cache_timings, model_speed
from memcollab.experiment.gate import (
    DevPhase,
    Gate,
    check_dev_settings,
    load_dev_sets,
)
from memcollab.experiment.parts import (
    PhaseLabels,
    append_part,
    phase_entry,
    start_part,
    write_label_stats,
)
from memcollab.experiment.planning import PHASES, Phase, PhaseEstimate, estimate_plan
from memcollab.experiment.results import write_results
from memcollab.llm.base import Decoding
from memcollab.llm.cache import Gateway
from memcollab.llm.fleet import Fleet
from memcollab.memory.api import Memory
from memcollab.memory.build import BuildEvent
from memcollab.memory.distill import Distiller
from memcollab.memory.guidance import Labeller, LabelLike
from memcollab.memory.labeller import CountingLabeller, check_trained_data, make_labeller
from memcollab.memory.pairs import SAMPLE_CONDITION, PairingResult, PairingRule
from memcollab.memory.record import MemoryRecord
from memcollab.memory.retrieve import Mode, Retriever
from memcollab.tasks.datasets import load_task_specs
from memcollab.tasks.task import Task
from memcollab.trajectory import Trajectory


@dataclass(frozen=True)
class ProgressEvent:
    """Progress of a run: a phase starts (with its size), or one unit of it finishes."""

    phase: Phase
    total: int | None = None  # set when the phase starts
    model: str | None = None
    correct: bool | None = None
    skipped: bool = False
    detail: str = ""


@dataclass
class FleetInfo:
    """The fleet as conditions see it (names and strengths)."""

    fleet: Fleet
    models: list[str]

    def names(self) -> list[str]:
        return list(self.models)

    def strength(self, name: str) -> int:
        return self.fleet.spec(name).strength


class _Context:
    """The evaluation context conditions use: labels, retrievers, records (thread-safe)."""

    def __init__(
        self,
        memory: Memory,
        classifiers: Mapping[str, Labeller],
        seed: int,
        by_kind: Mapping[str, Mapping[str, Labeller]] | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.memory = memory
        self.classifiers = classifiers  # the [memory] labeller, per evaluated model
        self.by_kind = by_kind or {}  # a condition's own labeller: kind -> model -> labeller
        self.seed = seed
        self.gate = gate
        self._records: dict[tuple[str, str], list[MemoryRecord]] = {}
        self._lock = threading.Lock()

    def label(self, model: str, task: Task, labeller: str | None = None) -> LabelLike:
        if labeller is not None and labeller in self.by_kind:
            return self.by_kind[labeller][model].classify(task)
        return self.classifiers[model].classify(task)

    def retriever(self, namespace: str, p: int, mode: Mode, participant_filter: bool) -> Retriever:
        return self.memory.retriever(
            namespace,
            p=p,
            strategy=mode,
            participant_filter=participant_filter,
            seed=self.seed,
            count_usage=False,
        )

    def records(self, namespace: str, domain: str) -> list[MemoryRecord]:
        key = (namespace, domain)
        with self._lock:
            if key not in self._records:
                self._records[key] = self.memory.list(namespace, domain=domain)
            return self._records[key]


class Experiment:
    """One experiment file, ready to plan and run against a gateway."""

    def __init__(
        self, config: ExperimentConfig, gateway: Gateway, fleet: Fleet | None = None
    ) -> None:
        self.config = config
        self.gateway = gateway
        self.fleet = fleet or Fleet.load(config.fleet)
        self.info = FleetInfo(self.fleet, self.fleet.names())
        self.eval_models = list(config.eval_models or self.info.models)
        for name in self.eval_models:
            self.fleet.spec(name)  # an unknown name fails here, naming the known ones
        self.out = Path(config.out)
        self.conditions: list[Condition] = [
            make_condition(name, config.condition.get(name)) for name in config.conditions
        ]
        self.train_tasks = load_task_specs(config.train.tasks, config.data_dir, config.seed)
        self.eval_sets: dict[str, list[Task]] = {
            bench: load_task_specs([spec], config.data_dir, config.seed)
            for bench, spec in config.eval.items()
        }
        self.eval_excluded: dict[str, int] = {}  # [eval] exclude: tasks left out per benchmark
        if config.eval_exclude:
            left_out = excluded_task_ids(config.eval_exclude)
            for bench, tasks in self.eval_sets.items():
                kept = [t for t in tasks if t.id not in left_out]
                self.eval_sets[bench], self.eval_excluded[bench] = kept, len(tasks) - len(kept)
        self.recipes: dict[str, MemoryRecipe] = {}
        for condition in self.conditions:
            for model in self.eval_models:
                for recipe in condition.memories(model, self.info):
                    self.recipes.setdefault(recipe.namespace, recipe)
        self._check()
        self._agents: dict[tuple[str, float | None], Agent] = {}
        self.dev: DevPhase | None = None
        if config.dev is not None:
            check_dev_settings(
                config.dev, self.conditions, self.eval_models, self.info, config.source
            )
            imported = [r.source for r in self.recipes.values() if r.source is not None]
            sets = load_dev_sets(
                config.dev,
                config.data_dir,
                config.seed,
                self.train_tasks,
                imported,
                self.eval_sets,
                config.source,
            )
            self.dev = DevPhase(self, config.dev, sets)

    def _check(self) -> None:
        train_ids = {t.id for t in self.train_tasks}
        train_texts = {" ".join(t.prompt.split()) for t in self.train_tasks}
        if any(r.built for r in self.recipes.values()) and not self.train_tasks:
            raise UserError(
                f"{self.config.source}: conditions with memory need [train] tasks",
                "add tasks = [...] under [train]",
            )
        for bench, tasks in self.eval_sets.items():
            if not tasks:
                raise UserError(f"{self.config.source}: benchmark {bench!r} selects no task")
            leaked = [
                t.id
                for t in tasks
                if t.id in train_ids or " ".join(t.prompt.split()) in train_texts
            ]
            if leaked:
                raise UserError(
                    f"{self.config.source}: evaluation task {leaked[0]} of {bench!r} is also a"
                    f" training task ({len(leaked)} in all)",
                    "evaluate on held-out splits only",
                )

    # -- paths -----------------------------------------------------------------------------
    @property
    def train_store(self) -> TrajectoryStore:
        return TrajectoryStore.in_dir(self.out / "train")

    @property
    def eval_store(self) -> TrajectoryStore:
        return TrajectoryStore.in_dir(self.out / "eval")

    def memory_path(self) -> Path:
        return self.out / "memory.sqlite"

    # -- jobs ------------------------------------------------------------------------------
    def agent(self, model: str, temperature: float | None = None) -> Agent:
        key = (model, temperature)
        if key not in self._agents:
            self._agents[key] = fleet_agent(
                self.fleet,
                self.gateway,
                model,
                max_turns=self.config.agent.max_turns,
                max_tokens=self.config.agent.max_tokens,
                temperature=temperature,
                repair=self.config.agent.repair,
            )
        return self._agents[key]

    def train_jobs(self) -> list[Job]:
        """Vanilla training trajectories of every model, then self-contrast samples."""
        jobs: list[Job] = []
        if any(r.built and r.pairing != "self_contrast" for r in self.recipes.values()):
            jobs += [Job(self.agent(m), t) for t in self.train_tasks for m in self.info.models]
        for recipe in self.recipes.values():
            if recipe.pairing == "self_contrast" and recipe.model is not None:
                agent = self.agent(recipe.model, recipe.temperature)
                jobs += [
                    Job(agent, t, SAMPLE_CONDITION, sample_index=i)
                    for t in self.train_tasks
                    for i in range(recipe.samples)
                ]
        return _dedupe(jobs)

    def eval_jobs(self, ctx: _Context | None) -> list[Job]:
        """Every (benchmark task, condition, model), task-major so partial runs pair up,
        and the benchmarks interleaved (task 1 of each, then task 2, ...) so a partial
        run covers every benchmark."""
        jobs: list[Job] = []
        sets = list(self.eval_sets.values())
        for i in range(max((len(ts) for ts in sets), default=0)):
            for task in [ts[i] for ts in sets if i < len(ts)]:
                for condition in self.conditions:
                    for model in self.eval_models:
                        guide = None
                        if ctx is not None and condition.kind != "vanilla":
                            guide = _guide(condition, task, model, self.info, ctx)
                        jobs.append(Job(self.agent(model), task, condition.name, guide=guide))
        return jobs

    # -- planning --------------------------------------------------------------------------
    def estimate(self) -> dict[Phase, PhaseEstimate]:
        """Jobs, model calls, tokens and wall time per phase, before spending any
        (experiment/planning.py)."""
        return estimate_plan(self)

    def model_speeds(self) -> dict[str, ModelSpeed | None]:
        """Each fleet model's speed for the time estimate (experiment/estimate.py)."""
        timings = cache_timings(self.gateway)
        return {m: model_speed(self.fleet.model(m), timings) for m in self.info.models}

    def memory_built(self) -> bool:
        """Whether build_summary.json lists every memory (the memory phase has finished)."""
        built = self.out / "build_summary.json"
        return (
            bool(self.recipes)
            and built.is_file()
            and set(self.recipes) <= set(json.loads(built.read_text()))
        )

    def condition(self, name: str) -> Condition:
        """The condition called `name` (vanilla, the dev phase's baseline, even if unlisted)."""
        if name == "vanilla":
            return make_condition("vanilla")
        return next(c for c in self.conditions if c.name == name)

    def records_stored(self, namespaces: Sequence[str] | None = None) -> int:
        """Records in the run's memory, in `namespaces` (default: every recipe's)."""
        if not self.memory_path().exists():
            return 0
        with Memory.open(self.memory_path()) as mem:
            # stats() counts in SQL; records() would parse every record just to count.
            return sum(mem.stats(ns)["records"] for ns in (namespaces or self.recipes))

    def plan_json(self) -> dict[str, Any]:
        """The resolved plan (written to plan.json; the report reads it)."""
        return {
            "name": self.config.name,
            "config": self.config.resolved_json(),
            "models": self.eval_models,
            "fleet": self.info.models,
            "strengths": {m: self.info.strength(m) for m in self.info.models},
            "conditions": {c.name: c.describe() for c in self.conditions},
            "memories": {ns: r.fields() for ns, r in self.recipes.items()},
            "train_tasks": [t.id for t in self.train_tasks],
            "benchmarks": {b: [t.id for t in ts] for b, ts in self.eval_sets.items()},
            "domains": {b: ts[0].domain for b, ts in self.eval_sets.items()},
            **({"dev": self.dev.plan()} if self.dev is not None else {}),
            **({"eval_excluded": self.eval_excluded} if self.config.eval_exclude else {}),
        }

    # -- running ---------------------------------------------------------------------------
    def _call_counts(self) -> tuple[int, int]:
        """(model calls, cache hits) so far in this process, over every model."""
        stats = self.gateway.stats().values()
        return sum(s.calls for s in stats), sum(s.cache_hits for s in stats)

    def _phase_line(
        self,
        computed: int,
        began: float,
        calls: tuple[int, int],
        labels: PhaseLabels,
        ended: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """One phase's entry in parts.jsonl (experiment/parts.py)."""
        return phase_entry(computed, began, calls, self._call_counts(), ended, labels.counters())

    def run(
        self,
        on_event: Callable[[ProgressEvent], None] | None = None,
        *,
        phases: Sequence[Phase] = PHASES,
        redo: bool = False,
    ) -> dict[str, Any]:
        """Run the phases in order; returns what this invocation computed and how long.

        Per phase: `computed` (new trajectories, or new memory records), `seconds`,
        `model_calls` (calls a model answered) and `replayed_calls` (calls answered from the
        call cache: a trajectory rebuilt from replayed calls counts as computed, these tell
        the two apart); a phase that was stopped (KeyboardInterrupt, as SIGTERM becomes) is
        marked `interrupted`, one that raised anything else `failed` (the error's type and
        first line), so a refused or crashed part never reads as a clean stop."""
        emit = on_event or (lambda event: None)
        if not redo:
            self._check_agent_unchanged()
        self._check_labeller_unchanged()
        self._check_labeller_data()
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "plan.json", self.plan_json())
        part = start_part()
        phase, began, before, calls = None, time.perf_counter(), 0, (0, 0)
        labels = PhaseLabels()  # a dev or eval phase's labellers' counters, for its line
        ended: dict[str, Any] = {"interrupted": True}
        try:
            for phase in PHASES:
                labels = PhaseLabels()
                if phase not in phases or (phase == "dev" and self.dev is None):
                    continue
                began, before = time.perf_counter(), self._stored_count(phase)
                calls = self._call_counts()
                done = getattr(self, f"_run_{phase}")(emit, redo, labels)
                part["phases"][phase] = self._phase_line(done, began, calls, labels)
            part["finished"] = True
            return part
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            first = (str(exc).splitlines() or [""])[0][:300]
            ended = {"failed": f"{type(exc).__name__}: {first}"}
            raise
        finally:
            if not part["finished"] and phase is not None and phase not in part["phases"]:
                # Stopped or failed mid-phase: what this part added is what the stores gained.
                added = max(0, self._stored_count(phase) - before)
                part["phases"][phase] = self._phase_line(added, began, calls, labels, ended)
            append_part(self.out, part)
            for labelled in ("dev", "eval"):
                if "labels" in part["phases"].get(labelled, {}):
                    write_label_stats(self.out, labelled)

    def _check_agent_unchanged(self) -> None:
        """Refuse new [agent] settings over stored trajectories: their keys do not hold the
        settings, so a changed budget would silently mix two agents in one run."""
        plan = self.out / "plan.json"
        stored = _stored_len(self.out / "train") or _stored_len(self.out / "eval")
        if not plan.is_file() or not stored:
            return
        before = json.loads(plan.read_text()).get("config", {}).get("agent")
        now = self.config.resolved_json()["agent"]
        if before is not None and before != now:
            raise UserError(
                f"[agent] differs from the run stored in {self.out}: {before} -> {now}",
                "restore it, choose a new `out` folder, or pass --redo to recompute everything",
            )

    def _check_labeller_unchanged(self) -> None:
        """Refuse another [memory] labeller over stored memory or evaluation results: record
        ids and trajectory keys do not hold the labeller, so the two would mix (even with
        --redo, which keeps stored records)."""
        plan = self.out / "plan.json"
        if not plan.is_file() or not (self.records_stored() or _stored_len(self.out / "eval")):
            return
        stored = json.loads(plan.read_text())
        memory = stored.get("config", {}).get("memory", {})
        before = memory.get("labeller", "llm")
        if before != self.config.memory.labeller:
            raise UserError(
                f"[memory] labeller differs from the run stored in {self.out}: {before} ->"
                f" {self.config.memory.labeller}",
                "restore it, or choose a new `out` folder",
            )
        if not _stored_len(self.out / "eval") and not _stored_len(self.out / "dev"):
            return  # a condition's own labeller labels queries only
        for condition in self.conditions:
            old = stored.get("conditions", {}).get(condition.name, {}).get("labeller")
            new = condition.describe().get("labeller")
            if condition.name in stored.get("conditions", {}) and old != new:
                raise UserError(
                    f"the labeller of condition {condition.name} differs from the run stored"
                    f" in {self.out}: {old or before} -> {new or before}",
                    "restore it, or choose a new `out` folder",
                )

    def labeller(self, model: str, kind: str | None = None) -> CountingLabeller:
        """Who labels for `model` (records: the distiller; queries: the evaluated model):
        the model's own LLM classifier, or with `labeller = "trained"` the one trained
        labeller, whoever asks; `kind` overrides the [memory] labeller."""
        if (kind or self.config.memory.labeller) == "trained":
            return make_labeller(
                "trained", data_dir=self.config.data_dir, domains=self._task_domains()
            )
        return make_labeller("llm", client=self.gateway.bind(self.fleet.model(model)))

    def _task_domains(self) -> set[str]:
        """The domains of every task the run labels (train, dev, eval): the trained
        labeller fits only these (a HumanEval-only run needs no data directory)."""
        tasks = [*self.train_tasks, *(t for ts in self.eval_sets.values() for t in ts)]
        tasks += self.dev.sets.tasks() if self.dev is not None else []
        return {t.domain for t in tasks}

    def _check_labeller_data(self) -> None:
        """Fail before the first phase, not after training, when the trained labeller
        needs train files that the data directory lacks (memory.labeller_data)."""
        kinds = {self.config.memory.labeller} | {
            str(c.describe().get("labeller")) for c in self.conditions
        }
        if "trained" in kinds:
            check_trained_data(self.config.data_dir, self._task_domains())

    def _stored_count(self, phase: Phase) -> int:
        """How many results of `phase` are stored: trajectories, or memory records."""
        if phase == "memory":
            return self.records_stored()
        return _stored_len(self.out / phase)

    def _progress(self, phase: Phase, emit: Callable[[ProgressEvent], None]):  # type: ignore[no-untyped-def]
        def on(event: CollectEvent) -> None:
            emit(ProgressEvent(phase, None, event.model, event.correct, event.skipped))

        return on

    def _run_train(
        self, emit: Callable[[ProgressEvent], None], redo: bool, _labels: PhaseLabels
    ) -> int:
        jobs = self.train_jobs()
        emit(ProgressEvent("train", total=len(jobs)))
        store = self.train_store
        store.put_tasks(self.train_tasks)
        progress = self._progress("train", emit)
        computed, _ = run_jobs(
            jobs, store, redo=redo, workers=self.config.workers, on_event=progress
        )
        store.export_jsonl(self.out / "train" / "trajectories.jsonl")
        return computed

    def _pairing(self, recipe: MemoryRecipe) -> PairingRule:
        return PairingRule(
            recipe.pairing,
            model=recipe.model,
            samples=recipe.samples,
            tie_break=self.config.memory.tie_break,
            floor=recipe.floor,
        )

    def _strengths(self) -> dict[str, int]:
        return {m: self.info.strength(m) for m in self.info.models}

    def pairs(self, recipe: MemoryRecipe, trajectories: list[Trajectory]) -> PairingResult:
        """The contrast pairs `recipe`'s pairing rule draws from `trajectories`."""
        return Memory.pairs(trajectories, self._pairing(recipe), self._strengths())

    def _run_memory(
        self, emit: Callable[[ProgressEvent], None], redo: bool, _labels: PhaseLabels
    ) -> int:
        if not self.recipes:
            emit(ProgressEvent("memory", total=0))
            return 0
        if self.memory_built() and not redo:
            # Finished by an earlier part: building again would add nothing and overwrite
            # build_summary.json with this pass's counts (a merge that merges nothing more).
            emit(ProgressEvent("memory", total=0, detail="built"))
            return 0
        summaries: dict[str, Any] = {}
        added = 0
        with Memory.open(self.memory_path()) as memory:
            for ns, recipe in self.recipes.items():
                if not recipe.built:  # a memory export: imported all or nothing, as it is
                    assert recipe.source is not None
                    counts = memory.import_(recipe.source, namespace=ns)
                    added += counts.added
                    summaries[ns] = {
                        "imported": {"added": counts.added, "present": counts.present},
                        "records": memory.stats(ns)["records"],
                        "recipe": recipe.fields(),
                    }
                    self._export(memory, ns)
        if any(r.built for r in self.recipes.values()):
            added += self._build(emit, summaries)
        else:
            emit(ProgressEvent("memory", total=0))
        write_json(self.out / "build_summary.json", summaries)
        return added

    def _export(self, memory: Memory, namespace: str) -> None:
        export = self.out / "memories" / f"{namespace}.jsonl"
        export.parent.mkdir(parents=True, exist_ok=True)
        memory.export(export, namespace)

    def _build(self, emit: Callable[[ProgressEvent], None], summaries: dict[str, Any]) -> int:
        """Build every memory of training trajectories; their summaries into `summaries`."""
        store = self.train_store
        stored = store.keys()
        missing = [job for job in self.train_jobs() if job.key() not in stored]
        if missing:
            # Pairs of a half-collected task would differ from its final pair, and both
            # would be stored (record ids hash the pair): build only from a full pool.
            raise UserError(
                f"{len(missing)} training trajectories are missing",
                "run the train phase first (or the whole experiment)",
            )
        trajectories = list(store)
        tasks = store.tasks()
        built = {ns: r for ns, r in self.recipes.items() if r.built}
        pairings = {ns: self.pairs(r, trajectories) for ns, r in built.items()}
        emit(ProgressEvent("memory", total=sum(len(p.pairs) for p in pairings.values())))
        added = 0
        classifiers: dict[str, CountingLabeller] = {}
        with Memory.open(self.memory_path()) as memory:
            for ns, recipe in built.items():
                client = self.gateway.bind(self.fleet.model(recipe.distiller))
                if recipe.distiller not in classifiers:
                    classifiers[recipe.distiller] = self.labeller(recipe.distiller)
                classifier = classifiers[recipe.distiller]
                distiller = Distiller(
                    client,
                    max_constraints=self.config.memory.k,
                    max_prompt_chars=self.config.memory.prompt_chars,
                    decoding=Decoding(temperature=0.0, max_tokens=self.config.memory.reply_tokens),
                    screen=self.config.memory.screen,
                )
                summary = memory.build(
                    trajectories,
                    tasks,
                    distiller=distiller,
                    labeller=classifier,
                    pairing=self._pairing(recipe),
                    strengths=self._strengths(),
                    namespace=ns,
                    workers=client.model.concurrency()[1],
                    # The cache answers stored pairs again for free, so the distillation
                    # counts cover every pair however the run was split into parts.
                    recount_existing=self.gateway.cache is not None,
                    merge=self.config.memory.merge,
                    on_event=functools.partial(_emit_build_event, emit, ns),
                )
                added += summary.records_added
                summaries[ns] = {
                    **summary.as_dict(),
                    "records": memory.stats(ns)["records"],
                    # A merge empties the records whose constraints all joined another's.
                    "records_with_constraints": sum(1 for r in memory.list(ns) if r.constraints),
                    "recipe": recipe.fields(),
                    "classifier": classifier.stats(),
                }
                self._export(memory, ns)
        return added

    def _require_built(self) -> None:
        built = self.out / "build_summary.json"
        unbuilt = set(self.recipes) - set(json.loads(built.read_text()) if built.is_file() else {})
        if unbuilt:
            # Evaluating on a half-built memory would silently mix two memories in one run.
            raise UserError(
                f"memory {', '.join(sorted(unbuilt))} is not fully built",
                "run the memory phase first (or the whole experiment)",
            )

    def _classifiers(self, kind: str) -> dict[str, CountingLabeller]:
        """Labeller `kind` per evaluated model (the trained one: one for all)."""
        if kind == "trained":  # one labeller for every model (and the same as the records')
            return dict.fromkeys(self.eval_models, self.labeller(self.eval_models[0], kind))
        return {m: self.labeller(m, kind) for m in self.eval_models}

    def _context(self, memory: Memory, gate: Gate | None = None) -> _Context:
        """The evaluation context: the [memory] labeller, the conditions' own, the gate."""
        kinds = {str(c.describe().get("labeller")) for c in self.conditions} - {"None"}
        by_kind = {k: self._classifiers(k) for k in sorted(kinds)}
        default = self.config.memory.labeller
        classifiers = by_kind.get(default) or self._classifiers(default)
        return _Context(memory, classifiers, self.config.seed, by_kind, gate)

    def _label_counters(self, ctx: _Context) -> dict[str, Any]:
        """The labellers' counters of this process: the [memory] labeller's ("trained", or per
        model), plus a condition's own under "trained" or "llm:MODEL"."""

        def stats(kind: str, by_model: Mapping[str, Labeller]) -> dict[str, Any]:
            labellers: dict[str, Any] = dict(by_model)
            if kind == "trained":
                return {"trained": labellers[self.eval_models[0]].stats()}
            prefix = "" if kind == self.config.memory.labeller else "llm:"
            return {prefix + m: c.stats() for m, c in labellers.items()}

        out = stats(self.config.memory.labeller, ctx.classifiers)
        for kind, by_model in ctx.by_kind.items():
            out |= stats(kind, by_model)
        return out

    def _run_dev(
        self, emit: Callable[[ProgressEvent], None], redo: bool, labels: PhaseLabels
    ) -> int:
        assert self.dev is not None
        self._require_built()
        with _open_for_jobs(self.memory_path()) as memory:
            ctx = self._context(memory)
            emit(ProgressEvent("dev", total=len(self.dev.jobs(None))))
            labels.follow(lambda: self._label_counters(ctx))
            computed = self.dev.run(ctx, memory, self._progress("dev", emit), redo)
        return computed

    def load_gate(self, memory: Memory) -> Gate | None:
        """The gate's decisions stored with `memory` (None without [dev]); a GateError
        where the dev phase has not decided them."""
        if self.dev is None or self.config.dev is None:
            return None
        return Gate.load(
            memory,
            self.config.dev,
            self.conditions,
            self.eval_models,
            self.info,
            self.dev.sets.digest(),
        )

    def _run_eval(
        self, emit: Callable[[ProgressEvent], None], redo: bool, labels: PhaseLabels
    ) -> int:
        self._require_built()
        with _open_for_jobs(self.memory_path()) as memory:
            ctx = self._context(memory, self.load_gate(memory))
            labels.follow(lambda: self._label_counters(ctx))
            jobs = self.eval_jobs(ctx)
            emit(ProgressEvent("eval", total=len(jobs)))
            store = self.eval_store
            store.put_tasks([t for ts in self.eval_sets.values() for t in ts])
            computed, _ = run_jobs(
                jobs,
                store,
                redo=redo,
                workers=self.config.workers,
                on_event=self._progress("eval", emit),
            )
        write_results(self.out, self.plan_json(), store)
        return computed


def _emit_build_event(
    emit: Callable[[ProgressEvent], None], namespace: str, event: BuildEvent
) -> None:
    emit(
        ProgressEvent(
            "memory", skipped=event.status == "exists", detail=f"{namespace}: {event.status}"
        )
    )


def _guide(condition: Condition, task: Task, model: str, info: FleetInfo, ctx: _Context):  # type: ignore[no-untyped-def]
    if ctx.gate is not None and ctx.gate.governs(condition.name):
        return ctx.gate.guide(condition, task, model, info, ctx)
    return lambda: condition.guide(task, model, info, ctx)


@contextlib.contextmanager
def _open_for_jobs(path: Path) -> Iterator[Memory]:
    """The memory for a phase's jobs, closed when they are done. A stopped phase leaves it
    open: `run_jobs` does not wait for the jobs in flight, which still read it, and closing
    a SQLite connection under a running query crashed the process (it ends soon anyway)."""
    memory = Memory.open(path)
    yield memory  # not in try/finally: an exception must not close it
    memory.close()


def _stored_len(folder: Path) -> int:
    """How many trajectories `folder` stores (one COUNT query; nothing is loaded)."""
    store = TrajectoryStore.if_present(folder)
    return len(store) if store is not None else 0


def _dedupe(jobs: list[Job]) -> list[Job]:
    seen: set[tuple[str, str, str, int]] = set()
    out = []
    for job in jobs:
        if job.key() not in seen:
            seen.add(job.key())
            out.append(job)
    return out
