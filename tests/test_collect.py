"""Collection: every model on every task, streamed to disk, resumable after a real kill."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memcollab.agent import Agent
from memcollab.collect import RunsError, TrajectoryStore, collect
from memcollab.llm.cache import Gateway
from memcollab.llm.scripted import ScriptedModel
from memcollab.tasks.task import Task

TASKS = [
    Task(id=f"toy/{i}", domain="math", prompt=f"What is {i} + {i}?", answer=str(2 * i))
    for i in range(4)
]


def _agents() -> list[Agent]:
    right = ScriptedModel(
        lambda r: "\\boxed{" + str(2 * int(r.messages[1].content.split()[2])) + "}", name="right"
    )
    wrong = ScriptedModel(lambda r: "\\boxed{-1}", name="wrong")
    return [Agent(Gateway(None).bind(m)) for m in (right, wrong)]


def test_collect_stores_everything_and_resumes(tmp_path: Path) -> None:
    store = TrajectoryStore.in_dir(tmp_path / "run")
    first = collect(_agents(), TASKS, store)
    assert (first.computed, first.skipped, len(store)) == (8, 0, 8)
    assert first.per_model["right"].accuracy == 1.0
    assert first.per_model["wrong"].accuracy == 0.0
    stamps = store.created_at()
    again = collect(_agents(), TASKS, TrajectoryStore.in_dir(tmp_path / "run"))
    assert (again.computed, again.skipped) == (0, 8)
    assert store.created_at() == stamps
    redo = collect(_agents(), TASKS[:1], store, redo=True)
    assert redo.computed == 2
    assert len(store) == 8
    assert store.tasks() == {t.id: t for t in TASKS}
    assert store.export_jsonl(tmp_path / "t.jsonl") == 8
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 8


def test_open_existing_needs_trajectories(tmp_path: Path) -> None:
    with pytest.raises(RunsError, match="holds no trajectories"):
        TrajectoryStore.open_existing(tmp_path)


def test_if_present_creates_nothing_and_finds_a_store(tmp_path: Path) -> None:
    assert TrajectoryStore.if_present(tmp_path) is None
    assert not (tmp_path / TrajectoryStore.FILENAME).exists()
    TrajectoryStore.in_dir(tmp_path)  # creates the file
    found = TrajectoryStore.if_present(tmp_path)
    assert found is not None and len(found) == 0


def _count(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM trajectories").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_killed_collection_resumes_without_redoing_work(tmp_path: Path) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "".join(json.dumps({"id": f"k{i}", "q": f"{i}+{i}?", "a": 2 * i}) + "\n" for i in range(12))
    )
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        '[models.slow]\nprovider = "scripted"\nresponses = ["\\\\boxed{4}"]\n'
        "delay_s = 0.3\nmax_concurrency = 1\n"
    )
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "memcollab",
        "collect",
        "--fleet",
        str(fleet),
        "--tasks",
        f"jsonl:{tasks}#domain=math,prompt=q,answer=a,id=id",
        "--out",
        str(out),
        "--workers",
        "1",
        "--no-cache",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    db = out / TrajectoryStore.FILENAME
    deadline = time.monotonic() + 60
    while _count(db) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    kept = TrajectoryStore(db).created_at()
    assert 4 <= len(kept) < 12

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"computed {12 - len(kept)}, reused {len(kept)}" in rerun.stdout
    final = TrajectoryStore(db).created_at()
    assert len(final) == 12
    assert {k: final[k] for k in kept} == kept  # nothing finished was recomputed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["slow"]["tasks"] == 12
    assert summary["models"]["slow"]["correct"] == 1  # only k2 has answer 4


def test_default_workers_fill_every_models_concurrency() -> None:
    from memcollab.collect import MAX_DEFAULT_WORKERS, MIN_DEFAULT_WORKERS, default_workers

    class Batched(ScriptedModel):
        def __init__(self, name: str, key: str, limit: int) -> None:
            super().__init__(["x"], name=name)
            self._limit = (key, limit)

        def concurrency(self) -> tuple[str, int]:
            return self._limit

    gateway = Gateway(None)
    agents = [
        Agent(gateway.bind(Batched("a", "engine:a", 8))),
        Agent(gateway.bind(Batched("b", "engine:b", 16))),
        Agent(gateway.bind(Batched("c", "shared-cpu", 1))),
        Agent(gateway.bind(Batched("d", "shared-cpu", 1))),  # shares c's limit: counted once
    ]
    assert default_workers(agents) == 8 + 16 + 1
    wide = [Agent(gateway.bind(Batched(f"m{i}", f"k{i}", 64))) for i in range(3)]
    assert default_workers(wide) == MAX_DEFAULT_WORKERS
    assert default_workers(agents[2:]) == MIN_DEFAULT_WORKERS  # one shared lock: still 4
