"""Run every model of a fleet on every task and keep the trajectories.

Results stream into a SQLite file as each trajectory finishes, so a run killed at any point
resumes with nothing finished lost or redone. Models run concurrently; each model's calls
are bounded by its concurrency limit in the `Gateway`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memcollab.agent import Agent, Guidance
from memcollab.atomic import replace_when_done
from memcollab.errors import UserError
from memcollab.sqlite_local import LocalSQLite
from memcollab.tasks.task import Task
from memcollab.trajectory import Trajectory

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trajectories (
    task_id TEXT NOT NULL,
    model TEXT NOT NULL,
    condition TEXT NOT NULL,
    sample_index INTEGER NOT NULL,
    correct INTEGER NOT NULL,
    json TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (task_id, model, condition, sample_index)
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    json TEXT NOT NULL
)
"""


class RunsError(UserError):
    """A runs folder that cannot be used."""


class TrajectoryStore:
    """Trajectories of one run in SQLite (WAL); safe for threads and several processes."""

    FILENAME = "trajectories.sqlite"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = LocalSQLite(self.path, _SCHEMA)

    @classmethod
    def in_dir(cls, run_dir: str | Path) -> TrajectoryStore:
        """The store of a runs folder (created if needed)."""
        return cls(Path(run_dir) / cls.FILENAME)

    @classmethod
    def if_present(cls, run_dir: str | Path) -> TrajectoryStore | None:
        """The store of a runs folder, or None where it has none (nothing is created)."""
        path = Path(run_dir) / cls.FILENAME
        return cls(path) if path.is_file() else None

    @classmethod
    def open_existing(cls, run_dir: str | Path) -> TrajectoryStore:
        """The store of an existing runs folder; RunsError when there is none."""
        store = cls.if_present(run_dir)
        if store is None:
            raise RunsError(
                f"{run_dir} holds no trajectories ({cls.FILENAME} is missing)",
                "run `memcollab collect --out` into it first",
            )
        return store

    def _conn(self) -> sqlite3.Connection:
        return self._db.conn()

    def put(self, trajectory: Trajectory, replace: bool = False) -> None:
        """Store one trajectory (committed at once)."""
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        task_id, model, condition, sample = trajectory.key()
        self._conn().execute(
            f"{verb} INTO trajectories VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                task_id,
                model,
                condition,
                sample,
                int(trajectory.correct),
                trajectory.model_dump_json(),
                time.time(),
            ),
        )

    def put_tasks(self, tasks: Sequence[Task]) -> None:
        """Keep the tasks of the run, so the folder alone is enough to build memory from."""
        self.add_rows(tasks, [])

    def tasks(self) -> dict[str, Task]:
        """The tasks of the run, by id."""
        rows = self._conn().execute("SELECT json FROM tasks ORDER BY rowid").fetchall()
        return {t.id: t for t in (Task.model_validate_json(r[0]) for r in rows)}

    def keys(self) -> set[tuple[str, str, str, int]]:
        """The (task, model, condition, sample) keys already stored."""
        rows = (
            self._conn()
            .execute("SELECT task_id, model, condition, sample_index FROM trajectories")
            .fetchall()
        )
        return {(r[0], r[1], r[2], int(r[3])) for r in rows}

    def __iter__(self) -> Iterator[Trajectory]:
        rows = self._conn().execute("SELECT json FROM trajectories ORDER BY rowid").fetchall()
        for (blob,) in rows:
            yield Trajectory.model_validate_json(blob)

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM trajectories").fetchone()[0])

    def created_at(self) -> dict[tuple[str, str, str, int], float]:
        """When each trajectory was stored (lets tests prove nothing was recomputed)."""
        rows = (
            self._conn()
            .execute("SELECT task_id, model, condition, sample_index, created_at FROM trajectories")
            .fetchall()
        )
        return {(r[0], r[1], r[2], int(r[3])): float(r[4]) for r in rows}

    def stored_rows(self, since: float | None = None) -> Iterator[tuple[str, float]]:
        """(trajectory JSON, time stored) of the rows stored at or after `since`, oldest first."""
        rows = self._conn().execute(
            "SELECT json, created_at FROM trajectories WHERE created_at >= ?"
            " ORDER BY created_at, rowid",
            (since if since is not None else float("-inf"),),
        )
        for blob, created_at in rows:
            yield blob, float(created_at)

    def add_rows(self, tasks: Sequence[Task], rows: Sequence[tuple[Trajectory, float]]) -> int:
        """Add tasks and (trajectory, time stored) rows in one transaction; keys already
        stored are kept as they are. Returns how many trajectories were added."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO tasks VALUES (?, ?)",
                [(t.id, t.model_dump_json()) for t in tasks],
            )
            after_tasks = conn.total_changes
            conn.executemany(
                "INSERT OR IGNORE INTO trajectories VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*t.key(), int(t.correct), t.model_dump_json(), at) for t, at in rows],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return conn.total_changes - after_tasks

    def export_jsonl(self, path: str | Path) -> int:
        """Write every trajectory as one JSON line; returns the count."""
        count = 0
        with replace_when_done(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
            for trajectory in self:
                fh.write(trajectory.model_dump_json() + "\n")
                count += 1
        return count


@dataclass(frozen=True)
class CollectEvent:
    """Progress of a collection: a trajectory finished, or was already there."""

    model: str
    task_id: str
    correct: bool
    skipped: bool


@dataclass
class ModelSummary:
    """Per-model totals of a run."""

    tasks: int = 0
    correct: int = 0
    turns: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.tasks if self.tasks else 0.0

    @property
    def mean_turns(self) -> float:
        return self.turns / self.tasks if self.tasks else 0.0


@dataclass
class CollectResult:
    """What a collection did."""

    computed: int = 0
    skipped: int = 0
    per_model: dict[str, ModelSummary] = field(default_factory=dict)


def summarise(
    trajectories: Sequence[Trajectory] | TrajectoryStore, condition: str | None = None
) -> dict[str, ModelSummary]:
    """Accuracy, turns and tokens per model (optionally for one condition)."""
    out: dict[str, ModelSummary] = {}
    for t in trajectories:
        if condition is not None and t.condition != condition:
            continue
        s = out.setdefault(t.model, ModelSummary())
        s.tasks += 1
        s.correct += int(t.correct)
        s.turns += t.turns
        s.prompt_tokens += t.prompt_tokens
        s.completion_tokens += t.completion_tokens
        s.wall_s += t.wall_s
    return out


MIN_DEFAULT_WORKERS = 4
MAX_DEFAULT_WORKERS = 64


def default_workers(agents: Sequence[Agent]) -> int:
    """Tasks worth having in flight: the sum of the models' concurrency limits.

    Models that share one limit (one concurrency key) count once. At least 4, so sandbox
    runs overlap with generation even for models served one call at a time; at most 64.
    """
    limits = dict(agent.client.model.concurrency() for agent in agents)
    return max(MIN_DEFAULT_WORKERS, min(MAX_DEFAULT_WORKERS, sum(limits.values())))


@dataclass(frozen=True)
class Job:
    """One trajectory to compute: an agent on a task under a condition.

    `guide`, when given, is called in the worker just before solving and returns the
    guidance plus a JSON note of where it came from (kept as `Trajectory.retrieval`), so
    retrieval (which may call the model to classify the task) runs concurrently too.
    """

    agent: Agent
    task: Task
    condition: str = "vanilla"
    sample_index: int = 0
    guide: Callable[[], tuple[Sequence[Guidance], dict[str, Any] | None]] | None = None

    def key(self) -> tuple[str, str, str, int]:
        return (self.task.id, self.agent.client.name, self.condition, self.sample_index)


def run_jobs(
    jobs: Sequence[Job],
    store: TrajectoryStore,
    *,
    redo: bool = False,
    workers: int | None = None,
    on_event: Callable[[CollectEvent], None] | None = None,
) -> tuple[int, int]:
    """Compute every job not yet in `store`, `workers` at a time; returns (computed, skipped).

    Jobs run in the order given (callers interleave models so every model makes progress);
    a KeyboardInterrupt cancels what has not started and keeps everything already stored.
    `workers` (jobs in flight) defaults to what the models can serve at once
    (`default_workers`), so a batching engine gets a full batch of concurrent tasks.
    """
    if workers is None:
        workers = default_workers([job.agent for job in jobs]) if jobs else 1
    done = set() if redo else store.keys()
    todo: list[Job] = []
    skipped = 0
    for job in jobs:
        if job.key() in done:
            skipped += 1
            if on_event:
                on_event(CollectEvent(job.agent.client.name, job.task.id, False, True))
        else:
            todo.append(job)

    def run(job: Job) -> Trajectory:
        guidance: Sequence[Guidance] = ()
        note: dict[str, Any] | None = None
        if job.guide is not None:
            guidance, note = job.guide()
        trajectory = job.agent.solve(
            job.task, guidance, condition=job.condition, sample_index=job.sample_index
        )
        if note is not None:
            trajectory = trajectory.model_copy(update={"retrieval": note})
        store.put(trajectory, replace=redo)
        return trajectory

    computed = 0
    executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="collect")
    pending: set[Future[Trajectory]] = set()
    try:
        queue = iter(todo)
        for job in queue:
            pending.add(executor.submit(run, job))
            if len(pending) >= workers * 2:
                break
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                trajectory = future.result()
                computed += 1
                if on_event:
                    on_event(
                        CollectEvent(
                            trajectory.model, trajectory.task_id, trajectory.correct, False
                        )
                    )
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(executor.submit(run, nxt))
    except BaseException:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
    return computed, skipped


def collect(
    agents: Sequence[Agent],
    tasks: Sequence[Task],
    store: TrajectoryStore,
    *,
    condition: str = "vanilla",
    redo: bool = False,
    workers: int | None = None,
    on_event: Callable[[CollectEvent], None] | None = None,
) -> CollectResult:
    """Every agent on every task; finished (task, model) pairs in `store` are skipped.

    Jobs are interleaved across models so every model makes progress (see `run_jobs`).
    """
    store.put_tasks(tasks)
    jobs = [Job(agent, task, condition) for task in tasks for agent in agents]
    computed, skipped = run_jobs(jobs, store, redo=redo, workers=workers, on_event=on_event)
    return CollectResult(computed, skipped, summarise(store, condition))


def write_summary(run_dir: Path, per_model: dict[str, ModelSummary], extra: dict) -> Path:
    """summary.json of a run: per-model accuracy, turns, tokens, plus what produced it."""
    path = run_dir / "summary.json"
    payload = {
        **extra,
        "models": {
            name: {
                "tasks": s.tasks,
                "correct": s.correct,
                "accuracy": round(s.accuracy, 4),
                "mean_turns": round(s.mean_turns, 3),
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens,
                "wall_s": round(s.wall_s, 1),
            }
            for name, s in per_model.items()
        },
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
