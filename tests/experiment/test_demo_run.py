"""The demo on memory v2's defaults (issue 26): its config carries the v2 settings, and its
experiment runs end to end on a scripted stand-in of the packaged fleet, without a data
directory (HumanEval only) and with one (GSM8K and MATH-500 added)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from memcollab.experiment.demo import (
    DEMO_EVAL_MODELS,
    DEMO_TEST,
    DEMO_TRAIN,
    demo_config,
    demo_out,
)
from memcollab.experiment.runner import Experiment
from memcollab.llm.cache import Gateway
from memcollab.memory import Memory
from memcollab.memory.labeller_data import LabellerDataError
from memcollab.tasks.datasets import load_tasks
from tests.experiment.demo_scripted import demo_scripted_fleet
from tests.memory.test_labeller import write_data_dir

V2 = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "v2" / "experiment.toml"
NAMESPACE = "memcollab-near-miss.by.qwen2.5-coder-1.5b"
CODE_KNOWN = "def separate_paren_groups("  # HumanEval/1, which the scripted 0.5B solves


@pytest.fixture
def no_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No data directory anywhere: MEMCOLLAB_DATA_DIR and the default one are empty."""
    empty = tmp_path / "no-data"
    monkeypatch.setenv("MEMCOLLAB_DATA_DIR", str(empty))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    return empty


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_the_demo_config_carries_memory_v2s_settings(tmp_path: Path) -> None:
    v2 = tomllib.loads(V2.read_text(encoding="utf-8"))
    config = demo_config(tmp_path / "out")
    assert config.agent.repair == v2["agent"]["repair"] == "live"
    for key in ("labeller", "screen", "merge"):
        assert getattr(config.memory, key) == v2["memory"][key], key
    assert config.condition["memcollab"] == {"kind": "memcollab"} | {
        "pairing": v2["condition"]["memcollab-v2"]["pairing"]
    }
    # kept: the sizes, the engines' budget and the evaluated models
    assert (config.agent.max_turns, config.agent.max_tokens) == (2, 256)
    assert config.train.tasks == [f"humaneval:train[:{DEMO_TRAIN}]"]
    assert config.eval == {"humaneval": f"humaneval:test[:{DEMO_TEST}]"}
    assert config.eval_models == DEMO_EVAL_MODELS and config.conditions == ["vanilla", "memcollab"]
    resolved = config.resolved_json()  # what plan.json records
    both = resolved["memory"] | resolved["agent"]
    assert {k: both[k] for k in ("labeller", "screen", "merge", "repair")} == {
        "labeller": "trained",
        "screen": "v2",
        "merge": True,
        "repair": "live",
    }
    # a v1 demo run stored in the old folder would refuse these settings: not that folder
    assert demo_out().name == "demo-v2"


def test_the_demo_runs_end_to_end_without_a_data_directory(tmp_path: Path, no_data: Path) -> None:
    out = tmp_path / "out"
    experiment = Experiment(demo_config(out, train=2, test=2), Gateway(None), demo_scripted_fleet())
    assert list(experiment.recipes) == [NAMESPACE]
    part = experiment.run()
    assert part["finished"] and not no_data.exists()

    rows = _rows(out)
    assert {(r["model"], r["condition"]) for r in rows} == {
        (m, c) for m in DEMO_EVAL_MODELS for c in ("vanilla", "memcollab")
    }
    assert {r["task_id"] for r in rows} == {"humaneval/64", "humaneval/65"}
    by = {(r["task_id"], r["model"], r["condition"]): r for r in rows}
    for task in ("humaneval/64", "humaneval/65"):
        assert not by[(task, "qwen2.5-coder-0.5b", "vanilla")]["correct"]
        served = by[(task, "qwen2.5-coder-0.5b", "memcollab")]
        assert served["record_ids"] and served["correct"]  # the memory reached the model

    with Memory.open(out / "memory.sqlite") as memory:
        records = memory.list(NAMESPACE)
    # near-miss: tau- is the strongest failure (the 0.5B on HumanEval/0), never Gemma,
    # which solves nothing (under the floor): HumanEval/1, which only Gemma failed, is
    # left unpaired (the paper's pairing would have paired both tasks with Gemma's failure)
    assert [(r.source_task_id, r.pair_type, r.model_pos, r.model_neg) for r in records] == [
        ("humaneval/0", "near_miss", "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")
    ]
    summary = json.loads((out / "build_summary.json").read_text())[NAMESPACE]
    assert summary["recipe"]["pairing"] == "near_miss"
    assert (summary["pairing"]["excluded_negatives"], summary["pairing"]["below_floor"]) == (1, 1)
    assert "merge" in summary  # merge = true ran its pass
    assert list(summary["classifier"]) == ["code"]  # the trained labeller, code only
    stats = json.loads((out / "eval_classifier_stats.json").read_text())
    assert list(stats) == ["trained"] and stats["trained"]["code"]["unsupported"] == 0
    # the live repair loop: a failed visible check shows the value the code returned
    train = [json.loads(line) for line in (out / "train" / "trajectories.jsonl").open()]
    (failed,) = [t for t in train if t["model"] == "qwen2.5-coder-0.5b" and not t["correct"]]
    feedback = failed["messages"][3]["content"]
    assert "`has_close_elements([1.0, 2.0, 3.0], 0.5)` returned None, but the test" in feedback

    again = Experiment(demo_config(out, train=2, test=2), Gateway(None), demo_scripted_fleet())
    assert {p: v["computed"] for p, v in again.run()["phases"].items()} == {
        "train": 0,
        "memory": 0,
        "eval": 0,
    }


