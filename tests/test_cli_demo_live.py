"""The README's main command, `memcollab demo`, on the real packaged fleet (shrunk to
2 training tasks and 1 held-out task so it fits in CI), and its resume path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import packaged_path

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def packaged_fleet() -> None:
    """Every model of the demo fleet assembled (the first use assembles them)."""
    from memcollab.experiment.demo import demo_fleet

    fleet = demo_fleet()
    for name in fleet.names():
        packaged_path(fleet.spec(name).packaged or name)


# The README's main command evaluates the v2 run's committed memory beside the demo's own.
V2_MEMORY = (
    Path(__file__).resolve().parent.parent
    / "benchmarks/results/v2/memories/memcollab-near-miss.by.qwen2.5-coder-1.5b.jsonl"
)


def _demo(out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "memcollab", "demo", "--train", "2", "--test", "1"]
    cmd += ["--memory-export", str(V2_MEMORY)]
    return subprocess.run(
        [*cmd, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "COLUMNS": "200"},
    )


# Two demo runs, each allowed 900 s by `_demo`: the test's own limit must cover both (the
# default 600 s cut a run that a loaded machine had slowed down).
@pytest.mark.timeout(1900)
def test_demo_runs_on_the_packaged_fleet_and_resumes(packaged_fleet: None, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    first = _demo(out)
    assert first.returncode == 0, first.stderr[-2000:]
    for heading in (
        "Plan of demo",
        "Constraints the fleet learned",
        "Constraints the imported memory gave",
        "Accuracy (%) on held-out",
    ):
        assert heading in first.stdout
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    # 1 held-out task x the two Qwen models x (vanilla, memcollab, imported)
    assert len(rows) == 6
    assert {(r["model"], r["condition"]) for r in rows} == {
        (m, c)
        for m in ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")
        for c in ("vanilla", "memcollab", "imported")
    }
    assert {r["task_id"] for r in rows} == {"humaneval/64"}
    # the v2 memory has code records: task-aware retrieval gives each model some
    assert all(r["record_ids"] for r in rows if r["condition"] == "imported")
    assert (out / "report.md").is_file()
    assert (out / "accuracy_by_condition.png").read_bytes()[:4] == b"\x89PNG"

    again = _demo(out)
    assert again.returncode == 0, again.stderr[-2000:]
    part = json.loads((out / "parts.jsonl").read_text().splitlines()[-1])
    assert part["finished"]
    assert {phase: v["computed"] for phase, v in part["phases"].items()} == {
        "train": 0,
        "memory": 0,
        "eval": 0,
    }
