"""build_memory on the scripted model: records per pair, resume, and a prompt stop."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from memcollab.llm.base import ChatRequest
from memcollab.memory.build import BuildEvent, build_memory
from memcollab.memory.pairs import Pair, PairingResult
from memcollab.memory.store import SQLiteMemory
from memcollab.tasks.task import Task
from tests.memory.distill_helpers import GOOD, distiller, line, traj

TASKS = {
    f"gsm/{i}": Task(
        id=f"gsm/{i}",
        domain="math",
        prompt=f"A farmer has {10 + i} sheep and buys a few more. How many sheep now?",
    )
    for i in range(1, 7)
}


@dataclass
class Label:
    category: str = "Prealgebra"
    subcategory: str = "arithmetic"


class Classifier:
    def classify(self, task: Task | str) -> Label:
        return Label()


def _pairs() -> PairingResult:
    pairs = tuple(
        Pair(tid, traj(task, "a", True), traj(task, "b", False), "a", "b", "mixed")
        for tid, task in TASKS.items()
    )
    return PairingResult(pairs=pairs, tasks=len(pairs), mixed=len(pairs))


def _reply(request: ChatRequest) -> str:
    return line(*GOOD[1])


def test_every_pair_becomes_a_record_and_a_rerun_computes_nothing(tmp_path: Path) -> None:
    d, model = distiller(_reply)
    with SQLiteMemory(tmp_path / "m.sqlite") as memory:
        first = build_memory(_pairs(), TASKS, memory, d, Classifier(), namespace="ns", workers=3)
        assert first.records_added == 6 and first.records_existing == 0
        records = memory.records("ns")
        assert {r.source_task_id for r in records} == set(TASKS)
        assert all(r.category == "Prealgebra" and len(r.constraints) == 1 for r in records)
        calls = len(model.requests)
        again = build_memory(_pairs(), TASKS, memory, d, Classifier(), namespace="ns", workers=3)
        assert again.records_added == 0 and again.records_existing == 6
        assert len(model.requests) == calls
        assert first.distill_covers == "every pair" and first.distill["ok"] == 6
        assert again.distill_covers == "new pairs only" and again.distill.get("ok", 0) == 0


def test_recount_counts_every_pair_of_a_split_build_and_writes_nothing_twice(
    tmp_path: Path,
) -> None:
    """A build split over two runs reports the same distillation counts as one whole build."""
    d, model = distiller(_reply)
    pairs = _pairs()
    half = PairingResult(pairs=pairs.pairs[:2], tasks=2, mixed=2)
    with SQLiteMemory(tmp_path / "m.sqlite") as memory:
        build_memory(half, TASKS, memory, d, Classifier(), namespace="ns")
        before = {r.id: r for r in memory.records("ns")}
        events: list[BuildEvent] = []
        rest = build_memory(
            pairs,
            TASKS,
            memory,
            d,
            Classifier(),
            namespace="ns",
            recount_existing=True,
            on_event=events.append,
        )
        assert (rest.records_added, rest.records_existing) == (4, 2)
        assert rest.distill_covers == "every pair" and rest.distill["ok"] == 6
        assert sorted(e.status for e in events) == ["added"] * 4 + ["exists"] * 2
        after = {r.id: r for r in memory.records("ns")}
        assert len(after) == 6 and all(after[i] == r for i, r in before.items())
    assert len(model.requests) == 2 + 6  # the two stored pairs were distilled again


def test_an_interrupt_stops_at_once_without_waiting_for_running_distillations(
    tmp_path: Path,
) -> None:
    release = threading.Event()

    def reply(request: ChatRequest) -> str:
        if TASKS["gsm/1"].prompt not in request.messages[-1].content:
            release.wait(timeout=60)  # every distillation but the first hangs until released
        return line(*GOOD[1])

    def on_event(event: BuildEvent) -> None:
        if event.status == "added":
            raise KeyboardInterrupt

    d, _ = distiller(reply)
    raised: list[BaseException] = []

    def build() -> None:
        try:
            build_memory(_pairs(), TASKS, memory, d, Classifier(), workers=2, on_event=on_event)
        except BaseException as error:  # noqa: BLE001 - the test inspects what was raised
            raised.append(error)

    with SQLiteMemory(tmp_path / "m.sqlite") as memory:
        thread = threading.Thread(target=build)
        thread.start()
        thread.join(timeout=30)
        stopped_while_running = not thread.is_alive()
        release.set()
        thread.join()
        assert stopped_while_running, "build_memory waited for the running distillations"
        assert len(raised) == 1 and isinstance(raised[0], KeyboardInterrupt)
        assert [r.source_task_id for r in memory.records()] == ["gsm/1"]


def test_a_pair_of_an_unknown_task_is_refused(tmp_path: Path) -> None:
    d, _ = distiller(_reply)
    with SQLiteMemory(tmp_path / "m.sqlite") as memory, pytest.raises(KeyError, match="gsm/1"):
        build_memory(_pairs(), {}, memory, d, Classifier())
