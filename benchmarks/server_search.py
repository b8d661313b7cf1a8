"""The search endpoint of `memcollab serve` under load: N concurrent clients for a bounded
time against a memory of synthetic records, for several server configurations side by
side in one run, on SQLite and PostgreSQL.

The memory is built as in retrieval_latency.py (records over every bucket of the math
taxonomy); each configuration runs as `memcollab serve` subprocesses on 127.0.0.1 (uvicorn),
and clients are threads with their own httpx2 connection, on the same machine (they share
its cores with the server: on a 2-core machine the client threads take a large share).
Every query names its bucket (no labeller call). Before timing, every bucket is queried
by several clients so every worker has built its TF-IDF indexes (the steady state).
Configurations alternate for `--rounds` rounds, so machine noise hits each alike.

A configuration is LABEL=ARGS: ARGS are extra `serve` options, and `@PATH` as the first
word runs the server from another source tree (e.g. the code before a change:
`git archive COMMIT src | tar -x -C /tmp/before`, then `before=@/tmp/before/src`).

Reported per configuration and round: requests, errors (any status but 200, or a
transport error), requests per second, latency p50 / p90 / p99 / max in ms, one client
alone, and for PostgreSQL the connections the service held (pg_stat_activity). Also: the
same load on GET /v1/health (the framework and client ceiling of this machine), where one
search's time goes in-process (key check, retrieval, response), and a record-list page at
100k records read whole and sliced vs paged in SQL.

    python benchmarks/server_search.py [--records 100000] [--clients 32] [--seconds 15]
        [--backends sqlite postgresql] [--pg-url URL] [--rounds 2]
        [--config before=@/tmp/before/src --config w1=--workers 1 --config w2=--workers 2]

Writes benchmarks/results/serve/search_<backend>.json. Goal (issue 27): p99 <= 25 ms
with 32 clients at 100k records, zero errors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
from retrieval_latency import _text, build

from memcollab.memory.api import Memory
from memcollab.memory.store import MemoryStore, PostgresMemory, SQLiteMemory
from memcollab.memory.taxonomy import builtin_taxonomy
from memcollab.server.context import ServerContext
from memcollab.server.schemas import Hit, SearchRequest, SearchResponse, record_fields
from memcollab.tasks.task import Task

PG_URL = os.environ.get(
    "MEMCOLLAB_TEST_PG_URL", "postgresql://memcollab:memcollab@127.0.0.1:5432/memcollab_test"
)
Body = Callable[[random.Random], tuple[str, str, dict[str, Any] | None]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _search_body(buckets: list[Any]) -> Body:
    def body(rng: random.Random) -> tuple[str, str, dict[str, Any] | None]:
        category, subcategory = buckets[rng.randrange(len(buckets))]
        return (
            "POST",
            "/v1/search",
            {
                "task": _text(rng),
                "domain": "math",
                "model": "a",
                "category": category,
                "subcategory": subcategory,
            },
        )

    return body


def _health(rng: random.Random) -> tuple[str, str, dict[str, Any] | None]:
    return "GET", "/v1/health", None


def _load(
    base: str, secret: str, clients: int, seconds: float, make: Body, seed: int
) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {secret}"}

    def client(i: int) -> None:
        rng = random.Random(seed * 1000 + i)
        with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
            while time.perf_counter() < deadline:
                method, path, body = make(rng)
                start = time.perf_counter()
                try:
                    ok = http.request(method, path, json=body).status_code == 200
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

    def q(p: float) -> float:
        return round(float(np.percentile(ms, p)), 2)

    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": int(ms.size),
        "errors": int(sum(errors)),
        "requests_per_s": round(ms.size / elapsed, 1),
        "p50_ms": q(50),
        "p90_ms": q(90),
        "p99_ms": q(99),
        "max_ms": round(float(ms.max()), 2),
    }


def _warm(base: str, secret: str, buckets: list[Any], clients: int = 8) -> None:
    """Every bucket from several connections, so each worker builds every index."""
    headers = {"Authorization": f"Bearer {secret}"}

    def sweep(i: int) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as http:
            for category, subcategory in buckets:
                http.post(
                    "/v1/search",
                    json={
                        "task": "warm up",
                        "domain": "math",
                        "category": category,
                        "subcategory": subcategory,
                    },
                )

    threads = [threading.Thread(target=sweep, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Server:
    """`memcollab serve` with one configuration's options, from this or another tree."""

    def __init__(self, location: str, args: str) -> None:
        words = shlex.split(args)
        self.src = words.pop(0)[1:] if words and words[0].startswith("@") else None
        self.options = words
        self.location = location
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        env = dict(os.environ)
        if self.src:
            env["PYTHONPATH"] = self.src
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memcollab", "serve", "--memory", self.location]
            + ["--port", str(self.port), "--log-level", "warning", *self.options],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve {self.options} exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.base}/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("serve did not start")

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _pg_connections(url: str, application: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s", (application,)
        ).fetchone()
    return int(row[0]) if row else 0


