"""Retrieval latency: one task-aware query against 1k, 10k and 100k stored records.

Synthetic records are spread over the built-in math taxonomy (every (category,
subcategory) bucket), with task texts drawn from a fixed vocabulary, in a SQLite store.
Queries use known labels: the classifier (an LLM call) is excluded here and measured on its
own in classifier_accuracy.py. For each size we report p50/p99 of warm queries (every
bucket's TF-IDF index already built, the steady state of an evaluation run) and of cold
queries (the first query of each bucket, which builds its index), in milliseconds.

    python benchmarks/retrieval_latency.py [--sizes 1000 10000 100000] [--queries 2000]

Writes benchmarks/results/retrieval_latency.json. Goal: warm p99 under 5 ms at 100k.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from memcollab.memory.record import Constraint, MemoryRecord, task_hash
from memcollab.memory.retrieve import Retriever
from memcollab.memory.store import SQLiteMemory
from memcollab.memory.taxonomy import builtin_taxonomy
from memcollab.tasks.task import Task

WORDS = [
    "triangle",
    "circle",
    "area",
    "perimeter",
    "angle",
    "integer",
    "prime",
    "divisor",
    "remainder",
    "fraction",
    "ratio",
    "percent",
    "probability",
    "dice",
    "coin",
    "card",
    "sequence",
    "series",
    "sum",
    "product",
    "polynomial",
    "root",
    "equation",
    "inequality",
    "function",
    "graph",
    "vector",
    "matrix",
    "complex",
    "number",
    "digit",
    "base",
    "modulo",
    "train",
    "speed",
    "distance",
    "time",
    "price",
    "cost",
    "discount",
    "interest",
    "apple",
    "box",
    "row",
    "column",
    "count",
]


def _label(buckets: list[tuple[str, str]], rng: random.Random) -> tuple[str, str]:
    return buckets[rng.randrange(len(buckets))]


def _text(rng: random.Random, n: int = 30) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def build(store: SQLiteMemory, size: int, buckets: list[tuple[str, str]], seed: int) -> None:
    rng = random.Random(seed)
    batch = []
    for i in range(size):
        category, subcategory = buckets[i % len(buckets)]
        text = f"{_text(rng)} #{i}"
        batch.append(
            MemoryRecord(
                id=f"r{i}",
                domain="math",
                category=category,
                subcategory=subcategory,
                task_text=text,
                task_hash=task_hash(text),
                source_task_id=f"synthetic/{i}",
                constraints=tuple(
                    Constraint(when=f"situation {k}", enforce="an invariant", avoid="an error")
                    for k in range(3)
                ),
                model_pos="a",
                model_neg="b",
                pair_type="mixed",
                distiller="a",
                created_at=float(i),
            )
        )
        if len(batch) == 5000:
            store.add_many(batch)
            batch = []
    if batch:
        store.add_many(batch)


def measure(size: int, queries: int, seed: int) -> dict[str, Any]:
    taxonomy = builtin_taxonomy("math")
    buckets = [(c, s) for c in taxonomy.categories() for s in taxonomy.subcategories(c)]
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteMemory(Path(tmp) / "memory.sqlite")
        started = time.perf_counter()
        build(store, size, buckets, seed)
        build_s = time.perf_counter() - started
        retriever = Retriever(store, p=3, count_usage=False)
        rng = random.Random(seed + 1)

        class _Label:
            def __init__(self, category: str, subcategory: str) -> None:
                self.category, self.subcategory = category, subcategory

        cold = []
        for category, subcategory in buckets:
            task = Task(id="q", domain="math", prompt=_text(rng, 40))
            t0 = time.perf_counter()
            retriever.retrieve(task, _Label(category, subcategory))
            cold.append(time.perf_counter() - t0)
        warm = []
        for i in range(queries):
            category, subcategory = _label(buckets, rng)
            task = Task(id=f"q{i}", domain="math", prompt=_text(rng, 40))
            t0 = time.perf_counter()
            result = retriever.retrieve(task, _Label(category, subcategory))
            warm.append(time.perf_counter() - t0)
            assert len(result.record_ids) == 3 and result.level == "subcategory"
        store.close()

    def ms(xs: list[float], q: int) -> float:
        return round(float(np.percentile(np.array(xs) * 1000, q)), 3)

    return {
        "records": size,
        "buckets": len(buckets),
        "records_per_bucket": size // len(buckets),
        "build_s": round(build_s, 2),
        "warm_queries": queries,
        "warm_p50_ms": ms(warm, 50),
        "warm_p99_ms": ms(warm, 99),
        "cold_queries": len(cold),
        "cold_p50_ms": ms(cold, 50),
        "cold_p99_ms": ms(cold, 99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/retrieval_latency.json")
    )
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        row = measure(size, args.queries, args.seed)
        print(json.dumps(row))
        rows.append(row)
    result = {
        "benchmark": "retrieval_latency",
        "command": "python benchmarks/retrieval_latency.py --sizes "
        + " ".join(map(str, args.sizes))
        + f" --queries {args.queries}",
        "goal": "warm p99 under 5 ms at 100k records (SQLite, classifier excluded)",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sizes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
