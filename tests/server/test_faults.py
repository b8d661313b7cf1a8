"""Two `memcollab serve` processes on one database, concurrent writers, one process
killed with SIGKILL mid-load and restarted: no acknowledged write lost, none stored twice,
no record without its provenance (the bounded version of benchmarks/server_faults.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.server.conftest import KINDS
from tests.support.benchmarks import load_benchmark


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_mid_load_loses_and_duplicates_nothing(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("pg_url") if kind == "postgres" else ""
    harness = load_benchmark("server_faults")
    backend = "postgresql" if kind == "postgres" else "sqlite"
    result = harness.run(
        backend,
        writers=4,
        seconds=5,
        kill_at=1.5,
        restart_after=0.2,
        pg_url=url or harness.PG_URL,
        workdir=tmp_path,
    )
    assert [e for e in result["events"] if "sigkill_pid" in e], result
    acked = result["acknowledged"]
    assert acked["records"] > 0 and acked["attempts"] > 0, result
    assert result["lost"] == {"records": 0, "attempts": 0}, result
    assert result["duplicates"] == {"records": 0, "attempts": 0}, result
    assert result["half_written_records"] == 0, result
    assert result["stored_never_sent"] == 0, result
    assert result["gave_up"] == 0 and result["client_errors"] == 0, result
    assert result["ok"] is True
