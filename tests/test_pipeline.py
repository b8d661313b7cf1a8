"""collect -> distill -> memory export/import/stats/show -> solve, end to end on scripted
models through the real CLI (subprocesses), in seconds."""

import json
from pathlib import Path

import pytest

from memcollab.memory import Memory
from memcollab.memory.store import SQLiteMemory
from tests.test_cli import assert_one_line_error, run_cli

FLEET = """
[models.right]
provider = "scripted"
responses = ["I add them. \\\\boxed{4}"]
strength = 2

[models.wrong]
provider = "scripted"
responses = ["I multiply them. \\\\boxed{5}"]
strength = 1

[models.distiller]
provider = "scripted"
strength = 3

# Replies by content, not by call order: distillation and labelling calls run concurrently.
[models.distiller.rules]
"Which category does" = "2"
"Which topic fits it best" = "3"
"Attempt A is correct" = DISTILLED
""".replace(
    "DISTILLED",
    json.dumps(
        "1. When combining two quantities, enforce reading which operation is asked;"
        " avoid multiplying when the task asks for a sum."
    ),
)


def _setup(tmp_path: Path) -> tuple[str, Path]:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(FLEET)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(
            json.dumps(
                {"id": f"t{i}", "q": f"Add two and two, then report case {chr(97 + i)}.", "a": 4}
            )
            + "\n"
            for i in range(3)
        )
    )
    out = tmp_path / "runs"
    result = run_cli(
        "collect",
        "--fleet",
        str(fleet),
        "--model",
        "right",
        "--model",
        "wrong",
        "--tasks",
        f"jsonl:{tasks}#domain=math,prompt=q,answer=a,id=id",
        "--out",
        str(out),
        "--no-cache",
    )
    assert result.returncode == 0, result.stderr
    return str(fleet), out


def test_collect_distill_export_import_show_solve(tmp_path: Path) -> None:
    fleet, runs = _setup(tmp_path)
    memory = tmp_path / "mem.sqlite"
    built = run_cli(
        "distill", "--runs", str(runs), "--memory", str(memory), "--fleet", fleet, "--no-cache"
    )
    assert built.returncode == 0, built.stderr
    assert "records added" in built.stdout
    summary = json.loads((runs / "distill_summary.json").read_text())
    assert summary["pairing"]["mixed"] == 3 and summary["records_added"] == 3
    assert summary["distiller"] == "distiller"

    records = SQLiteMemory(memory).records()
    assert len(records) == 3
    assert {(r.model_pos, r.model_neg, r.pair_type) for r in records} == {
        ("right", "wrong", "mixed")
    }
    assert all(r.constraints[0].avoid.startswith("multiplying") for r in records)

    again = run_cli(
        "distill", "--runs", str(runs), "--memory", str(memory), "--fleet", fleet, "--no-cache"
    )
    assert json.loads((runs / "distill_summary.json").read_text())["records_existing"] == 3
    assert again.returncode == 0

    exported = tmp_path / "mem.jsonl"
    assert run_cli("memory", "export", str(memory), str(exported)).returncode == 0
    copy = tmp_path / "copy.sqlite"
    first = run_cli("memory", "import", str(copy), str(exported))
    assert "imported 3 records, skipped 0" in first.stdout
    assert (
        "created the memory" in first.stdout
        and "namespaces in the file: default (3)" in first.stdout
    )
    second = run_cli("memory", "import", str(copy), str(exported))
    assert "imported 0 records, skipped 3" in second.stdout
    assert SQLiteMemory(copy).records() == records

    stats = run_cli("memory", "stats", str(copy), "--json")
    assert json.loads(stats.stdout) == {"namespaces": {"default": 3}}
    stats = run_cli("memory", "stats", str(copy), "--namespace", "default", "--json")
    assert json.loads(stats.stdout)["records"] == 3
    listed = run_cli("memory", "list", str(copy))
    assert all(r.id in listed.stdout for r in records)
    assert "3 records in namespace 'default'" in listed.stdout
    flagged = run_cli("memory", "flag", str(copy), records[0].id, "--reason", "checked by hand")
    assert flagged.returncode == 0, flagged.stderr
    listed = run_cli("memory", "list", str(copy))
    assert records[0].id not in listed.stdout and "2 records" in listed.stdout
    run_cli("memory", "flag", str(copy), records[0].id, "--reason", "fine", "--undo")
    assert len(SQLiteMemory(copy).records()) == 3
    assert_one_line_error(run_cli("memory", "stats", str(tmp_path / "typo.sqlite")), "no memory at")
    assert not (tmp_path / "typo.sqlite").exists()
    shown = run_cli("memory", "show", str(copy), records[0].id)
    assert "enforce reading which operation is asked" in shown.stdout

    solved = run_cli(
        "solve",
        "What is two plus two?",
        "--model",
        "right",
        "--memory",
        str(memory),
        "--fleet",
        fleet,
        "--no-cache",
    )
    assert solved.returncode == 0, solved.stderr
    assert "retrieved at level" in solved.stdout
    assert "(model); retrieved" in solved.stdout or "(fallback); retrieved" in solved.stdout
    assert "avoid multiplying when the task asks for a sum" in solved.stdout
    assert "boxed{4}" in solved.stdout

    # A utility gate stored with the memory withholds it from the model it said no to.
    with Memory.open(memory) as opened:
        decisions = {"right": {"math": {"memory": False, "n": 40}}}
        opened.set_note("default", "gate:v2", {"rule": "non_negative", "decisions": decisions})
    solve = ["solve", "What is two plus two?", "--model", "right", "--memory", str(memory)]
    gated = run_cli(*solve, "--fleet", fleet, "--no-cache")
    assert gated.returncode == 0, gated.stderr
    assert "utility gate of v2 (rule non_negative): withheld for right on math" in gated.stdout
    assert "0 records, 0 constraints" in gated.stdout
    assert "label not asked (the gate withheld the memory)" in gated.stdout  # no label call
    assert "avoid multiplying when the task asks for a sum" not in gated.stdout
    ignored = run_cli(*solve, "--fleet", fleet, "--no-cache", "--ignore-gate")
    assert "avoid multiplying when the task asks for a sum" in ignored.stdout
    with Memory.open(memory) as opened:
        decisions = {"right": {"math": {"memory": True}}}
        opened.set_note("default", "gate:placebo[/b]", {"decisions": decisions})  # no rule
    assert_one_line_error(
        run_cli(*solve, "--fleet", fleet, "--no-cache"), "utility gates disagree for right"
    )
    # --gate-condition picks one note; its name and a missing rule print as they are.
    picked = run_cli(*solve, "--fleet", fleet, "--no-cache", "--gate-condition", "placebo[/b]")
    assert picked.returncode == 0, picked.stderr
    assert "utility gate of placebo[/b] (rule ?): served for right on math" in picked.stdout
    assert "avoid multiplying when the task asks for a sum" in picked.stdout
    assert_one_line_error(
        run_cli(*solve, "--fleet", fleet, "--ignore-gate", "--gate-condition", "v2"),
        "--ignore-gate and --gate-condition exclude each other",
    )


