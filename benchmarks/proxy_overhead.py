"""What the OpenAI-compatible proxy of `memcollab serve` adds over calling the upstream directly.

Two parts, each interleaved in one run (direct and proxied calls alternate, so machine
noise hits both alike):

1. Latency, with a fast stub upstream (a minimal OpenAI-compatible uvicorn server in a
   subprocess that answers at once). Per round, one call each: the stub directly, the proxy
   with memory (no labeller: the task's domain is searched over `--records` synthetic math
   records, and the top 3 are injected), and the proxy with memory off (the request header
   `x-memcollab-memory: off`: auth, forwarding and the attempt write alone). Reported:
   p50 / p99 of each, and of the per-round added latency (proxied minus direct).
   Goal (issue 27): p50 <= 5 ms beyond the labeller, p99 <= 20 ms.
2. Throughput, with a real packaged model: Gemma 3 270M behind llama-cpp-python's
   OpenAI-compatible server (`python -m llama_cpp.server`, a subprocess), called directly
   and through the proxy (fleet provider "openai"), `--real-requests` short generations each
   (max_tokens 16, greedy, "count from 1 to 60" after a per-call nonce: every call decodes
   16 tokens, and no call reuses llama.cpp's KV of the previous prompt). Reported:
   requests and completion tokens per second of each and the ratios proxy / direct, with
   memory and without.
   Goal: ratio >= 0.98.

The proxy runs as `memcollab serve` (one uvicorn process, SQLite memory); clients are one
keep-alive httpx connection per target, sequential. Every process shares this machine.

    python benchmarks/proxy_overhead.py [--rounds 400] [--records 1000] [--real-requests 12]

Writes benchmarks/results/serve/proxy_overhead.json (or --out), the command included.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from memcollab.memory.api import Memory
from memcollab.memory.record import Constraint, MemoryRecord, task_hash
from memcollab.server.context import ServerContext

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS = [
    "A shop sells {a} pens for ${b}. How much do {c} pens cost?",
    "Solve {a}x + {b} = {c} for x.",
    "A train travels {a} km in {b} hours. How far does it go in {c} hours?",
    "What is the sum of the first {a} positive integers?",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer")


def stub_main(port: int) -> None:
    """The stub upstream: answers every chat request at once (run in a subprocess)."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        return JSONResponse(
            {
                "id": f"chatcmpl-{os.urandom(8).hex()}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "stub"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "The answer is 8."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            }
        )

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": []})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def _records(n: int, seed: int) -> list[MemoryRecord]:
    rng = random.Random(seed)
    words = [
        "rate",
        "ratio",
        "price",
        "total",
        "share",
        "speed",
        "distance",
        "unit",
        "sum",
        "average",
        "percent",
    ]
    out = []
    for i in range(n):
        text = (
            QUESTIONS[i % len(QUESTIONS)].format(
                a=rng.randint(2, 99), b=rng.randint(2, 99), c=rng.randint(2, 99)
            )
            + " "
            + " ".join(rng.sample(words, 3))
        )
        out.append(
            MemoryRecord(
                id=f"r{i}",
                namespace="default",
                domain="math",
                category="arithmetic",
                subcategory=f"s{i % 7}",
                task_text=text,
                task_hash=task_hash(text),
                source_task_id=f"t{i}",
                constraints=(
                    Constraint(
                        when="a quantity is given per group",
                        enforce="find the unit value first",
                        avoid="multiplying by the group size twice",
                    ),
                ),
                model_pos="strong",
                model_neg="weak",
                pair_type="mixed",
                distiller="bench",
                created_at=1_700_000_000.0 + i,
            )
        )
    return out


def _question(rng: random.Random) -> str:
    return rng.choice(QUESTIONS).format(
        a=rng.randint(2, 99), b=rng.randint(2, 99), c=rng.randint(2, 99)
    )


def _stats(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p90_ms": round(float(np.percentile(a, 90)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "mean_ms": round(float(a.mean()), 2),
    }


def _serve(memory: Path, fleet: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memcollab",
            "serve",
            "--memory",
            str(memory),
            "--fleet",
            str(fleet),
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
    )


def _timed(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]) -> float:
    t = time.perf_counter()
    r = client.post(url, json=body, headers=headers)
    elapsed = (time.perf_counter() - t) * 1000
    if r.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.text[:300]}")
    return elapsed


