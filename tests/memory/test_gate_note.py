"""A utility gate stored with a memory (the `gate:CONDITION` note of an experiment's dev
phase) applied where the memory is searched: memory/gate_note.py and Memory.search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memcollab.memory import Memory, MemoryRecord
from memcollab.memory.gate_note import GateCheck, GateNoteError, check_gate, gate_notes
from memcollab.memory.record import Constraint, record_id, task_hash
from memcollab.tasks.task import Task


def _note(decisions: dict[str, Any], rule: str = "non_negative") -> dict[str, Any]:
    return {"condition": "v2", "rule": rule, "decisions": decisions}


GATE = _note(
    {
        "strong": {"math": {"memory": True, "n": 40}, "code": {"memory": False, "n": 30}},
        "weak": {"math": {"memory": False, "n": 40}},
    }
)


def test_no_gate_note_or_no_model_decides_nothing() -> None:
    assert check_gate({}, "strong", "math") is None
    assert check_gate({"other": {"x": 1}}, "strong", "math") is None
    assert check_gate({"gate:v2": GATE}, None, "math") is None
    assert gate_notes({"gate:v2": GATE, "other": {}}) == {"v2": GATE}


def test_the_only_gate_note_decides_per_model_and_domain() -> None:
    notes = {"gate:v2": GATE, "unrelated": {"a": 1}}
    assert check_gate(notes, "strong", "math") == GateCheck("served", "v2", "non_negative")
    assert check_gate(notes, "strong", "code") == GateCheck("withheld", "v2", "non_negative")
    assert check_gate(notes, "weak", "math") == GateCheck("withheld", "v2", "non_negative")
    # A domain or model the gate never saw has no evidence either way: served, said so.
    assert check_gate(notes, "weak", "code") == GateCheck("undecided", "v2", "non_negative")
    assert check_gate(notes, "newcomer", "math") == GateCheck("undecided", "v2", "non_negative")


@pytest.mark.parametrize(
    "decisions",
    [
        {"strong": {"math": {"memory": "yes"}}},  # not a boolean
        {"strong": {"math": None}},
        {"strong": ["math"]},
        "everything",
    ],
)
def test_a_malformed_decision_is_undecided_not_a_crash(decisions: Any) -> None:
    notes = {"gate:v2": {"rule": 7, "decisions": decisions}}
    assert check_gate(notes, "strong", "math") == GateCheck("undecided", "v2", None)


def test_several_gates_decide_only_where_they_agree_unless_one_is_named() -> None:
    placebo = _note({"strong": {"math": {"memory": True}, "code": {"memory": True}}})
    notes = {"gate:v2": GATE, "gate:placebo": placebo}
    assert check_gate(notes, "strong", "math") == GateCheck("served", "placebo", "non_negative")
    with pytest.raises(GateNoteError, match="disagree for strong on code") as caught:
        check_gate(notes, "strong", "code")
    assert "placebo: served" in str(caught.value) and "v2: withheld" in str(caught.value)
    assert check_gate(notes, "strong", "code", "v2") == GateCheck("withheld", "v2", "non_negative")
    assert check_gate(notes, "strong", "code", "placebo").verdict == "served"  # type: ignore[union-attr]
    with pytest.raises(GateNoteError, match=r"no utility gate of condition 'x' \(it holds:"):
        check_gate(notes, "strong", "code", "x")
    with pytest.raises(GateNoteError, match="it holds: none"):
        check_gate({}, "strong", "math", "v2")


def _record(i: int, domain: str, text: str) -> MemoryRecord:
    return MemoryRecord(
        id=record_id("ns", f"t{i}", "near_miss", "strong", "weak", "strong"),
        namespace="ns",
        domain=domain,  # type: ignore[arg-type]
        category="Algebra",
        subcategory="linear equations",
        task_text=text,
        task_hash=task_hash(text),
        source_task_id=f"t{i}",
        constraints=(Constraint(when="w", enforce=f"e{i}", avoid="a"),),
        model_pos="strong",
        model_neg="weak",
        pair_type="near_miss",
        distiller="strong",
        created_at=float(i),
    )


def test_search_honours_the_stored_gate_and_counts_no_use_of_withheld_memory(
    tmp_path: Path,
) -> None:
    with Memory.open(tmp_path / "m.sqlite") as memory:
        math_id = _record(1, "math", "solve 2x + 3 = 7").id
        memory.add(_record(1, "math", "solve 2x + 3 = 7"))
        memory.add(_record(2, "code", "write a function solving a linear equation"))
        query = Task(id="q", domain="math", prompt="solve 5x - 1 = 9")

        before = memory.search(query, model="weak", namespace="ns")  # no note yet
        assert before.record_ids == (math_id,) and before.gate is None

        memory.set_note("ns", "gate:v2", GATE)
        withheld = memory.search(query, model="weak", namespace="ns")
        assert withheld.gate == GateCheck("withheld", "v2", "non_negative")
        assert (withheld.guidance, withheld.record_ids, withheld.hits) == ((), (), ())
        assert memory.usage(math_id)["retrieved"] == 1  # the withheld search counted nothing

        served = memory.search(query, model="strong", namespace="ns")
        assert served.record_ids == (math_id,) and served.gate is not None
        assert served.gate.verdict == "served"
        undecided = memory.search(query, model="newcomer", namespace="ns")
        assert undecided.record_ids == (math_id,) and undecided.gate is not None
        assert undecided.gate.verdict == "undecided"
        anonymous = memory.search(query, namespace="ns")  # no model: no gate applies
        assert anonymous.record_ids == (math_id,) and anonymous.gate is None

        ignored = memory.search(query, model="weak", namespace="ns", gate=False)
        assert ignored.record_ids == (math_id,) and ignored.gate is None
        named = memory.search(query, model="weak", namespace="ns", gate="v2")
        assert named.record_ids == () and named.gate is not None
        with pytest.raises(GateNoteError):
            memory.search(query, model="weak", namespace="ns", gate="placebo")
        # Another namespace's gate does not apply here.
        assert memory.search(query, model="weak", namespace="other").gate is None


def test_the_gate_travels_with_an_export(tmp_path: Path) -> None:
    export = tmp_path / "v2.jsonl"
    with Memory.open(tmp_path / "a.sqlite") as memory:
        memory.add(_record(1, "math", "solve 2x + 3 = 7"))
        memory.set_note("ns", "gate:v2", GATE)
        memory.export(export, "ns")
    with Memory.open(tmp_path / "b.sqlite") as memory:
        memory.import_(export)
        query = Task(id="q", domain="math", prompt="solve 5x - 1 = 9")
        assert memory.search(query, model="weak", namespace="ns").record_ids == ()
        assert len(memory.search(query, model="strong", namespace="ns").record_ids) == 1
