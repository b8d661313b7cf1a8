"""A condition that serves a committed memory export, a condition's own labeller, and the
development phase with the per-model utility gate, on scripted models (tests/experiment/
scripted.py): `right` is always right, `wrong` only with memory, and `fragile` (added here)
only without memory, so the gate's verdicts are known in advance."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from memcollab.collect import TrajectoryStore
from memcollab.errors import UserError
from memcollab.experiment.config import parse_experiment
from memcollab.experiment.gate import Gate, GateError
from memcollab.experiment.report import write_report
from memcollab.experiment.runner import Experiment, ProgressEvent
from memcollab.llm.cache import Gateway
from memcollab.llm.fleet import Fleet
from memcollab.memory import Memory
from memcollab.memory.guidance import UNLABELLED
from memcollab.trajectory import Trajectory
from tests.experiment.scripted import experiment_dict, fleet_dict, rules, task_file

MEMORY_NS = "memcollab.by.right"


def _fleet(fragile: bool = False) -> Fleet:
    data = fleet_dict()
    if fragile:  # right without memory, wrong with it: memory hurts it
        data["models"]["fragile"] = {
            "provider": "scripted",
            "strength": 1,
            "rules": rules("Plain: \\boxed{4}", "Misled: \\boxed{5}"),
        }
    return Fleet.from_dict(data)


def _experiment(raw: dict[str, Any], fragile: bool = False) -> Experiment:
    return Experiment(parse_experiment(raw), Gateway(None), _fleet(fragile))


def _rows(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def _dev_file(tmp_path: Path) -> str:
    """Development tasks: two of the training pool (one by id, one by text only) and four
    of its own."""
    rows = [
        {"id": "train-add-a", "q": "Add two and two, case a.", "a": 4},  # a pool task
        {"id": "copy-of-pool", "q": "Multiply two  by two, case b.", "a": 4},  # its text
    ]
    for letter in "pq":
        rows.append({"id": f"dev-add-{letter}", "q": f"Add two and two, dev {letter}.", "a": 4})
        rows.append({"id": f"dev-mul-{letter}", "q": f"Multiply two by two, dev {letter}.", "a": 4})
    path = tmp_path / "dev.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}#domain=math,prompt=q,answer=a,id=id"


def _gated(tmp_path: Path, rule: str = "non_negative", **dev: Any) -> dict[str, Any]:
    raw = experiment_dict(tmp_path, ["vanilla", "memcollab", "placebo"])
    raw["dev"] = {
        "tasks": {"toy": _dev_file(tmp_path)},
        "gate": ["memcollab"],
        "rule": rule,
        "follow": {"placebo": "memcollab"},
    } | dev
    return raw


def _export(tmp_path: Path) -> Path:
    """A memory export of another run (as the paper run's is committed)."""
    source = tmp_path / "source"
    source.mkdir()
    raw = experiment_dict(source, ["vanilla", "memcollab"])
    _experiment(raw).run(phases=["train", "memory"])
    return source / "out" / "memories" / f"{MEMORY_NS}.jsonl"


# -- a condition that serves a memory export ------------------------------------------------
def test_an_imported_export_is_served_apart_from_the_built_memory(tmp_path: Path) -> None:
    export = _export(tmp_path)
    sha = hashlib.sha256(export.read_bytes()).hexdigest()
    raw = experiment_dict(tmp_path, ["vanilla", "memcollab", "memcollab-paper"])
    raw["condition"] = {"memcollab-paper": {"kind": "memcollab", "memory": str(export)}}
    experiment = _experiment(raw)
    imported = f"{MEMORY_NS}.import-{sha[:12]}"
    assert set(experiment.recipes) == {MEMORY_NS, imported}
    part = experiment.run()
    out = tmp_path / "out"
    assert part["phases"]["memory"]["computed"] == 4 + 4  # built, and imported

    plan = json.loads((out / "plan.json").read_text())
    assert plan["conditions"]["memcollab-paper"]["memory_sha256"] == sha
    assert plan["memories"][imported] == {
        "pairing": "import",
        "distiller": "",
        "model": None,
        "samples": 0,
        "temperature": 0.0,
        "source": str(export),
        "sha256": sha,
    }
    assert "memory" not in plan["conditions"]["memcollab"]  # left out where unset
    with Memory.open(out / "memory.sqlite") as memory:
        served = {r.id: r for r in memory.list(imported)}
    lines = [json.loads(line) for line in export.read_text().splitlines()]
    exported = [e for e in lines if "change" not in e]  # then the build's history
    assert len(exported) == 4 and len(lines) == 8
    assert sorted(r.constraints for r in served.values()) == sorted(
        tuple(memory_constraints(e)) for e in exported
    )
    summary = json.loads((out / "build_summary.json").read_text())
    assert summary[imported]["imported"] == {"added": 4, "present": 0}

    rows = _rows(out)
    paper = [r for r in rows if r["condition"] == "memcollab-paper"]
    built = [r for r in rows if r["condition"] == "memcollab"]
    assert len(paper) == len(built) == 6 * 2
    assert all(set(r["record_ids"]) <= set(served) and r["record_ids"] for r in paper)
    assert not any(set(r["record_ids"]) & set(served) for r in built)
    assert all(r["correct"] for r in paper if r["model"] == "wrong")  # memory helps it
    notes = {t.retrieval["namespace"] for t in experiment.eval_store if t.retrieval}
    assert notes == {MEMORY_NS, imported}
    text, _ = write_report(out)
    assert "| wrong | memcollab-paper | 100.0 | 100.0 |" in text
    assert "| wrong | memcollab-paper - vanilla | all | 6 |" in text
    assert f"| {imported} | 0 | 4 | 0 | imported from {export.name} (sha256 {sha[:12]}) |" in text

    again = _experiment(raw).run()  # resumes: importing twice adds nothing
    assert again["phases"]["memory"]["computed"] == 0


def memory_constraints(exported: dict[str, Any]) -> list[Any]:
    from memcollab.memory.record import Constraint

    return [Constraint.model_validate(c) for c in exported["constraints"]]


def test_an_import_only_experiment_needs_no_training_pool(tmp_path: Path) -> None:
    export = _export(tmp_path)
    raw = experiment_dict(tmp_path, ["vanilla", "paper"])
    raw["train"] = {"tasks": []}
    raw["condition"] = {"paper": {"kind": "placebo", "memory": str(export)}}
    experiment = _experiment(raw)
    assert experiment.train_jobs() == []
    part = experiment.run()
    assert part["phases"]["train"]["computed"] == 0
    rows = [r for r in _rows(tmp_path / "out") if r["condition"] == "paper"]
    assert rows and all(r["constraints"] > 0 for r in rows)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"memory": "missing.jsonl"}, "missing.jsonl does not exist"),
        ({"memory": "EXPORT", "pairing": "near_miss"}, "builds nothing"),
        ({"labeller": "gpt"}, "unknown labeller 'gpt'"),
    ],
)
def test_bad_import_settings_are_one_clear_error(
    tmp_path: Path, fields: dict[str, str], message: str
) -> None:
    export = tmp_path / "export.jsonl"
    export.write_text("")
    fields = {k: str(export) if v == "EXPORT" else v for k, v in fields.items()}
    raw = experiment_dict(tmp_path, ["vanilla", "paper"])
    raw["condition"] = {"paper": {"kind": "memcollab", **fields}}
    with pytest.raises(UserError, match=message):
        _experiment(raw)


