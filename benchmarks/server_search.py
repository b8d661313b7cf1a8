"""The search endpoint of `memcollab serve` under load: N concurrent clients for a bounded
time against a memory of synthetic records, beside one client alone.

The memory is built as in retrieval_latency.py (records over every bucket of the math
taxonomy), the service runs as `memcollab serve` in a subprocess (uvicorn, one process),
and clients are threads with their own httpx2 connection, on the same machine. Every query
names its bucket (no labeller call). Each bucket is queried once before timing starts, so
the TF-IDF indexes are built (the steady state). Reported: requests, errors (any status
but 200, or a transport error), requests per second, latency p50 / p90 / p99 / max in ms.

    python benchmarks/server_search.py [--records 10000] [--clients 32] [--seconds 20]
        [--memory postgresql://...]   # default: a temporary SQLite file

Writes benchmarks/results/server_search.json (or --out). Goal (issue 27): p99 <= 25 ms
with 32 clients at 100k records, zero errors.
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
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
from retrieval_latency import _text, build

from memcollab.memory.api import Memory
from memcollab.memory.store import MemoryStore, PostgresMemory, SQLiteMemory
from memcollab.memory.taxonomy import builtin_taxonomy
from memcollab.server.context import ServerContext


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load(
    base: str, secret: str, clients: int, seconds: float, buckets: list[Any], seed: int
) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {secret}"}

    def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            while time.perf_counter() < deadline:
                category, subcategory = buckets[rng.randrange(len(buckets))]
                body = {
                    "task": _text(rng),
                    "domain": "math",
                    "model": "a",
                    "category": category,
                    "subcategory": subcategory,
                }
                start = time.perf_counter()
                try:
                    ok = http.post("/v1/search", json=body).status_code == 200
                except httpx.TransportError:
                    ok = False
                latencies[i].append(time.perf_counter() - start)
                errors[i] += not ok

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ms = np.array([x for per in latencies for x in per]) * 1000
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": int(ms.size),
        "errors": int(sum(errors)),
        "requests_per_s": round(ms.size / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--memory", default=None, help="a postgresql:// URL (default: SQLite)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/server_search.json"))
    args = parser.parse_args()

    taxonomy = builtin_taxonomy("math")
    buckets = [(c, s) for c in taxonomy.categories() for s in taxonomy.subcategories(c)]
    tmp = Path(tempfile.mkdtemp(prefix="memcollab-bench-"))
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    store: MemoryStore
    if args.memory:
        store, location = (
            PostgresMemory(args.memory, schema=schema),
            (f"{args.memory}{'&' if '?' in args.memory else '?'}options=-csearch_path%3D{schema}"),
        )
    else:
        store = SQLiteMemory(tmp / "memory.sqlite")
        location = str(tmp / "memory.sqlite")
    started = time.perf_counter()
    build(store, args.records, buckets, args.seed)  # type: ignore[arg-type]
    build_s = time.perf_counter() - started
    with ServerContext(Memory(store)) as ctx:
        secret = ctx.keys.create("default", "read")[1]

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memcollab",
            "serve",
            "--memory",
            location,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        while True:
            try:
                if httpx.get(f"{base}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {secret}"}) as http:
            for category, subcategory in buckets:  # build every bucket's index once
                http.post(
                    "/v1/search",
                    json={
                        "task": "warm up",
                        "domain": "math",
                        "category": category,
                        "subcategory": subcategory,
                    },
                )
        alone = _load(base, secret, 1, min(args.seconds, 10), buckets, args.seed)
        loaded = _load(base, secret, args.clients, args.seconds, buckets, args.seed)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        if args.memory:
            import psycopg

            with psycopg.connect(args.memory, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    result = {
        "backend": "postgresql" if args.memory else "sqlite",
        "records": args.records,
        "build_s": round(build_s, 1),
        "one_client": alone,
        "loaded": loaded,
        "p99_ratio_loaded_to_alone": round(loaded["p99_ms"] / alone["p99_ms"], 2),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "command": " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