def test_bad_inputs_give_one_line(tmp_path: Path) -> None:
    assert_one_line_error(
        run_cli("distill", "--runs", str(tmp_path), "--memory", str(tmp_path / "m.sqlite")),
        "holds no trajectories",
    )
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"id": "x", "format_version": 99}) + "\n")
    assert_one_line_error(
        run_cli("memory", "import", str(tmp_path / "m.sqlite"), str(newer)), "newer"
    )
    assert_one_line_error(run_cli("memory", "show", str(tmp_path / "m.sqlite"), "nope"), "nope")


def test_unknown_pairing_is_one_line(tmp_path: Path) -> None:
    fleet, runs = _setup(tmp_path)
    result = run_cli(
        "distill", "--runs", str(runs), "--memory", str(tmp_path / "m.sqlite"),
        "--fleet", fleet, "--pairing", "nearest", "--no-cache",
    )  # fmt: skip
    assert_one_line_error(result, "unknown pairing 'nearest'")


def test_unreachable_postgres_is_one_line() -> None:
    pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    assert_one_line_error(
        run_cli("memory", "stats", "postgresql://nobody:pw@127.0.0.1:9/none"),
        "cannot connect to PostgreSQL",
    )


def test_bad_taxonomy_file_is_one_line(tmp_path: Path) -> None:
    fleet, runs = _setup(tmp_path)
    bad = tmp_path / "tax.toml"
    bad.write_text("name = [unclosed\n")
    result = run_cli(
        "distill",
        "--runs",
        str(runs),
        "--memory",
        str(tmp_path / "m.sqlite"),
        "--fleet",
        fleet,
        "--taxonomy",
        f"math={bad}",
        "--no-cache",
    )
    assert_one_line_error(result, "tax.toml")


def test_distill_screen_option(tmp_path: Path) -> None:
    fleet, runs = _setup(tmp_path)
    text = Path(fleet).read_text()
    vacuous = "\n2. When converting units, enforce the correct conversion factor; avoid rounding."
    start = text.index('"Attempt A is correct" = "1. When')
    end = text.index('"\n', start + len('"Attempt A is correct" = "'))
    Path(fleet).write_text(text[:end] + json.dumps(vacuous)[1:-1] + text[end:])
    for screen, kept, rejected in (("v1", 2, {}), ("v2", 1, {"vacuous": 3})):
        memory = tmp_path / f"{screen}.sqlite"
        args = ("distill", "--runs", str(runs), "--memory", str(memory), "--fleet", fleet)
        built = run_cli(*args, "--screen", screen, "--no-cache")
        assert built.returncode == 0, built.stderr
        summary = json.loads((runs / "distill_summary.json").read_text())
        assert summary["records_added"] == 3 and summary["distill"]["rejected"] == rejected
        assert {len(r.constraints) for r in SQLiteMemory(memory).records()} == {kept}
    bad = run_cli(*args, "--screen", "v3", "--no-cache")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--screen" in bad.stderr