def test_the_memory_path_is_relative_to_the_experiment_file(tmp_path: Path) -> None:
    from memcollab.experiment.config import load_experiment

    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "m.jsonl").write_text("")
    (tmp_path / "runs").mkdir()
    path = tmp_path / "runs" / "e.toml"
    path.write_text(
        'conditions = ["vanilla", "paper"]\n[eval]\ntoy = "gsm8k:test"\n'
        '[condition.paper]\nkind = "memcollab"\nmemory = "../exports/m.jsonl"\n'
    )
    config = load_experiment(path)
    assert config.condition["paper"]["memory"] == str(tmp_path / "exports" / "m.jsonl")


# -- a condition's own labeller ---------------------------------------------------------------
def test_a_condition_labels_its_queries_with_its_own_labeller(tmp_path: Path) -> None:
    from tests.memory.test_labeller import write_data_dir

    export = _export(tmp_path)  # records filed by the LLM classifier (Algebra, Prealgebra)
    raw = experiment_dict(tmp_path, ["vanilla", "memcollab", "memcollab-paper"])
    raw["data_dir"] = str(write_data_dir(tmp_path / "data"))
    raw["memory"] = {"labeller": "trained"}
    raw["condition"] = {
        "memcollab-paper": {"kind": "memcollab", "memory": str(export), "labeller": "llm"}
    }
    experiment = _experiment(raw)
    plan = experiment.plan_json()
    assert plan["conditions"]["memcollab-paper"]["labeller"] == "llm"
    assert "labeller" not in plan["conditions"]["memcollab"]
    experiment.run()
    out = tmp_path / "out"
    rows = _rows(out)
    # The trained labeller abstains on these synthetic tasks; the LLM labeller files them
    # as the records were filed, so the imported records are found in their category.
    assert {r["category"] for r in rows if r["condition"] == "memcollab"} == {UNLABELLED}
    paper = [r for r in rows if r["condition"] == "memcollab-paper"]
    assert {r["category"] for r in paper} == {"Algebra", "Prealgebra"}
    assert {r["level"] for r in paper} == {"subcategory"}
    stats = json.loads((out / "eval_classifier_stats.json").read_text())
    assert set(stats) == {"trained", "llm:right", "llm:wrong"}
    assert stats["llm:wrong"]["math"]["classifications"] > 0

    raw["condition"]["memcollab-paper"]["labeller"] = "trained"
    with pytest.raises(UserError, match="labeller of condition memcollab-paper differs"):
        _experiment(raw).run()


