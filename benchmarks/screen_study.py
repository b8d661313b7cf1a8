"""The semantic screen (v2) on distilled constraints: what it rejects and the grades of
what it keeps (issue 26; docs/SCREEN_GRADING.md has the rubric, COMMAND.md the steps).

    python benchmarks/screen_study.py --cache CALLS.sqlite [--draw 16] [--live]

Material (training tasks only; benchmarks/screen_pairs.py): the committed memory's 169
pairs and `--draw` new pairs per source. Every distillation is read from the call cache
(`--cache`: the committed calls imported, plus the new pairs' calls): replay-only, so
nothing is generated unless `--live` (then missing calls go to the packaged model and
are cached). A new pair whose call is missing is counted as not distilled.

1. The committed memory: v1 is replayed and must give its 202 constraints, record by
   record (and the counts of build_summary.json); the v2 verdict of every candidate is
   recorded.
2. The new pairs: the v1 and v2 verdicts of every candidate.
3. Grades: benchmarks/results/screen/old_graded.jsonl and new_graded.jsonl hold one line
   per constraint v1 keeps (text, grade, reason: written by hand, by the rubric) and the
   v2 verdict (written here; the grades are kept, keyed by task and text). This script
   fills the verdicts, keeps the grades and counts them.

Writes benchmarks/results/screen/screen_study.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from screen_pairs import (  # noqa: E402 - the sibling module of this script
    DISTILLER,
    NEW_PAIRS_SEED,
    ROOT,
    new_pairs,
    own_pairs,
    paper_distiller,
    paper_pairs,
    training,
)

from memcollab.llm.cache import CacheMissError, CallCache, Gateway  # noqa: E402
from memcollab.llm.fleet import Fleet  # noqa: E402
from memcollab.memory.distill import (  # noqa: E402
    DistillStats,
    ScreenContext,
    parse_constraints,
    prompts,
    screen_each,
)
from memcollab.memory.pairs import Pair  # noqa: E402
from memcollab.memory.semantic import SemanticContext, explain  # noqa: E402
from memcollab.tasks.task import Task  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "screen"
PAPER = ROOT / "benchmarks" / "results" / "paper"
NAMESPACE = "memcollab.by.qwen2.5-coder-1.5b"
GRADES = ("abstract", "task_specific", "wrong", "vacuous")


def candidates(task: Task, pair: Pair, raw: str) -> list[dict[str, Any]]:
    """Every candidate of one output with its v1 verdict and v2 verdict (and why)."""
    parsed = parse_constraints(raw)
    ctx = ScreenContext.build(task, pair.trajectories(), 5)
    sctx = SemanticContext.build(task, pair.trajectories(), prompts()["example"])
    rows = []
    for c, v1 in screen_each(parsed.candidates, ctx, 3):
        found = explain(c.when, c.enforce, c.avoid, sctx) if v1 is None else None
        v2 = v1 if v1 is not None else (found[0] if found else None)
        lenient = explain(c.when, c.enforce, c.avoid, sctx, skip={"example_echo"})
        rows.append(
            {
                "task_id": pair.task_id,
                "model_pos": pair.model_pos,
                "model_neg": pair.model_neg,
                "text": c.text(),
                "v1": v1 or "kept",
                "v2": v2 or "kept",
                "v2_why": found[1] if found else "",
                "v2_without_echo": v1 or (lenient[0] if lenient else "kept"),
            }
        )
    return rows


def distil_all(
    pairs: list[Pair], tasks: dict[str, Task], gateway: Gateway
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], int, list[Any]]:
    """Candidates of every pair, v1 and v2 counters, pairs without a recorded call, and
    the v1 results (for the comparison with the committed memory)."""
    client = gateway.bind(Fleet.default().model(DISTILLER))
    v1, v2 = paper_distiller(client), paper_distiller(client, "v2")
    stats1, stats2 = DistillStats(), DistillStats()
    rows: list[dict[str, Any]] = []
    results = []
    missing = 0
    for pair in pairs:
        task = tasks[pair.task_id]
        try:
            r1 = v1.distill(task, pair)
        except CacheMissError:
            missing += 1
            continue
        r2 = v2.distill(task, pair)
        stats1.add(r1)
        stats2.add(r2)
        results.append((pair, r1))
        rows.extend(candidates(task, pair, r1.raw_outputs[-1]))
    return rows, stats1.as_dict(), stats2.as_dict(), missing, results


def check_v1_replays_the_committed_memory(results: list[Any], v1: dict[str, Any]) -> dict:
    """v1 over the committed pairs gives the committed memory's constraints and counts."""
    committed = {}
    for line in (PAPER / "memories" / f"{NAMESPACE}.jsonl").read_text().splitlines():
        record = json.loads(line)
        committed[record["source_task_id"]] = [
            (c["when"], c["enforce"], c["avoid"]) for c in record["constraints"]
        ]
    rebuilt = {
        pair.task_id: [(c.when, c.enforce, c.avoid) for c in r.constraints]
        for pair, r in results
        if r.constraints
    }
    summary = json.loads((PAPER / "build_summary.json").read_text())[NAMESPACE]["distill"]
    # Since the committed run, items that are there but unusable are counted as rejected
    # "incomplete" candidates (REPLAY.md): the only counts allowed to differ.
    unusable = v1["candidates"] - summary["candidates"]
    expected = {**summary, "candidates": summary["candidates"] + unusable}
    expected["rejected"] = {
        **summary["rejected"],
        "incomplete": summary["rejected"]["incomplete"] + unusable,
    }
    return {
        "records_identical": rebuilt == committed,
        "records": len(rebuilt),
        "constraints": sum(len(v) for v in rebuilt.values()),
        "unusable_items_now_counted": unusable,
        "counts_identical_to_build_summary_but_those": v1 == expected,
    }


