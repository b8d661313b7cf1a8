"""Experimental conditions: what memory an agent gets, and how it is retrieved.

Each condition is a small class registered under a kind name. It says which memories it
needs (`MemoryRecipe`: whose trajectories, which pairing, which distiller), and at
evaluation time turns a task into guidance plus a JSON note of where it came from. Add
your own with `@register_condition("my-kind")` on a `Condition` subclass; the experiment
file then lists it by name and sets its fields in `[condition.NAME]`.

Built in: `vanilla`, `own`, `other`, `self-contrast`, `memcollab`, `placebo`; the
retrieval ablations are `memcollab` with other fields, and two name patterns set them for
you: `memcollab-global` (TF-IDF over the whole domain, no category filter) and
`memcollab-pN` (N records retrieved). A `memcollab` (or `placebo`) condition with
`memory = "FILE.jsonl"` serves a committed memory export instead of building one, and any
retrieving condition may set `labeller` (who labels its queries; default: the
experiment's [memory] labeller).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from memcollab.experiment.config import ExperimentConfigError
from memcollab.llm.fleet import strongest
from memcollab.memory.guidance import Guidance, LabelLike
from memcollab.memory.labeller import LABELLER_KINDS
from memcollab.memory.record import MemoryRecord, task_hash
from memcollab.memory.retrieve import STRATEGIES, Mode, Retrieved, Retriever
from memcollab.tasks.task import Task

Note = dict[str, Any]


@dataclass(frozen=True)
class MemoryRecipe:
    """One memory to build: whose training trajectories, paired how, distilled by whom.

    Two conditions that need the same recipe share one memory (same namespace).
    """

    pairing: str  # a registered pairing rule (memory.pairs.PAIRING_RULES)
    distiller: str
    model: str | None = None  # own / self-contrast: whose trajectories
    samples: int = 0  # self-contrast: sampled trajectories per training task
    temperature: float = 0.0
    floor: float = 0.05  # near_miss: accuracy under which a model gives no tau-
    source: str | None = None  # import: the memory export served (nothing is built)
    sha256: str | None = None  # import: the export's SHA-256

    @property
    def namespace(self) -> str:
        if self.pairing == "import" and self.source is not None and self.sha256 is not None:
            # The export's content names the namespace: another file is another memory.
            return f"{Path(self.source).stem}.import-{self.sha256[:12]}"
        if self.pairing == "contrastive":
            return f"memcollab.by.{self.distiller}"
        if self.pairing == "near_miss":
            floor = "" if self.floor == 0.05 else f".floor{self.floor:g}"
            return f"memcollab-near-miss{floor}.by.{self.distiller}"
        kind = "own" if self.pairing == "own" else "self-contrast"
        return f"{kind}.{self.model}.by.{self.distiller}"

    @property
    def built(self) -> bool:
        """Whether the memory phase builds it from training trajectories (not imported)."""
        return self.pairing != "import"

    def fields(self) -> dict[str, Any]:
        """The recipe for plan.json and build_summary.json: fields that do not apply left
        out (the near-miss floor, an import's source), so plans keep their old shape."""
        out = dict(self.__dict__)
        if self.pairing != "near_miss":
            del out["floor"]
        if self.pairing != "import":
            del out["source"], out["sha256"]
        return out


@functools.cache
def file_sha256(path: str) -> str:
    """The SHA-256 of a file (read once per process)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FleetView(Protocol):
    """What conditions need to know about the fleet."""

    def names(self) -> list[str]: ...

    def strength(self, name: str) -> int: ...


class EvalContext(Protocol):
    """What conditions use at evaluation time (the runner provides it)."""

    seed: int

    def label(self, model: str, task: Task, labeller: str | None = None) -> LabelLike:
        """The querying model's (category, subcategory) of the task (memoised), by the
        labeller called `labeller` (default: the experiment's [memory] labeller)."""
        ...

    def retriever(self, namespace: str, p: int, mode: Mode, participant_filter: bool) -> Retriever:
        """A retriever over one memory namespace (shared across tasks)."""
        ...

    def records(self, namespace: str, domain: str) -> list[MemoryRecord]:
        """Every record of a namespace in a domain."""
        ...


def resolve_model(choice: str, fleet: FleetView, me: str, *, what: str) -> str:
    """`self` -> `me`; `strongest` -> the fleet's strongest model; else a fleet name."""
    if choice == "self":
        return me
    if choice == "strongest":
        return strongest(fleet.names(), fleet.strength)
    if choice not in fleet.names():
        raise ExperimentConfigError(
            f"{what}: no fleet model {choice!r}",
            f"use self, strongest or one of: {', '.join(fleet.names())}",
        )
    return choice


@dataclass(frozen=True)
class Condition(ABC):
    """A named way to give (or not give) memory to an agent."""

    name: str
    kind: ClassVar[str] = ""

    def memories(self, model: str, fleet: FleetView) -> list[MemoryRecipe]:
        """The memories this condition needs when `model` is evaluated."""
        return []

    @abstractmethod
    def guide(
        self, task: Task, model: str, fleet: FleetView, ctx: EvalContext
    ) -> tuple[tuple[Guidance, ...], Note | None]:
        """Guidance for `model` on `task`, and a note of where it came from."""

    def describe(self) -> dict[str, Any]:
        """The condition's kind and fields (for plan.json and the report)."""
        return {"kind": self.kind, **dataclasses.asdict(self)}


CONDITION_KINDS: dict[str, type[Condition]] = {}


def register_condition(kind: str) -> Callable[[type[Condition]], type[Condition]]:
    """Register a `Condition` subclass under `kind` (usable by name in experiment files)."""

    def wrap(cls: type[Condition]) -> type[Condition]:
        cls.kind = kind
        CONDITION_KINDS[kind] = cls
        return cls

    return wrap


@register_condition("vanilla")
@dataclass(frozen=True)
class Vanilla(Condition):
    """No memory."""

    def guide(self, task, model, fleet, ctx):  # type: ignore[no-untyped-def]
        return (), None


def _note(namespace: str, got: Retrieved, **extra: Any) -> Note:
    return {
        "namespace": namespace,
        "mode": got.mode,
        "level": got.level,
        "category": got.category,
        "subcategory": got.subcategory,
        "record_ids": list(got.record_ids),
        "constraints": len(got.guidance),
        **extra,
    }


@dataclass(frozen=True)
class _Retrieving(Condition):
    """Retrieval from one memory: task-aware (the querying model classifies the task) or
    global TF-IDF, top p records."""

    p: int = 3
    retrieval: Mode = "task_aware"
    participant_filter: bool = False
    labeller: str | None = None  # who labels queries; None: the experiment's [memory] one

    def __post_init__(self) -> None:
        if self.p < 1:
            raise ExperimentConfigError(f"condition {self.name}: p must be at least 1")
        if self.retrieval not in STRATEGIES:
            raise ExperimentConfigError(
                f"condition {self.name}: unknown retrieval {self.retrieval!r}",
                f"registered strategies: {', '.join(sorted(STRATEGIES))}",
            )
        if self.labeller is not None and self.labeller not in LABELLER_KINDS:
            raise ExperimentConfigError(
                f"condition {self.name}: unknown labeller {self.labeller!r}",
                f"use one of: {', '.join(LABELLER_KINDS)}",
            )

    def describe(self) -> dict[str, Any]:
        """As the base class; `labeller` only when set (plans of experiments written before
        it existed stay the same)."""
        described = super().describe()
        if self.labeller is None:
            del described["labeller"]
        return described

    @abstractmethod
    def recipe(self, model: str, fleet: FleetView) -> MemoryRecipe:
        """The one memory this condition retrieves from."""

    def label(self, model: str, task: Task, ctx: EvalContext) -> LabelLike:
        """The query's label, by this condition's labeller (asked for only when set, so
        contexts written before it existed still serve)."""
        if self.labeller is None:
            return ctx.label(model, task)
        return ctx.label(model, task, self.labeller)

    def memories(self, model: str, fleet: FleetView) -> list[MemoryRecipe]:
        return [self.recipe(model, fleet)]

    def retrieve(
        self, task: Task, model: str, fleet: FleetView, ctx: EvalContext
    ) -> tuple[str, Retrieved]:
        namespace = self.recipe(model, fleet).namespace
        label = self.label(model, task, ctx) if self.retrieval == "task_aware" else None
        retriever = ctx.retriever(namespace, self.p, self.retrieval, self.participant_filter)
        return namespace, retriever.retrieve(task, label, model)

    def guide(self, task, model, fleet, ctx):  # type: ignore[no-untyped-def]
        namespace, got = self.retrieve(task, model, fleet, ctx)
        return got.guidance, _note(namespace, got)


@register_condition("own")
@dataclass(frozen=True)
class Own(_Retrieving):
    """Memory from the model's own trajectories only, each distilled alone (a success says
    what to enforce, a failure what to avoid); no cross-model contrast. `distiller`: `self`
    (the model builds its own memory, as in the paper), `strongest`, or a model name."""

    distiller: str = "self"

    def recipe(self, model: str, fleet: FleetView) -> MemoryRecipe:
        by = resolve_model(self.distiller, fleet, model, what=f"condition {self.name}")
        return MemoryRecipe("own", by, model=model)


@register_condition("other")
@dataclass(frozen=True)
class Other(_Retrieving):
    """Naive transfer: the own-memory another model built. `source`: `strongest` (the
    strongest fleet model other than the one evaluated) or a model name; `distiller` is
    resolved for the source model (`self` = the source builds it)."""

    source: str = "strongest"
    distiller: str = "self"

    def source_model(self, model: str, fleet: FleetView) -> str:
        if self.source == "strongest":
            others = [n for n in fleet.names() if n != model]
            if not others:
                raise ExperimentConfigError(f"condition {self.name} needs a second fleet model")
            return strongest(others, fleet.strength)
        return resolve_model(self.source, fleet, model, what=f"condition {self.name} source")

    def recipe(self, model: str, fleet: FleetView) -> MemoryRecipe:
        source = self.source_model(model, fleet)
        by = resolve_model(self.distiller, fleet, source, what=f"condition {self.name}")
        return MemoryRecipe("own", by, model=source)


@register_condition("self-contrast")
@dataclass(frozen=True)
class SelfContrast(_Retrieving):
    """Contrast the model's own samples (temperature > 0, `samples` per training task)."""

    samples: int = 3
    temperature: float = 0.7
    distiller: str = "self"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.samples < 2 or self.temperature <= 0:
            raise ExperimentConfigError(
                f"condition {self.name}: self-contrast needs samples >= 2 and temperature > 0"
            )

    def recipe(self, model: str, fleet: FleetView) -> MemoryRecipe:
        by = resolve_model(self.distiller, fleet, model, what=f"condition {self.name}")
        return MemoryRecipe(
            "self_contrast", by, model=model, samples=self.samples, temperature=self.temperature
        )


@register_condition("memcollab")
@dataclass(frozen=True)
class MemCollab(_Retrieving):
    """Cross-model contrastive memory (best success vs worst failure across the fleet),
    distilled by `distiller` (default the strongest model), with task-aware retrieval.

    With `memory` (a JSONL export of one namespace, e.g. a committed run's), the condition
    serves that memory instead: it is imported into the run's memory under a namespace of
    its own (named after the file and its SHA-256), and nothing is built for it."""

    distiller: str = "strongest"
    pairing: str = "contrastive"  # or near_miss (best success vs the strongest failure)
    floor: float = 0.05  # near_miss: models under this training accuracy give no tau-
    memory: str | None = None  # a memory export to serve instead of building one
    memory_sha256: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pairing not in ("contrastive", "near_miss"):
            raise ExperimentConfigError(
                f"condition {self.name}: pairing must be contrastive or near_miss"
            )
        if not 0 <= self.floor < 1:
            raise ExperimentConfigError(f"condition {self.name}: floor must be in [0, 1)")
        if self.memory is not None:
            self._check_export()

    def _check_export(self) -> None:
        assert self.memory is not None
        built = ("distiller", "pairing", "floor")
        if any(getattr(self, f) != MemCollab.__dataclass_fields__[f].default for f in built):
            raise ExperimentConfigError(
                f"condition {self.name}: serves the memory export {self.memory}, which builds"
                " nothing",
                "leave out distiller, pairing and floor, or leave out memory",
            )
        path = Path(self.memory)
        if not path.is_file():
            raise ExperimentConfigError(
                f"condition {self.name}: memory export {path} does not exist",
                "give a JSONL export (memcollab memory export), relative to the experiment file",
            )
        object.__setattr__(self, "memory_sha256", file_sha256(str(path.resolve())))

    def recipe(self, model: str, fleet: FleetView) -> MemoryRecipe:
        if self.memory is not None:
            return MemoryRecipe("import", "", source=self.memory, sha256=self.memory_sha256)
        by = resolve_model(self.distiller, fleet, model, what=f"condition {self.name}")
        return MemoryRecipe(self.pairing, by, floor=self.floor)

    def describe(self) -> dict[str, Any]:
        """As the base class; the pairing fields only when not the paper's, and the
        memory export (with its SHA-256) only when set (so plan files of experiments
        written before they existed stay the same)."""
        described = super().describe()
        if self.pairing == "contrastive":
            del described["pairing"], described["floor"]
        if self.memory is None:
            del described["memory"], described["memory_sha256"]
        return described


@register_condition("placebo")
@dataclass(frozen=True)
class Placebo(MemCollab):
    """The control the paper lacks: as many constraints as `memcollab` would give, drawn
    at random from records of *other* categories of the same memory and domain."""

    def guide(self, task, model, fleet, ctx):  # type: ignore[no-untyped-def]
        namespace, real = self.retrieve(task, model, fleet, ctx)
        wanted = len(real.guidance)
        label = self.label(model, task, ctx)
        own_hash = task_hash(task.prompt)
        # Drawn from the pool in record-id order: the stored order follows creation times,
        # which differ between two builds of the same memory, and the draw must not.
        pool = sorted(
            (
                r
                for r in ctx.records(namespace, task.domain)
                if r.category != label.category and r.task_hash != own_hash
            ),
            key=lambda r: r.id,
        )
        rng = random.Random(f"{ctx.seed}:{self.name}:{model}:{task.id}")
        rng.shuffle(pool)
        guidance: list[Guidance] = []
        ids: list[str] = []
        for record in pool:
            if len(guidance) >= wanted:
                break
            if not record.constraints:  # emptied by a merge: nothing to give, not noted
                continue
            ids.append(record.id)
            guidance += [Guidance(record.id, c.text()) for c in record.constraints]
        guidance = guidance[:wanted]
        note = {
            "namespace": namespace,
            "mode": "placebo",
            "level": "other_categories",
            "category": label.category,
            "subcategory": label.subcategory,
            "record_ids": ids,
            "constraints": len(guidance),
            "matched_to": list(real.record_ids),
        }
        return tuple(guidance), note


_PATTERNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], dict[str, Any]]]] = [
    (re.compile(r"memcollab-global"), lambda m: {"kind": "memcollab", "retrieval": "global_tfidf"}),
    (re.compile(r"memcollab-p(\d+)"), lambda m: {"kind": "memcollab", "p": int(m.group(1))}),
]


def make_condition(name: str, params: Mapping[str, Any] | None = None) -> Condition:
    """The condition called `name`, with the fields of its `[condition.NAME]` table."""
    fields: dict[str, Any] = {}
    for pattern, preset in _PATTERNS:
        match = pattern.fullmatch(name)
        if match:
            fields.update(preset(match))
    fields.update(params or {})
    kind = fields.pop("kind", name)
    cls = CONDITION_KINDS.get(kind)
    if cls is None:
        raise ExperimentConfigError(
            f"unknown condition {name!r}",
            f"built-in kinds: {', '.join(CONDITION_KINDS)} (plus memcollab-global,"
            " memcollab-pN); other names need [condition.NAME] with a kind",
        )
    allowed = [f.name for f in dataclasses.fields(cls) if f.name != "name" and f.init]
    unknown = sorted(set(fields) - set(allowed))
    if unknown:
        raise ExperimentConfigError(
            f"condition {name!r}: unknown field(s) {', '.join(unknown)}",
            f"a {kind} condition takes: {', '.join(allowed) or 'no fields'}",
        )
    return cls(name=name, **fields)