def _math_files(root: Path) -> Path:
    """A data directory with the trained labeller's train files (synthetic, shaped like the
    real ones) and GSM8K / MATH-500 test files; every math task's answer is 4."""
    write_data_dir(root)
    tests = [
        {"question": f"Tom has {i} and 4 - {i} pens. How many?", "answer": "#### 4"} for i in (1, 2)
    ]
    (root / "gsm8k" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tests))
    rows = [
        {
            "problem": f"Compute {i} + {4 - i}.",
            "solution": "\\boxed{4}",
            "subject": "Algebra",
            "level": 1,
            "unique_id": f"test/algebra/{i}.json",
        }
        for i in (1, 2)
    ]
    (root / "math" / "math500_test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_the_demo_with_a_data_directory_adds_math_and_trains_the_labeller_on_it(
    tmp_path: Path, no_data: Path
) -> None:
    data = _math_files(tmp_path / "data")
    out = tmp_path / "out"
    config = demo_config(out, train=2, test=2, data_dir=data)
    assert set(config.eval) == {"humaneval", "gsm8k", "math500"}
    second = load_tasks("gsm8k:train[:2]", data)[1].prompt  # the 0.5B solves it (floor)
    Experiment(config, Gateway(None), demo_scripted_fleet(knows=[CODE_KNOWN, second])).run()

    rows = _rows(out)
    assert {r["task_id"].split("/")[0] for r in rows} == {"humaneval", "gsm8k", "math500"}
    with Memory.open(out / "memory.sqlite") as memory:
        records = memory.list(NAMESPACE)
    assert {r.domain for r in records} == {"code", "math"}
    # math records are filed by the model fitted on the data directory's train files
    math = [r for r in records if r.domain == "math"]
    assert all(r.category == "Grade-school word problems" for r in math)
    summary = json.loads((out / "build_summary.json").read_text())[NAMESPACE]
    assert set(summary["classifier"]) == {"code", "math"}
    served = [
        r for r in rows if r["model"] == "qwen2.5-coder-0.5b" and r["condition"] == "memcollab"
    ]
    assert len(served) == 6 and all(r["correct"] and r["record_ids"] for r in served)


def test_a_data_directory_without_the_labellers_train_files_fails_before_training(
    tmp_path: Path, no_data: Path
) -> None:
    data = _math_files(tmp_path / "data")
    (data / "math" / "train.jsonl").unlink()  # GSM8K and MATH-500 load; the labeller's file is gone
    out = tmp_path / "out"
    experiment = Experiment(
        demo_config(out, train=2, test=2, data_dir=data), Gateway(None), demo_scripted_fleet()
    )
    with pytest.raises(LabellerDataError, match=r"math/train\.jsonl.*memcollab data get"):
        experiment.run()
    assert not (out / "train").exists()  # nothing was collected first


@pytest.fixture
def scripted_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    """`memcollab demo` on the scripted fleet: no packaged model is assembled or loaded.

    HumanEval/1 and /6 share a bucket (Parsing / brackets and nesting); the scripted 0.5B
    fails only those two of HumanEval/0-6, so their two records teach the same constraint."""
    from memcollab import cli_experiment
    from memcollab.experiment import demo

    known = [t for t in load_tasks("humaneval:train[:6]", None) if t.id != "humaneval/1"]
    knows = [f"def {t.entry_point}(" for t in known]
    monkeypatch.setattr(demo, "demo_fleet", lambda: demo_scripted_fleet(knows))
    monkeypatch.setattr(cli_experiment, "prepare_with_progress", lambda names: None)


