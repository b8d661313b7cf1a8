"""A real kill -9: a `memcollab learn` subprocess (a scripted distiller with a delay) is
SIGKILLed mid-queue and started again; every pair ends done exactly once, with one record
and its provenance each. And a clean stop: SIGTERM mid-distillation gives the pair back
at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memcollab.memory.api import Memory
from memcollab.memory.store import SQLiteMemory
from memcollab.server.context import ServerContext
from tests.memory.distill_helpers import GOOD, MATH, line
from tests.server.test_learning import submit

PAIRS = 6
SRC = Path(__file__).parents[2] / "src"


def _fleet(path: Path, delay_s: float = 0.5) -> Path:
    # The distillation request holds the near-miss instruction; the labeller's requests
    # do not, and get "1" (the first option of each level).
    output = f"1. {line(*GOOD[0])}"
    path.write_text(
        "[models.distiller]\n"
        'provider = "scripted"\n'
        'responses = ["1"]\n'
        f"delay_s = {delay_s}\n"
        "[models.distiller.rules]\n"
        f'"Attempt A is correct and attempt B is wrong" = "{output}"\n',
        encoding="utf-8",
    )
    return path


def _learn(memory: Path, fleet: Path, cache: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [
        sys.executable, "-m", "memcollab", "learn", "--memory", str(memory),
        "--fleet", str(fleet), "--distiller", "distiller", "--labeller", "llm",
        "--lease", "1", "--cache", str(cache), *extra,
    ]  # fmt: skip
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _stop(started: list[subprocess.Popen[bytes]]) -> None:
    """A failed check leaves no `learn` running."""
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(30)


@pytest.mark.timeout(180)
def test_kill_9_mid_queue_then_restart_loses_and_doubles_nothing(tmp_path: Path) -> None:
    memory = tmp_path / "memory.sqlite"
    ctx = ServerContext(Memory(SQLiteMemory(memory)))
    started: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(PAIRS):
            # Each task its own text, so no distillation is another's call-cache hit.
            text = f"Shop {i}. {MATH.prompt}"
            submit(ctx, "m1", "correct", task_id=f"t{i}", text=text)
            submit(ctx, "m2", "incorrect", task_id=f"t{i}", text=text)
        assert ctx.learning.counts("a")["queue"]["pending"] == PAIRS
        fleet, cache = _fleet(tmp_path / "fleet.toml"), tmp_path / "calls.sqlite"
        first = _learn(memory, fleet, cache)
        started.append(first)
        deadline = time.monotonic() + 120
        while (now := ctx.learning.counts("a"))["distilled"] < 1 or now["queue"]["claimed"] < 1:
            assert first.poll() is None, first.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "the worker distilled nothing in time"
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        killed = ctx.learning.counts("a")
        assert killed["distilled"] < PAIRS, "the kill came too late to test anything"
        assert killed["queue"]["claimed"] == 1  # killed mid-distillation: the row stays claimed
        time.sleep(1.2)  # the killed worker's lease (1 s) expires
        second = _learn(memory, fleet, cache, "--once")
        started.append(second)
        out, _ = second.communicate(timeout=150)
        assert second.returncode == 0, out.decode()[-3000:]
        items = ctx.learning.items("a")
        assert [i.state for i in items] == ["done"] * PAIRS
        record_ids = [i.record_id for i in items if i.record_id is not None]
        records = ctx.memory.list("a")
        assert sorted(r.id for r in records) == sorted(record_ids)  # records == pairs
        assert len(set(record_ids)) == PAIRS
        provenance = ctx.provenance.many(record_ids)
        assert len(provenance) == PAIRS
        for item in items:
            learned = provenance[item.record_id]["learned"]  # type: ignore[index]
            assert (learned["task_id"], learned["namespace"]) == (item.task_id, "a")
            assert (learned["pos_attempt"], learned["neg_attempt"]) == (
                item.pos_attempt,
                item.neg_attempt,
            )
    finally:
        _stop(started)
        ctx.close()


@pytest.mark.timeout(120)
def test_sigterm_mid_distillation_gives_the_pair_back_then_once_finishes_it(
    tmp_path: Path,
) -> None:
    memory = tmp_path / "memory.sqlite"
    ctx = ServerContext(Memory(SQLiteMemory(memory)))
    started: list[subprocess.Popen[bytes]] = []
    try:
        pos = submit(ctx, "m1", "correct")
        neg = submit(ctx, "m2", "incorrect")
        cache = tmp_path / "calls.sqlite"
        slow = _fleet(tmp_path / "slow.toml", delay_s=300)  # each model call: 5 minutes
        first = _learn(memory, slow, cache)
        started.append(first)
        deadline = time.monotonic() + 60
        while ctx.learning.counts("a")["queue"]["claimed"] < 1:
            assert first.poll() is None, first.communicate()[0].decode()[-3000:]
            assert time.monotonic() < deadline, "the worker claimed nothing in time"
            time.sleep(0.05)
        time.sleep(0.5)  # claimed, read the attempts: now in the distiller's call
        sent = time.monotonic()
        first.send_signal(signal.SIGTERM)
        out, _ = first.communicate(timeout=30)
        took = time.monotonic() - sent
        assert first.returncode == 0, out.decode()[-3000:]
        assert took < 8.0, f"stopping took {took:.1f} s"
        assert "given back" in out.decode()
        (item,) = ctx.learning.items("a")
        assert (item.state, item.lease_owner, item.tries) == ("pending", None, 0)
        assert ctx.memory.list("a") == [] and ctx.learning.counts("a")["distilled"] == 0

        second = _learn(memory, _fleet(tmp_path / "fast.toml", delay_s=0), cache, "--once")
        started.append(second)
        out, _ = second.communicate(timeout=90)
        assert second.returncode == 0, out.decode()[-3000:]
        (item,) = ctx.learning.items("a")
        assert item.state == "done" and item.tries == 1
        (record,) = ctx.memory.list("a")
        assert record.id == item.record_id
        learned = ctx.provenance.many([record.id])[record.id]["learned"]
        assert (learned["pos_attempt"], learned["neg_attempt"]) == (pos, neg)
    finally:
        _stop(started)
        ctx.close()