def merge_grades(
    path: Path, rows: list[dict[str, Any]], sample: int | None = None
) -> list[dict[str, Any]]:
    """The v1-kept rows (or `sample` of them, seeded) with the grades already in `path`
    (keyed by task and text)."""
    graded: dict[tuple[str, str], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            graded[(row["task_id"], row["text"])] = row
    kept = [row for row in rows if row["v1"] == "kept"]
    if sample is not None and sample < len(kept):
        chosen = set(random.Random(NEW_PAIRS_SEED).sample(range(len(kept)), sample))
        kept = [row for i, row in enumerate(kept) if i in chosen]
    out = []
    for row in kept:
        old = graded.get((row["task_id"], row["text"]), {})
        out.append(
            {
                "n": len(out) + 1,
                **row,
                "grade": old.get("grade", ""),
                "grade_reason": old.get("grade_reason", ""),
            }
        )
    return out


def distribution(rows: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r["grade"] for r in rows if r["grade"])
    n = sum(counts.values())
    bad = counts["wrong"] + counts["vacuous"]
    return {
        "n": n,
        **{g: counts[g] for g in GRADES},
        "wrong_or_vacuous_share": round(bad / n, 3) if n else None,
    }


def study(rows: list[dict[str, Any]], graded: list[dict[str, Any]]) -> dict[str, Any]:
    kept = [r for r in graded if r["v2"] == "kept"]
    rejected = [r for r in graded if r["v2"] != "kept"]
    by_reason: dict[str, dict[str, int]] = {}
    for r in rejected:
        by_reason.setdefault(r["v2"], Counter())[r["grade"] or "ungraded"] += 1  # type: ignore[index]
    return {
        "candidates": len(rows),
        "v1_kept": len(graded),
        "v2_kept": len(kept),
        "v2_rejected_of_v1_kept": dict(Counter(r["v2"] for r in rejected).most_common()),
        "grades_v1_kept": distribution(graded),
        "grades_v2_kept": distribution(kept),
        "grades_v2_rejected": distribution(rejected),
        "grades_by_v2_reason": {k: dict(v) for k, v in sorted(by_reason.items())},
        # what v2 would keep without the example_echo rule (measured, not a setting)
        "grades_v2_without_echo_kept": distribution(
            [r for r in graded if r["v2_without_echo"] == "kept"]
        ),
    }


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--draw", type=int, default=16, help="New pairs per source.")
    parser.add_argument("--live", action="store_true", help="Generate missing calls.")
    parser.add_argument(
        "--own-sample", type=int, default=60, help="Held-out constraints of the own memory."
    )
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    gateway = Gateway(CallCache(args.cache), replay_only=not args.live)
    trajectories, tasks, strengths = training()

    old_rows, old_v1, old_v2, old_missing, old_results = distil_all(
        paper_pairs(trajectories, strengths),
        tasks,
        Gateway(CallCache(args.cache), replay_only=True),
    )
    replay = check_v1_replays_the_committed_memory(old_results, old_v1)
    own_rows, own_v1, own_v2, own_missing, own_results = distil_all(
        own_pairs(trajectories, strengths), tasks, Gateway(CallCache(args.cache), replay_only=True)
    )
    drawn = new_pairs(trajectories, strengths, args.draw)
    new_rows, new_v1, new_v2, new_missing, _ = distil_all(drawn, tasks, gateway)

    old_graded = merge_grades(OUT / "old_graded.jsonl", old_rows)
    new_graded = merge_grades(OUT / "new_graded.jsonl", new_rows)
    own_graded = merge_grades(OUT / "own_graded.jsonl", own_rows, args.own_sample)
    write_jsonl(OUT / "own_graded.jsonl", own_graded)
    write_jsonl(OUT / "old_graded.jsonl", old_graded)
    write_jsonl(OUT / "new_graded.jsonl", new_graded)
    report = {
        "command": "python benchmarks/screen_study.py " + " ".join(sys.argv[1:]),
        "old_memory": {
            "pairs": len(old_results),
            "pairs_without_recorded_call": old_missing,
            "v1_replay": replay,
            "distill_v1": old_v1,
            "distill_v2": old_v2,
            **study(old_rows, old_graded),
        },
        "own_memory_held_out": {
            "pairs": len(own_results),
            "pairs_without_recorded_call": own_missing,
            "distill_v1": own_v1,
            "distill_v2": own_v2,
            "graded_sample": f"{len(own_graded)} of the v1-kept constraints, seed {NEW_PAIRS_SEED}",
            **study(own_rows, own_graded),
        },
        "new_pairs": {
            "drawn": len(drawn),
            "distilled": len(drawn) - new_missing,
            "pairs_without_recorded_call": new_missing,
            "distill_v1": new_v1,
            "distill_v2": new_v2,
            **study(new_rows, new_graded),
        },
    }
    (OUT / "screen_study.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    same = replay["records_identical"] and replay["counts_identical_to_build_summary_but_those"]
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