def _breakdown(ctx: ServerContext, secret: str, buckets: list[Any], n: int = 400) -> dict[str, Any]:
    """Median microseconds of each step of one search, in-process (no HTTP)."""
    rng = random.Random(7)
    steps: dict[str, list[float]] = {"verify_key": [], "retrieve": [], "response_json": []}
    for category, subcategory in buckets:  # indexes built
        ctx.memory.search(
            Task(id="q", domain="math", prompt="warm"),
            namespace="default",
            label=_Label(category, subcategory),
            count_usage=False,
        )
    for _ in range(n):
        category, subcategory = buckets[rng.randrange(len(buckets))]
        body = SearchRequest(
            task=_text(rng),
            domain="math",
            model="a",
            category=category,
            subcategory=subcategory,
        )
        t0 = time.perf_counter()
        ctx.keys.verify(secret)
        t1 = time.perf_counter()
        found = ctx.memory.search(
            Task(id="query", domain="math", prompt=body.task),
            model="a",
            label=_Label(category, subcategory),
            namespace="default",
            p=body.p,
            count_usage=False,
        )
        t2 = time.perf_counter()
        hits = [
            Hit(
                **{
                    k: v
                    for k, v in record_fields(h.record).items()
                    if k in ("domain", "category", "subcategory", "constraints")
                },
                record_id=h.record.id,
                score=float(h.score),
                level=h.level,
                model_pos=h.record.model_pos,
                model_neg=h.record.model_neg,
            )
            for h in found.hits
        ]
        SearchResponse.model_validate(
            {
                "hits": hits,
                "level": found.level,
                "strategy": found.mode,
                "category": category,
                "subcategory": subcategory,
                "label_source": "request",
            }
        ).model_dump_json()
        t3 = time.perf_counter()
        steps["verify_key"].append(t1 - t0)
        steps["retrieve"].append(t2 - t1)
        steps["response_json"].append(t3 - t2)
    return {k: round(float(np.median(v)) * 1e6, 1) for k, v in steps.items()} | {"unit": "us"}


class _Label:
    def __init__(self, category: str, subcategory: str) -> None:
        self.category, self.subcategory = category, subcategory


