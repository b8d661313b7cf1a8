"""The repair loop as two experiment runs used it: the paper run's (v1) against memory
v2's (live), on the code training tasks both runs solved, with the same models, budget
(4 turns of 384 tokens) and greedy first turn.

The training trajectories are already stored (no model call): each run's `train` store,
code tasks only. Per model it reports, for the tasks the two runs share and for each run's
tasks as a whole, the metrics of benchmarks/repair_loop.py (accuracy, turns, multi-turn
trajectories and their identical-repeat rates: `repeat_rate` any final candidate equal to
an earlier one, `all_same_rate` the same candidate every turn, the issue's 87%), and the
paired counts on the shared tasks.

Training splits only (MBPP train): these tasks built memory; no evaluation task is read.

    python benchmarks/repair_in_runs.py [--first runs/paper --first-label v1]
        [--second runs/v2 --second-label live] [--out PATH]

The run folders come from scripts/restore_paper_run.sh (the paper run) and the v2 run's
parts (or its committed exports). Writes benchmarks/results/repair/repair_in_runs.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from memcollab.collect import TrajectoryStore
from memcollab.trajectory import Trajectory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repair_loop import metrics, paired  # noqa: E402 - the same metrics as the dev study

ROOT = Path(__file__).resolve().parent.parent


def code_trajectories(run: Path) -> dict[str, list[Trajectory]]:
    """model -> the run's stored code training trajectories."""
    store = TrajectoryStore.open_existing(run / "train")
    by_model: dict[str, list[Trajectory]] = {}
    for t in store:
        if t.domain == "code":
            by_model.setdefault(t.model, []).append(t)
    return by_model


def compare(
    first: dict[str, list[Trajectory]], second: dict[str, list[Trajectory]], labels: tuple[str, str]
) -> dict[str, Any]:
    """Per model present in both runs: metrics on the shared tasks, on each run's own, and
    the paired counts (`only_first`: right in the first run only)."""
    out: dict[str, Any] = {}
    for model in sorted(first.keys() & second.keys()):
        a = {t.task_id: t for t in first[model]}
        b = {t.task_id: t for t in second[model]}
        shared = sorted(a.keys() & b.keys())
        out[model] = {
            "shared_tasks": len(shared),
            "shared": {
                labels[0]: metrics([a[k] for k in shared]),
                labels[1]: metrics([b[k] for k in shared]),
            },
            "paired": paired([a[k] for k in shared], [b[k] for k in shared]),
            "all": {labels[0]: metrics(list(a.values())), labels[1]: metrics(list(b.values()))},
        }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=Path, default=ROOT / "runs/paper")
    parser.add_argument("--first-label", default="v1")
    parser.add_argument("--second", type=Path, default=ROOT / "runs/v2")
    parser.add_argument("--second-label", default="live")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/repair/repair_in_runs.json"
    )
    args = parser.parse_args()
    if args.first_label == args.second_label:
        parser.error("the two runs need different labels")
    runs = {}
    for run in (args.first, args.second):
        if not (run / "train").is_dir():
            parser.error(f"{run}: no train/ folder (a run folder of `memcollab experiment run`)")
        runs[run] = code_trajectories(run)
    labels = (args.first_label, args.second_label)
    payload = {
        "command": "python " + shlex.join(sys.argv),
        "runs": {labels[0]: str(args.first), labels[1]: str(args.second)},
        "trajectories": {
            label: {m: len(ts) for m, ts in sorted(runs[run].items())}
            for label, run in zip(labels, (args.first, args.second), strict=True)
        },
        "models": compare(runs[args.first], runs[args.second], labels),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    for model, entry in payload["models"].items():
        s = entry["shared"]
        print(
            f"{model}: {entry['shared_tasks']} shared tasks;"
            + "".join(
                f" {label}: {m['correct']} right, repeat {m['repeat']}/{m['multi_turn']},"
                f" all-same {m['all_same']}/{m['multi_turn']};"
                for label, m in s.items()
            )
            + f" paired {entry['paired']}"
        )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
