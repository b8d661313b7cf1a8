"""Two `memcollab serve` processes on one database, concurrent writers, one process killed
with SIGKILL mid-load and restarted; then every acknowledged write is counted.

Writers are threads, each with its own httpx2 client. Each write has a client-given
identity: an attempt carries its id, a record its source task id (so its record id is
deterministic). A writer sends each write to one of the two services and retries the
same body (same id) on the other one after a transport error or a 5xx, until a 2xx
acknowledges it or the writer's time is up. Mid-load the first service is killed with
SIGKILL (by its PID) and started again on the same port.

Counted afterwards, straight from the database:
  lost        acknowledged writes (2xx) that are not stored: must be 0
  duplicates  writes stored more than once (records per source task, attempts per op tag):
              must be 0
  half        records without their provenance row: must be 0
  unacked     writes stored although no 2xx came back (the ack was lost with the process):
              allowed, and counted

    python benchmarks/server_faults.py [--backend postgresql|sqlite|both] [--writers 8]
        [--seconds 20] [--kill-at 6] [--pg-url postgresql://...]

Writes benchmarks/results/serve/faults_<backend>.json (127.0.0.1 only; bounded in time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2 as httpx

from memcollab.memory.api import Memory
from memcollab.memory.store import PostgresMemory, SQLiteMemory
from memcollab.server.context import ServerContext

PG_URL = os.environ.get(
    "MEMCOLLAB_TEST_PG_URL", "postgresql://memcollab:memcollab@127.0.0.1:5432/memcollab_test"
)
NAMESPACE = "faults"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """One `memcollab serve` subprocess on a fixed port (restartable)."""

    def __init__(self, memory: str, port: int, log: Path) -> None:
        self.memory, self.port, self.log = memory, port, log
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "memcollab", "serve", "--memory", self.memory]
                + ["--port", str(self.port), "--log-level", "warning", "--threads", "8"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}: {self.log}")
            try:
                if httpx.get(f"{self.base}/v1/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"serve did not answer within {timeout} s: {self.log}")

    def kill(self) -> int:
        """SIGKILL by PID; returns the PID."""
        assert self.proc is not None
        pid = self.proc.pid
        os.kill(pid, signal.SIGKILL)
        self.proc.wait(30)
        return pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


@dataclass
class Tally:
    """What the writers saw (one lock guards every field)."""

    acked_records: set[str] = field(default_factory=set)
    acked_attempts: set[str] = field(default_factory=set)
    sent_records: set[str] = field(default_factory=set)
    sent_attempts: set[str] = field(default_factory=set)
    requests: int = 0
    retries: int = 0
    transport_errors: int = 0
    server_errors: int = 0
    client_errors: int = 0
    gave_up: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _record_body(op: str) -> dict[str, Any]:
    return {
        "domain": "math",
        "category": "algebra",
        "subcategory": "linear equations",
        "task_text": f"Solve x + {sum(map(ord, op)) % 997} = 0 ({op}).",
        "source_task_id": op,
        "constraints": [
            {"when": "an equation is linear", "enforce": "isolate x", "avoid": "sign slips"}
        ],
        "model_pos": "strong",
        "model_neg": "weak",
    }


def _attempt_body(op: str) -> dict[str, Any]:
    return {
        "id": op,
        "model": random.Random(op).choice(["m1", "m2"]),
        "task": f"What is {len(op)} + 2? ({op})",
        "answer": str(len(op) + 2),
        "metadata": {"op": op},
    }


def _writer(
    index: int, services: list[Service], headers: dict[str, str], stop: float, tally: Tally
) -> None:
    rng = random.Random(index)
    with httpx.Client(headers=headers, timeout=10) as http:
        n = 0
        while time.monotonic() < stop:
            n += 1
            op = f"w{index}-{n}"
            is_record = rng.random() < 0.5
            path, body = (
                ("/v1/records", _record_body(op))
                if is_record
                else ("/v1/attempts", _attempt_body(op))
            )
            with tally.lock:
                (tally.sent_records if is_record else tally.sent_attempts).add(op)
            target = rng.randrange(len(services))
            tries = 0
            while True:
                tries += 1
                try:
                    r = http.post(services[target].base + path, json=body)
                    status = r.status_code
                except httpx.TransportError:
                    status = 0
                with tally.lock:
                    tally.requests += 1
                    if status == 0:
                        tally.transport_errors += 1
                    elif status >= 500:
                        tally.server_errors += 1
                    elif status >= 400:
                        tally.client_errors += 1
                if 200 <= status < 300:
                    with tally.lock:
                        (tally.acked_records if is_record else tally.acked_attempts).add(op)
                    break
                if 400 <= status < 500 or time.monotonic() > stop + 20:
                    with tally.lock:
                        tally.gave_up += 1
                    break
                with tally.lock:
                    tally.retries += 1
                target = (target + 1) % len(services)  # the same write, on the other service
                time.sleep(0.02 * min(tries, 10))


def _count(ctx: ServerContext, tally: Tally) -> dict[str, Any]:
    records = ctx.memory.list(NAMESPACE, include_flagged=True)
    by_source = Counter(r.source_task_id for r in records)
    provenance = ctx.provenance.many([r.id for r in records])
    attempts, _ = ctx.attempts.list(NAMESPACE, limit=10**9)
    by_op = Counter(a.metadata.get("op", a.id) for a in attempts)
    stored_records, stored_attempts = set(by_source), set(by_op)
    return {
        "acknowledged": {
            "records": len(tally.acked_records),
            "attempts": len(tally.acked_attempts),
        },
        "stored": {"records": len(records), "attempts": len(attempts)},
        "lost": {
            "records": len(tally.acked_records - stored_records),
            "attempts": len(tally.acked_attempts - stored_attempts),
        },
        "duplicates": {
            "records": sum(n - 1 for n in by_source.values() if n > 1),
            "attempts": sum(n - 1 for n in by_op.values() if n > 1),
        },
        "half_written_records": sum(1 for r in records if r.id not in provenance),
        "unacked_but_stored": {
            "records": len(stored_records - tally.acked_records),
            "attempts": len(stored_attempts - tally.acked_attempts),
        },
        "stored_never_sent": len(
            (stored_records - tally.sent_records) | (stored_attempts - tally.sent_attempts)
        ),
    }


def run(
    backend: str,
    *,
    writers: int = 8,
    seconds: float = 20,
    kill_at: float = 6,
    restart_after: float = 1.0,
    pg_url: str = PG_URL,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """One fault run on `backend` (postgresql | sqlite); returns the counts."""
    work = workdir or Path(tempfile.mkdtemp(prefix="memcollab-faults-"))
    schema = f"faults_{uuid.uuid4().hex[:10]}"
    if backend == "postgresql":
        sep = "&" if "?" in pg_url else "?"
        location = f"{pg_url}{sep}options=-csearch_path%3D{schema}"
        opened = ServerContext(Memory(PostgresMemory(pg_url, schema=schema)))
    else:
        location = str(work / "memory.sqlite")
        opened = ServerContext(Memory(SQLiteMemory(location)))
    try:
        with opened as ctx:
            secret = ctx.keys.create(NAMESPACE, "write")[1]
        services = [Service(location, free_port(), work / f"serve-{i}.log") for i in range(2)]
        tally = Tally()
        events: list[dict[str, Any]] = []
        try:
            for service in services:
                service.launch()
            for service in services:
                service.wait_ready()
            started = time.monotonic()
            stop = started + seconds
            headers = {"Authorization": f"Bearer {secret}"}
            threads = [
                threading.Thread(target=_writer, args=(i, services, headers, stop, tally))
                for i in range(writers)
            ]
            for t in threads:
                t.start()
            time.sleep(kill_at)
            with tally.lock:
                before = tally.requests
            pid = services[0].kill()
            events.append(
                {
                    "at_s": round(time.monotonic() - started, 2),
                    "sigkill_pid": pid,
                    "requests_before": before,
                }
            )
            time.sleep(restart_after)
            services[0].start()
            events.append(
                {
                    "at_s": round(time.monotonic() - started, 2),
                    "restarted_pid": services[0].proc.pid if services[0].proc else None,
                }
            )
            for t in threads:
                t.join()
            elapsed = time.monotonic() - started
        finally:
            for service in services:
                service.stop()
        reopened = (
            ServerContext(Memory(PostgresMemory(pg_url, schema=schema)))
            if backend == "postgresql"
            else ServerContext(Memory(SQLiteMemory(location)))
        )
        with reopened as ctx:
            counts = _count(ctx, tally)
    finally:
        if backend == "postgresql":
            import psycopg

            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    ok = (
        counts["lost"] == {"records": 0, "attempts": 0}
        and counts["duplicates"] == {"records": 0, "attempts": 0}
        and counts["half_written_records"] == 0
        and counts["stored_never_sent"] == 0
    )
    return {
        "backend": backend,
        "ok": ok,
        **counts,
        "writers": writers,
        "seconds": round(elapsed, 1),
        "requests": tally.requests,
        "retries": tally.retries,
        "transport_errors": tally.transport_errors,
        "server_errors": tally.server_errors,
        "client_errors": tally.client_errors,
        "gave_up": tally.gave_up,
        "events": events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["postgresql", "sqlite", "both"], default="both")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--kill-at", type=float, default=6)
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results/serve"))
    args = parser.parse_args()
    backends = ["postgresql", "sqlite"] if args.backend == "both" else [args.backend]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for backend in backends:
        result = run(
            backend,
            writers=args.writers,
            seconds=args.seconds,
            kill_at=args.kill_at,
            pg_url=args.pg_url,
        )
        result["machine"] = {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        }
        result["command"] = "python " + " ".join(sys.argv)
        path = args.out_dir / f"faults_{backend}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