def latency_part(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    stub_port, proxy_port = _free_port(), _free_port()
    stub = subprocess.Popen(
        [sys.executable, __file__, "--stub-port", str(stub_port)],
        stdout=subprocess.DEVNULL,
        stderr=(work / "stub.log").open("wb"),
    )
    memory = work / "latency.sqlite"
    with ServerContext(Memory.open(memory)) as ctx:
        ctx.memory.store.add_many(_records(args.records, args.seed))
        secret = ctx.keys.create("default", "write")[1]
    fleet = work / "stub-fleet.toml"
    fleet.write_text(
        f'[models.stub]\nprovider = "openai"\nmodel = "stub"\n'
        f'base_url = "http://127.0.0.1:{stub_port}/v1"\n'
    )
    proxy = _serve(memory, fleet, proxy_port, work / "serve-latency.log")
    try:
        _wait(f"http://127.0.0.1:{stub_port}/v1/models", stub)
        _wait(f"http://127.0.0.1:{proxy_port}/v1/health", proxy)
        direct_url = f"http://127.0.0.1:{stub_port}/v1/chat/completions"
        proxy_url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
        auth = {"Authorization": f"Bearer {secret}"}
        off = {**auth, "x-memcollab-memory": "off"}
        rng = random.Random(args.seed)
        times: dict[str, list[float]] = {"direct": [], "proxy_memory": [], "proxy_off": []}
        statuses: dict[str, int] = {}
        with httpx.Client(timeout=30) as c1, httpx.Client(timeout=30) as c2:
            # Warm-up: connections, the TF-IDF index of the domain, first imports.
            for _ in range(20):
                body = {"model": "stub", "messages": [{"role": "user", "content": _question(rng)}]}
                _timed(c1, direct_url, body, {})
                r = c2.post(proxy_url, json=body, headers=auth)
                statuses[r.headers.get("x-memcollab-memory", "?")] = 0
            for i in range(args.rounds):
                body = {"model": "stub", "messages": [{"role": "user", "content": _question(rng)}]}
                order = [("direct", c1, direct_url, {}), ("proxy_memory", c2, proxy_url, auth)]
                order.append(("proxy_off", c2, proxy_url, off))
                rng.shuffle(order)
                for name, client, url, headers in order:
                    if name == "proxy_memory":
                        t = time.perf_counter()
                        r = client.post(url, json=body, headers=headers)
                        times[name].append((time.perf_counter() - t) * 1000)
                        status = r.headers.get("x-memcollab-memory", "?")
                        statuses[status] = statuses.get(status, 0) + 1
                        if r.status_code != 200:
                            raise RuntimeError(f"proxy: HTTP {r.status_code}: {r.text[:300]}")
                    else:
                        times[name].append(_timed(client, url, body, headers))
                if (i + 1) % 100 == 0:
                    print(f"latency: {i + 1}/{args.rounds} rounds", file=sys.stderr)
    finally:
        for proc in (proxy, stub):
            proc.terminate()
            proc.wait(20)
    direct = np.asarray(times["direct"])
    return {
        "rounds": args.rounds,
        "records": args.records,
        "memory_statuses": statuses,
        "direct": _stats(times["direct"]),
        "proxy_with_memory": _stats(times["proxy_memory"]),
        "proxy_memory_off": _stats(times["proxy_off"]),
        "added_with_memory": _stats(list(np.asarray(times["proxy_memory"]) - direct)),
        "added_memory_off": _stats(list(np.asarray(times["proxy_off"]) - direct)),
        "goal": "added p50 <= 5 ms beyond the labeller (none here), p99 <= 20 ms",
    }


def throughput_part(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from memcollab.llm import packaged

    gguf = packaged.ensure_ready(packaged.get("gemma3-270m"))
    llama_port, proxy_port = _free_port(), _free_port()
    llama = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memcollab.llm.llama_server",  # llama_cpp.server, AMX guarded
            "--model",
            str(gguf),
            "--model_alias",
            "gemma",
            "--chat_format",
            "chatml",
            "--n_ctx",
            "2048",
            "--host",
            "127.0.0.1",
            "--port",
            str(llama_port),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=(work / "llama.log").open("wb"),
    )
    memory = work / "throughput.sqlite"
    with ServerContext(Memory.open(memory)) as ctx:
        ctx.memory.store.add_many(_records(args.records, args.seed))
        secret = ctx.keys.create("default", "write")[1]
    fleet = work / "gemma-fleet.toml"
    fleet.write_text(
        f'[models.gemma]\nprovider = "openai"\nmodel = "gemma"\n'
        f'base_url = "http://127.0.0.1:{llama_port}/v1"\n'
    )
    proxy = _serve(memory, fleet, proxy_port, work / "serve-throughput.log")
    try:
        _wait(f"http://127.0.0.1:{llama_port}/v1/models", llama)
        _wait(f"http://127.0.0.1:{proxy_port}/v1/health", proxy)
        direct_url = f"http://127.0.0.1:{llama_port}/v1/chat/completions"
        proxy_url = f"http://127.0.0.1:{proxy_port}/v1/chat/completions"
        auth = {"Authorization": f"Bearer {secret}"}
        targets = {
            "direct": (direct_url, {}),
            "proxy_memory": (proxy_url, auth),
            "proxy_off": (proxy_url, {**auth, "x-memcollab-memory": "off"}),
        }
        seconds = dict.fromkeys(targets, 0.0)
        tokens = dict.fromkeys(targets, 0)
        rng = random.Random(args.seed + 1)
        with httpx.Client(timeout=300) as client:
            warm = {
                "model": "gemma",
                "max_tokens": 4,
                "messages": [{"role": "user", "content": "Hi"}],
            }
            for url, headers in targets.values():
                client.post(url, json=warm, headers=headers).raise_for_status()
            for i in range(args.real_requests):
                order = list(targets.items())
                rng.shuffle(order)
                for name, (url, headers) in order:
                    # A nonce first: llama.cpp reuses the KV of the previous prompt, so a
                    # repeated prompt would favour whichever target came second. Counting
                    # runs to max_tokens, so every call decodes the same number of tokens.
                    nonce = f"({i}{name[0]}{rng.randint(100, 999)})"
                    text = f"{nonce} Count from 1 to 60, separated by commas."
                    body = {
                        "model": "gemma",
                        "max_tokens": 16,
                        "temperature": 0,
                        "messages": [{"role": "user", "content": text}],
                    }
                    t = time.perf_counter()
                    r = client.post(url, json=body, headers=headers)
                    seconds[name] += time.perf_counter() - t
                    r.raise_for_status()
                    tokens[name] += int(r.json()["usage"]["completion_tokens"])
                print(f"throughput: {i + 1}/{args.real_requests}", file=sys.stderr)
    finally:
        for proc in (proxy, llama):
            proc.terminate()
            proc.wait(30)
    rps = {k: args.real_requests / v for k, v in seconds.items()}
    tps = {k: tokens[k] / v for k, v in seconds.items()}
    return {
        "model": "gemma3-270m (Q4_K_M) behind llama_cpp.server, chatml template",
        "requests_each": args.real_requests,
        "max_tokens": 16,
        "seconds": {k: round(v, 2) for k, v in seconds.items()},
        "completion_tokens": tokens,
        "requests_per_s": {k: round(v, 3) for k, v in rps.items()},
        "completion_tokens_per_s": {k: round(v, 2) for k, v in tps.items()},
        "ratio_proxy_with_memory_over_direct": round(rps["proxy_memory"] / rps["direct"], 3),
        "ratio_proxy_memory_off_over_direct": round(rps["proxy_off"] / rps["direct"], 3),
        "goal": "ratio >= 0.98",
        "note": "with memory the prompt also carries the injected constraints (more prompt "
        "tokens to prefill), so that ratio includes the cost of the longer prompt",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--real-requests", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/serve/proxy_overhead.json"
    )
    parser.add_argument("--stub-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stub_port:
        stub_main(args.stub_port)
        return
    command = "python benchmarks/proxy_overhead.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="memcollab-proxy-bench-") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {
            "command": command.strip(),
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
                "note": "a shared, noisy machine: other jobs ran beside this benchmark; "
                "direct and proxied calls are interleaved so noise hits both",
            },
            "latency_stub_upstream": latency_part(args, work),
        }
        if not args.skip_real:
            result["throughput_real_model"] = throughput_part(args, work)
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