# -- the development phase and the gate --------------------------------------------------------
def test_the_gate_withholds_memory_where_the_rule_says_no(tmp_path: Path) -> None:
    experiment = _experiment(_gated(tmp_path), fragile=True)
    assert experiment.estimate()["dev"].jobs == 4 * 2 * 3  # dev tasks x (vanilla, gated) x models
    events: list[ProgressEvent] = []
    part = experiment.run(events.append)
    out = tmp_path / "out"
    assert list(part["phases"]) == ["train", "memory", "dev", "eval"]
    assert part["phases"]["dev"]["computed"] == 24
    assert "dev" in {e.phase for e in events}

    gate = json.loads((out / "gate.json").read_text())
    decided = gate["conditions"]["memcollab"]["decisions"]
    assert decided["fragile"]["math"] | {"memory": None} == {
        "n": 4,
        "accuracy_without": 1.0,
        "accuracy_with": 0.0,
        "only_without_right": 4,
        "only_with_right": 0,
        "memory": None,
    }
    assert {m: d["math"]["memory"] for m, d in decided.items()} == {
        "right": True,  # equal: non_negative serves it
        "wrong": True,
        "fragile": False,
    }
    with Memory.open(out / "memory.sqlite") as memory:
        note = memory.note(MEMORY_NS, "gate:memcollab")
    assert note is not None and note["decisions"] == decided and note["rule"] == "non_negative"

    rows = _rows(out)
    by = {(r["task_id"], r["model"], r["condition"]): r for r in rows}
    for task in {r["task_id"] for r in rows}:
        for condition in ("memcollab", "placebo"):  # placebo follows memcollab's gate
            withheld = by[(task, "fragile", condition)]
            assert withheld["gate"] == "withheld" and withheld["constraints"] == 0
            assert withheld["correct"]  # no memory: fragile stays right
            served = by[(task, "wrong", condition)]
            assert served["gate"] == "served" and served["constraints"] > 0
        assert "gate" not in by[(task, "wrong", "vanilla")]
    text, _ = write_report(out)
    assert "## Utility gate (development tasks)" in text
    assert "| memcollab | fragile | math | 4 | 100.0 | 0.0 | 4 | 0 | no |" in text
    assert "| fragile | memcollab | 6 | 6 |" in text and "| wrong | placebo | 0 | 6 |" in text
    assert "placebo follows memcollab" in text
    assert "toy 2" in text  # the memory-pool tasks left out


