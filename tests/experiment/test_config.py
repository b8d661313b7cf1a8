"""The experiment file's [analysis] table: checked, and absent from plan.json at default."""

from __future__ import annotations

from pathlib import Path

import pytest

from memcollab.experiment.config import ExperimentConfigError, parse_experiment
from tests.experiment.scripted import experiment_dict


def test_analysis_names_conditions_of_the_run(tmp_path: Path) -> None:
    raw = experiment_dict(tmp_path, ["vanilla", "memcollab"])
    raw["analysis"] = {"primary": "memcollab"}
    config = parse_experiment(raw)
    assert config.resolved_json()["analysis"] == {"primary": "memcollab", "baseline": "vanilla"}
    raw["analysis"] = {"primary": "placebo"}
    with pytest.raises(ExperimentConfigError, match="primary = 'placebo' is not in"):
        parse_experiment(raw)
    raw["analysis"] = {"primary": "memcollab", "baseline": "own"}
    with pytest.raises(ExperimentConfigError, match="baseline = 'own' is not in"):
        parse_experiment(raw)


def test_no_analysis_leaves_the_plan_as_before(tmp_path: Path) -> None:
    config = parse_experiment(experiment_dict(tmp_path, ["vanilla", "memcollab"]))
    assert "analysis" not in config.resolved_json()
