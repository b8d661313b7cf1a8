"""Trajectory archives: a lossless, checked move of a runs folder's trajectories."""

import gzip
import json
import sqlite3
from pathlib import Path

import pytest

from memcollab.collect import TrajectoryStore, collect
from memcollab.trajectory_archive import ArchiveFormatError, export_archive, import_archive
from tests.test_collect import TASKS, _agents


def _rows(store: TrajectoryStore) -> list[tuple]:
    conn = sqlite3.connect(store.path)
    try:
        trajectories = conn.execute(
            "SELECT task_id, model, condition, sample_index, correct, json, created_at"
            " FROM trajectories ORDER BY task_id, model"
        ).fetchall()
        tasks = conn.execute("SELECT task_id, json FROM tasks ORDER BY task_id").fetchall()
    finally:
        conn.close()
    return [*trajectories, *tasks]


@pytest.fixture
def store(tmp_path: Path) -> TrajectoryStore:
    store = TrajectoryStore.in_dir(tmp_path / "here")
    collect(_agents(), TASKS, store)
    return store


@pytest.mark.parametrize("name", ["run.jsonl", "run.jsonl.gz"])
def test_export_then_import_reproduces_every_row_exactly(
    store: TrajectoryStore, tmp_path: Path, name: str
) -> None:
    assert export_archive(store, tmp_path / name) == 8
    there = TrajectoryStore.in_dir(tmp_path / "there")
    assert import_archive(there, tmp_path / name) == (8, 0)
    assert _rows(there) == _rows(store)  # same JSON, verdicts and stored times
    assert import_archive(there, tmp_path / name) == (0, 8)  # a second import adds nothing
    assert _rows(there) == _rows(store)


def test_since_exports_only_later_rows_and_parts_add_up(
    store: TrajectoryStore, tmp_path: Path
) -> None:
    times = sorted(store.created_at().values())
    cut = times[5]
    assert export_archive(store, tmp_path / "late.jsonl", since=cut) == 3
    assert export_archive(store, tmp_path / "early.jsonl", since=None) == 8
    there = TrajectoryStore.in_dir(tmp_path / "there")
    assert import_archive(there, tmp_path / "late.jsonl") == (3, 0)
    assert len(there.tasks()) == 4  # every archive carries the run's tasks
    assert import_archive(there, tmp_path / "early.jsonl") == (5, 3)
    assert _rows(there) == _rows(store)


def test_import_keeps_a_stored_trajectory_rather_than_replacing_it(
    store: TrajectoryStore, tmp_path: Path
) -> None:
    export_archive(store, tmp_path / "a.jsonl")
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    item = json.loads(lines[-1])
    item["trajectory"]["correct"] = not item["trajectory"]["correct"]
    (tmp_path / "changed.jsonl").write_text("\n".join([*lines[:4], json.dumps(item)]) + "\n")
    before = _rows(store)
    assert import_archive(store, tmp_path / "changed.jsonl") == (0, 1)
    assert _rows(store) == before


def _bad_archives(good: list[str], tmp_path: Path) -> dict[str, tuple[Path, str]]:
    trajectory = json.loads(good[-1])
    no_time = json.dumps({"trajectory": trajectory["trajectory"]})
    wrong_kind = json.dumps({**trajectory, "trajectory": {"task_id": "toy/0"}})
    orphan = good[-1]  # a trajectory whose task line is missing
    cases = {
        "garbage": ([*good[:4], "{not json"], ":5:"),
        "list": ([*good[:4], "[1, 2]"], ":5:"),
        "no_time": ([*good[:4], no_time], ":5:"),
        "bad_trajectory": ([*good[:4], wrong_kind], ":5:"),
        "orphan": ([orphan], "no such task line"),
    }
    out = {}
    for name, (lines, needle) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n")
        out[name] = (path, needle)
    not_gzip = tmp_path / "not.jsonl.gz"
    not_gzip.write_text(good[0])
    out["not_gzip"] = (not_gzip, "cannot read")
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress("\n".join(good).encode())[:-20])
    out["truncated"] = (truncated, "cannot read")
    out["missing"] = (tmp_path / "missing.jsonl", "does not exist")
    return out


def test_a_bad_archive_is_refused_whole_with_its_file_and_line(
    store: TrajectoryStore, tmp_path: Path
) -> None:
    export_archive(store, tmp_path / "good.jsonl")
    good = (tmp_path / "good.jsonl").read_text().splitlines()
    for name, (path, needle) in _bad_archives(good, tmp_path).items():
        there = TrajectoryStore.in_dir(tmp_path / f"there-{name}")
        with pytest.raises(ArchiveFormatError, match=needle):
            import_archive(there, path)
        assert len(there) == 0 and there.tasks() == {}, name  # nothing half-imported
