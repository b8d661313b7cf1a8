"""The experiment files committed under benchmarks/results stay loadable as the code moves:
each parses, names only known conditions, and evaluates only fleet models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from memcollab.experiment.conditions import make_condition
from memcollab.experiment.config import ExperimentConfigError, load_experiment
from memcollab.experiment.demo import demo_fleet

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
FILES = sorted(RESULTS.glob("*/experiment.toml"))


def test_the_committed_experiments_are_found() -> None:
    assert {f.parent.name for f in FILES} >= {"paper", "ablation"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.parent.name)
def test_committed_experiment_loads(path: Path) -> None:
    config = load_experiment(path)
    assert config.name == path.parent.name
    conditions = [make_condition(name, config.condition.get(name)) for name in config.conditions]
    assert conditions[0].kind == "vanilla"  # every report compares with no memory
    fleet = set(demo_fleet().names())  # the packaged fleet: no experiment names a fleet file
    assert config.fleet is None
    assert config.data_dir is None  # from --data-dir / MEMCOLLAB_DATA_DIR, never the file
    assert set(config.eval_models or fleet) <= fleet
    based_on = path.parent / "BASED_ON"
    if based_on.is_file():  # an extension runs on its base's training pool and memory
        base = load_experiment(RESULTS / based_on.read_text().strip() / "experiment.toml")
        assert (config.train, config.memory, config.eval, config.seed, config.agent) == (
            base.train,
            base.memory,
            base.eval,
            base.seed,
            base.agent,
        )


def _experiment(folder: Path, data_dir: str) -> Path:
    path = folder / "exp.toml"
    path.write_text(
        f'name = "x"\ndata_dir = "{data_dir}"\nconditions = ["vanilla"]\n'
        '[eval]\nhumaneval = "humaneval:test[:2]"\n'
    )
    return path


def test_a_relative_data_dir_is_refused_and_an_absolute_one_kept(tmp_path: Path) -> None:
    with pytest.raises(
        ExperimentConfigError, match="relative path.*--data-dir.*MEMCOLLAB_DATA_DIR"
    ):
        load_experiment(_experiment(tmp_path, "../shared/data"))
    with pytest.raises(ExperimentConfigError, match="relative path"):  # also when overridden
        load_experiment(_experiment(tmp_path, "data"), tmp_path)
    absolute = _experiment(tmp_path, str(tmp_path / "data"))
    assert load_experiment(absolute).data_dir == tmp_path / "data"
    assert load_experiment(absolute, Path("/elsewhere")).data_dir == Path("/elsewhere")


def _data_dir() -> Path | None:
    env = os.environ.get("MEMCOLLAB_DATA_DIR")
    for candidate in (Path(env) if env else None, RESULTS.parents[2] / "shared" / "data"):
        if candidate is not None and (candidate / "gsm8k" / "train.jsonl").is_file():
            return candidate
    return None


@pytest.mark.parametrize(
    "path", [f for f in FILES if (f.parent / "plan.json").is_file()], ids=lambda p: p.parent.name
)
def test_a_committed_plan_is_what_the_code_plans_today(path: Path) -> None:
    """Options added since (opt-in, left out at their defaults) leave plan.json as it was."""
    data = _data_dir()
    if data is None:
        pytest.skip("needs the benchmark data (MEMCOLLAB_DATA_DIR)")
    from memcollab.experiment.runner import Experiment
    from memcollab.llm.cache import Gateway

    experiment = Experiment(load_experiment(path, data), Gateway(None), demo_fleet())
    now = experiment.plan_json()
    committed = json.loads((path.parent / "plan.json").read_text())
    for plan in (now, committed):  # where the run and its data lived
        for key in ("out", "source", "data_dir"):
            plan["config"].pop(key)
    assert _in_repository(now) == _in_repository(committed)


def _in_repository(value: object) -> object:
    """`value` with every absolute path into a checkout's benchmarks/results cut to the part
    from benchmarks/results on (a memory export a condition imports is planned by its absolute
    path; the committed plan holds the path of the checkout the run used)."""
    if isinstance(value, dict):
        return {k: _in_repository(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_in_repository(v) for v in value]
    marker = "/benchmarks/results/"
    if isinstance(value, str) and value.startswith("/") and marker in value:
        return value[value.index(marker) + 1 :]
    return value
