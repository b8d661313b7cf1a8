"""Throughput of the batching engine against llama-cpp-python's one-at-a-time API.

For each packaged model, in one run:
  1. decode sweep: tokens/s of one batched decode step at each width (the engine's
     `llama_decode` alone, sequences of 128 prompt tokens), which picks the batch width;
  2. the same prompts (real GSM8K test and MBPP test tasks in the agent's first-turn format,
     greedy) through
       (a) llama-cpp-python's `create_chat_completion` (or `create_completion` on the frame
           for the base model), one at a time, prefilled from scratch each call;
       (b) the engine, every prompt submitted at once, for each engine configuration;
     with total tokens, wall time, tokens/s, the speed-up of (b) over (a), how many greedy
     outputs are identical to (a), where the others first differ, and memory (RSS) per arm.

    python benchmarks/engine_throughput.py --data-dir ../shared/data \
        [--prompts 32] [--max-tokens 256] [--models NAME ...] [--widths 1 4 8 16 32]

Writes benchmarks/results/engine_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

from memcollab.agent import Agent
from memcollab.llm import llamacpp, packaged
from memcollab.llm.base import ChatRequest, Decoding
from memcollab.llm.cache import Gateway
from memcollab.llm.engine import BatchEngine
from memcollab.llm.fleet import Fleet, ModelSpec
from memcollab.llm.llamacpp import LlamaCppModel
from memcollab.tasks.datasets import load_tasks


def rss_mb() -> float:
    """Resident memory of this process in MB (from /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def agent_prompts(data_dir: str, count: int, max_tokens: int) -> list[ChatRequest]:
    """First-turn requests of the agent on GSM8K test and MBPP test tasks (half each)."""
    half = count // 2
    tasks = load_tasks(f"gsm8k:test[:{count - half}]", data_dir) + load_tasks(
        f"mbpp:test[:{half}]", data_dir
    )
    agent = Agent(client=Gateway().bind(None))  # type: ignore[arg-type]  # only builds prompts
    decoding = Decoding(max_tokens=max_tokens)
    return [
        ChatRequest(messages=tuple(agent.first_messages(task)), decoding=decoding) for task in tasks
    ]


def decode_sweep(path: Path, widths: list[int], steps: int = 16) -> list[dict[str, Any]]:
    """Tokens/s of one decode step of `width` sequences, for each width."""
    rows = []
    for width in widths:
        engine = BatchEngine(path, width=width, n_ctx=1024, n_threads=os.cpu_count() or 1)
        ll = engine._ll
        try:
            for slot in range(width):
                prompt = [(100 + i, i, slot, i == 127) for i in range(128)]
                engine._fill(prompt)
                assert ll.llama_decode(engine._ctx, engine._batch) == 0
            started = time.perf_counter()
            for k in range(steps):
                engine._fill([(200 + k, 128 + k, slot, True) for slot in range(width)])
                assert ll.llama_decode(engine._ctx, engine._batch) == 0
            step_s = (time.perf_counter() - started) / steps
        finally:
            engine.close()
        rows.append(
            {"width": width, "ms_per_step": round(step_s * 1000, 1), "tokens_per_s": width / step_s}
        )
    return rows


def choose_width(sweep: list[dict[str, Any]], max_width: int, tolerance: float = 0.05) -> int:
    """The smallest width up to `max_width` within `tolerance` of the best decode throughput
    among those widths (KV memory grows with the width: each sequence and each cached prefix
    holds a full context)."""
    allowed = [r for r in sweep if r["width"] <= max_width]
    best = max(r["tokens_per_s"] for r in allowed)
    return min(r["width"] for r in allowed if r["tokens_per_s"] >= best * (1 - tolerance))


def first_difference(a: str, b: str) -> int | None:
    """Index of the first differing character (None when equal)."""
    if a == b:
        return None
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def run_simple(name: str, requests: list[ChatRequest]) -> dict[str, Any]:
    before = rss_mb()
    model = _packaged_model(name, engine="simple")
    model.complete(requests[0].model_copy(update={"decoding": Decoding(max_tokens=4)}))
    loaded = rss_mb()
    started = time.perf_counter()
    completions = [model.complete(r) for r in requests]
    wall = time.perf_counter() - started
    peak = rss_mb()
    llamacpp.unload_all()
    return _arm(completions, wall, before, loaded, peak)


def run_engine(
    name: str,
    requests: list[ChatRequest],
    *,
    width: int,
    prefix_cache: bool,
    repack: bool,
) -> dict[str, Any]:
    before = rss_mb()
    model = _packaged_model(
        name, batch_width=width, prefix_cache=prefix_cache, repack_weights=repack
    )
    engine = model.engine()
    loaded = rss_mb()
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        completions = list(pool.map(model.complete, requests))
    wall = time.perf_counter() - started
    peak = rss_mb()
    usage = engine.kv_usage()
    engine.clear_prefix_cache()
    leftover = engine.cells_in_use()
    stats = asdict(engine.stats)
    llamacpp.unload_all()
    row = _arm(completions, wall, before, loaded, peak)
    row.update(
        width=width,
        prefix_cache=prefix_cache,
        repack_weights=repack,
        kv_cells_after_run={"active": usage.active_cells, "cached": usage.cached_cells},
        kv_cells_after_clearing_cache=leftover,
        engine_steps=engine.stats.steps,
        engine_stats={k: round(v, 3) if isinstance(v, float) else v for k, v in stats.items()},
    )
    return row


def _packaged_model(name: str, **settings: Any) -> LlamaCppModel:
    """A packaged model built the way a fleet file builds it, with these engine settings."""
    spec = ModelSpec(name=name, provider="llamacpp", packaged=name, **settings)
    model = Fleet([spec]).model(name)
    assert isinstance(model, LlamaCppModel)
    return model


def _arm(completions: list, wall: float, before: float, loaded: float, peak: float) -> dict:
    tokens = sum(c.usage.completion_tokens for c in completions)
    return {
        "completion_tokens": tokens,
        "prompt_tokens": sum(c.usage.prompt_tokens for c in completions),
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 2),
        "rss_mb_loaded": round(loaded - before, 1),
        "rss_mb_after_run": round(peak - before, 1),
        "texts": [c.text for c in completions],
    }


