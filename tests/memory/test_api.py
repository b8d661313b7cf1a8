"""`Memory`, the front door: open, build, search (hits), list, add, flag, export, import."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import pytest

import memcollab
from memcollab.errors import UserError
from memcollab.llm.base import ChatRequest
from memcollab.memory import Memory, MemoryRecord, PairingRule
from memcollab.memory.record import Constraint, task_hash
from memcollab.memory.store import SCHEMA_VERSION, MemoryConnectionError, MemoryNotFoundError
from memcollab.tasks.task import Task
from tests.memory.distill_helpers import GOOD, distiller, line, traj

TASKS = {
    f"gsm/{i}": Task(id=f"gsm/{i}", domain="math", prompt=f"A farmer has {10 + i} sheep. {word}")
    for i, word in enumerate(["Buy goats.", "Sell cows.", "Count hens."], start=1)
}
STRENGTHS = {"strong": 3, "mid": 2, "weak": 1}


@dataclass
class Label:
    category: str = "Prealgebra"
    subcategory: str = "arithmetic"


class Labeller:
    def __init__(self, label: Label | None = None) -> None:
        self.label = label or Label()
        self.calls = 0

    def classify(self, task: Task) -> Label:
        self.calls += 1
        return self.label


def _reply(request: ChatRequest) -> str:
    return line(*GOOD[1])


def _trajectories() -> list:
    out = []
    for task in TASKS.values():
        out += [traj(task, "strong", True), traj(task, "mid", False), traj(task, "weak", False)]
    return out


def _record(i: int, category: str = "Geometry", text: str = "area of a triangle") -> MemoryRecord:
    return MemoryRecord(
        id=f"r{i}",
        domain="math",
        category=category,
        subcategory="triangles",
        task_text=f"{text} {i}",
        task_hash=task_hash(f"{text} {i}"),
        source_task_id=f"s{i}",
        constraints=(Constraint(when=f"case {i}", enforce="a check", avoid="an error"),),
        model_pos="a",
        model_neg="b",
        pair_type="mixed",
        distiller="d",
        created_at=float(i),
    )


def test_memcollab_memory_is_the_front_door() -> None:
    assert memcollab.Memory is Memory


def test_build_is_resumable_and_follows_the_pairing_rule(tmp_path: Path) -> None:
    d, model = distiller(_reply)
    labeller = Labeller()
    with Memory.open(tmp_path / "m.sqlite") as memory:
        first = memory.build(
            _trajectories(), TASKS, distiller=d, labeller=labeller, strengths=STRENGTHS
        )
        assert first.records_added == 3
        records = memory.list()
        # best success vs worst failure: the weakest failing model is tau-
        assert {(r.model_pos, r.model_neg) for r in records} == {("strong", "weak")}
        calls = len(model.requests)
        again = memory.build(
            _trajectories(), TASKS, distiller=d, labeller=labeller, strengths=STRENGTHS
        )
        assert again.records_added == 0 and again.records_existing == 3
        assert len(model.requests) == calls
        own = memory.build(
            _trajectories(),
            TASKS,
            distiller=d,
            labeller=labeller,
            pairing=PairingRule("own", model="mid"),
            namespace="own.mid",
        )
        assert own.records_added == 3
        assert {r.pair_type for r in memory.list("own.mid")} == {"own_failure"}
        assert memory.namespaces() == {"default": 3, "own.mid": 3}


def test_an_unknown_pairing_rule_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown pairing rule 'nope'"):
        Memory.pairs(_trajectories(), "nope", STRENGTHS)


def test_search_returns_scored_hits_with_their_back_off_level(tmp_path: Path) -> None:
    with Memory.open(tmp_path / "m.sqlite") as memory:
        assert memory.add(_record(1, text="area of a right triangle with legs"))
        assert memory.add(_record(2, text="perimeter of an isosceles triangle"))
        memory.add(_record(3, category="Algebra", text="solve a linear equation"))
        query = Task(id="q", domain="math", prompt="the perimeter of a right triangle")
        labeller = Labeller(Label("Geometry", "triangles"))
        found = memory.search(query, model="a", labeller=labeller, p=2)
        assert labeller.calls == 1
        assert found.level == "subcategory"
        assert [h.record.id for h in found.hits] == ["r2", "r1"]
        assert found.hits[0].score > found.hits[1].score > 0
        assert all(h.level == "subcategory" for h in found.hits)
        assert [g.record_id for g in found.guidance] == ["r2", "r1"]
        # a category with no records backs off to the whole domain
        other = memory.search(query, label=Label("Number Theory", "primes"), p=1)
        assert other.level == "domain" and other.hits[0].level == "domain"
        # the same setting reuses one retriever (and its indexes)
        assert memory.retriever(p=2) is memory.retriever(p=2)
        assert other.record_ids == ("r2",)
        assert (memory.usage("r1")["retrieved"], memory.usage("r2")["retrieved"]) == (1, 2)
        memory.record_outcome("r2", "a", helped=True)
        memory.record_outcome("r2", "a", helped=False)
        memory.record_outcome("r2", "b", helped=False)
        assert memory.usage("r2")["models"] == {
            "a": {"helped": 1, "harmed": 1},
            "b": {"helped": 0, "harmed": 1},
        }


def test_add_validates_a_mapping(tmp_path: Path) -> None:
    with Memory.open(tmp_path / "m.sqlite") as memory:
        data = _record(1).model_dump()
        assert memory.add(data) is True
        assert memory.add(data) is False
        with pytest.raises(ValueError, match="constraints"):
            memory.add({**data, "id": "r9", "constraints": "not a list"})
        assert memory.namespaces() == {"default": 1}


def test_flag_withholds_a_record_keeps_it_and_keeps_history(tmp_path: Path) -> None:
    with Memory.open(tmp_path / "m.sqlite") as memory:
        memory.add(_record(1))
        memory.add(_record(2))
        query = Task(id="q", domain="math", prompt="the area of a triangle")
        before = memory.search(query, label=Label("Geometry", "triangles"), count_usage=False)
        assert "r1" in before.record_ids
        assert memory.flag("r1", "harmful for model b", actor="test") is True
        assert memory.flag("r1", "again") is False
        after = memory.search(query, label=Label("Geometry", "triangles"), count_usage=False)
        assert "r1" not in after.record_ids and after.record_ids == ("r2",)
        assert [r.id for r in memory.list()] == ["r2"]
        assert [r.id for r in memory.list(include_flagged=True)] == ["r1", "r2"]
        assert memory.flagged() == {"r1": "harmful for model b"}
        assert memory.get("r1").id == "r1"  # never deleted
        with pytest.raises(UserError, match="needs a reason"):
            memory.unflag("r1", "  ")
        assert memory.unflag("r1", "evidence was wrong") is True
        assert memory.unflag("r1", "again") is False
        assert [e["action"] for e in memory.history("r1")] == ["flag", "unflag"]
        assert memory.history("r1")[0]["actor"] == "test"
        back = memory.search(query, label=Label("Geometry", "triangles"), count_usage=False)
        assert "r1" in back.record_ids
        with pytest.raises(MemoryNotFoundError):
            memory.flag("nope", "why")


def test_export_and_import_round_trip(tmp_path: Path) -> None:
    with Memory.open(tmp_path / "a.sqlite") as a:
        a.add(_record(1))
        a.add(_record(2))
        assert a.export(tmp_path / "m.jsonl") == 2
    with Memory.open(tmp_path / "b.sqlite") as b:
        counts = b.import_(tmp_path / "m.jsonl")
        assert (counts.added, counts.present) == (2, 0)
        assert [r.id for r in b.list()] == ["r1", "r2"]
        assert b.stats()["records"] == 2


def test_read_only_open_refuses_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo.sqllite"
    with pytest.raises(MemoryConnectionError, match="no memory at"):
        Memory.open(missing, create=False)
    assert not missing.exists()
    with pytest.raises(MemoryConnectionError, match="no memory at"):
        Memory.open(f"sqlite:///{missing}", create=False)
    assert not missing.exists()


def test_a_schema_1_store_gains_the_flag_and_note_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with Memory.open(path) as memory:
        memory.add(_record(1))
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE memory_flags")
    conn.execute("DROP TABLE memory_flag_history")
    conn.execute("DROP TABLE memory_notes")
    conn.execute("UPDATE memory_meta SET value = 1 WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with Memory.open(path) as memory:
        assert memory.flag("r1", "checked after upgrade")
        assert memory.list() == []
        assert memory.set_note("default", "gate", {"ok": True})
    conn = sqlite3.connect(path)
    found = conn.execute("SELECT value FROM memory_meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert found[0] == SCHEMA_VERSION == 5
