"""The report's numbers on a hand-written per-task table whose every figure is worked out
by hand below: per-benchmark accuracy, the paper's average column (the mean of the
benchmark accuracies, not the pooled rate), the paired comparison with vanilla, and the
complete-task rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memcollab.experiment.report import write_report
from memcollab.experiment.results import ReportError, load_results

# benchmark -> task -> (vanilla right?, memcollab right?); "b/5" has vanilla only.
VERDICTS = {
    "a": {"a/1": (True, True), "a/2": (False, True)},
    "b": {"b/1": (False, True), "b/2": (False, False), "b/3": (False, False), "b/4": (True, False)},
}


def _plan() -> dict:
    benchmarks = {bench: list(tasks) for bench, tasks in VERDICTS.items()}
    benchmarks["b"].append("b/5")
    return {
        "name": "hand",
        "config": {"seed": 0},
        "models": ["m"],
        "conditions": {"vanilla": {"kind": "vanilla"}, "memcollab": {"kind": "memcollab"}},
        "benchmarks": benchmarks,
    }


def _row(bench: str, task: str, condition: str, correct: bool) -> dict:
    return {
        "benchmark": bench,
        "task_id": task,
        "model": "m",
        "condition": condition,
        "correct": correct,
        "turns": 2 if condition == "memcollab" else 1,
        "prompt_tokens": 100,
        "completion_tokens": 50,
        "wall_s": 1.0,
        "finish": "answer",
        "record_ids": ["r1", "r2", "r3"] if condition == "memcollab" else [],
        "constraints": 3 if condition == "memcollab" else 0,
    }


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "plan.json").write_text(json.dumps(_plan()))
    rows = [
        _row(bench, task, condition, right)
        for bench, tasks in VERDICTS.items()
        for task, verdicts in tasks.items()
        for condition, right in zip(("vanilla", "memcollab"), verdicts, strict=True)
    ]
    rows.append(_row("b", "b/5", "vanilla", True))  # incomplete: no memcollab cell
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    part = {"phases": {"train": {"computed": 5, "seconds": 120.0, "interrupted": True}}}
    code = {"commit": "0123456789abcdef", "dirty": True}
    (folder / "parts.jsonl").write_text(
        json.dumps({"started": 0.0, "finished": False, "wall_s": 120.0, **part})
        + "\n"
        + json.dumps({"started": 60.0, "finished": True, "wall_s": 6.0, "code": code})
        + "\n"
    )
    return folder


def _comparison(text: str, bench: str, contrast: str = "memcollab - vanilla") -> list[str]:
    """The `contrast` row for `bench`, without the bootstrap interval."""
    row = next(
        line for line in text.splitlines() if line.startswith(f"| m | {contrast} | {bench} |")
    )
    cells = [c.strip() for c in row.strip("|").split("|")]
    return cells[3:5] + cells[6:]


def test_complete_tasks_only(tmp_path: Path) -> None:
    results = load_results(_folder(tmp_path))
    assert results.complete_tasks == {"a": ["a/1", "a/2"], "b": ["b/1", "b/2", "b/3", "b/4"]}
    assert results.planned_tasks == {"a": 2, "b": 5}
    assert all(r.task_id != "b/5" for r in results.rows)


def test_report_numbers_worked_out_by_hand(tmp_path: Path) -> None:
    text, _ = write_report(_folder(tmp_path), tmp_path / "report")
    assert "Complete tasks (every model x condition stored): 6 of 7 planned (a 2/2, b 4/5)" in text
    # vanilla: a 1/2, b 1/4 -> average (50 + 25) / 2 = 37.5 (pooled would be 33.3)
    assert "| m | vanilla | 50.0 | 25.0 | 37.5 |" in text
    # memcollab: a 2/2, b 1/4 -> average 62.5 (pooled would be 50.0)
    assert "| m | memcollab | 100.0 | 25.0 | 62.5 |" in text
    assert "| m | vanilla | 1.00 | 50 | 100 | 0.0 | 1.0 |" in text
    assert "| m | memcollab | 2.00 | 50 | 100 | 3.0 | 1.0 |" in text
    # columns: n, difference, CI, only vanilla right, only memcollab right, McNemar p, Holm p
    # a: memcollab alone right on a/2: +50 pp; McNemar b=0, c=1 -> p = 2 * 1/2 = 1
    assert _comparison(text, "a") == ["2", "+50.0", "0", "1", "1", "1"]
    # b: one discordant task each way (b/1, b/4): +0 pp, p = 1
    assert _comparison(text, "b") == ["4", "+0.0", "1", "1", "1", "1"]
    # all: b=1 (b/4), c=2 (a/2, b/1): +1/6 = +16.7 pp, p = 2 * (1 + 3) / 8 capped at 1
    assert _comparison(text, "all") == ["6", "+16.7", "1", "2", "1", "1"]
    assert "### Memory conditions against each other" not in text  # no other memory here
    assert (
        "| 1 | 1970-01-01 00:00 | 2.0 | stopped | - | train: 5 new in 2.0 min (stopped) |" in text
    )
    assert "| 2 | 1970-01-01 00:01 | 0.1 | finished | 0123456789+ | - |" in text  # its commit


def test_report_elsewhere_copies_the_portable_results(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    target = tmp_path / "report"
    text, _ = write_report(folder, target)
    assert (target / "report.md").read_text() == text
    for name in ("plan.json", "results.jsonl", "parts.jsonl"):
        assert (target / name).read_bytes() == (folder / name).read_bytes()
    # the copy alone reports the same numbers
    again, _ = write_report(target)
    assert again == text


def test_a_folder_without_a_plan_or_results_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="plan.json is missing"):
        load_results(tmp_path)
    (tmp_path / "plan.json").write_text(json.dumps(_plan()))
    with pytest.raises(ReportError, match="no evaluation results yet"):
        load_results(tmp_path)


def test_notes_beside_the_report_are_its_last_section(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    target = tmp_path / "report"
    target.mkdir()
    (target / "NOTES.md").write_text("The 0.5B model cannot distil.\n")
    text, _ = write_report(folder, target)
    assert text.endswith("## Notes\n\nThe 0.5B model cannot distil.\n")
    assert "## Notes" not in write_report(folder)[0]  # none beside the folder's own report


def _one_benchmark_report(folder: Path, plan: dict, right: dict[str, set[int]]) -> str:
    """The report of `plan`'s one benchmark "x", where condition c is right on the task
    indices right[c]."""
    (folder / "plan.json").write_text(json.dumps(plan))
    rows = [
        _row("x", task, condition, i in right[condition])
        for i, task in enumerate(plan["benchmarks"]["x"])
        for condition in right
    ]
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return write_report(folder)[0]


def test_direct_contrasts_and_holm_families_worked_out_by_hand(tmp_path: Path) -> None:
    """One benchmark of 8 tasks: memcollab alone right on 6 (b=0, c=6: McNemar p = 2/64);
    own right exactly where vanilla is (p = 1). Both families (pooled rows, per-benchmark
    rows) hold mem-van 0.03125, own-van 1, mem-own 0.03125: Holm 3 x 0.03125 = 0.09375 for
    the smaller two (made non-decreasing), 1 for own - vanilla."""
    folder = tmp_path / "run"
    folder.mkdir()
    tasks = [f"x/{i}" for i in range(8)]
    plan = {
        "name": "holm",
        "config": {"seed": 0},
        "models": ["m"],
        "conditions": {c: {"kind": c} for c in ("vanilla", "own", "memcollab")},
        "benchmarks": {"x": tasks},
    }
    right = {"vanilla": {0}, "own": {0}, "memcollab": {0, 1, 2, 3, 4, 5, 6}}
    text = _one_benchmark_report(folder, plan, right)
    for bench in ("x", "all"):
        assert _comparison(text, bench) == ["8", "+75.0", "0", "6", "0.0312", "0.0938"]
        assert _comparison(text, bench, "own - vanilla") == ["8", "+0.0", "0", "0", "1", "1"]
        assert _comparison(text, bench, "memcollab - own") == [
            "8",
            "+75.0",
            "0",
            "6",
            "0.0312",
            "0.0938",
        ]
    direct = text.split("### Memory conditions against each other")[1]
    assert "| m | memcollab - own | all |" in direct
    assert "- vanilla |" not in direct.split("##")[0]


def test_direct_contrasts_centre_on_the_preregistered_primary(tmp_path: Path) -> None:
    """With [analysis] primary = memcollab-v2 and no condition called memcollab, the direct
    comparisons are memcollab-v2 against the other memory conditions (the v2 plan's
    secondary comparisons), even one whose kind is memcollab. One benchmark of 8 tasks:
    v2 - paper: 5 only-v2 tasks, McNemar p = 2/32 = 0.0625; v2 - placebo: 6, p = 2/64.
    The pooled family is five rows (three against vanilla: p 1, 2/64, 1): Holm gives
    5 x 2/64 = 0.15625 to both 2/64 rows and 3 x 0.0625 = 0.1875 to v2 - paper."""
    folder = tmp_path / "run"
    folder.mkdir()
    tasks = [f"x/{i}" for i in range(8)]
    kinds = {
        "vanilla": "vanilla",
        "memcollab-paper": "memcollab",
        "memcollab-v2": "memcollab",
        "placebo-v2": "placebo",
    }
    plan = {
        "name": "v2",
        "config": {"seed": 0, "analysis": {"primary": "memcollab-v2", "baseline": "vanilla"}},
        "models": ["m"],
        "conditions": {c: {"kind": k} for c, k in kinds.items()},
        "benchmarks": {"x": tasks},
    }
    right = {
        "vanilla": {0},
        "memcollab-paper": {0, 1},
        "memcollab-v2": {0, 1, 2, 3, 4, 5, 6},
        "placebo-v2": {0},
    }
    text = _one_benchmark_report(folder, plan, right)
    direct = text.split("### Memory conditions against each other")[1].split("###")[0]
    paper = "memcollab-v2 - memcollab-paper"
    assert _comparison(direct, "all", paper) == ["8", "+62.5", "0", "5", "0.0625", "0.188"]
    placebo = "memcollab-v2 - placebo-v2"
    assert _comparison(direct, "all", placebo) == ["8", "+75.0", "0", "6", "0.0312", "0.156"]
    assert "| m | memcollab-paper - memcollab-v2 |" not in text
    assert "| m | placebo-v2 - memcollab-paper |" not in text


def test_primary_comparison_and_power_sections(tmp_path: Path) -> None:
    """[analysis] primary names the pre-registered comparison: its pooled row per model
    with Holm over the models only (one model here: Holm p = raw p). The power table gives
    the pooled n = 6 complete tasks, 3 discordant (50%), and "-": with 3 discordant tasks
    no difference reaches 80% power (stats tests check the numbers)."""
    folder = _folder(tmp_path)
    plan = _plan()
    plan["config"]["analysis"] = {"primary": "memcollab", "baseline": "vanilla"}
    (folder / "plan.json").write_text(json.dumps(plan))
    text, _ = write_report(folder)
    primary = text.split("### The pre-registered primary comparison")[1].split("###")[0]
    assert _comparison(primary, "all") == ["6", "+16.7", "1", "2", "1", "1"]
    assert "| m | memcollab - vanilla | a |" not in primary  # pooled rows only
    power = text.split("### Power of the design")[1].split("##")[0]
    row = next(line for line in power.splitlines() if line.startswith("| m |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:] == ["6", "50.0", "-"]


def test_no_primary_section_without_analysis(tmp_path: Path) -> None:
    text, _ = write_report(_folder(tmp_path))
    assert "primary comparison" not in text