def bench_model(
    name: str, requests: list[ChatRequest], widths: list[int], max_width: int, configs: list[str]
) -> dict[str, Any]:
    path = packaged.ensure_ready(packaged.get(name))
    sweep = decode_sweep(path, widths)
    for row in sweep:
        row["tokens_per_s"] = round(row["tokens_per_s"], 2)
    width = choose_width(sweep, max_width)
    print(json.dumps({"model": name, "decode_sweep": sweep, "chosen_width": width}), flush=True)
    simple = run_simple(name, requests)
    print(json.dumps({"model": name, "arm": "simple", **_brief(simple)}), flush=True)
    engines = []
    for config in configs:
        prefix_cache = "prefix" in config.split("+")
        repack = "norepack" not in config.split("+")
        row = run_engine(name, requests, width=width, prefix_cache=prefix_cache, repack=repack)
        row["config"] = config
        row["speedup"] = round(row["tokens_per_s"] / simple["tokens_per_s"], 3)
        diffs = [first_difference(a, b) for a, b in zip(simple["texts"], row["texts"], strict=True)]
        row["identical_outputs"] = sum(d is None for d in diffs)
        row["first_difference_chars"] = [d for d in diffs if d is not None]
        row["prompt_tokens_match"] = row["prompt_tokens"] == simple["prompt_tokens"]
        earlier = [
            e for e in engines if (e["prefix_cache"], e["repack_weights"]) == (prefix_cache, repack)
        ]
        if earlier:  # run-to-run: the same settings again, through a fresh engine
            row["identical_to_earlier_run_same_settings"] = sum(
                a == b for a, b in zip(earlier[0]["texts"], row["texts"], strict=True)
            )
        print(json.dumps({"model": name, "arm": config, **_brief(row)}), flush=True)
        engines.append(row)
    return {
        "model": name,
        "prompts": len(requests),
        "decode_sweep": sweep,
        "chosen_width": width,
        "simple": simple,
        "engine": engines,
    }


def _brief(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "texts"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--models", nargs="*", default=list(packaged.PACKAGED_MODELS))
    parser.add_argument("--widths", nargs="*", type=int, default=[1, 4, 8, 16, 32])
    parser.add_argument("--max-width", type=int, default=16, help="widest width to choose")
    parser.add_argument(
        "--configs",
        nargs="*",
        default=["batch+prefix", "batch", "batch+repeat"],
        help="engine configurations: batch, +prefix (prefix cache), +norepack (no weight"
        " repacking), +repeat (a label: run the same settings again)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/engine_throughput.json")
    )
    args = parser.parse_args()
    requests = agent_prompts(args.data_dir, args.prompts, args.max_tokens)
    started = time.time()
    rows = [
        bench_model(name, requests, args.widths, args.max_width, args.configs)
        for name in args.models
    ]
    result = {
        "benchmark": "engine_throughput",
        "command": "python benchmarks/engine_throughput.py --data-dir DATA"
        f" --prompts {args.prompts} --max-tokens {args.max_tokens}"
        f" --models {' '.join(args.models)} --widths {' '.join(map(str, args.widths))}"
        f" --max-width {args.max_width}"
        f" --configs {' '.join(args.configs)}",
        "goal": "engine >= 2.5x the sequential create_chat_completion throughput on every"
        " packaged model, identical greedy outputs for >= 90% of prompts",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "llama_cpp_python": version("llama-cpp-python"),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