def test_the_dev_phase_leaves_out_pool_tasks_and_counts_them(tmp_path: Path) -> None:
    experiment = _experiment(_gated(tmp_path))
    plan = experiment.plan_json()
    assert plan["dev"]["excluded_pool_tasks"] == {"toy": 2}
    assert plan["dev"]["benchmarks"]["toy"] == ["dev-add-p", "dev-mul-p", "dev-add-q", "dev-mul-q"]
    experiment.run(phases=["train", "memory", "dev"])
    stored = {t.task_id for t in _dev_store(tmp_path)}
    assert stored == set(plan["dev"]["benchmarks"]["toy"])
    gate = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert gate["excluded_pool_tasks"] == {"toy": 2} and gate["dev_tasks"] == {"toy": 4}


def _dev_store(tmp_path: Path) -> list[Trajectory]:
    return list(TrajectoryStore.in_dir(tmp_path / "out" / "dev"))


def test_rules_positive_and_no_significant_harm(tmp_path: Path) -> None:
    from memcollab.experiment.gate import GATE_RULES

    positive = GATE_RULES["positive"].decide
    assert not positive([True] * 4, [True] * 4) and positive([False], [True])
    harm = GATE_RULES["no_significant_harm"].decide
    assert harm([True] * 4, [False] * 4)  # 4 of 4 discordant against memory: p = 1/16
    assert not harm([True] * 5, [False] * 5)  # p = 1/32 < 0.05
    assert harm([], []) and GATE_RULES["non_negative"].decide([True, False], [False, True])

    experiment = _experiment(_gated(tmp_path, "positive"), fragile=True)
    experiment.run(phases=["train", "memory", "dev"])
    decided = json.loads((tmp_path / "out" / "gate.json").read_text())["conditions"]
    verdicts = {m: d["math"]["memory"] for m, d in decided["memcollab"]["decisions"].items()}
    assert verdicts == {"right": False, "wrong": True, "fragile": False}


def test_gate_json_and_the_stored_decision_survive_export_and_import(tmp_path: Path) -> None:
    experiment = _experiment(_gated(tmp_path), fragile=True)
    experiment.run(phases=["train", "memory", "dev"])
    out = tmp_path / "out"
    export = out / "memories" / f"{MEMORY_NS}.jsonl"
    lines = export.read_text().splitlines()
    assert sum('"note"' in line for line in lines) == 1  # re-exported with its note
    with Memory.open(tmp_path / "moved.sqlite") as moved:
        assert moved.import_(export).notes == 1
        settings = experiment.config.dev
        assert experiment.dev is not None and settings is not None
        digest = experiment.dev.sets.digest()
        gate = Gate.load(
            moved, settings, experiment.conditions, experiment.eval_models, experiment.info, digest
        )
    assert gate.serves("memcollab", "wrong", "math") and gate.serves("placebo", "wrong", "math")
    assert not gate.serves("memcollab", "fragile", "math")
    assert not gate.serves("placebo", "fragile", "math")
    written = json.loads((out / "gate.json").read_text())
    decided = written["conditions"]["memcollab"]["decisions"]
    assert {
        (c, m, d): v["memory"]
        for c in ["memcollab"]
        for m, ds in decided.items()
        for d, v in ds.items()
    } == gate.decisions
    experiment.run(phases=["eval"])  # the report's portable copy carries gate.json
    write_report(out, tmp_path / "published")
    assert json.loads((tmp_path / "published" / "gate.json").read_text()) == written


