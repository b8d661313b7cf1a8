"""Overhead of memcollab's model layer over raw llama-cpp-python, per packaged model.

For each packaged model, the same prompts run (greedy) through
  (a) raw llama-cpp-python: `create_chat_completion` (chat models) or `create_completion` on
      the same frame text (the base model), and
  (b) memcollab's layer: `Gateway` with a fresh on-disk `CallCache` (every call a miss, so the
      hashing, the SQLite write and the counters are all paid),
interleaved prompt by prompt with the order alternated, on one loaded model, in one run.
Both arms prefill from scratch (`llama.reset()`), as the layer does.

    python benchmarks/llm_overhead.py [--prompts 10] [--max-tokens 96] [--models NAME ...]

Writes benchmarks/results/llm_overhead.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from memcollab.llm.base import ChatRequest, Decoding, user
from memcollab.llm.cache import CallCache, Gateway
from memcollab.llm.fleet import Fleet
from memcollab.llm.llamacpp import LlamaCppModel
from memcollab.llm.scripted import ScriptedModel

PROMPTS = [
    "Explain in three sentences why the sum of two odd numbers is even.",
    "Write a Python function that returns the n-th Fibonacci number iteratively.",
    "A train travels 120 km in 1.5 hours. What is its average speed? Show your steps.",
    "List three common causes of off-by-one errors in loops.",
    "Write a Python function that checks whether a string is a palindrome, ignoring case.",
    "How many ways can 4 distinct books be arranged on a shelf? Explain.",
    "What does the Python expression sorted([3, 1, 2], reverse=True) return, and why?",
    "A rectangle has perimeter 30 and length 9. Find its area step by step.",
    "Write a Python function that counts the vowels in a string.",
    "Explain the difference between a list and a tuple in Python in two sentences.",
    "If 3x + 5 = 20, what is x? Show the algebra.",
    "Write a Python function that merges two sorted lists into one sorted list.",
]


def _raw_call(model: LlamaCppModel, request: ChatRequest) -> tuple[str, int]:
    llama = model.llama
    params = request.decoding
    kwargs: dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "seed": request.effective_seed(),
    }
    llama.reset()
    if model.uses_chat_template():
        out = llama.create_chat_completion(
            messages=[m.model_dump() for m in request.messages], **kwargs
        )
        text = out["choices"][0]["message"]["content"] or ""
    else:
        out = llama.create_completion(
            prompt=model.frame.render(request.messages), stop=list(model.frame.stop), **kwargs
        )
        text = out["choices"][0]["text"].lstrip(" ")
    return text, int(out["usage"]["completion_tokens"])


def bench_model(name: str, prompts: list[str], max_tokens: int) -> dict[str, Any]:
    model = Fleet.default().model(name)
    assert isinstance(model, LlamaCppModel)
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(CallCache(Path(tmp) / "calls.sqlite"))
        requests = [
            ChatRequest(messages=(user(p),), decoding=Decoding(max_tokens=max_tokens))
            for p in prompts
        ]
        _raw_call(model, requests[0])  # warm-up: load weights, touch pages
        arms: dict[str, dict[str, float]] = {
            "raw": {"tokens": 0, "seconds": 0.0},
            "layer": {"tokens": 0, "seconds": 0.0},
        }
        identical = 0
        for i, request in enumerate(requests):
            order = ("raw", "layer") if i % 2 == 0 else ("layer", "raw")
            texts: dict[str, str] = {}
            for arm in order:
                started = time.perf_counter()
                if arm == "raw":
                    text, tokens = _raw_call(model, request)
                else:
                    completion = gateway.complete(model, request)
                    assert not completion.cached
                    text, tokens = completion.text, completion.usage.completion_tokens
                arms[arm]["seconds"] += time.perf_counter() - started
                arms[arm]["tokens"] += tokens
                texts[arm] = text
            identical += texts["raw"] == texts["layer"]
    raw_tps = arms["raw"]["tokens"] / arms["raw"]["seconds"]
    layer_tps = arms["layer"]["tokens"] / arms["layer"]["seconds"]
    return {
        "model": name,
        "prompts": len(prompts),
        "max_tokens": max_tokens,
        "raw": {**arms["raw"], "tokens_per_s": round(raw_tps, 2)},
        "layer": {**arms["layer"], "tokens_per_s": round(layer_tps, 2)},
        "layer_over_raw_throughput": round(layer_tps / raw_tps, 4),
        "overhead_pct": round(100 * (1 - layer_tps / raw_tps), 2),
        "identical_outputs": identical,
    }


def layer_cost_per_call(calls: int = 2000) -> float:
    """Seconds the layer adds to one call (cache miss, SQLite write, counters, semaphore).

    Measured on a model that answers instantly, so the model's own time is ~0 and what is
    left is the layer's; this pins the overhead far below the noise of the timed arms.
    """
    model = ScriptedModel(lambda r: "an answer of a few words " * 8, name="instant")
    prompt = "x " * 600  # a prompt of realistic size: the whole request is hashed
    requests = [
        ChatRequest(messages=(user(f"{i} {prompt}"),), decoding=Decoding(max_tokens=96))
        for i in range(calls)
    ]
    started = time.perf_counter()
    for request in requests:
        model.complete(request)
    bare = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        gateway = Gateway(CallCache(Path(tmp) / "calls.sqlite"))
        started = time.perf_counter()
        for request in requests:
            gateway.complete(model, request)
        through_layer = time.perf_counter() - started
    return (through_layer - bare) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--models", nargs="*", default=Fleet.default().names())
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/llm_overhead.json"))
    args = parser.parse_args()
    started = time.time()
    rows = []
    for name in args.models:
        row = bench_model(name, PROMPTS[: args.prompts], args.max_tokens)
        print(json.dumps(row))
        rows.append(row)
    cost = layer_cost_per_call()
    for row in rows:
        mean_call_s = row["raw"]["seconds"] / row["prompts"]
        row["layer_cost_bound_pct"] = round(100 * cost / mean_call_s, 4)
    result = {
        "benchmark": "llm_overhead",
        "command": "python benchmarks/llm_overhead.py"
        f" --prompts {args.prompts} --max-tokens {args.max_tokens}",
        "goal": "memcollab layer overhead under 3% of raw llama-cpp-python throughput",
        "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
        "llama_cpp_python": version("llama-cpp-python"),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
        "models": rows,
        "layer_cost_ms_per_call": round(cost * 1000, 3),
        "max_overhead_pct": max(r["overhead_pct"] for r in rows),
        "max_layer_cost_bound_pct": max(r["layer_cost_bound_pct"] for r in rows),
        "note": "overhead_pct compares the timed arms (noise of a few % either way on 2"
        " cores); layer_cost_bound_pct is the layer's own measured cost per call as a"
        " share of a mean raw call.",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
