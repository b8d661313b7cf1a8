"""`[eval] exclude`: files of task ids left out of every evaluation set, read relative to
the experiment file, counted in plan.json, and absent from plan.json when not set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memcollab.experiment.config import (
    ExperimentConfigError,
    load_experiment,
    parse_experiment,
)
from memcollab.experiment.runner import Experiment
from memcollab.llm.cache import Gateway
from memcollab.llm.fleet import Fleet
from tests.experiment.scripted import experiment_dict, fleet_dict


def _toml(tmp_path: Path, exclude: str) -> Path:
    raw = experiment_dict(tmp_path, ["vanilla"])
    path = tmp_path / "exp" / "experiment.toml"
    path.parent.mkdir()
    path.write_text(
        f'name = "x"\nout = "runs"\nconditions = ["vanilla"]\n[eval]\n'
        f"toy = {json.dumps(raw['eval']['toy'])}\nexclude = {exclude}\n",
        encoding="utf-8",
    )
    return path


def test_excluded_ids_leave_every_benchmark_and_are_counted(tmp_path: Path) -> None:
    path = _toml(tmp_path, '["ids.json", "../other.json"]')
    (path.parent / "ids.json").write_text(json.dumps(["test-add-x"]))
    (tmp_path / "other.json").write_text(
        json.dumps({"benchmarks": {"toy": ["test-mul-y"]}, "train_tasks": ["test-add-z"]})
    )
    config = load_experiment(path)
    assert config.eval == {"toy": config.eval["toy"]}  # `exclude` is no benchmark
    assert config.eval_exclude == [path.parent / "ids.json", tmp_path / "other.json"]
    experiment = Experiment(config, Gateway(None), Fleet.from_dict(fleet_dict()))
    kept = [t.id for t in experiment.eval_sets["toy"]]
    assert kept == ["test-mul-x", "test-add-y", "test-mul-z"]
    plan = experiment.plan_json()
    assert plan["eval_excluded"] == {"toy": 3}
    assert plan["benchmarks"]["toy"] == kept
    assert plan["config"]["eval_exclude"] == [str(p) for p in config.eval_exclude]


def test_without_exclude_the_plan_is_as_before(tmp_path: Path) -> None:
    config = parse_experiment(experiment_dict(tmp_path, ["vanilla"]))
    experiment = Experiment(config, Gateway(None), Fleet.from_dict(fleet_dict()))
    plan = experiment.plan_json()
    assert "eval_excluded" not in plan and "eval_exclude" not in plan["config"]
    assert len(plan["benchmarks"]["toy"]) == 6


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), ("{not json", "cannot read"), ('{"x": 1}', "no list of task ids")],
)
def test_a_bad_id_file_is_one_clear_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = _toml(tmp_path, '["ids.json"]')
    if content is not None:
        (path.parent / "ids.json").write_text(content)
    config = load_experiment(path)
    with pytest.raises(ExperimentConfigError, match=message):
        Experiment(config, Gateway(None), Fleet.from_dict(fleet_dict()))
