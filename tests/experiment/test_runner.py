"""The whole experiment pipeline (collect, distil, retrieve, evaluate, report) on scripted
models, in seconds; effects are known in advance (see tests/experiment/scripted.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from memcollab.errors import UserError
from memcollab.experiment.config import parse_experiment
from memcollab.experiment.plots import p_ablation_points
from memcollab.experiment.report import write_report
from memcollab.experiment.results import describe_phase, load_results
from memcollab.experiment.runner import Experiment, ProgressEvent
from memcollab.llm.cache import CallCache, Gateway
from memcollab.llm.fleet import Fleet
from memcollab.memory.store import SQLiteMemory, read_jsonl
from tests.experiment.scripted import experiment_dict, fleet_dict


def _experiment(tmp_path: Path, conditions: list[str] | None = None) -> Experiment:
    config = parse_experiment(experiment_dict(tmp_path, conditions))
    return Experiment(config, Gateway(None), Fleet.from_dict(fleet_dict()))


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_dry_run_estimate_counts_the_plan_and_writes_nothing(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path)
    estimate = experiment.estimate()
    assert estimate["train"].jobs == 4 * 2  # 4 training tasks x 2 models
    assert estimate["eval"].jobs == 6 * 2 * 6  # 6 test tasks x 2 models x 6 conditions
    assert estimate["train"].done == 0 and estimate["eval"].done == 0
    assert estimate["train"].calls == 8 * 2  # no trajectories yet: max_turns per task
    # memories: memcollab by right, own of right (also "other" for wrong), own of wrong
    assert set(experiment.recipes) == {
        "memcollab.by.right",
        "own.right.by.right",
        "own.wrong.by.wrong",
    }
    assert not (tmp_path / "out").exists()


def test_pipeline_end_to_end_then_resume_and_report(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path)
    events: list[ProgressEvent] = []
    part = experiment.run(events.append)
    out = tmp_path / "out"
    assert part["finished"] and part["phases"]["train"]["computed"] == 8
    assert part["phases"]["eval"]["computed"] == 72

    rows = _rows(out)
    assert len(rows) == 72
    by = {(r["task_id"], r["model"], r["condition"]): r for r in rows}
    tasks = {r["task_id"] for r in rows}
    assert all(by[(t, "right", "vanilla")]["correct"] for t in tasks)
    assert not any(by[(t, "wrong", "vanilla")]["correct"] for t in tasks)
    for condition in ("own", "other", "memcollab", "placebo", "memcollab-p1"):
        for t in tasks:
            row = by[(t, "wrong", condition)]
            assert row["constraints"] > 0 and row["record_ids"], (condition, t)
            assert row["correct"], (condition, t)  # memory turns `wrong` right

    with SQLiteMemory(out / "memory.sqlite") as memory:
        mem = {ns: memory.records(ns) for ns in experiment.recipes}
        # memory comes from training tasks only
        assert all(r.source_task_id.startswith("train-") for rs in mem.values() for r in rs)
        assert len(mem["memcollab.by.right"]) == 4  # every training task is mixed
        assert {r.pair_type for r in mem["own.wrong.by.wrong"]} == {"own_failure"}
        category = {r.id: r.category for rs in mem.values() for r in rs}
    for t in tasks:
        real = by[(t, "wrong", "memcollab")]
        placebo = by[(t, "wrong", "placebo")]
        assert placebo["constraints"] == real["constraints"]
        assert all(category[i] != placebo["category"] for i in placebo["record_ids"])
        assert all(category[i] == real["category"] for i in real["record_ids"])
        assert len(by[(t, "wrong", "memcollab-p1")]["record_ids"]) == 1
        assert by[(t, "wrong", "other")]["record_ids"][0] in {
            r.id for r in mem["own.right.by.right"]
        }
    assert len(read_jsonl(out / "memories" / "memcollab.by.right.jsonl")) == 4
    assert {e.phase for e in events} == {"train", "memory", "eval"}

    stamps = experiment.eval_store.created_at()
    again = _experiment(tmp_path).run()
    assert again["phases"]["train"]["computed"] == 0
    assert again["phases"]["memory"]["computed"] == 0
    assert again["phases"]["eval"]["computed"] == 0
    assert experiment.eval_store.created_at() == stamps
    assert len((out / "parts.jsonl").read_text().splitlines()) == 2

    # A run stopped mid-evaluation has no results.jsonl: the report elsewhere still gets
    # the per-task table, from the store
    table = (out / "results.jsonl").read_text()
    (out / "results.jsonl").unlink()
    write_report(out, tmp_path / "published")
    assert (tmp_path / "published" / "results.jsonl").read_text() == table
    (out / "results.jsonl").write_text(table)

    text, plots = write_report(out)
    assert "| wrong | memcollab | 100.0 | 100.0 |" in text
    assert "| wrong | vanilla | 0.0 | 0.0 |" in text
    # wrong + memcollab vs wrong vanilla on 6 tasks: b = 0, c = 6, exact p = 2 / 2**6
    assert (
        "| wrong | memcollab - vanilla | all | 6 | +100.0 | [+100.0, +100.0] | 0 | 6 | 0.0312 |"
        in text
    )
    assert "| right | memcollab - vanilla | all | 6 | +0.0 |" in text
    # direct comparisons: memcollab against the other memories, its variants against it
    direct = text.split("### Memory conditions against each other")[1]
    for contrast in ("memcollab - own", "memcollab - other", "memcollab - placebo"):
        assert f"| wrong | {contrast} | all | 6 |" in direct
    assert "| wrong | memcollab-p1 - memcollab | all | 6 | +0.0 |" in direct
    assert {p.name for p in plots} == {
        "accuracy_by_condition.png",
        "turns_by_condition.png",
        "constraints_vs_accuracy.png",  # memcollab (p = 3) and memcollab-p1
    }
    for plot in plots:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "report.md").read_text() == text
    # the p-ablation line runs from vanilla (p = 0, nothing retrieved) through p = 1 and 3
    results = load_results(out)
    line = p_ablation_points(results)["wrong"]
    assert [p for p, _, _ in line] == [0, 1, 3]
    assert [acc for _, _, acc in line] == [0.0, 100.0, 100.0]
    given = [x for _, x, _ in line]
    assert given[0] == 0.0 and 0 < given[1] <= 1 < given[2] <= 3


def test_p_ablation_plot_needs_two_sizes(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path, ["vanilla", "memcollab", "memcollab-global"])
    experiment.run()
    _, plots = write_report(tmp_path / "out")
    assert "constraints_vs_accuracy.png" not in {p.name for p in plots}


@pytest.mark.parametrize("screen", ["v1", "v2"])
def test_memory_screen_setting_reaches_the_distiller(tmp_path: Path, screen: str) -> None:
    from tests.experiment.scripted import DISTILLED

    fleet = fleet_dict()
    vacuous = "2. When converting units, enforce the correct conversion factor; avoid rounding."
    for spec in fleet["models"].values():
        spec["rules"]["reusable reasoning rules"] = f"{DISTILLED}\n{vacuous}"
    raw = experiment_dict(tmp_path, ["vanilla", "memcollab"])
    raw["memory"] = {"screen": screen}
    Experiment(parse_experiment(raw), Gateway(None), Fleet.from_dict(fleet)).run(
        phases=["train", "memory"]
    )
    summary = json.loads((tmp_path / "out" / "build_summary.json").read_text())
    distill = summary["memcollab.by.right"]["distill"]
    with SQLiteMemory(tmp_path / "out" / "memory.sqlite") as memory:
        kept = {len(r.constraints) for r in memory.records("memcollab.by.right")}
    if screen == "v1":
        assert kept == {2} and distill["rejected"] == {}
    else:
        assert kept == {1} and distill["rejected"] == {"vacuous": distill["pairs"]}


def test_memory_merge_setting_merges_near_duplicates(tmp_path: Path) -> None:
    raw = experiment_dict(tmp_path, ["vanilla", "memcollab"])
    raw["memory"] = {"merge": True}
    Experiment(parse_experiment(raw), Gateway(None), Fleet.from_dict(fleet_dict())).run(
        phases=["train", "memory"]
    )
    summary = json.loads((tmp_path / "out" / "build_summary.json").read_text())
    merge = summary["memcollab.by.right"]["merge"]
    with SQLiteMemory(tmp_path / "out" / "memory.sqlite") as memory:
        records = memory.records("memcollab.by.right")
    # every pair distils the same constraint: one per bucket remains, supported by all
    support = [c.support for r in records for c in r.constraints]
    assert sum(support) == len(records) and merge["merged"] == len(records) - len(support)
    assert merge["merged"] > 0 and max(support) > 1


def test_partial_run_reports_only_complete_tasks(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path, ["vanilla", "memcollab"])
    experiment.run(phases=["train", "memory"])
    jobs = experiment.eval_jobs(None)[:5]  # task-major: tasks 1-2 complete, part of task 2
    from memcollab.collect import run_jobs

    run_jobs(jobs, experiment.eval_store)
    text, _ = write_report(tmp_path / "out")
    assert "Complete tasks (every model x condition stored): 1 of 6 planned" in text


def test_eval_jobs_interleave_benchmarks_so_a_partial_run_covers_each(tmp_path: Path) -> None:
    from tests.experiment.scripted import task_file

    raw = experiment_dict(tmp_path, ["vanilla", "memcollab"])
    raw["eval"]["short"] = task_file(tmp_path / "short.jsonl", "short", "q")
    experiment = Experiment(parse_experiment(raw), Gateway(None), Fleet.from_dict(fleet_dict()))
    order = [j.task.id for j in experiment.eval_jobs(None)]
    tasks = [tid for i, tid in enumerate(order) if i == 0 or order[i - 1] != tid]
    assert tasks == [
        "test-add-x",
        "short-add-q",
        "test-mul-x",
        "short-mul-q",
        "test-add-y",
        "test-mul-y",
        "test-add-z",
        "test-mul-z",
    ]
    assert len(order) == 8 * 2 * 2  # every task x condition x model, once


def test_eval_refuses_a_memory_that_is_not_fully_built(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path, ["vanilla", "memcollab"])
    experiment.run(phases=["train"])
    with pytest.raises(UserError, match="memory memcollab.by.right is not fully built"):
        experiment.run(phases=["eval"])
    assert not (tmp_path / "out" / "eval").exists()


def test_a_stopped_part_records_what_it_computed_in_the_stopped_phase(tmp_path: Path) -> None:
    raw = {**experiment_dict(tmp_path, ["vanilla", "memcollab"]), "workers": 1}
    experiment = Experiment(parse_experiment(raw), Gateway(None), Fleet.from_dict(fleet_dict()))
    seen = []

    def stop_after_three(event: ProgressEvent) -> None:
        if event.phase == "train" and event.total is None and not event.skipped:
            seen.append(event)
            if len(seen) == 3:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        experiment.run(stop_after_three)
    part = json.loads((tmp_path / "out" / "parts.jsonl").read_text().splitlines()[-1])
    assert part["finished"] is False
    assert part["phases"]["train"]["interrupted"] is True
    computed = part["phases"]["train"]["computed"]
    # the three reported, plus what had landed by the stop (one worker: at most 2 pending)
    assert 3 <= computed <= 4

    again = _experiment(tmp_path, ["vanilla", "memcollab"]).run()
    # a job still in flight at the stop may land after the part is recorded
    assert again["phases"]["train"]["computed"] <= 8 - computed
    assert len(list(experiment.train_store)) == 8
    text, _ = write_report(tmp_path / "out")
    assert re.search(rf"train: {computed} new in [0-9.]+ min \(stopped\)", text)
    assert "memory: 4 new records in" in text


def test_changed_agent_settings_over_a_stored_run_are_refused(tmp_path: Path) -> None:
    _experiment(tmp_path, ["vanilla", "memcollab"]).run(phases=["train"])
    raw = {**experiment_dict(tmp_path, ["vanilla", "memcollab"]), "agent": {"max_turns": 3}}
    changed = Experiment(parse_experiment(raw), Gateway(None), Fleet.from_dict(fleet_dict()))
    with pytest.raises(UserError, match=r"\[agent\] differs from the run stored in"):
        changed.run()
    redone = changed.run(phases=["train"], redo=True)  # --redo recomputes everything
    assert redone["phases"]["train"]["computed"] == 8


def test_evaluation_tasks_must_not_be_training_tasks(tmp_path: Path) -> None:
    raw = experiment_dict(tmp_path)
    raw["eval"] = {"leak": raw["train"]["tasks"][0]}
    with pytest.raises(UserError, match="also a training task"):
        Experiment(parse_experiment(raw), Gateway(None), Fleet.from_dict(fleet_dict()))


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"conditions": ["vanilla", "nonsense"]}, "unknown condition 'nonsense'"),
        ({"condition": {"memcollab": {"q": 1}}}, "unknown field(s) q"),
        ({"condition": {"memcollab": {"p": 0}}}, "p must be at least 1"),
        ({"condition": {"own2": {"kind": "own"}}}, "not in `conditions`"),
        ({"conditions": ["vanilla", "vanilla"]}, "listed twice"),
        ({"eval": {}}, "names no benchmark"),
        ({"agent": {"max_turns": 0}}, "agent.max_turns"),
        ({"memory": {"distiller": "right"}}, "[memory] distiller is not read"),
        ({"memory": {"screen": "v3"}}, "memory.screen"),
    ],
)
def test_bad_experiment_files_get_one_clear_error(
    tmp_path: Path, change: dict, needle: str
) -> None:
    raw = {**experiment_dict(tmp_path), **change}
    with pytest.raises(UserError) as info:
        Experiment(parse_experiment(raw), Gateway(None), Fleet.from_dict(fleet_dict()))
    assert needle in str(info.value)


def test_other_source_must_be_a_fleet_model(tmp_path: Path) -> None:
    raw = {**experiment_dict(tmp_path, ["vanilla", "other"])}
    raw["condition"] = {"other": {"source": "gpt-9"}}
    with pytest.raises(UserError, match="no fleet model 'gpt-9'"):
        Experiment(parse_experiment(raw), Gateway(None), Fleet.from_dict(fleet_dict()))


def _files(tmp_path: Path, conditions: str = '["vanilla", "memcollab"]') -> Path:
    from tests.experiment.scripted import fleet_toml, task_file

    (tmp_path / "fleet.toml").write_text(fleet_toml())
    train = task_file(tmp_path / "train.jsonl", "train", "ab")
    test = task_file(tmp_path / "test.jsonl", "test", "xy")
    path = tmp_path / "experiment.toml"
    path.write_text(
        f'name = "cli"\nfleet = "fleet.toml"\nout = "out"\nconditions = {conditions}\n'
        f"[agent]\nmax_turns = 2\n[train]\ntasks = [{json.dumps(train)}]\n"
        f"[eval]\ntoy = {json.dumps(test)}\n"
    )
    return path


def test_cli_dry_run_run_and_report(tmp_path: Path) -> None:
    from tests.test_cli import run_cli

    path = _files(tmp_path)
    dry = run_cli("experiment", "run", str(path), "--dry-run", "--no-cache")
    assert dry.returncode == 0, dry.stderr
    assert "Plan of cli" in dry.stdout and not (tmp_path / "out").exists()
    done = run_cli("experiment", "run", str(path), "--no-cache")
    assert done.returncode == 0, done.stderr
    assert "| wrong | memcollab | 100.0 | 100.0 |" in done.stdout
    assert (tmp_path / "out" / "results.jsonl").read_text().count("\n") == 4 * 2 * 2
    shown = run_cli("experiment", "report", str(tmp_path / "out"), "--out", str(tmp_path / "r"))
    assert shown.returncode == 0, shown.stderr
    assert (tmp_path / "r" / "report.md").is_file()
    assert (tmp_path / "r" / "accuracy_by_condition.png").is_file()
    for name in ("results.jsonl", "plan.json", "parts.jsonl", "memories/memcollab.by.right.jsonl"):
        assert (tmp_path / "r" / name).is_file(), name


def test_cli_bad_input_gets_one_line(tmp_path: Path) -> None:
    from tests.test_cli import assert_one_line_error, run_cli

    assert_one_line_error(run_cli("experiment", "run", str(tmp_path / "nope.toml")), "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('out = "o"\n[eval]\ntoy = "gsm8k:test"\nconditions = ["vanilla"]\n')
    assert_one_line_error(run_cli("experiment", "run", str(bad)), "landed in the [eval] table")
    path = _files(tmp_path, '["vanilla", "placebo2"]')
    assert_one_line_error(run_cli("experiment", "run", str(path)), "unknown condition")
    assert_one_line_error(
        run_cli("experiment", "report", str(tmp_path)), "not an experiment folder"
    )
    path = _files(tmp_path)
    assert_one_line_error(
        run_cli("experiment", "run", str(path), "--phase", "evil"), "unknown phase"
    )


def test_eval_models_limit_evaluation_not_training(tmp_path: Path) -> None:
    raw = {**experiment_dict(tmp_path, ["vanilla", "memcollab"]), "eval_models": ["wrong"]}
    experiment = Experiment(parse_experiment(raw), Gateway(None), Fleet.from_dict(fleet_dict()))
    part = experiment.run()
    assert part["phases"]["train"]["computed"] == 8  # both models build the memory
    rows = _rows(tmp_path / "out")
    assert {r["model"] for r in rows} == {"wrong"} and len(rows) == 6 * 2
    raw["eval_models"] = ["gpt-9"]
    with pytest.raises(UserError, match="gpt-9"):
        Experiment(parse_experiment(raw), Gateway(None), Fleet.from_dict(fleet_dict()))


def test_self_contrast_samples_and_pairs_a_models_own_attempts(tmp_path: Path) -> None:
    from memcollab.llm.scripted import ScriptedModel, rule_responder

    fleet = Fleet.from_dict(fleet_dict())
    rules = fleet_dict()["models"]["wrong"]["rules"]
    fixed = rule_responder(rules)

    def sampler(request):  # type: ignore[no-untyped-def]
        # sampled training attempts: even samples right, odd ones wrong
        if request.decoding.temperature > 0 and "<memory>" not in request.messages[0].content:
            return "\\boxed{4}" if request.sample_index % 2 == 0 else "\\boxed{5}"
        return fixed(request)

    fleet._built["wrong"] = ScriptedModel(sampler, name="wrong")  # a test double per model
    raw = {
        **experiment_dict(tmp_path, ["vanilla", "self-contrast"]),
        "condition": {"self-contrast": {"samples": 2, "temperature": 0.9}},
        "eval_models": ["wrong"],
    }
    experiment = Experiment(parse_experiment(raw), Gateway(None), fleet)
    assert list(experiment.recipes) == ["self-contrast.wrong.by.wrong"]
    part = experiment.run()
    assert part["phases"]["train"]["computed"] == 4 * 2  # 4 tasks x 2 samples, no vanilla
    samples = list(experiment.train_store)
    assert {(t.condition, t.sample_index) for t in samples} == {
        ("self-sample", 0),
        ("self-sample", 1),
    }
    with SQLiteMemory(tmp_path / "out" / "memory.sqlite") as memory:
        records = memory.records("self-contrast.wrong.by.wrong")
    assert len(records) == 4
    assert {(r.pair_type, r.model_pos, r.model_neg) for r in records} == {
        ("self_contrast", "wrong", "wrong")
    }
    rows = _rows(tmp_path / "out")
    assert all(r["correct"] for r in rows if r["condition"] == "self-contrast")
    assert not any(r["correct"] for r in rows if r["condition"] == "vanilla")


def test_memory_phase_needs_every_training_trajectory(tmp_path: Path) -> None:
    experiment = _experiment(tmp_path, ["vanilla", "memcollab"])
    with pytest.raises(UserError, match="8 training trajectories are missing"):
        experiment.run(phases=["memory"])


def test_sigterm_stops_a_run_at_once_and_it_resumes(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.experiment.scripted import fleet_toml

    path = _files(tmp_path)
    slow = fleet_toml().replace("strength = 1\n", "strength = 1\ndelay_s = 0.4\n")
    (tmp_path / "fleet.toml").write_text(
        slow.replace("strength = 2\n", "strength = 2\ndelay_s = 0.4\n")
    )
    cmd = [sys.executable, "-m", "memcollab", "experiment", "run", str(path), "--no-cache"]
    env = {**os.environ, "COLUMNS": "200"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 60
    train = tmp_path / "out" / "train" / "trajectories.sqlite"
    while not train.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    sent = time.time()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert time.time() - sent < 10
    assert "interrupted" in err and "Traceback" not in err
    parts = [json.loads(x) for x in (tmp_path / "out" / "parts.jsonl").read_text().splitlines()]
    assert parts[-1]["finished"] is False
    assert [v.get("interrupted") for v in parts[-1]["phases"].values()][-1] is True
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "results.jsonl").read_text().count("\n") == 4 * 2 * 2


def test_a_run_resumes_on_another_machine_from_its_exported_call_cache(tmp_path: Path) -> None:
    from memcollab.llm.cache import CallCache

    first = Experiment(
        parse_experiment(experiment_dict(tmp_path, ["vanilla", "memcollab"])),
        Gateway(CallCache(tmp_path / "calls.sqlite")),
        Fleet.from_dict(fleet_dict()),
    )
    first.run(lambda e: None)
    assert CallCache(tmp_path / "calls.sqlite").export_jsonl(tmp_path / "calls.jsonl.gz") > 0

    # The other machine: an empty run folder, the imported calls, and models that would
    # answer everything differently, so any call not replayed from the cache shows.
    imported = CallCache(tmp_path / "elsewhere.sqlite")
    imported.import_jsonl(tmp_path / "calls.jsonl.gz")
    config = {**experiment_dict(tmp_path, ["vanilla", "memcollab"]), "out": str(tmp_path / "b")}
    other_models = fleet_dict()
    for spec in other_models["models"].values():
        spec["rules"] = {"": "Something else. \\boxed{0}"}
    gateway = Gateway(imported)
    Experiment(parse_experiment(config), gateway, Fleet.from_dict(other_models)).run(lambda e: None)
    assert all(s.calls == 0 for s in gateway.stats().values()), gateway.stats()

    def verdicts(out: Path) -> list[tuple]:
        # Retrieved ids are compared in order: equal scores are broken by record id, so the
        # order does not depend on when (or how concurrently) each memory was built.
        keys = ("task_id", "model", "condition", "correct", "record_ids", "completion_tokens")
        return sorted(tuple(str(r.get(k)) for k in keys) for r in _rows(out))

    assert verdicts(tmp_path / "b") == verdicts(tmp_path / "out")


def test_a_run_restored_from_calls_and_trajectory_archives_recomputes_nothing(
    tmp_path: Path,
) -> None:
    from memcollab.collect import TrajectoryStore
    from memcollab.trajectory_archive import export_archive, import_archive

    conditions = ["vanilla", "memcollab"]
    first = Experiment(
        parse_experiment(experiment_dict(tmp_path, conditions)),
        Gateway(CallCache(tmp_path / "calls.sqlite")),
        Fleet.from_dict(fleet_dict()),
    )
    first.run(lambda e: None)
    CallCache(tmp_path / "calls.sqlite").export_jsonl(tmp_path / "calls.jsonl.gz")
    for phase in ("train", "eval"):
        store = TrajectoryStore.open_existing(tmp_path / "out" / phase)
        assert export_archive(store, tmp_path / f"{phase}.jsonl.gz") > 0

    imported = CallCache(tmp_path / "elsewhere.sqlite")
    imported.import_jsonl(tmp_path / "calls.jsonl.gz")
    for phase in ("train", "eval"):
        there = TrajectoryStore.in_dir(tmp_path / "b" / phase)
        import_archive(there, tmp_path / f"{phase}.jsonl.gz")
    config = {**experiment_dict(tmp_path, conditions), "out": str(tmp_path / "b")}
    gateway = Gateway(imported)
    part = Experiment(parse_experiment(config), gateway, Fleet.from_dict(fleet_dict())).run(
        lambda e: None
    )
    for phase in ("train", "eval"):  # nothing rebuilt, not even from replayed calls
        assert part["phases"][phase]["computed"] == 0, part
        assert part["phases"][phase]["replayed_calls"] == 0, part
    assert part["phases"]["memory"]["model_calls"] == 0, part
    assert all(s.calls == 0 for s in gateway.stats().values()), gateway.stats()
    assert _rows(tmp_path / "b") == _rows(tmp_path / "out")


def test_distillation_counts_do_not_depend_on_how_the_run_was_split(tmp_path: Path) -> None:
    config = parse_experiment(experiment_dict(tmp_path, ["vanilla", "memcollab"]))
    fleet = Fleet.from_dict(fleet_dict())
    gateway = Gateway(CallCache(tmp_path / "calls.sqlite"))
    summary = tmp_path / "out" / "build_summary.json"
    Experiment(config, gateway, fleet).run(phases=["train", "memory"])
    whole = json.loads(summary.read_text())
    assert any(s["distill"].get("ok", 0) > 0 for s in whole.values())
    again = Experiment(config, gateway, fleet).run(phases=["memory"])  # every record stored
    assert again["phases"]["memory"]["computed"] == 0
    assert again["phases"]["memory"]["model_calls"] == 0
    later = json.loads(summary.read_text())
    for ns, s in whole.items():
        assert later[ns]["distill"] == s["distill"], ns
        assert later[ns]["distill_covers"] == "every pair"


def test_parts_tell_model_calls_from_calls_replayed_from_the_cache(tmp_path: Path) -> None:
    """Trajectories rebuilt from a call cache count as computed; the call counters show
    that no model answered them."""
    config = parse_experiment(experiment_dict(tmp_path, ["vanilla", "memcollab"]))
    fleet = Fleet.from_dict(fleet_dict())
    cache = CallCache(tmp_path / "calls.sqlite")
    first = Experiment(config, Gateway(cache), fleet).run(phases=["train"])
    assert first["phases"]["train"]["computed"] == 8
    assert first["phases"]["train"]["model_calls"] > 0
    assert first["phases"]["train"]["replayed_calls"] == 0

    (tmp_path / "out" / "train" / "trajectories.sqlite").unlink()  # lost; calls kept
    replay = Experiment(config, Gateway(cache), fleet).run(phases=["train"])
    assert replay["phases"]["train"]["computed"] == 8
    assert replay["phases"]["train"]["model_calls"] == 0
    assert replay["phases"]["train"]["replayed_calls"] == first["phases"]["train"]["model_calls"]
    calls = first["phases"]["train"]["model_calls"]
    assert re.fullmatch(
        rf"train: 8 new in [0-9.]+ min; 0 model calls, {calls} replayed",
        describe_phase("train", replay["phases"]["train"]),
    )


def test_near_miss_memory_excludes_models_under_the_floor(tmp_path: Path) -> None:
    raw = experiment_dict(tmp_path, ["vanilla", "nm", "nm0"])
    raw["condition"] = {
        "nm": {"kind": "memcollab", "pairing": "near_miss"},
        "nm0": {"kind": "memcollab", "pairing": "near_miss", "floor": 0.0},
    }
    experiment = Experiment(parse_experiment(raw), Gateway(None), Fleet.from_dict(fleet_dict()))
    assert set(experiment.recipes) == {
        "memcollab-near-miss.by.right",
        "memcollab-near-miss.floor0.by.right",
    }
    experiment.run(lambda event: None, phases=["train", "memory"])
    summary = json.loads((tmp_path / "out" / "build_summary.json").read_text())
    # `wrong` answers no training task right: under the 5% floor it gives no tau-
    floor = summary["memcollab-near-miss.by.right"]["pairing"]
    assert floor["pairs"] == 0 and floor["below_floor"] == 4 and floor["excluded_negatives"] == 1
    open_floor = summary["memcollab-near-miss.floor0.by.right"]
    assert open_floor["pairing"]["pairs"] == 4 and open_floor["records_added"] == 4
    with SQLiteMemory(tmp_path / "out" / "memory.sqlite") as memory:
        pair_types = memory.stats("memcollab-near-miss.floor0.by.right")["pair_types"]
    assert pair_types == {"near_miss": {"records": 4, "constraints": 4}}
    with pytest.raises(UserError, match="pairing must be"):
        bad = experiment_dict(tmp_path, ["vanilla", "x"])
        bad["condition"] = {"x": {"kind": "memcollab", "pairing": "nearest"}}
        Experiment(parse_experiment(bad), Gateway(None), Fleet.from_dict(fleet_dict()))


def test_a_part_that_fails_is_recorded_as_failed_not_stopped(tmp_path: Path) -> None:
    """A part refused (eval before the memory is built) or crashed is no stopped part: the
    split table of a committed report must not pass a failure off as a clean stop."""
    experiment = _experiment(tmp_path, ["vanilla", "memcollab"])
    experiment.run(phases=["train"])
    with pytest.raises(UserError, match="not fully built"):
        experiment.run(phases=["eval"])
    part = json.loads((tmp_path / "out" / "parts.jsonl").read_text().splitlines()[-1])
    assert part["finished"] is False
    line = part["phases"]["eval"]
    assert "interrupted" not in line and line["computed"] == 0
    assert line["failed"].startswith("UserError: memory memcollab.by.right is not fully built")
    assert describe_phase("eval", line).startswith("eval: 0 new in 0.0 min (failed: UserError")
    experiment.run()
    text, _ = write_report(tmp_path / "out")
    assert re.search(
        r"\| 2 \| [^|]+ \| [0-9.]+ \| failed \| [^|]+ \| eval: 0 new in 0.0 min \(failed", text
    )
    assert "(stopped)" not in text


def test_a_built_memory_is_not_built_again_and_keeps_its_summary(tmp_path: Path) -> None:
    """A later part (or a plain run over a finished run) leaves build_summary.json as the
    build wrote it: building again would overwrite it with a pass that adds and merges
    nothing. `redo` still rebuilds."""
    experiment = _experiment(tmp_path, ["vanilla", "memcollab"])
    experiment.run(phases=["train", "memory"])
    summary = tmp_path / "out" / "build_summary.json"
    written = summary.read_bytes()
    assert json.loads(written)["memcollab.by.right"]["records_with_constraints"] >= 1
    part = experiment.run(phases=["memory"])
    assert part["phases"]["memory"]["computed"] == 0
    assert summary.read_bytes() == written
    experiment.run(phases=["memory"], redo=True)
    assert summary.read_bytes() != written  # rebuilt: its timings differ


def test_each_part_records_the_code_that_ran_it(tmp_path: Path) -> None:
    import memcollab

    experiment = _experiment(tmp_path, ["vanilla"])
    experiment.run(phases=["train"])
    line = json.loads((tmp_path / "out" / "parts.jsonl").read_text().splitlines()[-1])
    code = line["code"]
    assert code["version"] == memcollab.__version__
    assert code["source"] == str(Path(memcollab.__file__).resolve().parent)
    # From a git checkout (as the tests run): its commit; installed from a wheel: None.
    assert code["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", code["commit"])
