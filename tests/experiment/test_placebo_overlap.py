"""benchmarks/placebo_overlap.py: tasks whose placebo shared a record with the matched
condition are counted, and the comparison over the others leaves them out."""

from __future__ import annotations

import pytest

from memcollab.experiment.results import ResultRow, Results
from tests.support.benchmarks import load_benchmark


def _row(task: str, condition: str, correct: bool, ids: list[str]) -> ResultRow:
    return ResultRow(
        benchmark="gsm8k" if task < "t5" else "mbpp",
        task_id=task,
        model="m",
        condition=condition,
        correct=correct,
        turns=1,
        prompt_tokens=1,
        completion_tokens=1,
        wall_s=0.0,
        finish="answer",
        record_ids=ids,
    )


def test_overlap_counts_shared_tasks_and_compares_the_rest() -> None:
    rows = []
    for i in range(8):
        task = f"t{i}"
        matched_ids = [f"r{i}"] if i != 7 else []  # t7: gated off, no memory either side
        placebo_ids = [f"r{i}", "x"] if i in (1, 5) else ([f"p{i}"] if i != 7 else [])
        rows += [
            _row(task, "memcollab-v2", i not in (6,), matched_ids),
            _row(task, "placebo-v2", i in (1, 5), placebo_ids),
        ]
    results = Results(
        plan={
            "models": ["m"],
            "conditions": ["memcollab-v2", "placebo-v2"],
            "benchmarks": {"gsm8k": [], "mbpp": []},
        },
        rows=rows,
        planned_tasks={},
        complete_tasks={},
    )
    out = load_benchmark("placebo_overlap").overlap(results, "placebo-v2", "memcollab-v2")["m"]
    assert out["tasks"] == 8 and out["tasks_sharing_a_record"] == 2
    assert out["shared_by_benchmark"] == {"gsm8k": 1, "mbpp": 1}
    assert out["tasks_without_memory"] == 1
    # All 8: memcollab right on 7, placebo on 2 (both shared tasks).
    assert out["all_tasks"]["n"] == 8 and out["all_tasks"]["difference"] == pytest.approx(5 / 8)
    # Sharing none (6 tasks): memcollab right on 5 (not t6), placebo on none.
    clean = out["tasks_sharing_none"]
    assert (clean["n"], clean["condition_correct"], clean["baseline_correct"]) == (6, 5, 0)
    with pytest.raises(SystemExit, match="not in this run"):
        load_benchmark("placebo_overlap").overlap(results, "placebo", "memcollab-v2")
