"""`memcollab serve` and `memcollab keys` as a user runs them: real subprocesses, uvicorn on
127.0.0.1 on a free port, spoken to with an HTTP client (httpx2), two service processes
on one database."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.test_cli import assert_one_line_error, run_cli

SECRET = re.compile(r"mck_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(memory: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """`memcollab serve` in a subprocess; yields (base URL, its stdout so far)."""
    port = _free_port()
    log = tmp_path / f"serve-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "memcollab",
                "serve",
                "--memory",
                memory,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield base, log.read_text()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_help() -> None:
    r = run_cli("serve", "--help")
    assert r.returncode == 0 and "--memory" in r.stdout and "127.0.0.1" in r.stdout
    assert run_cli("keys", "--help").returncode == 0


def test_keys_create_prints_the_secret_once_and_list_never(tmp_path: Path) -> None:
    memory = str(tmp_path / "m.sqlite")
    made = run_cli(
        "keys", "create", "--namespace", "team-a", "--scope", "write", "--memory", memory
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.count("\n") == 1 and SECRET.fullmatch(made.stdout.strip())
    secret = made.stdout.strip()
    token = secret.rsplit("_", 1)[-1]
    assert secret not in made.stderr and "shown only now" in made.stderr
    listed = run_cli("keys", "list", "--memory", memory)
    assert listed.returncode == 0
    key_id = secret.split("_")[1]
    assert key_id in listed.stdout and "team-a" in listed.stdout and "write" in listed.stdout
    assert token not in listed.stdout + listed.stderr and "mck_" not in listed.stdout
    revoked = run_cli("keys", "revoke", key_id, "--memory", memory)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert_one_line_error(
        run_cli("keys", "create", "--namespace", "a b", "--scope", "read", "--memory", memory),
        "bad namespace",
    )
    assert_one_line_error(
        run_cli("keys", "create", "--namespace", "a", "--scope", "root", "--memory", memory),
        "unknown scope",
    )
    assert_one_line_error(
        run_cli("keys", "list", "--memory", str(tmp_path / "none.sqlite")), "no memory"
    )


def test_serve_on_a_fresh_memory_prints_one_admin_key_and_serves(tmp_path: Path) -> None:
    memory = str(tmp_path / "fresh" / "m.sqlite")
    with serving(memory, tmp_path) as (base, out):
        secrets = SECRET.findall(out)
        assert len(secrets) == 1, out
        headers = {"Authorization": f"Bearer {secrets[0]}"}
        who = httpx.get(f"{base}/v1/whoami", headers=headers).json()
        assert who["namespace"] == "default" and who["scope"] == "admin"
        add = httpx.post(
            f"{base}/v1/records",
            headers=headers,
            json={
                "domain": "math",
                "category": "algebra",
                "subcategory": "linear equations",
                "task_text": "Solve 2x + 1 = 5.",
                "constraints": [{"when": "solving", "enforce": "check", "avoid": "slips"}],
            },
        )
        assert add.status_code == 201, add.text
        found = httpx.post(
            f"{base}/v1/search",
            headers=headers,
            json={"task": "Solve 3x + 1 = 7.", "domain": "math"},
        ).json()
        assert [h["record_id"] for h in found["hits"]] == [add.json()["record"]["id"]]
        assert httpx.get(f"{base}/v1/search").status_code == 405
        assert httpx.get(f"{base}/v1/stats").status_code == 401
        assert "memcollab_http_requests_total" in httpx.get(f"{base}/metrics").text
    # A second start prints no new key.
    with serving(memory, tmp_path) as (_, out):
        assert not SECRET.findall(out), out


@pytest.fixture(params=["sqlite", "postgres"])
def shared_memory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "shared.sqlite")
        return
    import psycopg

    url = request.getfixturevalue("pg_url")
    schema = f"srvtest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_two_service_processes_share_keys_and_attempts(shared_memory: str, tmp_path: Path) -> None:
    made = run_cli(
        "keys", "create", "--namespace", "fleet", "--scope", "write", "--memory", shared_memory
    )
    assert made.returncode == 0, made.stderr
    headers = {"Authorization": f"Bearer {made.stdout.strip()}"}
    with (
        serving(shared_memory, tmp_path) as (one, out1),
        serving(shared_memory, tmp_path) as (two, out2),
    ):
        assert not SECRET.findall(out1 + out2)  # a key existed: no bootstrap key
        attempt = {"id": "job-1", "model": "m1", "task": "What is 2 + 2?", "answer": "4"}
        assert httpx.post(f"{one}/v1/attempts", json=attempt, headers=headers).status_code == 201
        retry = httpx.post(f"{two}/v1/attempts", json=attempt, headers=headers)
        assert retry.status_code == 200 and retry.json()["created"] is False
        assert httpx.get(f"{two}/v1/attempts/job-1", headers=headers).json()["model"] == "m1"
        assert httpx.get(f"{one}/v1/attempts", headers=headers).json()["total"] == 1
        key_id = made.stdout.strip().split("_")[1]
        assert run_cli("keys", "revoke", key_id, "--memory", shared_memory).returncode == 0
        for base in (one, two):
            assert httpx.get(f"{base}/v1/attempts", headers=headers).status_code == 401


def test_the_library_and_keys_work_without_the_server_extra(tmp_path: Path) -> None:
    """With fastapi, uvicorn and prometheus_client unimportable: the library and the CLI
    import, `keys` works, and `serve` says which extra to install (one line, exit 2)."""
    memory = str(tmp_path / "m.sqlite")
    keys = ["keys", "create", "--namespace", "a", "--scope", "read", "--memory", memory]
    code = "\n".join(
        [
            "import sys",
            "for name in ('fastapi', 'uvicorn', 'prometheus_client', 'starlette'):",
            "    sys.modules[name] = None",
            "import memcollab, memcollab.cli",
            "from memcollab.cli import main",
            "try:",
            f"    main({keys!r})",
            "except SystemExit as done:",
            "    assert done.code == 0, done.code",
            f"sys.exit(main(['serve', '--memory', {memory!r}]))",
        ]
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert SECRET.fullmatch(r.stdout.strip()), r.stdout + r.stderr
    r.stderr = "\n".join(line for line in r.stderr.splitlines() if "created key" not in line)
    assert_one_line_error(r, "pip install 'memcollab[server]'")
