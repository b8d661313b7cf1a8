"""How well the optional model judge (memory/judge.py) tells wrong and vacuous constraints
from sound ones, against the blind grades of benchmarks/results/screen/blind.

Each of the 100 blind-graded constraints (50 of the paper memory, 50 of the v2 run's) goes
to the judge with its source task, as the v2 screen would send it. The judge's verdict
(reject: WRONG or VACUOUS; keep: KEEP or no grade) is set against the grade: a judge worth
running rejects most wrong + vacuous constraints and keeps most abstract + task-specific
ones. Reported per memory and pooled: the confusion counts, the share of bad constraints
it rejects, the share of good ones it keeps, and what wrong + vacuous would be among the
constraints it keeps (the issue's goal: at most 25%).

These constraints come from training tasks only; no evaluation task is read.

    python benchmarks/judge_screen.py [--dir benchmarks/results/screen/blind]
        [--judge qwen2.5-coder-1.5b] [--fleet FLEET.toml] [--cache runs/judge/calls.sqlite]
        [--out benchmarks/results/screen/judge_screen.json]

Every judge call goes through the call cache (a second run replays it). Writes the JSON
with the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from memcollab.llm.cache import CallCache, Gateway
from memcollab.llm.fleet import Fleet
from memcollab.memory.judge import ModelJudge
from memcollab.tasks.task import Task

ROOT = Path(__file__).resolve().parent.parent
BAD = ("wrong", "vacuous")


def read_items(folder: Path) -> list[dict[str, Any]]:
    """The listing's items joined with their grade and their memory (old / new)."""
    listing = [json.loads(x) for x in (folder / "listing.jsonl").read_text().splitlines() if x]
    grades = {
        g["item"]: g["grade"]
        for g in map(json.loads, (folder / "grades.jsonl").read_text().splitlines())
    }
    key = json.loads((folder / "key.json").read_text())
    return [{**i, "grade": grades[i["item"]], "memory": key[i["item"]]["source"]} for i in listing]


def judge_items(items: list[dict[str, Any]], judge: ModelJudge, workers: int) -> list[str | None]:
    """The judge's reason (or None: kept) for each item, in order."""

    def one(item: dict[str, Any]) -> str | None:
        task = Task(id=item["item"], domain="math", prompt=item["task"])  # domain unused
        return judge(item["constraint"], task)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(one, items))


def summarise(items: list[dict[str, Any]], verdicts: list[str | None]) -> dict[str, Any]:
    """Per memory and pooled: grade x verdict counts and the shares that matter."""
    out: dict[str, Any] = {}
    for scope in ("old", "new", "pooled"):
        rows = [
            (item["grade"], verdict)
            for item, verdict in zip(items, verdicts, strict=True)
            if scope == "pooled" or item["memory"] == scope
        ]
        table = Counter(f"{grade} -> {verdict or 'kept'}" for grade, verdict in rows)
        bad = [v for g, v in rows if g in BAD]
        good = [v for g, v in rows if g not in BAD]
        kept = [g for g, v in rows if v is None]
        out[scope] = {
            "n": len(rows),
            "confusion": dict(sorted(table.items())),
            "bad_rejected": sum(v is not None for v in bad),
            "bad": len(bad),
            "good_kept": sum(v is None for v in good),
            "good": len(good),
            "kept": len(kept),
            "wrong_plus_vacuous_among_kept": (
                round(sum(g in BAD for g in kept) / len(kept), 4) if kept else None
            ),
            "wrong_plus_vacuous_before": round(len(bad) / len(rows), 4) if rows else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=ROOT / "benchmarks/results/screen/blind")
    parser.add_argument("--judge", default="qwen2.5-coder-1.5b", help="A fleet model.")
    parser.add_argument("--fleet", type=Path, default=None, help="Default: the packaged models.")
    parser.add_argument("--cache", type=Path, default=ROOT / "runs/judge/calls.sqlite")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/screen/judge_screen.json"
    )
    args = parser.parse_args(argv)
    items = read_items(args.dir)
    fleet = Fleet.load(args.fleet)
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    gateway = Gateway(CallCache(args.cache))
    client = gateway.bind(fleet.model(args.judge))
    judge = ModelJudge(client)
    verdicts = judge_items(items, judge, client.model.concurrency()[1])
    result = {
        "benchmark": "judge_screen",
        "command": shlex.join(["python", "benchmarks/judge_screen.py", *(argv or sys.argv[1:])]),
        "judge": judge.stats(),
        "items": len(items),
        "summary": summarise(items, verdicts),
        "verdicts": {i["item"]: v for i, v in zip(items, verdicts, strict=True)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for scope, s in result["summary"].items():
        print(
            f"{scope}: rejects {s['bad_rejected']}/{s['bad']} wrong or vacuous, keeps"
            f" {s['good_kept']}/{s['good']} sound; wrong + vacuous among kept"
            f" {s['wrong_plus_vacuous_among_kept']} (before {s['wrong_plus_vacuous_before']})"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
