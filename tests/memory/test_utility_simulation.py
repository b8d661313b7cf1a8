"""The utility simulation's decision rule and a small run end to end (the committed run is
benchmarks/results/utility)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.support.benchmarks import load_benchmark


def test_decision_time_waits_for_the_minimum_and_the_confidence() -> None:
    sim = load_benchmark("utility_simulation")
    p = np.array([[0.99, 0.99, 0.5, 0.99], [0.5, 0.5, 0.5, 0.5], [0.2, 0.96, 0.97, 0.99]])
    assert sim.decision_times(p, 0.95, 1).tolist() == [1, 0, 2]
    assert sim.decision_times(p, 0.95, 3).tolist() == [4, 0, 3]
    assert sim.decision_times(p, 0.98, 2).tolist() == [2, 0, 4]


def test_a_small_run_separates_harmful_from_helpful(tmp_path: Path) -> None:
    sim = load_benchmark("utility_simulation")
    assert sim.main(["--replicates", "6", "--horizon", "80", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "simulation.json").read_text())
    assert {"config", "rule", "chosen", "sweep"} <= set(result)
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    assert (tmp_path / "withhold_over_time.png").is_file()
    strict = [r for r in result["sweep"] if r["confidence"] == 0.99 and r["min_outcomes"] == 20]
    assert strict[0]["harmful_0.3_withheld_share"] > 0.9
    assert strict[0]["false_withhold_helpful"] == 0.0