def _list_page(store: MemoryStore, records: int) -> dict[str, Any]:
    """A 100-record page at offsets 0 and records/2: the whole list sliced vs paged in SQL."""
    memory = Memory(store)
    out: dict[str, Any] = {}
    for offset in (0, records // 2):
        t0 = time.perf_counter()
        sliced = memory.list("default")[offset : offset + 100]
        t1 = time.perf_counter()
        paged, _ = memory.page("default", limit=100, offset=offset)
        t2 = time.perf_counter()
        assert [r.id for r in sliced] == [r.id for r in paged]
        out[f"offset_{offset}"] = {
            "list_and_slice_ms": round((t1 - t0) * 1000, 1),
            "page_in_sql_ms": round((t2 - t1) * 1000, 1),
        }
    return out


def run_backend(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    taxonomy = builtin_taxonomy("math")
    buckets = [(c, s) for c in taxonomy.categories() for s in taxonomy.subcategories(c)]
    tmp = Path(tempfile.mkdtemp(prefix="memcollab-bench-"))
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    store: MemoryStore
    if backend == "postgresql":
        store = PostgresMemory(args.pg_url, schema=schema)
    else:
        store = SQLiteMemory(tmp / "memory.sqlite")
    configs = dict(c.split("=", 1) for c in args.config)
    result: dict[str, Any] = {"backend": backend, "records": args.records, "configs": configs}
    try:
        started = time.perf_counter()
        build(store, args.records, buckets, args.seed)  # type: ignore[arg-type]
        result["build_s"] = round(time.perf_counter() - started, 1)
        ctx = ServerContext(Memory(store))  # not closed: the store is, at the end
        secret = ctx.keys.create("default", "read")[1]
        result["in_process_search_us"] = _breakdown(ctx, secret, buckets)
        result["list_page_100"] = _list_page(store, args.records)
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            for label, options in configs.items():
                application = f"mcbench_{label}_{uuid.uuid4().hex[:6]}"
                if backend == "postgresql":
                    sep = "&" if "?" in args.pg_url else "?"
                    location = (
                        f"{args.pg_url}{sep}options=-csearch_path%3D{schema}"
                        f"&application_name={application}"
                    )
                else:
                    location = str(tmp / "memory.sqlite")
                with Server(location, options) as server:
                    _warm(server.base, secret, buckets)
                    row: dict[str, Any] = {"round": r + 1, "config": label}
                    row["one_client"] = _load(
                        server.base,
                        secret,
                        1,
                        min(args.seconds, 5),
                        _search_body(buckets),
                        args.seed,
                    )
                    row["loaded"] = _load(
                        server.base,
                        secret,
                        args.clients,
                        args.seconds,
                        _search_body(buckets),
                        args.seed,
                    )
                    if backend == "postgresql":
                        row["pg_connections"] = _pg_connections(args.pg_url, application)
                    if r == 0 and label == list(configs)[-1]:
                        result["health_ceiling"] = _load(
                            server.base,
                            secret,
                            args.clients,
                            min(args.seconds, 10),
                            _health,
                            args.seed,
                        )
                        result["health_ceiling"]["config"] = label
                rounds.append(row)
                print(json.dumps(row), flush=True)
        result["rounds"] = rounds
        summary: dict[str, Any] = {}
        for label in configs:
            mine = [x["loaded"] for x in rounds if x["config"] == label]
            summary[label] = {
                "requests_per_s": round(float(np.mean([m["requests_per_s"] for m in mine])), 1),
                "p50_ms": round(float(np.mean([m["p50_ms"] for m in mine])), 1),
                "p99_ms": round(float(np.mean([m["p99_ms"] for m in mine])), 1),
                "errors": int(sum(m["errors"] for m in mine)),
            }
        result["summary_loaded_mean_of_rounds"] = summary
    finally:
        store.close()
        if backend == "postgresql":
            import psycopg

            with psycopg.connect(args.pg_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--backends", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    parser.add_argument("--pg-url", default=PG_URL)
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        help="LABEL=SERVE OPTIONS (repeatable); @SRC first runs another tree",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results/serve"))
    args = parser.parse_args()
    args.config = args.config or ["w1=--workers 1", "w2=--workers 2"]
    if args.clients > 256 or args.seconds > 300:
        parser.error("bounded: at most 256 clients and 300 seconds")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for backend in args.backends:
        result = run_backend(backend, args)
        result["goal"] = "p99 <= 25 ms at 32 clients, 100k records, zero errors"
        result["machine"] = {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "note": "clients and server share the machine's cores; other jobs ran beside",
        }
        result["command"] = "python " + shlex.join(sys.argv)
        path = args.out_dir / f"search_{backend}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["summary_loaded_mean_of_rounds"], indent=2))


if __name__ == "__main__":
    main()
