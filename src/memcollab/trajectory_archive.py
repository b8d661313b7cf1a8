"""Lossless export and import of a trajectory store, so a run moves to another machine whole.

`TrajectoryStore.export_jsonl` writes the readable list of a run's trajectories; an archive
also keeps what a resumed run needs: the run's tasks and the time each trajectory was
stored (so `--since` exports of a growing run line up across machines). Importing an
archive into a runs folder is much faster than replaying every stored model call, which
re-runs every sandboxed program and math check of the run.

Format (JSONL, gzip-compressed when the name ends in .gz): one `{"task": ...}` line per task
of the run, then one `{"trajectory": ..., "created_at": ...}` line per trajectory, oldest
first.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from pydantic import ValidationError

from memcollab.atomic import replace_when_done
from memcollab.collect import TrajectoryStore
from memcollab.errors import UserError
from memcollab.tasks.task import Task
from memcollab.textio import open_text
from memcollab.trajectory import Trajectory


class ArchiveFormatError(UserError):
    """A trajectory archive that cannot be read, or whose lines do not check out."""


def export_archive(store: TrajectoryStore, path: str | Path, since: float | None = None) -> int:
    """Write the store's tasks and its trajectories stored at or after `since` (all by
    default); returns how many trajectories were written. The file appears whole or not at
    all."""
    path = Path(path)
    count = 0
    with replace_when_done(path) as tmp, open_text(tmp, "w", name=path) as fh:
        for task in store.tasks().values():
            fh.write(json.dumps({"task": task.model_dump(mode="json")}, ensure_ascii=False) + "\n")
        for blob, created_at in store.stored_rows(since):
            fh.write(f'{{"trajectory": {blob}, "created_at": {created_at!r}}}\n')
            count += 1
    return count


def import_archive(store: TrajectoryStore, path: str | Path) -> tuple[int, int]:
    """Add an archive's tasks and trajectories to `store` in one transaction.

    Every line is checked before anything is added: it must be a task or a trajectory with
    its stored time, and every trajectory's task must be in the archive or the store. A bad
    line raises ArchiveFormatError naming the file and line, and nothing is imported.
    Trajectories already stored (same task, model, condition and sample) are kept as they
    are. Returns (added, skipped).
    """
    tasks, rows = _read_archive(Path(path))
    known = {t.id for t in tasks} | set(store.tasks())
    for trajectory, _ in rows:
        if trajectory.task_id not in known:
            raise ArchiveFormatError(
                f"{path}: trajectory of task {trajectory.task_id!r} but no such task line",
                "export the archive again with `memcollab trajectories export`",
            )
    added = store.add_rows(tasks, rows)
    return added, len(rows) - added


def _read_archive(path: Path) -> tuple[list[Task], list[tuple[Trajectory, float]]]:
    if not path.is_file():
        raise ArchiveFormatError(f"trajectory archive {path} does not exist", "check the path")
    tasks: list[Task] = []
    rows: list[tuple[Trajectory, float]] = []
    try:
        with open_text(path, "r") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                task, row = _parse_line(line, f"{path}:{lineno}")
                if task is not None:
                    tasks.append(task)
                if row is not None:
                    rows.append(row)
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise ArchiveFormatError(f"cannot read trajectory archive {path}: {exc}") from None
    return tasks, rows


def _parse_line(line: str, where: str) -> tuple[Task | None, tuple[Trajectory, float] | None]:
    try:
        item = json.loads(line)
        if not isinstance(item, dict):
            raise TypeError("not a JSON object")
        if set(item) == {"task"}:
            return Task.model_validate(item["task"]), None
        if set(item) == {"trajectory", "created_at"}:
            trajectory = Trajectory.model_validate(item["trajectory"])
            return None, (trajectory, float(item["created_at"]))
        raise KeyError(f"keys {sorted(item)}")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, ValidationError) as exc:
        detail = str(exc).splitlines()[0]
        raise ArchiveFormatError(
            f"{where}: not a task or a stored trajectory ({detail})",
            "each line must be written by `memcollab trajectories export`",
        ) from None
