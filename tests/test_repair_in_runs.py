"""benchmarks/repair_in_runs.py: the repair loop as two runs used it, on their shared code
training tasks (stored trajectories only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from memcollab.collect import TrajectoryStore
from memcollab.tasks.task import Task
from memcollab.trajectory import Trajectory
from tests.memory.distill_helpers import traj
from tests.support.benchmarks import BENCHMARKS

A = "```python\ndef f(x):\n    return x\n```"
B = "```python\ndef f(x):\n    return x + 1\n```"


def _run(root: Path, trajectories: list[Trajectory]) -> Path:
    store = TrajectoryStore.in_dir(root / "train")
    for t in trajectories:
        store.put(t)
    return root


def test_shared_tasks_metrics_and_pairs(tmp_path: Path) -> None:
    code = [Task(id=f"mbpp/{i}", domain="code", prompt=f"task {i}") for i in range(3)]
    math = Task(id="gsm8k/1", domain="math", prompt="2 + 2")
    first = _run(
        tmp_path / "one",
        [
            traj(code[0], "m", False, (A, A, A)),  # the same candidate every turn
            traj(code[1], "m", True, (A,)),
            traj(math, "m", False),  # not code: left out
        ],
    )
    second = _run(
        tmp_path / "two",
        [
            traj(code[0], "m", True, (A, B)),  # a new candidate, right
            traj(code[1], "m", True, (A,)),
            traj(code[2], "m", False, (A, B, A)),  # only in this run; repeats turn 1
        ],
    )
    out = tmp_path / "out.json"
    script = BENCHMARKS / "repair_in_runs.py"
    argv = ["--first", str(first), "--second", str(second), "--out", str(out)]
    done = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    got = json.loads(out.read_text())
    assert got["trajectories"] == {"v1": {"m": 2}, "live": {"m": 3}}
    entry = got["models"]["m"]
    assert entry["shared_tasks"] == 2
    v1, live = entry["shared"]["v1"], entry["shared"]["live"]
    assert (v1["correct"], v1["multi_turn"], v1["repeat"], v1["all_same"]) == (1, 1, 1, 1)
    assert (live["correct"], live["multi_turn"], live["repeat"], live["all_same"]) == (2, 1, 0, 0)
    assert entry["paired"] == {"tasks": 2, "only_first": 0, "only_second": 1, "both": 1}
    assert entry["all"]["live"]["tasks"] == 3 and entry["all"]["live"]["repeat"] == 1

    same = subprocess.run(
        [sys.executable, str(script), *argv, "--second-label", "v1"], capture_output=True, text=True
    )
    assert same.returncode == 2 and "different labels" in same.stderr
    missing = subprocess.run(
        [sys.executable, str(script), "--first", str(tmp_path / "nope"), "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 2 and "no train/ folder" in missing.stderr