def test_eval_refuses_an_undecided_or_stale_gate(tmp_path: Path) -> None:
    experiment = _experiment(_gated(tmp_path), fragile=True)
    with pytest.raises(GateError, match="run the dev phase first"):
        experiment.run(phases=["train", "memory", "eval"])
    experiment.run(phases=["dev"])
    changed = _gated(tmp_path, "positive")  # another rule: the stored decision is stale
    with pytest.raises(GateError, match="not decided for this"):
        _experiment(changed, fragile=True).run(phases=["eval"])


def test_a_run_stopped_mid_dev_phase_resumes_computing_nothing_twice(tmp_path: Path) -> None:
    raw = _gated(tmp_path) | {"workers": 1}
    experiment = _experiment(raw, fragile=True)
    experiment.run(phases=["train", "memory"])
    seen = []

    def stop_after_five(event: ProgressEvent) -> None:
        if event.phase == "dev" and event.total is None:
            seen.append(event)
            if len(seen) == 5:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        experiment.run(stop_after_five, phases=["dev"])
    assert not (tmp_path / "out" / "gate.json").exists()  # no decision on part of the tasks
    for worker in threading.enumerate():  # a job in flight at the stop lands meanwhile
        if worker.name.startswith("collect"):
            worker.join(timeout=30)
    assert experiment.dev is not None
    store = experiment.dev.folder
    before = TrajectoryStore.in_dir(store).created_at()
    assert 5 <= len(before) < 24
    again = _experiment(raw, fragile=True).run(phases=["dev"])
    assert again["phases"]["dev"]["computed"] == 24 - len(before)
    after = TrajectoryStore.in_dir(store).created_at()
    assert len(after) == 24 and all(after[k] == v for k, v in before.items())
    assert (tmp_path / "out" / "gate.json").is_file()
    assert _experiment(raw, fragile=True).run(phases=["dev"])["phases"]["dev"]["computed"] == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rule": "always"}, "rule 'always' is not a gate rule"),
        ({"gate": ["memcollab-p9"]}, "names condition 'memcollab-p9', which is not in"),
        ({"gate": ["vanilla"]}, "does not serve one memory"),
        ({"follow": {"placebo": "vanilla"}}, "follow: 'placebo' must be an ungated"),
        ({"follow": {"memcollab": "memcollab"}}, "follow: 'memcollab' must be an ungated"),
        ({"tasks": {"pool": "TRAIN"}}, "selects no task outside the memory pool"),
        ({"tasks": {"test": "TEST"}}, "is also an evaluation task"),
        ({"tasks": {"toy": "DEV", "code": "humaneval:train[:1]"}, "eval": True}, None),
        ({"gate": []}, "dev.gate"),
        ({"tasks": {}}, "dev.tasks"),
    ],
)
def test_bad_dev_settings_are_one_clear_error(
    tmp_path: Path, change: dict[str, Any], message: str | None
) -> None:
    raw = _gated(tmp_path)
    specs = {
        "TRAIN": raw["train"]["tasks"][0],
        "TEST": raw["eval"]["toy"],
        "DEV": raw["dev"]["tasks"]["toy"],
    }
    if "tasks" in change:
        change = change | {"tasks": {b: specs.get(s, s) for b, s in change["tasks"].items()}}
    if change.pop("eval", False):  # code evaluated, but developed on math only
        raw["eval"] = raw["eval"] | {"he": "humaneval:test[:1]"}
        change["tasks"] = {"toy": specs["DEV"]}
        message = r"hold no task of domain code, which \[eval\] evaluates"
    raw["dev"] = raw["dev"] | change
    with pytest.raises(UserError, match=message):
        _experiment(raw)


