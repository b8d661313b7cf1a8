"""Process and thread bounds of the service: `serve --workers N`, the endpoint thread pool
(`Settings.threads`) and the PostgreSQL connection pool sized to it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from anyio import to_thread
from fastapi.testclient import TestClient

from memcollab.memory.api import Memory
from memcollab.memory.store import PostgresMemory
from memcollab.server.app import create_app
from memcollab.server.context import ServerContext, Settings
from tests.server.conftest import Storage
from tests.server.test_cli_serve import _free_port


def test_the_endpoint_thread_pool_is_bounded_by_the_settings(storage: Storage) -> None:
    ctx = storage.new("sqlite", Settings(threads=3))
    with TestClient(create_app(ctx)) as client:
        tokens = client.portal.call(lambda: to_thread.current_default_thread_limiter().total_tokens)  # type: ignore[union-attr]
        assert tokens == 3
    with pytest.raises(ValueError, match="at least one"):
        storage.new("sqlite", Settings(threads=0))


def test_the_postgres_pool_is_sized_to_the_threads(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEMCOLLAB_PG_POOL_SIZE", raising=False)
    ctx = storage.new("postgres", Settings(threads=5))
    store = ctx.memory.store
    assert isinstance(store, PostgresMemory) and store.pool_size == 5
    ctx.keys.create("a", "read")  # the service tables use the memory's pool
    assert 1 <= store.pool_stats()["pool_size"] <= 5
    monkeypatch.setenv("MEMCOLLAB_PG_POOL_SIZE", "2")  # an explicit size wins
    other = storage.again(ctx)
    assert isinstance(other.memory.store, PostgresMemory) and other.memory.store.pool_size == 2


def test_serve_with_two_workers_answers_from_both(tmp_path: Path) -> None:
    memory = str(tmp_path / "m.sqlite")
    with ServerContext(Memory.open(memory)) as ctx:
        secret = ctx.keys.create("a", "write")[1]
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "memcollab", "serve", "--memory", memory, "--port", str(port)]
            + ["--workers", "2", "--threads", "4", "--log-level", "info"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        deadline = time.monotonic() + 90
        while (
            "Started server process" not in log.read_text()
            or log.read_text().count("Application startup complete") < 2
        ):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        for n in range(6):
            body = {"id": f"job-{n}", "model": "m", "task": f"What is {n} + 1?", "answer": "x"}
            assert httpx.post(f"{base}/v1/attempts", json=body, headers=headers).status_code == 201
        listed = httpx.get(f"{base}/v1/attempts", headers=headers).json()
        assert listed["total"] == 6  # every worker wrote to, and reads from, the one database
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text()
    assert log.read_text().count("Started server process") >= 2, log.read_text()
