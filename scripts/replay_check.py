"""Check that a committed experiment replays from its recorded model calls, bit for bit.

    .venv/bin/python scripts/replay_check.py [--name paper] [--eval-jobs 300]
        [--work /tmp/replay] [--data-dir ../shared/data]

1. Imports the experiment's committed calls (benchmarks/results/NAME/calls) into a call
   cache under --work and its committed training trajectories into a fresh run folder.
2. Memory: runs the memory phase with a replay-only gateway (a call the cache lacks stops
   the check) and compares every rebuilt memory with the committed export
   (memories/NS.jsonl): the same record ids, and per record the same bucket and
   constraints.
3. Evaluation: runs the first --eval-jobs evaluation jobs of the plan (task-major: every
   condition and model of a task together; --skip-condition leaves a condition out) again
   from scratch, replay-only, and compares each verdict, turn count and retrieved record
   ids with the committed results.jsonl.

Prints one JSON summary and exits 1 on any difference. The library does the work; this
script only wires it (it uses the runner's evaluation context, a private helper).
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path
from typing import Any

from memcollab.collect import TrajectoryStore, run_jobs
from memcollab.experiment.config import load_experiment
from memcollab.experiment.runner import Experiment, _Context
from memcollab.llm.base import ChatRequest, Completion, Model
from memcollab.llm.cache import CacheMissError, CallCache, Gateway
from memcollab.memory import DomainClassifier, Memory, MemoryRecord
from memcollab.trajectory_archive import import_archive

ROOT = Path(__file__).resolve().parent.parent
MISS = "<<no recorded answer: replay miss>>"


class MissRecordingGateway(Gateway):
    """Replay-only, but a call the cache lacks gets a marked empty answer (and is kept in
    `misses`) instead of stopping the replay, so every cell is compared."""

    def __init__(self, cache: CallCache) -> None:
        super().__init__(cache, replay_only=True)
        self.misses: list[tuple[str, ChatRequest]] = []

    def complete(self, model: Model, request: ChatRequest) -> Completion:
        try:
            return super().complete(model, request)
        except CacheMissError:
            self.misses.append((model.name, request))
            return Completion(text=MISS, finish_reason="stop", model=model.name)


def _records(path: Path) -> dict[str, MemoryRecord]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return {r.id: r for r in (MemoryRecord.model_validate_json(x) for x in lines if x.strip())}


def _same(a: MemoryRecord, b: MemoryRecord) -> bool:
    keys = ("namespace", "domain", "category", "subcategory", "constraints", "task_hash")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", default="paper")
    parser.add_argument("--work", type=Path, default=Path("/tmp/memcollab-replay"))
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--eval-jobs", type=int, default=300)
    parser.add_argument(
        "--skip-condition",
        action="append",
        default=[],
        help="Leave this condition's cells out of the evaluation replay (repeatable).",
    )
    args = parser.parse_args()
    results = ROOT / "benchmarks" / "results" / args.name
    args.work.mkdir(parents=True, exist_ok=True)
    run = args.work / "run"
    if run.exists():
        sys.exit(f"{run} exists: give a fresh --work folder")

    cache = CallCache(args.work / "calls.sqlite")
    for part in sorted(glob.glob(str(results / "calls" / "*.jsonl.gz"))):
        cache.import_jsonl(part)
    config = load_experiment(results / "experiment.toml", args.data_dir)
    config = config.model_copy(update={"out": run})
    experiment = Experiment(config, Gateway(cache, replay_only=True))
    evaluation = MissRecordingGateway(cache)
    train = TrajectoryStore.in_dir(run / "train")
    for part in sorted(glob.glob(str(results / "trajectories" / "train" / "*.jsonl.gz"))):
        import_archive(train, part)

    report: dict[str, Any] = {"experiment": args.name}
    experiment.run(lambda event: None, phases=["memory"])
    memory_diffs = []
    for export in sorted((results / "memories").glob("*.jsonl")):
        committed = _records(export)
        rebuilt = _records(run / "memories" / export.name)
        differing = [
            rid for rid in committed if rid in rebuilt and not _same(committed[rid], rebuilt[rid])
        ]
        if set(committed) != set(rebuilt) or differing:
            memory_diffs.append(
                {
                    "memory": export.stem,
                    "only_committed": sorted(set(committed) - set(rebuilt))[:5],
                    "only_rebuilt": sorted(set(rebuilt) - set(committed))[:5],
                    "differing": differing[:5],
                }
            )
        report.setdefault("memories", {})[export.stem] = len(rebuilt)
    report["memory_differences"] = memory_diffs
    print(json.dumps(report, indent=2), file=sys.stderr, flush=True)  # in case eval stops

    expected = {}
    for line in (results / "results.jsonl").read_text().splitlines():
        row = json.loads(line)
        expected[(row["task_id"], row["model"], row["condition"])] = row
    with Memory.open(experiment.memory_path()) as memory:
        experiment.gateway = evaluation  # agents bind to it when made (on first use, below)
        experiment._agents.clear()
        classifiers = {
            m: DomainClassifier(evaluation.bind(experiment.fleet.model(m)))
            for m in experiment.eval_models
        }
        jobs = experiment.eval_jobs(_Context(memory, classifiers, config.seed))[: args.eval_jobs]
        jobs = [job for job in jobs if job.condition not in args.skip_condition]
        report["eval_conditions_skipped"] = args.skip_condition
        store = TrajectoryStore.in_dir(run / "eval")
        run_jobs(jobs, store, workers=config.workers)
    eval_diffs = []
    by_condition: dict[str, list[int]] = {}
    for t in store:
        tally = by_condition.setdefault(t.condition, [0, 0])
        tally[0] += 1
        row = expected[(t.task_id, t.model, t.condition)]
        note = t.retrieval or {}
        missed = any(MISS in step.reply for step in t.steps)
        got = {"correct": t.correct, "turns": t.turns, "record_ids": note.get("record_ids", [])}
        want = {k: row[k] for k in ("correct", "turns")} | {"record_ids": row["record_ids"]}
        if missed:
            got["replay_miss"] = True
        if got != want:
            tally[1] += 1
            eval_diffs.append({"cell": [t.task_id, t.model, t.condition], "got": got, "want": want})
    report["eval_cells_replayed"] = len(store)
    report["eval_correct_replayed"] = sum(t.correct for t in store)
    report["eval_cells_and_differences_by_condition"] = by_condition
    report["eval_differences"] = eval_diffs[:20]
    report["eval_difference_count"] = len(eval_diffs)
    report["replay_misses"] = len(evaluation.misses)
    report["first_misses"] = [
        {"model": name, "last_message": request.messages[-1].content[-600:]}
        for name, request in evaluation.misses[:3]
    ]
    print(json.dumps(report, indent=2))
    return 1 if memory_diffs or eval_diffs else 0


if __name__ == "__main__":
    sys.exit(main())
