"""Judge every stored trajectory of a run again with the current checkers.

A run keeps the verdict its checker gave when the trajectory was made. After a checker
changes (the math deadline moved from wall time to CPU time in run 2's part 9), this says
whether any stored verdict would now be different, and how many code checks hit the
sandbox's time limit (a verdict that load on the machine could flip).

    python scripts/recheck_verdicts.py runs/paper/train [--domain math|code]

Prints one line per (domain, model) and every disagreement; exits 1 if there is one.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from memcollab.collect import TrajectoryStore
from memcollab.tasks.checkers import check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="folder holding trajectories.sqlite")
    parser.add_argument("--domain", choices=["math", "code"], default=None)
    args = parser.parse_args()
    store = TrajectoryStore.open_existing(args.run_dir)
    tasks = store.tasks()
    checked: Counter[tuple[str, str]] = Counter()
    stored_timeouts: Counter[tuple[str, str]] = Counter()
    disagreements: list[str] = []
    for trajectory in store:
        if args.domain and trajectory.domain != args.domain:
            continue
        group = (trajectory.domain, trajectory.model)
        checked[group] += 1
        if (
            trajectory.check.get("status") == "timeout"
            or trajectory.check.get("reason") == "timeout"
        ):
            stored_timeouts[group] += 1
        verdict = check(tasks[trajectory.task_id], trajectory.final_answer)
        if verdict.correct != trajectory.correct:
            disagreements.append(
                f"{trajectory.task_id} {trajectory.model} {trajectory.condition}: "
                f"stored {trajectory.correct} ({trajectory.check}), "
                f"now {verdict.correct} ({verdict.details})"
            )
    for (domain, model), n in sorted(checked.items()):
        timeouts = stored_timeouts[(domain, model)]
        print(f"{domain:5} {model:20} checked {n:4}  stored timeouts {timeouts}")
    print(f"{sum(checked.values())} checked, {len(disagreements)} disagreements")
    for line in disagreements:
        print("  " + line)
    return 1 if disagreements else 0


if __name__ == "__main__":
    sys.exit(main())
