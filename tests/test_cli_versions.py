"""`memory versions|snapshot|rollback|archive` through the CLI (typer's runner)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from memcollab.cli import app
from memcollab.memory import Memory
from memcollab.memory.store import MemoryNotFoundError, MemoryVersionError
from tests.memory.test_store import make

runner = CliRunner()


def _run(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_snapshot_rollback_archive_and_the_change_log(tmp_path: Path) -> None:
    path = str(tmp_path / "m.sqlite")
    with Memory.open(path) as memory:
        memory.add(make(1))
    assert "snapshot good = version 1 of default" in _run("memory", "snapshot", path, "good")
    with Memory.open(path) as memory:
        memory.add(make(2))
    assert f"{make(1).id} is archived" in _run(
        "memory", "archive", path, make(1).id, "--reason", "obsolete"
    )
    out = _run("memory", "rollback", path, "good", "--reason", "bad batch", "--json")
    counts = json.loads(out)
    assert (counts["to_version"], counts["changed"], counts["archived"]) == (1, 2, 1)
    with Memory.open(path) as memory:
        assert [r.id for r in memory.list()] == [make(1).id]
        assert memory.status(make(2).id) == "archived"
    assert "default: version 5" in _run("memory", "versions", path)
    lines = _run("memory", "versions", path, "--json", "--since", "3").splitlines()
    changes = [json.loads(line) for line in lines]
    assert [(c["version"], c["op"], c["status_after"]) for c in changes] == [
        (4, "rollback", "archived"),  # record 2, added after version 1
        (5, "rollback", "active"),  # record 1, archived after version 1
    ]
    assert changes[0]["reason"] == "rollback to version 1: bad batch"
    # user errors reach cli.main, which prints them as one line (tests/test_cli.py)
    result = runner.invoke(app, ["memory", "rollback", path, "9", "--reason", "x"])
    assert isinstance(result.exception, MemoryVersionError)
    assert "versions 0..5, not 9" in str(result.exception)
    result = runner.invoke(app, ["memory", "archive", path, "nope", "--reason", "x"])
    assert isinstance(result.exception, MemoryNotFoundError)
