"""benchmarks/build_throughput.py on a scripted fleet over a tiny store (the real measurement
runs the packaged distiller; see the script's docstring)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from memcollab.collect import TrajectoryStore
from memcollab.tasks.task import Task
from tests.experiment.scripted import fleet_toml
from tests.memory.distill_helpers import traj
from tests.support.benchmarks import load_benchmark

ROOT = Path(__file__).resolve().parents[2]
TASKS = [
    Task(id=f"t/{i}", domain="math", prompt=f"Add {i} and 3.", answer=str(i + 3)) for i in range(6)
]


def _world(tmp_path: Path, wrong_right_on: set[str]) -> tuple[Path, Path]:
    """A runs folder where `right` solves every task and `wrong` only `wrong_right_on`
    (stored in reverse order, so task-id order has to come from the benchmark), and a
    fleet whose models take 0.2 s a call (calls of a concurrent build overlap)."""
    store = TrajectoryStore.in_dir(tmp_path / "runs")
    store.put_tasks(TASKS)
    for task in reversed(TASKS):
        store.put(traj(task, "right", True, ("I add the two quantities: the sum.",)))
        right = task.id in wrong_right_on
        store.put(traj(task, "wrong", right, ("I add." if right else "I multiply them.",)))
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(fleet_toml().replace("strength = ", "delay_s = 0.2\nstrength = "))
    return tmp_path / "runs", fleet


def test_both_conditions_build_the_same_records_from_fresh_caches(tmp_path: Path) -> None:
    runs, fleet = _world(tmp_path, {"t/5"})
    out = tmp_path / "result.json"
    argv = ["--runs", str(runs), "--fleet", str(fleet), "--pairs", "3", "--repeats", "2"]
    argv += ["--labeller", "llm", "--out", str(out)]
    assert load_benchmark("build_throughput").main(argv) == 0
    result = json.loads(out.read_text())
    assert result["complete"] and result["command"].endswith(" ".join(argv))
    settings = result["settings"]
    assert settings["task_ids"] == ["t/0", "t/1", "t/2"]  # the first 3 of 5 near-miss pairs
    assert settings["distiller"] == "right" and settings["screen"] == "v2"
    assert settings["workers_after"] == settings["batch_width"] == 4  # the scripted default
    assert result["pool_pairing"]["pairs"] == 5
    builds = result["builds"]
    assert [b["condition"] for b in builds] == ["before", "after", "before", "after"]
    assert [b["workers"] for b in builds] == [1, 4, 1, 4]
    for b in builds:
        assert b["records_written"] == 3 and b["pairs"] == 3
        assert b["cache_hits"] == 0  # a fresh call cache each: nothing replayed
        assert b["model_calls"] == builds[0]["model_calls"] > 3  # distil + label each pair
        assert b["completion_tokens"] == builds[0]["completion_tokens"]
        assert b["pairs_per_min"] > 0 and b["wall_s"] > 0
        assert b["vs_first"] == {
            "same_record_ids": True,
            "only_in_first": 0,
            "only_in_this": 0,
            "identical_constraints": 3,
        }
    assert [b["peak_calls_in_flight"] for b in builds[::2]] == [1, 1]
    assert all(b["peak_calls_in_flight"] > 1 for b in builds[1::2])
    assert result["same_record_ids"] is True
    assert set(result["conditions"]) == {"before", "after"}
    assert result["conditions"]["before"]["builds"] == 2
    assert result["ratio_after_before"] == pytest.approx(
        result["conditions"]["after"]["pairs_per_min"]
        / result["conditions"]["before"]["pairs_per_min"],
        rel=0.01,
    )


def test_a_store_without_pairs_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runs, fleet = _world(tmp_path, set())  # `wrong` never right: under the near-miss floor
    out = tmp_path / "result.json"
    argv = ["--runs", str(runs), "--fleet", str(fleet), "--labeller", "llm", "--out", str(out)]
    assert load_benchmark("build_throughput").main(argv) == 2
    assert "finds no pair" in capsys.readouterr().err
    assert not out.exists()


def test_a_missing_store_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stopped:
        load_benchmark("build_throughput").main(["--runs", str(tmp_path / "nowhere")])
    assert stopped.value.code == 2


def test_the_defaults_are_the_v2_experiments_memory_settings() -> None:
    config = tomllib.loads((ROOT / "benchmarks/results/v2/experiment.toml").read_text())
    memory = config["memory"]
    defaults = load_benchmark("build_throughput").V2_MEMORY
    assert {k: memory[k] for k in defaults} == defaults
    assert memory.get("distiller", "strongest") == "strongest"  # the benchmark's default too
