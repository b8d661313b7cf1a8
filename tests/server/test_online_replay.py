"""benchmarks/online_replay.py against a real `memcollab serve` subprocess whose fleet is
scripted: calls one at a time and four at a time end in the same checks; with --chaos and
four calls in flight the service is SIGKILLed twice mid-stream, the calls in flight are
retried with their own attempt ids and every check holds (0 lost, 0 twice); a replay whose
harness is itself killed resumes where it stopped (a cut last progress line included); the
eval step's experiment file leaves out what it must."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from memcollab.experiment.config import load_experiment
from memcollab.experiment.runner import Experiment
from memcollab.llm.cache import Gateway
from memcollab.memory.store import read_jsonl
from memcollab.server.context import ServerContext
from tests.memory.distill_helpers import GOOD, line

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "benchmarks" / "online_replay.py"
GSM, MATH = 8, 6  # train rows written; the last 2 GSM8K rows stand for the dev slice


def _data(root: Path) -> Path:
    """A tiny benchmark folder: GSM8K train/test, MATH train/500, MBPP (test and train ids)."""
    (root / "gsm8k").mkdir(parents=True)
    (root / "math").mkdir()
    (root / "mbpp").mkdir()

    def rows(path: Path, items: list[dict[str, Any]]) -> None:
        path.write_text("".join(json.dumps(r) + "\n" for r in items))

    rows(
        root / "gsm8k/train.jsonl",
        [
            {
                "question": f"[G{i}] Add the fraction {i} over one period to itself.",
                "answer": f"ok\n#### {2 * i}",
            }
            for i in range(GSM)
        ],
    )
    rows(
        root / "gsm8k/test.jsonl",
        [{"question": f"[GT{i}] Add {i} and 1.", "answer": f"#### {i + 1}"} for i in range(12)],
    )
    rows(
        root / "math/train.jsonl",
        [
            {
                "problem": f"[M{i}] Triple {i}.",
                "solution": f"\\boxed{{{3 * i}}}",
                "subject": "Algebra",
            }
            for i in range(MATH)
        ],
    )
    rows(
        root / "math/math500_test.jsonl",
        [
            {
                "problem": f"[MT{i}] Double {i}.",
                "answer": str(2 * i),
                "subject": "Algebra",
                "unique_id": f"test/algebra/{i}.json",
            }
            for i in range(8)
        ],  # fmt: skip
    )
    rows(
        root / "mbpp/mbpp.jsonl",
        [
            {
                "task_id": n,
                "text": f"Return {n}.",
                "code": f"def f():\n    return {n}",
                "test_list": [f"assert f() == {n}"],
                "test_setup_code": "",
            }
            for n in (*range(11, 19), 601, 602)
        ],  # fmt: skip
    )
    return root


def _fleet(path: Path, delay_s: float) -> Path:
    """`good` answers the even GSM8K and MATH tasks right, `bad` none; `distiller` distils
    every pair into one constraint (the semantic screen finds it supported by the GSM8K
    texts, which speak of a fraction and a period, and refuses it for MATH's) and answers
    "1" to the LLM labeller."""
    right = {f"[G{i}]": 2 * i for i in range(0, GSM, 2)} | {
        f"[M{i}]": 3 * i for i in range(0, MATH, 2)
    }
    lines = [
        "[models.good]",
        'provider = "scripted"',
        "strength = 3",
        'responses = ["The answer is \\\\boxed{-7}."]',
    ]
    lines += [f"delay_s = {delay_s}", "[models.good.rules]"]
    lines += [
        f'"{marker}" = "The answer is \\\\boxed{{{value}}}."' for marker, value in right.items()
    ]
    lines += ["[models.bad]", 'provider = "scripted"', "strength = 2", f"delay_s = {delay_s}"]
    lines += ['responses = ["The answer is \\\\boxed{-1}."]']
    lines += ["[models.distiller]", 'provider = "scripted"', 'responses = ["1"]']
    lines += [
        "[models.distiller.rules]",
        f'"Attempt A is correct and attempt B is wrong" = "1. {line(*GOOD[0])}"',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _command(tmp: Path, step: str, *extra: str, run: str = "") -> list[str]:
    return [
        sys.executable, str(SCRIPT), step, "--data-dir", str(tmp / "data"),
        "--fleet", str(tmp / "fleet.toml"), "--models", "good", "bad",
        "--distiller", "distiller", "--labeller", "llm", "--search-labeller", "none",
        "--train-specs", "gsm8k:train", "math:train", "--dev-specs", "gsm8k:train[-2:]",
        "--v2-eval", str(tmp / "v2_eval.json"), "--tasks", "8", "--seed", "5",
        "--lease", "1", "--work", str(tmp / run / "work"), "--out", str(tmp / run / "out"),
        *extra,
    ]  # fmt: skip


def _env(tmp: Path) -> dict[str, str]:
    path = os.pathsep.join([str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "MEMCOLLAB_CACHE_DIR": str(tmp / "cache")}


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    _data(tmp_path / "data")
    _fleet(tmp_path / "fleet.toml", delay_s=0.3)
    (tmp_path / "v2_eval.json").write_text(
        json.dumps({"benchmarks": {"gsm8k": ["gsm8k/test/0", "gsm8k/test/1"]}})
    )
    return tmp_path


def _learn(tmp: Path, *extra: str, run: str = "") -> dict[str, Any]:
    """A learn step to its end (exit 0); its replay.json."""
    done = subprocess.run(
        _command(tmp, "learn", *extra, run=run), env=_env(tmp), capture_output=True, text=True,
        timeout=250, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report: dict[str, Any] = json.loads((tmp / run / "out" / "replay.json").read_text())
    return report


def _progress(tmp: Path) -> list[dict[str, Any]]:
    path = tmp / "work" / "progress.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def _assert_clean(report: dict[str, Any]) -> None:
    checks = report["checks"]
    assert checks["passed"], checks
    assert checks["attempts_sent"] == checks["attempts_stored"] == 16
    for name in ("attempts_lost", "attempts_extra", "attempts_doubled", "unjudged",
                 "rows_unfinished", "rows_failed", "contrasts_missing", "records_shared",
                 "distilled_twice", "provenance_missing", "learned_outside",
                 "records_unaccounted", "calls_failed"):  # fmt: skip
        assert checks[name] == 0, (name, checks)
    # every call's memory status is counted: 16 calls, each applied / none / error
    assert sum(report["memory_statuses"].values()) == 16, report["memory_statuses"]
    assert set(report["memory_statuses"]) <= {"applied", "none", "error"}
    assert checks["distillations"] == checks["rows_distilled"] >= checks["rows_done"]
    # good is right on the even tasks of each set: 2 of the 4 GSM8K (0-5) drawn and
    # of the 4 MATH drawn, depending on the draw; every such task contrasts with bad.
    assert checks["contrasting_tasks"] == checks["queue_rows"] >= 1
    assert checks["rows_done"] >= 1
    assert checks["rows_done"] == checks["records_stored"] + checks["records_merged_away"]
    assert checks["rows_done"] + sum(report["learning"]["refused"].values()) == checks["queue_rows"]


@pytest.mark.timeout(300)
def test_one_call_at_a_time_and_four_at_once_end_the_same(tmp: Path) -> None:
    one = _learn(tmp, "--concurrency", "1", run="one")
    four = _learn(tmp, "--concurrency", "4", run="four")
    for report in (one, four):
        _assert_clean(report)
    assert (one["concurrency"], one["this_run"]["max_in_flight"]) == (1, 1)
    assert four["concurrency"] == 4 and four["this_run"]["max_in_flight"] > 1  # really at once
    assert one["checks"] == four["checks"] and one["accuracy"] == four["accuracy"]
    assert one["learning"] == four["learning"]

    def verdicts(run: str) -> dict[tuple[str, str], str]:
        rows = [json.loads(x) for x in (tmp / run / "work/progress.jsonl").read_text().splitlines()]
        return {(r["task"], r["model"]): r["verdict"] for r in rows}

    assert verdicts("one") == verdicts("four") and len(verdicts("one")) == 16
    exported = [read_jsonl(tmp / run / "out/online.jsonl") for run in ("one", "four")]
    assert len(exported[0]) == len(exported[1]) == one["checks"]["records_stored"] >= 1


@pytest.mark.timeout(300)
def test_chaos_with_calls_in_flight_loses_and_doubles_nothing(tmp: Path) -> None:
    report = _learn(tmp, "--chaos", "--kills", "2", "--kill-delay-max", "0.4", "--concurrency", "4")
    _assert_clean(report)
    assert report["checks"]["kills"] == 2 and len(report["chaos"]["made"]) == 2
    assert all(k["pid"] is not None for k in report["chaos"]["made"])  # really killed
    assert report["chaos"]["starts"]["service"] == 3
    # Calls were in flight when the service died; each was retried (same attempt id, so
    # attempts_lost/doubled stay 0 above), and the counts add up across the progress file.
    assert sum(k["in_flight"] for k in report["chaos"]["made"]) >= 1
    assert report["chaos"]["retries"] == report["this_run"]["retries"] >= 1
    rows = _progress(tmp)
    assert report["chaos"]["replayed"] == sum(r.get("replayed", False) for r in rows)
    # The second kill lands when its call's answer arrives, before its feedback: the
    # exchange is stored, so the retry (same attempt id) is replayed, not generated again.
    tasks = json.loads((tmp / "work" / "tasks.json").read_text())
    assert [k["when"] for k in report["chaos"]["made"]] == ["delay", "answered"]
    step = report["chaos"]["made"][1]["step"]
    pair = (tasks[step // 2], ("good", "bad")[step % 2])
    row = next(r for r in rows if (r.get("task"), r.get("model")) == pair)
    assert row["replayed"] and row["retries"] >= 1 and report["chaos"]["replayed"] >= 1
    assert "gsm8k/train/6" not in tasks and "gsm8k/train/7" not in tasks  # the dev rows
    assert sum(t.startswith("gsm8k/") for t in tasks) == 4
    records = read_jsonl(tmp / "out" / "online.jsonl")
    assert len(records) == report["checks"]["records_stored"] >= 1
    assert report["exported_records"] == len(records)
    assert report["command"].startswith("python ") and "--chaos" in report["command"]


@pytest.mark.timeout(300)
def test_a_killed_replay_resumes_where_it_stopped(tmp: Path) -> None:
    first = subprocess.Popen(
        _command(tmp, "learn"), env=_env(tmp), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 200
        while len(_progress(tmp)) < 5:
            assert first.poll() is None, "the replay ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        if first.poll() is None:
            first.kill()
    before = _progress(tmp)
    assert 5 <= len(before) < 16
    time.sleep(0.5)  # the service got SIGKILL with the harness (PR_SET_PDEATHSIG)
    ctx = ServerContext.open(str(tmp / "work" / "memory.sqlite"), create=False)
    try:
        stored = {a.id for a in ctx.attempts.list("online", limit=100)[0]}
    finally:
        ctx.close()
    # Calls in flight when the harness died whose exchange the service had stored: the
    # resumed run sends them again under the same attempt id and gets them replayed.
    unanswered = stored - {r["attempt"] for r in before}
    with (tmp / "work" / "progress.jsonl").open("a") as fh:
        fh.write('{"task": "gsm8k/train/0", "mod')  # as a kill in the middle of a line cuts it
    report = _learn(tmp)
    after = _progress(tmp)  # the cut line is gone: every line reads
    assert after[: len(before)] == before  # kept, not redone
    assert len(after) == 16 and len({(r["task"], r["model"]) for r in after}) == 16
    _assert_clean(report)
    assert report["this_run"]["calls"] == 16 - len(before)
    assert report["this_run"]["replayed"] == len(unanswered)
    assert {r["attempt"] for r in after if r["replayed"]} == unanswered
    assert report["concurrency"] == 8  # the default: the scripted models' limits, 4 + 4


def test_a_second_replay_on_the_same_work_folder_is_refused(tmp: Path) -> None:
    (tmp / "work").mkdir()
    with (tmp / "work" / "replay.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running replay holds it
        run = subprocess.run(
            _command(tmp, "learn"), env=_env(tmp), capture_output=True, text=True, timeout=120,
            check=False,
        )  # fmt: skip
    assert run.returncode == 2 and "another replay is running" in run.stderr
    assert not (tmp / "work" / "progress.jsonl").exists()


def test_the_eval_step_refuses_missing_memories(tmp: Path) -> None:
    run = subprocess.run(
        _command(tmp, "eval", "--v2-memory", str(tmp / "v2.jsonl")),
        env=_env(tmp), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 2 and "online memory" in run.stderr and "learn step" in run.stderr
    assert not (tmp / "out" / "experiment.toml").exists()


def test_the_eval_file_holds_out_training_dev_and_v2_tasks(tmp: Path) -> None:
    (tmp / "out").mkdir()
    (tmp / "out" / "online.jsonl").write_text("")
    (tmp / "v2.jsonl").write_text("")
    (tmp / "work").mkdir()
    # the learn step's stored list is what is held out, not a draw made again
    drawn = _training_ids(tmp)
    training = drawn[:-1]
    (tmp / "work" / "tasks.json").write_text(json.dumps(training))
    run = subprocess.run(
        _command(tmp, "eval", "--v2-memory", str(tmp / "v2.jsonl"), "--per-benchmark", "4",
                 "--run-out", str(tmp / "runs")),
        env=_env(tmp), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "memcollab experiment run" in run.stdout and "--cache" in run.stdout
    assert "nice" in run.stdout
    toml = tmp / "out" / "experiment.toml"
    config = load_experiment(toml, data_dir=tmp / "data")
    assert config.analysis.primary == "online" and config.conditions == [
        "vanilla", "online", "v2-batch",
    ]  # fmt: skip
    assert config.condition["online"]["memory"] == str((tmp / "out" / "online.jsonl").resolve())
    frozen = tmp / "out" / "v2-batch.jsonl"  # the v2 memory, copied once
    assert config.condition["v2-batch"]["memory"] == str(frozen.resolve())
    excluded = json.loads((tmp / "out" / "excluded_tasks.json").read_text())["tasks"]
    assert set(training) <= set(excluded) and drawn[-1] not in excluded
    assert {"gsm8k/train/6", "gsm8k/train/7"} <= set(excluded)  # the dev slice
    experiment = Experiment(config, Gateway(None))
    held_out = {t.id for ts in experiment.eval_sets.values() for t in ts}
    assert {bench: len(ts) for bench, ts in experiment.eval_sets.items()} == {
        "gsm8k": 4, "math500": 4, "mbpp": 4,
    }  # fmt: skip
    assert not held_out & ({"gsm8k/test/0", "gsm8k/test/1"} | set(excluded))
    assert experiment.plan_json()["eval_excluded"]["gsm8k"] >= 0


def _training_ids(tmp: Path) -> list[str]:
    """The learn step's draw, as the eval step makes it (same arguments)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import online_replay  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(SCRIPT.parent))
    args = online_replay.parse_args(_command(tmp, "eval")[2:])
    tasks, _ = online_replay.training_tasks(args)
    return [t.id for t in tasks]
