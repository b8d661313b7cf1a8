"""Category accuracy of the trained labeller (memcollab.memory.labeller) on development rows.

Every row measured here is a development row (none is an evaluation task, none was trained
on, none is a training task of the committed paper run: those found in a slice are left
out and counted):

- MATH dev slice: 500 MATH train rows held out by `memory.labeller_data` (seed 26); the gold
  category is the row's subject. Reported: category accuracy of the top guess, abstain
  rate, accuracy on the rows it did not abstain on, per-subject accuracy, and how the
  subcategories spread (share in each category's most common and first-listed one).
- tune slice: 300 other held-out MATH train rows, where the abstain threshold is chosen:
  the grid value with the most right minus wrong labels among those kept.
- MATH tail: the last 500 rows of math/train.jsonl (the project's dev slice; all
  Precalculus, as the file is ordered by subject).
- GSM8K dev: the last 500 rows of gsm8k/train.jsonl: they should land in
  "Grade-school word problems".
- code: agreement with 60 MBPP validation tasks (511-570) labelled by hand with a written
  rule (benchmarks/data/labeller_mbpp_validation.json); the code threshold is chosen on
  the same 60 (so its kept-accuracy is optimistic).
- with --llm-n N > 0: the LLM classifier (`memory.classify.Classifier`, built-in math
  taxonomy) of --llm-model on N dev rows stratified by subject, through a call cache
  (a rerun makes no model call), next to the trained labeller on the same rows.

    python benchmarks/labeller_accuracy.py [--data-dir ../shared/data] [--llm-n 40]
        [--llm-model qwen2.5-coder-1.5b] [--cache PATH] [--out PATH]

Writes benchmarks/results/labeller/accuracy.json.
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
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from memcollab.memory.guidance import UNLABELLED
from memcollab.memory.labeller import (
    CODE_THRESHOLD,
    MATH_THRESHOLD,
    SUBCATEGORY_THRESHOLD,
    TrainedLabeller,
    math_v2_taxonomy,
)
from memcollab.memory.labeller_data import GRADE_SCHOOL, labeller_data
from memcollab.memory.taxonomy import Taxonomy, builtin_taxonomy
from memcollab.tasks.datasets import load_tasks
from memcollab.tasks.task import Task

ROOT = Path(__file__).resolve().parent.parent
HAND_LABELS = ROOT / "benchmarks" / "data" / "labeller_mbpp_validation.json"
PAPER_PLAN = ROOT / "benchmarks" / "results" / "paper" / "plan.json"
MATH_GRID = [round(0.30 + 0.05 * i, 2) for i in range(13)]  # 0.30 .. 0.90
CODE_GRID = [round(0.05 * i, 2) for i in range(9)]  # 0.00 .. 0.40


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def sweep(guesses: Sequence[tuple[str, float, str]], grid: Sequence[float]) -> dict[str, Any]:
    """Per threshold: abstain rate, accuracy kept, right minus wrong; the chosen threshold
    (most right minus wrong; the lowest on a tie)."""
    rows = []
    for threshold in grid:
        kept = [(g, gold) for g, conf, gold in guesses if conf >= threshold]
        right = sum(g == gold for g, gold in kept)
        rows.append(
            {
                "threshold": threshold,
                "abstain_rate": _rate(len(guesses) - len(kept), len(guesses)),
                "accuracy_kept": _rate(right, len(kept)),
                "right_minus_wrong": right - (len(kept) - right),
            }
        )
    best = max(rows, key=lambda r: (r["right_minus_wrong"], -r["threshold"]))
    return {"grid": rows, "chosen": best["threshold"]}


def score(
    tasks: Sequence[Task],
    labeller: TrainedLabeller,
    gold: Callable[[Task], str],
    taxonomy: Taxonomy | None = None,
) -> dict[str, Any]:
    """Category accuracy of the top guess, abstentions, accuracy kept, and the spread of
    subcategories (no gold there)."""
    labels = [labeller.classify(t) for t in tasks]
    n = len(tasks)
    right = sum(lab.guess == gold(t) for lab, t in zip(labels, tasks, strict=True))
    kept = [(lab, t) for lab, t in zip(labels, tasks, strict=True) if not lab.abstained]
    kept_right = sum(lab.category == gold(t) for lab, t in kept)
    per: dict[str, Counter[str]] = defaultdict(Counter)
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    subs: dict[str, Counter[str]] = defaultdict(Counter)
    for lab, t in zip(labels, tasks, strict=True):
        per[gold(t)]["n"] += 1
        per[gold(t)]["right"] += lab.guess == gold(t)
        confusion[gold(t)][lab.category] += 1
        if not lab.abstained:
            subs[lab.category][lab.subcategory] += 1
    sub_abstained = sum(c[UNLABELLED] for c in subs.values())
    taxonomy = taxonomy or math_v2_taxonomy()
    return {
        "n": n,
        "category_accuracy": _rate(right, n),
        "abstain_rate": _rate(n - len(kept), n),
        "accuracy_non_abstained": _rate(kept_right, len(kept)),
        "labelled_correctly": _rate(kept_right, n),
        "per_subject": {
            s: {"n": c["n"], "accuracy": _rate(c["right"], c["n"])} for s, c in sorted(per.items())
        },
        "confusion": {s: dict(c.most_common()) for s, c in sorted(confusion.items())},
        "subcategories": {
            "abstain_rate_of_labelled": _rate(sub_abstained, len(kept)),
            "per_category": {
                cat: {
                    "labelled": sum(c.values()),
                    "distinct": len([s for s in c if s != UNLABELLED]),
                    "most_common": c.most_common(1)[0] if c else None,
                    "first_listed_share": _rate(c[taxonomy.subcategories(cat)[0]], sum(c.values())),
                }
                for cat, c in sorted(subs.items())
            },
        },
    }


def _paper_training_ids() -> set[str]:
    if not PAPER_PLAN.is_file():
        return set()
    return set(json.loads(PAPER_PLAN.read_text())["train_tasks"])


def _without(tasks: list[Task], ids: set[str]) -> tuple[list[Task], int]:
    kept = [t for t in tasks if t.id not in ids]
    return kept, len(tasks) - len(kept)


def _stratified(tasks: Sequence[Task], n: int, seed: int) -> list[Task]:
    groups: dict[str, list[Task]] = defaultdict(list)
    for task in tasks:
        groups[str(task.metadata["subject"])].append(task)
    subjects = sorted(groups)
    per, extra = divmod(n, len(subjects))
    rng = random.Random(seed)
    chosen: list[Task] = []
    for i, subject in enumerate(subjects):
        chosen += rng.sample(groups[subject], min(per + (i < extra), len(groups[subject])))
    return chosen


def code_agreement(labeller: TrainedLabeller, data_dir: Path) -> dict[str, Any]:
    """The trained labeller against the hand labels of MBPP validation tasks."""
    hand = json.loads(HAND_LABELS.read_text())["labels"]
    tasks = {t.id.removeprefix("mbpp/"): t for t in load_tasks("mbpp:validation", data_dir)}
    chosen = [tasks[k] for k in hand]
    model = labeller.models["code"]
    guesses = [
        (*model.guess(t.prompt), hand[k]["category"]) for k, t in zip(hand, chosen, strict=True)
    ]
    result = score(
        chosen,
        labeller,
        lambda t: hand[t.id.removeprefix("mbpp/")]["category"],
        builtin_taxonomy("code"),
    )
    labels = {t.id: labeller.classify(t) for t in chosen}
    both = [
        k
        for k, t in zip(hand, chosen, strict=True)
        if labels[t.id].category == hand[k]["category"] and labels[t.id].subcategory != UNLABELLED
    ]
    sub_right = sum(labels[f"mbpp/{k}"].subcategory == hand[k]["subcategory"] for k in both)
    result["subcategory_agreement_where_category_agrees"] = _rate(sub_right, len(both))
    result["threshold_sweep"] = sweep(guesses, CODE_GRID)
    return result


def llm_comparison(
    tasks: Sequence[Task], labeller: TrainedLabeller, model_name: str, cache: Path
) -> dict[str, Any]:
    """The LLM classifier's category and the trained labeller's on the same tasks.

    Only the category question is asked (the built-in math taxonomy with each category cut
    to its first subcategory, so no second call: the category prompt is the full
    classifier's, word for word); only a category fallback could differ (counted).
    """
    from memcollab.llm.cache import CallCache, Gateway
    from memcollab.llm.fleet import Fleet
    from memcollab.memory.classify import Classifier

    math = builtin_taxonomy("math")
    category_only = Taxonomy(
        name=math.name,
        domain=math.domain,
        tree=tuple(replace(c, subcategories=c.subcategories[:1]) for c in math.tree),
        version=math.version,
        description=math.description,
    )
    client = Gateway(CallCache(cache)).bind(Fleet.default().model(model_name))
    classifier = Classifier(client, category_only)
    started = time.perf_counter()
    llm_right = sum(classifier.classify(t).category == t.metadata["subject"] for t in tasks)
    trained = score(tasks, labeller, lambda t: str(t.metadata["subject"]))
    stats = classifier.stats
    return {
        "model": model_name,
        "what": "category question only (the full classifier's category prompt)",
        "n": len(tasks),
        "task_ids": [t.id for t in tasks],
        "llm_category_accuracy": _rate(llm_right, len(tasks)),
        "llm_category_fallbacks": stats.category_fallbacks,
        "llm_retries": stats.retries,
        "llm_model_calls": stats.model_calls,
        "llm_cached_calls": stats.cached_calls,
        "llm_model_s": round(stats.model_seconds, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "trained_category_accuracy": trained["category_accuracy"],
        "trained_abstain_rate": trained["abstain_rate"],
        "trained_accuracy_non_abstained": trained["accuracy_non_abstained"],
        "call_cache": str(cache),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--llm-n", type=int, default=0, help="dev rows for the LLM (0: none)")
    parser.add_argument("--llm-model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--cache", type=Path, default=Path("/work/cache-labeller/calls.sqlite"))
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/labeller/accuracy.json"
    )
    args = parser.parse_args()
    started = time.time()
    data = labeller_data(args.data_dir)
    began = time.perf_counter()
    labeller = TrainedLabeller.from_data(args.data_dir)
    fit_s = time.perf_counter() - began
    paper = _paper_training_ids()
    dev, dev_dropped = _without(data.dev, paper)
    tune, tune_dropped = _without(data.tune, paper)
    tail, tail_dropped = _without(data.math_tail, paper)
    gsm8k, gsm8k_dropped = _without(data.gsm8k_tail, paper)
    subject = lambda t: str(t.metadata["subject"])  # noqa: E731
    math_model = labeller.models["math"]
    tune_guesses = [(*math_model.guess(t.prompt), subject(t)) for t in tune]
    result: dict[str, Any] = {
        "benchmark": "labeller_accuracy",
        "command": " ".join(
            ["python benchmarks/labeller_accuracy.py", *map(shlex.quote, sys.argv[1:])]
        ),
        "what": "category accuracy of memory.labeller.TrainedLabeller on development rows",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "labeller": {
            "math_taxonomy": {"name": "math-v2", "digest": math_v2_taxonomy().digest},
            "thresholds_in_use": {
                "math": MATH_THRESHOLD,
                "code": CODE_THRESHOLD,
                "subcategory": SUBCATEGORY_THRESHOLD,
            },
            "training_rows": data.counts,
            "fit_s": round(fit_s, 1),
        },
        "left_out_as_paper_training_tasks": {
            "dev": dev_dropped,
            "tune": tune_dropped,
            "math_tail": tail_dropped,
            "gsm8k_dev": gsm8k_dropped,
        },
        "math_tune_threshold_sweep": sweep(tune_guesses, MATH_GRID),
        "math_dev": score(dev, labeller, subject),
        "math_tail_precalculus": score(tail, labeller, subject),
        "gsm8k_dev": score(gsm8k, labeller, lambda t: GRADE_SCHOOL),
        "code_mbpp_validation": code_agreement(labeller, args.data_dir),
    }
    print(json.dumps({k: result[k]["category_accuracy"] for k in ("math_dev", "gsm8k_dev")}))
    if args.llm_n > 0:
        subset = _stratified(dev, args.llm_n, seed=0)
        result["llm_comparison"] = llm_comparison(subset, labeller, args.llm_model, args.cache)
    else:
        result["llm_comparison"] = {"skipped": "run with --llm-n N to compare (slow: a model)"}
    result["wall_s"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
