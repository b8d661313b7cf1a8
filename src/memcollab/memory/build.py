"""Build a MemCollab memory from collected trajectories.

trajectories of one condition ─► pairs ─► (classify the task, distill the pair) ─► records.
One record per paired training task (the paper). Record ids are deterministic, so a build
that is interrupted and run again skips what is already stored, and the model calls it
repeats are answered by the call cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any, Literal

from memcollab.memory.distill import Distiller, DistillResult, DistillStats
from memcollab.memory.guidance import Labeller, LabelLike
from memcollab.memory.merge import merge_namespace
from memcollab.memory.pairs import Pair, PairingResult
from memcollab.memory.record import MemoryRecord, record_id, task_hash
from memcollab.memory.store import MemoryStore
from memcollab.tasks.task import Task


@dataclass(frozen=True)
class BuildEvent:
    """Progress of a build: one pair handled."""

    task_id: str
    status: str  # "added" | "exists" | a DistillResult status without constraints


DistillCovers = Literal["every pair", "new pairs only"]
NEW_PAIRS_ONLY: DistillCovers = "new pairs only"  # a build that skipped stored pairs


@dataclass
class BuildSummary:
    """What a build did: pairing counts, distillation counters, records written."""

    pairing: dict[str, int] = field(default_factory=dict)
    distill: dict[str, Any] = field(default_factory=dict)
    records_added: int = 0
    records_existing: int = 0
    pairs_without_constraints: int = 0
    distill_covers: DistillCovers = "every pair"
    seconds: float = 0.0
    merge: dict[str, int] | None = None  # the merge pass's counts, when merging

    def as_dict(self) -> dict[str, Any]:
        merge = {} if self.merge is None else {"merge": self.merge}
        return {
            "pairing": self.pairing,
            "distill": self.distill,
            "records_added": self.records_added,
            "records_existing": self.records_existing,
            "pairs_without_constraints": self.pairs_without_constraints,
            "distill_covers": self.distill_covers,
            **merge,
            "seconds": round(self.seconds, 1),
        }


def build_memory(
    pairs: PairingResult,
    tasks: Mapping[str, Task],
    memory: MemoryStore,
    distiller: Distiller,
    classifier: Labeller,
    *,
    namespace: str = "default",
    workers: int = 1,
    recount_existing: bool = False,
    merge: bool = False,
    on_event: Callable[[BuildEvent], None] | None = None,
) -> BuildSummary:
    """Classify and distil every pair into `memory`; pairs already stored are skipped.

    With `merge` (opt-in), near-duplicate constraints of a bucket then merge into one
    with a support count (memory/merge.py; `summary.merge` counts them).

    `workers` pairs are distilled at once (a batching engine serves them together); records
    are written by the calling thread as pairs finish, so the store sees one writer.
    With `recount_existing` (for a distiller behind a call cache, which answers them for
    free), stored pairs are distilled again only to count them, so `summary.distill` covers
    every pair however the build was split across runs; nothing stored is written again.
    """
    started = time.perf_counter()
    summary = BuildSummary(pairing=pairs.summary())
    stats = DistillStats()
    todo: list[tuple[Pair, Task, str | None]] = []  # rid None: stored, only recounted
    for pair in pairs.pairs:
        task = tasks.get(pair.task_id)
        if task is None:
            raise KeyError(f"the runs hold no task {pair.task_id!r} for a trajectory")
        rid = _record_id(pair, namespace, distiller.name)
        if not _exists(memory, rid):
            todo.append((pair, task, rid))
            continue
        summary.records_existing += 1
        if recount_existing:
            todo.append((pair, task, None))
        else:
            _emit(on_event, pair.task_id, "exists")
    if summary.records_existing and not recount_existing:
        summary.distill_covers = NEW_PAIRS_ONLY

    def work(pair: Pair, task: Task, new: bool) -> tuple[DistillResult, LabelLike | None]:
        result = distiller.distill(task, pair)
        return result, classifier.classify(task) if result.constraints and new else None

    # No `with` block: its exit waits for every running distillation, so a Ctrl-C or
    # SIGTERM would wait for a whole batch of generations before the run could stop.
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="build")
    futures = {
        pool.submit(work, pair, task, rid is not None): (pair, task, rid)
        for pair, task, rid in todo
    }
    try:
        for future in as_completed(futures):
            pair, task, new_id = futures[future]
            result, label = future.result()
            stats.add(result)
            if new_id is None:
                _emit(on_event, pair.task_id, "exists")
                continue
            if label is None:
                summary.pairs_without_constraints += 1
                _emit(on_event, pair.task_id, result.status)
                continue
            memory.add(_record(new_id, namespace, task, pair, result, label, distiller.name))
            summary.records_added += 1
            _emit(on_event, pair.task_id, "added")
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    if merge:
        summary.merge = merge_namespace(memory, namespace).as_dict()
    summary.distill = stats.as_dict()
    summary.seconds = time.perf_counter() - started
    return summary


def _record_id(pair: Pair, namespace: str, distiller: str) -> str:
    return record_id(
        namespace, pair.task_id, pair.pair_type, pair.model_pos, pair.model_neg, distiller
    )


def _exists(memory: MemoryStore, rid: str) -> bool:
    from memcollab.memory.store import MemoryNotFoundError

    try:
        memory.get(rid)
    except MemoryNotFoundError:
        return False
    return True


def _record(
    rid: str,
    namespace: str,
    task: Task,
    pair: Pair,
    result: DistillResult,
    label: LabelLike,
    distiller: str,
) -> MemoryRecord:
    return MemoryRecord(
        id=rid,
        namespace=namespace,
        domain=task.domain,
        category=label.category,
        subcategory=label.subcategory,
        task_text=task.prompt,
        task_hash=task_hash(task.prompt),
        source_task_id=task.id,
        constraints=result.constraints,
        model_pos=pair.model_pos,
        model_neg=pair.model_neg,
        pair_type=pair.pair_type,
        distiller=distiller,
        created_at=time.time(),
    )


def _emit(on_event: Callable[[BuildEvent], None] | None, task_id: str, status: str) -> None:
    if on_event is not None:
        on_event(BuildEvent(task_id, status))


def pair_record_id(pair: Pair, namespace: str, distiller: str) -> str:
    """The id of the record a pair distils into (what a batch build would give it)."""
    return _record_id(pair, namespace, distiller)


def pair_record(
    namespace: str,
    task: Task,
    pair: Pair,
    result: DistillResult,
    label: LabelLike,
    distiller: str,
) -> MemoryRecord:
    """The record of one distilled pair, exactly as a batch build files it (online
    learning, server/learner.py, reuses it)."""
    rid = _record_id(pair, namespace, distiller)
    return _record(rid, namespace, task, pair, result, label, distiller)
