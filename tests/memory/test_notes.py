"""Namespace notes: a JSON object kept with a namespace (the utility gate's decision), and
exported and imported with it; and importing an export under another namespace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memcollab.memory import Memory, MemoryRecord
from memcollab.memory.record import MEMORY_FORMAT_VERSION, Constraint, record_id, task_hash
from memcollab.memory.store import (
    MemoryConflictError,
    MemoryFormatError,
    read_export,
    read_jsonl,
)
from tests.extensions.backend_dict import open_dict  # noqa: F401 - registers dict://

GATE = {"rule": "non_negative", "decisions": {"m": {"math": {"memory": False, "n": 3}}}}


def _record(i: int, namespace: str = "ns") -> MemoryRecord:
    text = f"area of a triangle {i}"
    return MemoryRecord(
        id=record_id(namespace, f"t{i}", "mixed", "a", "b", "a"),
        namespace=namespace,
        domain="math",
        category="Geometry",
        subcategory="triangles",
        task_text=text,
        task_hash=task_hash(text),
        source_task_id=f"t{i}",
        constraints=(Constraint(when="w", enforce="e", avoid="a"),),
        model_pos="a",
        model_neg="b",
        pair_type="mixed",
        distiller="a",
        created_at=float(i),
    )


def test_a_note_is_kept_replaced_and_read_back(tmp_path: Path) -> None:
    with Memory.open(tmp_path / "m.sqlite") as memory:
        assert memory.note("ns", "gate") is None and memory.notes("ns") == {}
        assert memory.set_note("ns", "gate", GATE)
        assert not memory.set_note("ns", "gate", GATE)  # the same value: nothing changes
        assert memory.note("ns", "gate") == GATE
        assert memory.set_note("ns", "gate", {"rule": "positive"})
        assert memory.notes("ns") == {"gate": {"rule": "positive"}}
        assert memory.notes("other") == {}


def test_notes_survive_export_and_import_and_an_export_without_notes_is_unchanged(
    tmp_path: Path,
) -> None:
    with Memory.open(tmp_path / "a.sqlite") as memory:
        memory.add(_record(1))
        memory.add(_record(2, "elsewhere"))
        memory.export(tmp_path / "plain.jsonl", "ns")
        plain = (tmp_path / "plain.jsonl").read_text().splitlines()
        assert plain[0] == _record(1).model_dump_json()  # the record, then its history
        assert [json.loads(line)["change"]["op"] for line in plain[1:]] == ["add"]
        memory.set_note("ns", "gate", GATE)
        memory.set_note("elsewhere", "gate", {"rule": "other"})
        assert memory.export(tmp_path / "ns.jsonl", "ns") == 1
    lines = (tmp_path / "ns.jsonl").read_text().splitlines()
    assert [lines[0], lines[2]] == plain and len(lines) == 3  # only this namespace's note
    assert json.loads(lines[1]) == {
        "format_version": 3,
        "note": {"namespace": "ns", "key": "gate", "value": GATE},
    }
    assert read_jsonl(tmp_path / "ns.jsonl") == [_record(1)]
    records, notes = read_export(tmp_path / "ns.jsonl")
    assert [n.value for n in notes] == [GATE]

    with Memory.open(tmp_path / "b.sqlite") as copy:
        counts = copy.import_(tmp_path / "ns.jsonl")
        assert (counts.added, counts.notes) == (1, 1)
        assert copy.note("ns", "gate") == GATE
        again = copy.import_(tmp_path / "ns.jsonl")  # twice: nothing new
        assert (again.added, again.present, again.notes) == (0, 1, 0)
        copy.set_note("ns", "gate", {"rule": "changed"})
        with pytest.raises(MemoryConflictError, match="note 'gate' of namespace 'ns'"):
            copy.import_(tmp_path / "ns.jsonl")
        assert copy.note("ns", "gate") == {"rule": "changed"}  # all or nothing
        assert copy.import_(tmp_path / "ns.jsonl", on_conflict="skip").notes == 0
        assert copy.note("ns", "gate") == {"rule": "changed"}
        assert copy.import_(tmp_path / "ns.jsonl", on_conflict="replace").notes == 1
        assert copy.note("ns", "gate") == GATE


def test_a_failed_note_import_adds_no_record(tmp_path: Path) -> None:
    with Memory.open(tmp_path / "a.sqlite") as memory:
        memory.add(_record(1))
        memory.add(_record(2))
        memory.set_note("ns", "gate", GATE)
        memory.export(tmp_path / "ns.jsonl", "ns")
    with Memory.open(tmp_path / "b.sqlite") as copy:
        copy.set_note("ns", "gate", {"rule": "mine"})
        with pytest.raises(MemoryConflictError):
            copy.import_(tmp_path / "ns.jsonl")
        assert copy.list("ns") == []


def test_a_bad_note_line_is_one_clear_error_and_a_backend_without_notes_refuses(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"format_version": 3, "note": {"namespace": "ns"}}) + "\n")
    with pytest.raises(MemoryFormatError, match=r"bad.jsonl:1: not a valid namespace note"):
        read_export(bad)
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"format_version": MEMORY_FORMAT_VERSION + 1, "note": {}}) + "\n")
    with pytest.raises(MemoryFormatError, match="newer memcollab"):
        read_export(newer)
    with Memory.open(tmp_path / "a.sqlite") as memory:
        memory.add(_record(1))
        memory.set_note("ns", "gate", GATE)
        memory.export(tmp_path / "ns.jsonl", "ns")
    with Memory.open("dict://no-notes") as other:
        with pytest.raises(MemoryFormatError, match="keeps no namespace notes"):
            other.import_(tmp_path / "ns.jsonl")
        assert other.list("ns") == []
        with pytest.raises(MemoryFormatError, match="keeps no namespace notes"):
            other.set_note("ns", "gate", GATE)


def test_an_export_is_filed_under_another_namespace_all_or_nothing(tmp_path: Path) -> None:
    with Memory.open(tmp_path / "a.sqlite") as memory:
        for i in (1, 2):
            memory.add(_record(i))
        memory.set_note("ns", "gate", GATE)
        memory.export(tmp_path / "ns.jsonl", "ns")
        memory.add(_record(3, "elsewhere"))
        memory.export(tmp_path / "all.jsonl")
    with Memory.open(tmp_path / "b.sqlite") as copy:
        copy.add(_record(1))  # the original namespace is untouched by the re-filed copy
        counts = copy.import_(tmp_path / "ns.jsonl", namespace="imported")
        assert (counts.added, counts.notes) == (2, 1)
        moved = copy.list("imported")
        assert [r.id for r in moved] == [
            record_id("imported", f"t{i}", "mixed", "a", "b", "a") for i in (1, 2)
        ]
        assert [r.constraints for r in moved] == [_record(i).constraints for i in (1, 2)]
        assert copy.note("imported", "gate") == GATE and copy.note("ns", "gate") is None
        assert len(copy.list("ns")) == 1
        assert copy.import_(tmp_path / "ns.jsonl", namespace="imported").added == 0
        with pytest.raises(MemoryFormatError, match="holds 2 namespaces"):
            copy.import_(tmp_path / "all.jsonl", namespace="again")
        assert copy.list("again") == []


def test_cli_import_counts_the_notes(tmp_path: Path) -> None:
    from tests.test_cli import run_cli

    with Memory.open(tmp_path / "a.sqlite") as memory:
        memory.add(_record(1))
        memory.set_note("ns", "gate", GATE)
        memory.export(tmp_path / "ns.jsonl", "ns")
    done = run_cli("memory", "import", str(tmp_path / "b.sqlite"), str(tmp_path / "ns.jsonl"))
    assert done.returncode == 0, done.stderr
    assert "imported 1 records, skipped 0 already present; stored 1 namespace notes" in done.stdout
    with Memory.open(tmp_path / "b.sqlite") as copy:
        assert copy.note("ns", "gate") == GATE


def test_cli_stats_shows_a_gates_decisions_and_other_notes(tmp_path: Path) -> None:
    """`memory stats --namespace` shows what an imported memory carries: the utility gate's
    decision per model and domain (served or withheld, and why), other notes as JSON."""
    from tests.test_cli import run_cli

    gate = {
        "condition": "memcollab-v2",
        "rule": "non_negative",
        "decisions": {
            "big": {"math": {"memory": True, "n": 97, "accuracy_without": 0.5,
                             "accuracy_with": 0.52}},
            "small": {"math": {"memory": False, "n": 97, "accuracy_without": 0.3,
                               "accuracy_with": 0.27}},
        },
    }  # fmt: skip
    with Memory.open(tmp_path / "a.sqlite") as memory:
        memory.add(_record(1))
        memory.set_note("ns", "gate:memcollab-v2", gate)
        memory.set_note("ns", "origin", {"built_by": "v2 run"})
    done = run_cli("memory", "stats", str(tmp_path / "a.sqlite"), "--namespace", "ns")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any("utility gate of memcollab-v2 (rule non_negative)" in line for line in lines)
    assert any(
        " big " in f" {line} " and "served" in line and "0.5 / 0.52" in line for line in lines
    )
    assert any("small" in line and "withheld" in line and "0.3 / 0.27" in line for line in lines)
    assert 'note origin: {"built_by": "v2 run"}' in done.stdout
    as_json = run_cli("memory", "stats", str(tmp_path / "a.sqlite"), "--namespace", "ns", "--json")
    assert json.loads(as_json.stdout)["notes"] == {
        "gate:memcollab-v2": gate,
        "origin": {"built_by": "v2 run"},
    }
