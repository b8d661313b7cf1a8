"""benchmarks/screen_blind_sample.py: a blind listing (no memory, model or record id
shown), a key kept apart, only served constraints drawn, and a tally that refuses
missing, doubled or unknown grades."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memcollab.memory import Memory
from memcollab.memory.record import Constraint, MemoryRecord, task_hash
from tests.support.benchmarks import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
OLD = (
    ROOT / "benchmarks" / "results" / "paper" / "memories" / "memcollab.by.qwen2.5-coder-1.5b.jsonl"
)


def _new_export(tmp_path: Path) -> tuple[Path, str]:
    """An export of 8 records of another namespace; one of them archived (not served)."""
    path = tmp_path / "new.jsonl"
    with Memory.open(tmp_path / "m.sqlite") as memory:
        ids = []
        for i in range(8):
            text = f"Task number {i}: solve x + {i} = {2 * i}."
            record = MemoryRecord(
                id=f"n{i}",
                namespace="new",
                domain="math",
                category="Algebra",
                subcategory="linear equations",
                task_text=text,
                task_hash=task_hash(text),
                source_task_id=f"t/{i}",
                constraints=(
                    Constraint(
                        when=f"isolating a variable in case {i}",
                        enforce=f"subtracting {i} from both sides",
                        avoid="adding it to one side only",
                    ),
                ),
                model_pos="model-a",
                model_neg="model-b",
                pair_type="mixed",
                distiller="model-a",
                created_at=float(i),
            )
            assert memory.add(record, screen=False)
            ids.append(record.id)
        assert memory.archive(ids[3], "test", "me")
        memory.export(path, "new")
    return path, ids[3]


def test_draw_is_blind_seeded_and_skips_unserved_records(tmp_path: Path) -> None:
    module = load_benchmark("screen_blind_sample")
    new, archived = _new_export(tmp_path)
    assert len(module.served_constraints(new)) == 7
    assert archived not in {c["record_id"] for c in module.served_constraints(new)}
    listing, key = module.draw(OLD, new, 5, 26)
    assert len(listing) == 10 and sorted(key) == sorted(row["item"] for row in listing)
    assert [k["source"] for k in key.values()].count("new") == 5
    for row in listing:
        assert set(row) == {"item", "task", "constraint"}
        shown = json.dumps(row)
        assert "qwen" not in shown and "gemma" not in shown and "model-" not in shown
    assert module.draw(OLD, new, 5, 26) == (listing, key)  # the seed fixes the draw
    assert module.draw(OLD, new, 5, 27) != (listing, key)
    with pytest.raises(SystemExit, match="fewer than --n 8"):
        module.draw(OLD, new, 8, 26)


def test_tally_counts_each_memory_and_refuses_bad_grades(tmp_path: Path) -> None:
    module = load_benchmark("screen_blind_sample")
    new, _ = _new_export(tmp_path)
    _, key = module.draw(OLD, new, 4, 1)
    grades = []
    for item, k in sorted(key.items()):
        grade = "vacuous" if k["source"] == "old" else "abstract"
        grades.append({"item": item, "grade": grade, "reason": "test"})
    first_new = next(i for i, k in sorted(key.items()) if k["source"] == "new")
    grades = [g | {"grade": "wrong"} if g["item"] == first_new else g for g in grades]
    result = module.tally(key, grades)
    assert result["old"]["counts"] == {"abstract": 0, "task_specific": 0, "wrong": 0, "vacuous": 4}
    assert result["new"]["wrong_plus_vacuous"] == 1
    assert result["new"]["share_wrong_plus_vacuous"] == 0.25
    assert result["new"]["goal_at_most_25pct_met"] and not result["old"]["goal_at_most_25pct_met"]
    low, high = result["new"]["wilson95"]
    assert low < 0.25 < high
    with pytest.raises(SystemExit, match="not graded"):
        module.tally(key, grades[1:])
    with pytest.raises(SystemExit, match="graded twice"):
        module.tally(key, grades + grades[:1])
    with pytest.raises(SystemExit, match="not one of"):
        module.tally(key, [grades[0] | {"grade": "fine"}] + grades[1:])
    with pytest.raises(SystemExit, match="unknown item"):
        module.tally(key, grades + [{"item": "c999", "grade": "wrong"}])
