"""`memcollab memory review` and the content screen on `memory import`, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from memcollab.memory import Memory
from memcollab.memory.utility import DEFAULT_MIN_OUTCOMES
from tests.memory.redteam import load_redteam
from tests.memory.test_utility import _record
from tests.test_cli import assert_one_line_error, run_cli


def _memory(path: Path) -> str:
    with Memory.open(path) as memory:
        memory.add(_record(1, "area of a right triangle"))
        memory.add(_record(2, "area of a right triangle"))
        memory.add(_record(3, "area of a right triangle"))
        for model in ("weak", "strong"):
            for ok in [True] * 50 + [False] * 50:
                memory.record_baseline(
                    model, ok, domain="math", category="Geometry", subcategory="triangles"
                )
        n = DEFAULT_MIN_OUTCOMES + 10
        for _ in range(n):
            memory.record_outcome("r1", "weak", False)
            memory.record_outcome("r1", "strong", True)
        memory.flag("r2", "looks task-specific", actor="tester")
    return str(path)


def test_review_lists_flagged_and_withheld_records_with_their_evidence(tmp_path: Path) -> None:
    memory = _memory(tmp_path / "m.sqlite")
    shown = run_cli("memory", "review", memory)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "r1" in out and "withheld from weak" in out
    n = DEFAULT_MIN_OUTCOMES + 10
    assert f"weak: {n} outcomes (0 helped, {n} harmed)" in out and ": harm" in out
    assert f"strong: {n} outcomes ({n} helped, 0 harmed)" in out and ": help" in out
    assert "flagged: looks task-specific" in out
    assert f"memcollab memory flag {memory} r2 --undo" in out
    assert "r3" not in out.replace(memory, "")
    assert "2 records to review" in out
    as_json = json.loads(run_cli("memory", "review", memory, "--json").stdout)
    assert [i["id"] for i in as_json] == ["r1", "r2"]
    assert as_json[0]["withheld_from"] == ["weak"]
    lifted = run_cli("memory", "flag", memory, "r2", "--undo", "--reason", "fine after all")
    assert lifted.returncode == 0
    again = json.loads(run_cli("memory", "review", memory, "--json").stdout)
    assert [i["id"] for i in again] == ["r1"]
    with Memory.open(memory) as mem:
        assert len(mem.list(include_flagged=True)) == 3  # never deleted


def test_import_refuses_a_poisoned_file_in_one_line(tmp_path: Path) -> None:
    cases = load_redteam()[:3]
    source = tmp_path / "bad.jsonl"
    source.write_text("".join(c.record_json() + "\n" for c in cases))
    memory = str(tmp_path / "m.sqlite")
    refused = run_cli("memory", "import", memory, str(source))
    assert_one_line_error(refused, "refused by the content screen", "chat_token", "3 of 3")
    forced = run_cli("memory", "import", memory, str(source), "--no-screen")
    assert forced.returncode == 0 and "imported 3 records" in forced.stdout
    review = json.loads(run_cli("memory", "review", memory, "--json").stdout)
    assert [i["poison"][0] for i in review] == ["chat_token"] * 3
