"""A blind graded sample of two memories' constraints (issue 26, item 3).

`draw` takes N constraints at random from each of two memory exports (the committed
paper memory and the v2 run's), shuffles them together and writes a listing that shows
each constraint with its source task only: no memory, model or record id, so whoever
grades cannot tell old from new. The key (item -> memory, record, position) is written
apart. `tally` joins the grades (one JSON line per item: `item`, `grade`, `reason`; the
rubric is docs/SCREEN_GRADING.md) with the key and counts each memory's grades, with a
Wilson 95% interval for the share wrong + vacuous (the issue's goal: at most 25%).

    python benchmarks/screen_blind_sample.py draw --old OLD.jsonl --new NEW.jsonl \
        --n 50 --seed 26 --out benchmarks/results/screen/blind
    (grade listing.jsonl into grades.jsonl)
    python benchmarks/screen_blind_sample.py tally --dir benchmarks/results/screen/blind

Constraints are drawn uniformly over the distinct constraints a memory serves (a record
whose constraints all merged into others' has none; a merged constraint counts once,
whatever its support). Only active records count, as only they are served.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path
from typing import Any

from memcollab.memory.store import read_export_with_history
from memcollab.memory.store_changes import Change, state_at

GRADES = ("abstract", "task_specific", "wrong", "vacuous")
SOURCES = ("old", "new")


def served_constraints(path: Path) -> list[dict[str, Any]]:
    """Every constraint an export's active records serve, in file order."""
    records, _notes, history = read_export_with_history(path)
    inactive = _inactive_ids(history)
    out = []
    for record in records:
        if record.id in inactive:
            continue
        for position, constraint in enumerate(record.constraints):
            out.append(
                {
                    "record_id": record.id,
                    "position": position,
                    "support": constraint.support,
                    "task_text": record.task_text,
                    "text": constraint.text(),
                }
            )
    return out


def _inactive_ids(history: list[Change]) -> set[str]:
    """Records the export's history leaves not active (store_changes.state_at replays it)."""
    return {rid for rid, (status, _) in state_at(history).items() if status != "active"}


def draw(old: Path, new: Path, n: int, seed: int) -> tuple[list[dict], dict[str, dict]]:
    """(listing, key): n constraints of each export, shuffled together, items numbered."""
    rng = random.Random(seed)
    picked: list[tuple[str, dict[str, Any]]] = []
    for source, path in (("old", old), ("new", new)):
        pool = served_constraints(path)
        if len(pool) < n:
            raise SystemExit(f"{path} serves {len(pool)} constraints, fewer than --n {n}")
        picked.extend((source, c) for c in rng.sample(pool, n))
    rng.shuffle(picked)
    listing, key = [], {}
    for number, (source, c) in enumerate(picked, start=1):
        item = f"c{number:03d}"
        listing.append({"item": item, "task": c["task_text"], "constraint": c["text"]})
        key[item] = {"source": source, "file": str((old if source == "old" else new).name)}
        key[item].update({k: c[k] for k in ("record_id", "position", "support")})
    return listing, key


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def tally(key: dict[str, dict], grades: list[dict[str, Any]]) -> dict[str, Any]:
    """Each memory's grade counts and its wrong + vacuous share; every item graded once."""
    seen: dict[str, str] = {}
    for line in grades:
        item, grade = line.get("item"), line.get("grade")
        if item not in key:
            raise SystemExit(f"grade for unknown item {item!r}")
        if item in seen:
            raise SystemExit(f"item {item} graded twice")
        if grade not in GRADES:
            raise SystemExit(f"item {item}: grade {grade!r} is not one of {GRADES}")
        seen[item] = grade
    missing = sorted(set(key) - set(seen))
    if missing:
        raise SystemExit(f"{len(missing)} item(s) not graded, first {missing[0]}")
    out: dict[str, Any] = {}
    for source in SOURCES:
        mine = [seen[i] for i, k in key.items() if k["source"] == source]
        counts = {g: mine.count(g) for g in GRADES}
        bad = counts["wrong"] + counts["vacuous"]
        low, high = wilson(bad, len(mine))
        out[source] = {
            "n": len(mine),
            "counts": counts,
            "wrong_plus_vacuous": bad,
            "share_wrong_plus_vacuous": round(bad / len(mine), 4),
            "wilson95": [round(low, 4), round(high, 4)],
            "goal_at_most_25pct_met": bad / len(mine) <= 0.25,
        }
    return out


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("draw", help="write listing.jsonl (blind) and key.json")
    d.add_argument("--old", type=Path, required=True)
    d.add_argument("--new", type=Path, required=True)
    d.add_argument("--n", type=int, default=50)
    d.add_argument("--seed", type=int, default=26)
    d.add_argument("--out", type=Path, required=True)
    t = sub.add_parser("tally", help="grades.jsonl + key.json -> blind_grades.json")
    t.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "draw":
        listing, key = draw(args.old, args.new, args.n, args.seed)
        args.out.mkdir(parents=True, exist_ok=True)
        with (args.out / "listing.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in listing)
        (args.out / "key.json").write_text(json.dumps(key, indent=1) + "\n")
        print(f"wrote {len(listing)} items to {args.out}/listing.jsonl (key: key.json)")
        return 0
    key = json.loads((args.dir / "key.json").read_text())
    result = tally(key, _read_jsonl(args.dir / "grades.jsonl"))
    (args.dir / "blind_grades.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
