"""How often a placebo condition served records its matched memory condition also served,
and the matched − placebo comparison over the tasks where the two shared none.

An exploratory analysis announced in benchmarks/results/v2/PREREGISTRATION.md ("Notes
added after registration"): a placebo draws "as many constraints from other categories of
the same domain", so when the query's label abstains or the matched condition's search
backs off to the whole domain, some of its records can be the very ones the matched
condition served for the same task and model. Reads an experiment folder (complete tasks
only, as the report does) and writes JSON:

    python benchmarks/placebo_overlap.py runs/v2 --placebo placebo-v2 \
        --matched memcollab-v2 --out benchmarks/results/v2/placebo_overlap.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from memcollab.experiment.results import Results, load_results
from memcollab.experiment.stats import compare_paired


def overlap(results: Results, placebo: str, matched: str) -> dict[str, Any]:
    """Per evaluated model: tasks, tasks whose placebo shared a record with the matched
    condition (and how many served no memory at all: gated off), and matched − placebo
    over all tasks and over the tasks that shared none (exact McNemar, bootstrap CI)."""
    for name in (placebo, matched):
        if name not in results.conditions:
            raise SystemExit(f"condition {name!r} is not in this run: {results.conditions}")
    out: dict[str, Any] = {}
    for model in results.models:
        by_task = {r.task_id: r for r in results.cell(model, matched)}
        pairs = [(by_task[p.task_id], p) for p in results.cell(model, placebo)]
        shared = [(m, p) for m, p in pairs if set(m.record_ids) & set(p.record_ids)]
        clean = [(m, p) for m, p in pairs if not set(m.record_ids) & set(p.record_ids)]
        out[model] = {
            "tasks": len(pairs),
            "tasks_sharing_a_record": len(shared),
            "tasks_without_memory": sum(not m.record_ids and not p.record_ids for m, p in pairs),
            "shared_by_benchmark": {
                b: sum(m.benchmark == b for m, _ in shared) for b in results.benchmarks
            },
            "all_tasks": _compare(pairs),
            "tasks_sharing_none": _compare(clean),
        }
    return out


def _compare(pairs: list[tuple[Any, Any]]) -> dict[str, Any] | None:
    """matched − placebo (the placebo is the baseline), or None without tasks."""
    if not pairs:
        return None
    result = compare_paired([p.correct for _, p in pairs], [m.correct for m, _ in pairs])
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(result).items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="The experiment's out folder.")
    parser.add_argument("--placebo", required=True)
    parser.add_argument("--matched", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result = {
        "command": "python benchmarks/placebo_overlap.py "
        f"{args.run} --placebo {args.placebo} --matched {args.matched} --out {args.out}",
        "exploratory": True,
        "by_model": overlap(load_results(args.run), args.placebo, args.matched),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
