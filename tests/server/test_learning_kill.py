"""A real kill -9: a `memcollab learn` subprocess (a scripted distiller with a delay) is
SIGKILLed mid-queue and started again; every pair ends done exactly once, with one record
and its provenance each."""

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


def _fleet(path: Path) -> Path:
    # The distillation request holds the near-miss instruction; the labeller's requests
    # do not, and get "1" (the first option of each level).
    output = f"1. {line(*GOOD[0])}"
    path.write_text(
        "[models.distiller]\n"
        'provider = "scripted"\n'
        'responses = ["1"]\n'
        "delay_s = 0.5\n"
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


@pytest.mark.timeout(180)
def test_kill_9_mid_queue_then_restart_loses_and_doubles_nothing(tmp_path: Path) -> None:
    memory = tmp_path / "memory.sqlite"
    ctx = ServerContext(Memory(SQLiteMemory(memory)))
    try:
        for i in range(PAIRS):
            # Each task its own text, so no distillation is another's call-cache hit.
            text = f"Shop {i}. {MATH.prompt}"
            submit(ctx, "m1", "correct", task_id=f"t{i}", text=text)
            submit(ctx, "m2", "incorrect", task_id=f"t{i}", text=text)
        assert ctx.learning.counts("a")["queue"]["pending"] == PAIRS
        fleet, cache = _fleet(tmp_path / "fleet.toml"), tmp_path / "calls.sqlite"
        first = _learn(memory, fleet, cache)
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
        out, _ = second.communicate(timeout=150)
        assert second.returncode == 0, out.decode()[-3000:]
        items = ctx.learning.items("a")
        assert [i.state for i in items] == ["done"] * PAIRS
        record_ids = [i.record_id for i in items]
        records = ctx.memory.list("a")
        assert sorted(r.id for r in records) == sorted(record_ids)  # records == pairs
        assert len(set(record_ids)) == PAIRS
        provenance = ctx.provenance.many(record_ids)  # type: ignore[arg-type]
        assert len(provenance) == PAIRS
        for item in items:
            learned = provenance[item.record_id]["learned"]  # type: ignore[index]
            assert (learned["task_id"], learned["namespace"]) == (item.task_id, "a")
            assert (learned["pos_attempt"], learned["neg_attempt"]) == (
                item.pos_attempt,
                item.neg_attempt,
            )
    finally:
        ctx.close()
