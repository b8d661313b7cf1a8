"""The online replay's parts in process (benchmarks/online_replay_*.py), each for a defect a
read-only audit found before the long run: the call timeout, feedback without a verdict,
a call that always fails, the checks that could never fail, the secondary comparison, the
v2 memory's freezing, the training tasks the eval step holds out, libc in a forked child."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from memcollab.memory.api import Memory
from memcollab.server.attempts import NewAttempt
from memcollab.server.context import ServerContext
from memcollab.tasks.task import Task
from tests.server.conftest import make_record

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import online_replay  # type: ignore[import-not-found]  # noqa: E402
import online_replay_checks  # type: ignore[import-not-found]  # noqa: E402
import online_replay_eval  # type: ignore[import-not-found]  # noqa: E402
import online_replay_procs  # type: ignore[import-not-found]  # noqa: E402
import online_replay_stream  # type: ignore[import-not-found]  # noqa: E402
from online_replay_common import ReplayError, client_id  # type: ignore[import-not-found]  # noqa: E402

TASK = Task(id="gsm8k/train/0", domain="math", prompt="Add 2 and 2.", answer="4")


def test_the_call_timeout_and_the_distiller_settings_reach_the_service(tmp_path: Path) -> None:
    args = online_replay.parse_args(["learn", "--work", str(tmp_path)])
    assert args.call_timeout == 3600.0  # a first turn queued behind a batch: up to ~1,500 s
    command = online_replay_procs.Processes(args, 1)._command("service")
    assert command[command.index("--upstream-timeout") + 1] == "3600.0"
    assert command[command.index("--learn-prompt-chars") + 1] == "4000"  # as the v2 build
    assert command[command.index("--learn-reply-tokens") + 1] == "200"
    args.worker = "separate"
    worker = online_replay_procs.Processes(args, 1)._command("worker")
    assert worker[worker.index("--prompt-chars") + 1] == "4000"
    assert worker[worker.index("--reply-tokens") + 1] == "200"


def test_the_child_loads_no_library_between_fork_and_exec(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []

    class FakeLibc:
        def prctl(self, *a: Any) -> int:
            calls.append(a)
            return 0

    def no_dlopen(*a: Any, **kw: Any) -> Any:
        raise AssertionError("libc loaded in the forked child")

    monkeypatch.setattr(online_replay_procs, "LIBC", FakeLibc())
    monkeypatch.setattr(online_replay_procs.ctypes, "CDLL", no_dlopen)
    online_replay_procs._die_with_parent()
    assert calls == [(1, signal.SIGKILL)]


# --------------------------------------------------------------------------- the stream


class _Raw:
    headers = {"x-memcollab-memory": "none"}

    def parse(self) -> None:
        return None


class _Client:
    """Stands in for openai.OpenAI: every chat call answers."""

    def __init__(self) -> None:
        self.chat = self
        self.completions = self
        self.with_raw_response = self
        self.calls = 0

    def create(self, **kw: Any) -> _Raw:
        self.calls += 1
        return _Raw()


class _Procs:
    def ensure(self) -> None: ...

    def suspect(self) -> None: ...


def _stream(tmp_path: Path, feedback: httpx.Response, retry_errors: bool = False) -> Any:
    http = httpx.Client(
        base_url="http://replay.test", transport=httpx.MockTransport(lambda request: feedback)
    )
    args = argparse.Namespace(max_tokens=16, retries=2)
    progress = online_replay_stream.Progress(tmp_path / "p.jsonl", retry_errors=retry_errors)
    return online_replay_stream.Stream(args, _Procs(), progress, _Client(), http, {})


@pytest.mark.parametrize(
    "feedback",
    [
        httpx.Response(422, json={"detail": "attempt holds no answer to judge"}),
        httpx.Response(404, json={"detail": "no such attempt"}),
        httpx.Response(200, json={"attempt": {"verdict": "unknown"}}),
    ],
)
def test_feedback_without_a_verdict_is_retried_then_an_error_row(
    tmp_path: Path, feedback: httpx.Response
) -> None:
    run = _stream(tmp_path, feedback)
    row = run.run(0, TASK, "m")  # the replay goes on: no exception
    assert "error" in row and "verdict" not in row and row["retries"] == 2
    assert run.client.calls == 3 and run.counts["errors"] == 1
    lines = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(lines) == 1 and "error" in lines[0]  # no row passes for a judged one
    assert online_replay_stream.Progress(tmp_path / "p.jsonl").finished(TASK.id, "m")
    again = online_replay_stream.Progress(tmp_path / "p.jsonl", retry_errors=True)
    assert not again.finished(TASK.id, "m")  # --retry-errors redoes it


def test_a_judged_call_is_one_row_with_its_verdict(tmp_path: Path) -> None:
    run = _stream(tmp_path, httpx.Response(200, json={"attempt": {"verdict": "incorrect"}}))
    row = run.run(0, TASK, "m")
    assert row["verdict"] == "incorrect" and "error" not in row and row["retries"] == 0


def test_a_refused_key_still_ends_the_replay(tmp_path: Path) -> None:
    run = _stream(tmp_path, httpx.Response(401, json={"detail": "bad key"}))
    with pytest.raises(ReplayError, match="refused the replay's key"):
        run.run(0, TASK, "m")


# --------------------------------------------------------------------------- the checks


def test_the_end_checks_can_fail(tmp_path: Path) -> None:
    """A failed queue row, a redone row and distiller runs beyond the rows distilled each
    fail the checks (before, failed rows were in no check and distilled_twice could never
    be non-zero)."""
    path = tmp_path / "memory.sqlite"
    ctx = ServerContext.open(str(path))
    try:
        key = ctx.keys.create("online", "write")[0]
        for model, verdict in (("good", "correct"), ("bad", "incorrect")):
            ctx.attempts.add(
                "online",
                key,
                NewAttempt(
                    id=client_id(TASK.id, model), model=model, task_text=TASK.prompt,
                    task_id=TASK.id, domain="math", answer="4", verdict=verdict,  # type: ignore[arg-type]
                ),
            )  # fmt: skip
        ctx.learning.offer("online", TASK.id)
        item = ctx.learning.claim("w")
        assert item is not None
        ctx.learning.fail(item, "w", "boom")  # back to pending
        item = ctx.learning.claim("w")  # claimed again: tries 2
        assert item is not None and item.tries == 2
        while ctx.learning.fail(item, "w", "boom") != "failed":
            item = ctx.learning.claim("w")
            assert item is not None
        ctx.learning.count("online", "distillations", 2)
    finally:
        ctx.close()
    rows = [
        {"task": TASK.id, "model": m, "attempt": client_id(TASK.id, m)} for m in ("good", "bad")
    ]
    result = online_replay_checks.check(path, [TASK.id], ["good", "bad"], rows, 0)
    checks = result["checks"]
    assert checks["rows_failed"] == 1 and checks["rows_redone"] == [TASK.id]
    assert checks["distillations"] == 2 and checks["distilled_twice"] == 2
    assert checks["passed"] is False


# --------------------------------------------------------------------------- eval side


def _eval_args(tmp_path: Path, source: Path) -> argparse.Namespace:
    return argparse.Namespace(out=tmp_path / "out", v2_memory=source, seed=1, run_out=tmp_path)


def _export(path: Path, gate: bool = False) -> Path:
    with Memory.open(path.with_suffix(".sqlite")) as memory:
        memory.add(make_record("v2"))
        if gate:
            memory.set_note("v2", "gate:memcollab-v2", {"decisions": {}})
        memory.export(path, "v2")
    return path


def test_the_v2_memory_is_frozen_once(tmp_path: Path) -> None:
    source = _export(tmp_path / "v2.jsonl")
    args = _eval_args(tmp_path, source)
    first = online_replay_eval.freeze_v2_memory(args)
    copy = tmp_path / "out" / "v2-batch.jsonl"
    assert copy.read_bytes() == source.read_bytes() and first["gate_notes"] == []
    assert json.loads((tmp_path / "out" / "v2-batch.json").read_text())["sha256"] == first["sha256"]
    assert online_replay_eval.freeze_v2_memory(args) == first  # again: the same, nothing new
    _export(tmp_path / "v2.jsonl", gate=True)  # the v2 dev phase rewrites its export
    with pytest.raises(ReplayError, match="not the frozen"):
        online_replay_eval.freeze_v2_memory(args)
    assert online_replay_eval.freeze_v2_memory(_eval_args(tmp_path, copy)) == first  # keep it
    copy.write_text(copy.read_text() + "\n")
    with pytest.raises(ReplayError, match="not the recorded"):
        online_replay_eval.freeze_v2_memory(_eval_args(tmp_path, copy))


def test_a_gate_note_in_the_frozen_export_is_recorded(tmp_path: Path) -> None:
    source = _export(tmp_path / "v2.jsonl", gate=True)
    frozen = online_replay_eval.freeze_v2_memory(_eval_args(tmp_path, source))
    assert frozen["gate_notes"] == ["gate:memcollab-v2"]


def _results(folder: Path) -> None:
    """An experiment folder: 10 tasks, v2-batch right on the first 6, online on 3 of those
    and 1 other, for two models."""
    ids = [f"gsm8k/test/{i}" for i in range(10)]
    plan = {
        "benchmarks": {"gsm8k": ids},
        "models": ["a", "b"],
        "conditions": ["vanilla", "online", "v2-batch"],
        "config": {},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(json.dumps(plan))
    right = {"vanilla": set(range(5)), "v2-batch": set(range(6)), "online": {0, 1, 2, 9}}
    rows = [
        {"benchmark": "gsm8k", "task_id": tid, "model": m, "condition": c,
         "correct": i in right[c], "turns": 1, "prompt_tokens": 1, "completion_tokens": 1,
         "wall_s": 1.0, "finish": "answer"}
        for i, tid in enumerate(ids) for m in ("a", "b") for c in plan["conditions"]
    ]  # fmt: skip
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_compare_writes_online_minus_v2_batch(tmp_path: Path) -> None:
    _results(tmp_path / "run")
    args = argparse.Namespace(run_out=tmp_path / "run", out=tmp_path / "out", seed=0)
    (tmp_path / "out").mkdir()
    online_replay_eval.compare_step(args)
    report = json.loads((tmp_path / "out" / "secondary.json").read_text())
    assert report["comparison"] == "online - v2-batch"
    pooled = [r for r in report["rows"] if r["benchmark"] == "all"]
    assert [r["model"] for r in pooled] == ["a", "b"]
    for row in pooled:
        assert row["n"] == 10 and row["difference"] == pytest.approx(-0.2)
        assert (row["only_baseline"], row["only_condition"]) == (3, 1)
        assert row["holm_p_across_models"] >= row["p_value"]


def test_a_missing_v2_evaluation_list_is_one_clear_error(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/online_replay.py"), "learn", "--v2-eval",
         str(tmp_path / "none.json"), "--work", str(tmp_path / "w"), "--out",
         str(tmp_path / "o"), "--concurrency", "1"],
        capture_output=True, text=True, timeout=120, check=False,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "--v2-eval" in lines[0] and "does not exist" in lines[0]