def test_cli_bad_dev_settings_get_one_line_and_phase_dev_is_known(tmp_path: Path) -> None:
    from tests.experiment.scripted import fleet_toml
    from tests.test_cli import assert_one_line_error, run_cli

    (tmp_path / "fleet.toml").write_text(fleet_toml())
    train = task_file(tmp_path / "train.jsonl", "train", "ab")
    test = task_file(tmp_path / "test.jsonl", "test", "xy")
    path = tmp_path / "experiment.toml"
    path.write_text(
        'name = "cli"\nfleet = "fleet.toml"\nout = "out"\nconditions = ["vanilla", "memcollab"]\n'
        f"[agent]\nmax_turns = 2\n[train]\ntasks = [{json.dumps(train)}]\n"
        f"[eval]\ntoy = {json.dumps(test)}\n"
        f'[dev]\ngate = ["memcollab"]\nrule = "sometimes"\n[dev.tasks]\ntoy = {json.dumps(train)}\n'
    )
    assert_one_line_error(run_cli("experiment", "run", str(path), "--dry-run"), "gate rule")
    plain = tmp_path / "plain.toml"
    plain.write_text(path.read_text().split("[dev]")[0])
    no_dev = run_cli("experiment", "run", str(plain), "--phase", "dev", "--dry-run")
    assert_one_line_error(no_dev, "has no [dev] table")
    text = path.read_text().replace('"sometimes"', '"non_negative"')
    path.write_text(
        text.replace(f"toy = {json.dumps(train)}\n", f"toy = {json.dumps(_dev_file(tmp_path))}\n")
    )
    dry = run_cli("experiment", "run", str(path), "--dry-run", "--no-cache")
    assert dry.returncode == 0, dry.stderr
    assert "dev" in dry.stdout
    done = run_cli(
        "experiment",
        "run",
        str(path),
        "--no-cache",
        "--phase",
        "train",
        "--phase",
        "memory",
        "--phase",
        "dev",
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "gate.json").is_file()
    shutil.rmtree(tmp_path / "out")


def test_plans_without_the_new_settings_keep_their_shape(tmp_path: Path) -> None:
    experiment = _experiment(experiment_dict(tmp_path, ["vanilla", "memcollab", "own"]))
    plan = experiment.plan_json()
    assert "dev" not in plan and "dev" not in plan["config"]
    assert "dev" not in experiment.estimate()
    assert all("labeller" not in c and "memory" not in c for c in plan["conditions"].values())
    assert all(
        set(r) == {"pairing", "distiller", "model", "samples", "temperature"}
        for r in plan["memories"].values()
    )
    part = experiment.run()
    assert list(part["phases"]) == ["train", "memory", "eval"]  # no dev phase recorded
    assert all("gate" not in r for r in _rows(tmp_path / "out"))


def test_the_estimate_counts_the_jobs_the_gate_withholds_as_replayed(tmp_path: Path) -> None:
    """A withheld job asks exactly what its vanilla twin asks, so once the gate has decided
    the plan counts it as replayed (with a call cache; without one it would ask again), and
    the evaluation asks the model each of their turns once."""
    from memcollab.llm.cache import CallCache

    raw = _gated(tmp_path)
    cache = CallCache(tmp_path / "calls.sqlite")
    experiment = Experiment(parse_experiment(raw), Gateway(cache), _fleet(fragile=True))
    experiment.run(phases=["train", "memory"])
    before = experiment.estimate()["eval"]
    experiment.run(phases=["dev"])
    after = experiment.estimate()["eval"]
    tasks = sum(len(ts) for ts in experiment.eval_sets.values())
    assert before.jobs == after.jobs == tasks * 3 * 3  # tasks x conditions x models
    withheld = tasks * 2  # fragile x (memcollab, placebo)
    assert after.replayed - before.replayed == withheld
    assert after.calls < before.calls
    without_cache = Experiment(parse_experiment(raw), Gateway(None), _fleet(fragile=True))
    assert without_cache.estimate()["eval"].replayed == 0

    experiment.run(phases=["eval"])
    stored = {
        (t.task_id, t.model, t.condition): t
        for t in TrajectoryStore.in_dir(tmp_path / "out" / "eval")
    }
    for task_id in {key[0] for key in stored}:
        trio = [stored[(task_id, "fragile", c)] for c in ("vanilla", "memcollab", "placebo")]
        assert len({tuple(s.reply for s in t.steps) for t in trio}) == 1
        # Each turn is asked of the model at most once, whichever of the three asks first.
        for turn in zip(*(t.steps for t in trio), strict=True):
            assert sum(not s.cached for s in turn) <= 1
