"""Category accuracy of the task classifier against the MATH `subject` labels, per model.

A fixed sample of MATH-500 test tasks, stratified by subject (default 70: 10 per subject,
seeded), is classified into the built-in math taxonomy by each model's own classifier
(`memcollab.memory.classify`); its category is compared with the task's MATH subject.
Calls go through `Gateway(CallCache(...))` (default: the user's call cache), so a rerun
makes no model call; `mean_model_s` sums the model time as first measured, so it stays
meaningful on a rerun, while `mean_wall_s` is this run's wall time. A TF-IDF-only row
(the classifier's fallback, no model) is reported as a baseline.

    python benchmarks/classifier_accuracy.py [--n 70] [--seed 0] [--models NAME ...]
        [--data-dir ../shared/data] [--cache PATH] [--out PATH]

Writes benchmarks/results/classifier_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from memcollab.llm.cache import CallCache, Gateway, ModelClient
from memcollab.llm.fleet import Fleet
from memcollab.llm.scripted import ScriptedModel
from memcollab.memory.classify import Classifier, classify_prompts
from memcollab.memory.taxonomy import builtin_taxonomy
from memcollab.paths import call_cache_path
from memcollab.tasks.datasets import load_tasks
from memcollab.tasks.task import Task


def stratified_sample(tasks: list[Task], n: int, seed: int) -> list[Task]:
    """`n` tasks spread evenly over the subjects (sorted; the first ones take any remainder)."""
    groups: dict[str, list[Task]] = defaultdict(list)
    for task in tasks:
        groups[str(task.metadata["subject"])].append(task)
    subjects = sorted(groups)
    per, extra = divmod(n, len(subjects))
    rng = random.Random(seed)
    chosen: list[Task] = []
    for i, subject in enumerate(subjects):
        want = min(per + (i < extra), len(groups[subject]))
        chosen += rng.sample(groups[subject], want)
    return chosen


def evaluate(name: str, client: ModelClient, tasks: list[Task]) -> dict[str, Any]:
    """Classify every task with one model's classifier and score the categories."""
    classifier = Classifier(client, "math")
    per_subject: dict[str, Counter[str]] = defaultdict(Counter)
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    examples: list[dict[str, Any]] = []
    wall = 0.0
    for task in tasks:
        started = time.perf_counter()
        label = classifier.classify(task)
        wall += time.perf_counter() - started
        subject = str(task.metadata["subject"])
        per_subject[subject]["n"] += 1
        per_subject[subject]["correct"] += label.category == subject
        confusion[subject][label.category] += 1
        if len(examples) < 8:
            examples.append(
                {
                    "id": task.id,
                    "subject": subject,
                    "label": [label.category, label.subcategory],
                    "source": label.source,
                    "raw": label.raw[:200],
                }
            )
    n = len(tasks)
    correct = sum(c["correct"] for c in per_subject.values())
    stats = classifier.stats
    mistakes: list[dict[str, Any]] = [
        {"subject": s, "predicted": p, "count": k}
        for s, row in confusion.items()
        for p, k in row.items()
        if p != s
    ]
    mistakes.sort(key=lambda m: (-m["count"], m["subject"], m["predicted"]))
    return {
        "model": name,
        "tasks": n,
        "accuracy": round(correct / n, 4),
        "correct": correct,
        "category_fallback_rate": round(stats.category_fallbacks / n, 4),
        "label_fallback_rate": round(stats.fallbacks / n, 4),
        "retries": stats.retries,
        "model_calls": stats.model_calls,
        "cached_calls": stats.cached_calls,
        "mean_model_s": round(stats.model_seconds / n, 3),
        "mean_wall_s": round(wall / n, 3),
        "per_subject": {
            s: {"n": c["n"], "correct": c["correct"], "accuracy": round(c["correct"] / c["n"], 4)}
            for s, c in sorted(per_subject.items())
        },
        "confusion": {s: dict(sorted(row.items())) for s, row in sorted(confusion.items())},
        "top_confusions": mistakes[:10],
        "predicted_categories": dict(
            Counter(p for row in confusion.values() for p in row.elements()).most_common()
        ),
        "examples": examples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=70, help="tasks, stratified by subject")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="*", default=None, help="default: the packaged fleet")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--cache", type=Path, default=None, help="default: the user call cache")
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results/classifier_accuracy.json")
    )
    args = parser.parse_args()
    fleet = Fleet.default()
    models = args.models or fleet.names()
    started = time.time()
    tasks = stratified_sample(load_tasks("math500:test", args.data_dir), args.n, args.seed)
    cache_path = args.cache or call_cache_path()
    gateway = Gateway(CallCache(cache_path))

    # Baseline: the classifier's TF-IDF fallback alone (a model that never answers).
    silent = ScriptedModel(lambda request: "", name="tfidf-only")
    baseline = evaluate("tfidf-only", Gateway().bind(silent), tasks)
    baseline = {k: baseline[k] for k in ("model", "tasks", "accuracy", "per_subject")}
    print(json.dumps({"baseline": baseline["accuracy"]}), flush=True)

    rows = []
    for name in models:
        row = evaluate(name, gateway.bind(fleet.model(name)), tasks)
        print(
            json.dumps({k: row[k] for k in ("model", "accuracy", "category_fallback_rate")}),
            flush=True,
        )
        rows.append(row)

    taxonomy = builtin_taxonomy("math")
    result = {
        "benchmark": "classifier_accuracy",
        "command": " ".join(
            ["python benchmarks/classifier_accuracy.py", *map(shlex.quote, sys.argv[1:])]
        ).strip(),
        "what": "category accuracy of memory.classify.Classifier against MATH subject labels",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
        "taxonomy": {"name": taxonomy.name, "version": taxonomy.version, "digest": taxonomy.digest},
        "prompts_version": classify_prompts()["version"],
        "sample": {
            "dataset": "math500:test",
            "n": len(tasks),
            "seed": args.seed,
            "per_subject": dict(sorted(Counter(str(t.metadata["subject"]) for t in tasks).items())),
            "task_ids": [t.id for t in tasks],
        },
        "call_cache": str(cache_path),
        "baseline_tfidf_only": baseline,
        "models": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