def test_the_demo_command_prints_merged_constraints_once_with_their_support(
    tmp_path: Path, no_data: Path, scripted_demo: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from memcollab.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as done:  # typer ends a command that succeeded so
        main(["demo", "--train", "7", "--test", "1", "--out", str(out), "--no-cache"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    with Memory.open(out / "memory.sqlite") as memory:
        records = memory.list(NAMESPACE)
    assert sorted(r.source_task_id for r in records) == ["humaneval/1", "humaneval/6"]
    assert sorted(len(r.constraints) for r in records) == [0, 1]  # merged into one
    learned = printed.split("Constraints the fleet learned")[1].split("Accuracy (%)")[0]
    assert learned.count("Parsing / brackets and nesting") == 1  # the emptied record: not shown
    assert "neighbouring items. (support 2)" in " ".join(learned.split())


def test_the_demo_command_says_why_it_learned_no_constraint(
    tmp_path: Path,
    no_data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As in the measured demo's training runs (repair v1), both Qwen models solve a
    training task that Gemma fails: near-miss pairs nothing there (Gemma is under the floor)."""
    from memcollab import cli_experiment
    from memcollab.cli import main
    from memcollab.experiment import demo

    monkeypatch.setattr(demo, "demo_fleet", lambda: demo_scripted_fleet(["def "]))  # knows all
    monkeypatch.setattr(cli_experiment, "prepare_with_progress", lambda names: None)
    with pytest.raises(SystemExit) as done:
        main(["demo", "--train", "2", "--test", "1", "--out", str(tmp_path / "out"), "--no-cache"])
    assert done.value.code == 0
    printed = capsys.readouterr().out
    learned = " ".join(
        printed.split("Constraints the fleet learned")[1].split("Accuracy (%)")[0].split()
    )
    assert (
        f"none in {NAMESPACE}: 0 pair(s) of 2 training tasks (2 with a success and a failure,"
        " 2 of them failed only by models under the near-miss floor); 0 constraint(s) kept"
        in learned
    )


def test_the_demo_command_without_the_labellers_train_files_is_one_line(
    tmp_path: Path, no_data: Path, scripted_demo: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from memcollab.cli import main

    data = _math_files(tmp_path / "data")
    (data / "gsm8k" / "train.jsonl").rename(data / "gsm8k" / "kept.jsonl")
    args = ["demo", "--train", "2", "--test", "1", "--data-dir", str(data), "--no-cache"]
    # GSM8K train is a demo task too: its own loader says so first, as one line
    assert main([*args, "--out", str(tmp_path / "a")]) == 2
    assert "gsm8k" in capsys.readouterr().err
    (data / "gsm8k" / "kept.jsonl").rename(data / "gsm8k" / "train.jsonl")
    (data / "math" / "train.jsonl").unlink()
    assert main([*args, "--out", str(tmp_path / "b")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: the trained labeller needs")
    assert "math/train.jsonl" in err[0] and "memcollab data get" in err[0]


def test_the_demo_evaluates_an_imported_memory_beside_its_own(
    tmp_path: Path, no_data: Path, scripted_demo: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from memcollab.cli import main
    from memcollab.memory import MemoryRecord
    from memcollab.memory.record import Constraint, record_id, task_hash

    text = "Write a function that tells whether any two numbers are closer than a threshold."
    rule = Constraint(
        when="a task asks whether any two items satisfy a condition",
        enforce="checking every pair of items once",
        avoid="stopping after the adjacent pairs",
    )
    export = tmp_path / "built-elsewhere.jsonl"
    with Memory.open(tmp_path / "elsewhere.sqlite") as memory:
        memory.add(
            MemoryRecord(
                id=record_id("team", "mbpp/1", "near_miss", "a", "b", "a"),
                namespace="team",
                domain="code",
                category="Lists and arrays",
                subcategory="pairwise comparison",
                task_text=text,
                task_hash=task_hash(text),
                source_task_id="mbpp/1",
                constraints=(rule,),
                model_pos="a",
                model_neg="b",
                pair_type="near_miss",
                distiller="a",
                created_at=1.0,
            )
        )
        memory.export(export, "team")
    out = tmp_path / "out"
    args = ["demo", "--train", "2", "--test", "1", "--out", str(out), "--no-cache"]
    with pytest.raises(SystemExit) as done:
        main([*args, "--memory-export", str(export)])
    assert done.value.code == 0
    printed = " ".join(capsys.readouterr().out.split())
    rows = _rows(out)
    assert {r["condition"] for r in rows} == {"vanilla", "memcollab", "imported"}
    imported = {r["model"]: r for r in rows if r["condition"] == "imported"}
    assert set(imported) == set(DEMO_EVAL_MODELS)
    # The scripted 0.5B is right only with a memory block: the imported record reached it.
    assert (
        imported["qwen2.5-coder-0.5b"]["correct"] and imported["qwen2.5-coder-0.5b"]["record_ids"]
    )
    gave = printed.split("Constraints the imported memory gave (built-elsewhere.jsonl)")[1]
    assert "humaneval/64 qwen2.5-coder-0.5b (right): 1 record(s)" in gave
    assert "avoid stopping after the adjacent pairs" in gave
    # the demo's own memory is listed alone under what the fleet learned
    learned = printed.split("Constraints the fleet learned")[1].split("Constraints the imported")[0]
    assert "avoid comparing only neighbouring items" in learned
    assert "adjacent pairs" not in learned
    # A missing export is one clear line before anything runs.
    assert main([*args, "--memory-export", str(tmp_path / "nope.jsonl")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: no memory export at")
