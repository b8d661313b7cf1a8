"""The agent's repair modes on development code tasks: v1 against live.

Each model solves the tasks (vanilla, no memory) once per repair mode, through one call
cache, so a rerun makes no model call and an interrupted run resumes (the trajectories of
each mode are kept in a store under --work; the first turn's request is the same in both
modes, so the live mode reuses it from the cache). Per model and mode it reports accuracy
(hidden tests), mean turns, the multi-turn trajectories, and among them the identical-repeat
rate: the share whose final candidates include one equal to an earlier turn's (code blocks
compared after whitespace normalisation, as the agent compares them; `repeat_exact_rate`
compares them byte for byte; `all_same_rate` counts those whose every turn sent the same
candidate). For live it also counts the resampled steps and what the live feedback showed.

Development splits only: MBPP validation (task ids 511-600, `mbpp:validation`) and
HumanEval 0-63 (`humaneval:train`).

    python benchmarks/repair_loop.py [--models qwen2.5-coder-1.5b ...]
        [--tasks mbpp:validation ...] [--limit N] [--modes v1 live]
        [--max-turns 4] [--max-tokens 384] [--work /work/cache-repair]
        [--cache PATH] [--data-dir ../shared/data] [--out PATH]

Writes benchmarks/results/repair/repair_loop.json (the command is recorded in it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any, get_args

from memcollab.agent import RepairMode, fleet_agent
from memcollab.collect import TrajectoryStore, collect
from memcollab.domains import python_blocks
from memcollab.domains.code_repair import normalise_code
from memcollab.llm.cache import CallCache, Gateway
from memcollab.llm.fleet import Fleet
from memcollab.tasks.datasets import load_task_specs
from memcollab.trajectory import Trajectory

ROOT = Path(__file__).resolve().parent.parent
DEV_SPECS = ("mbpp:validation", "humaneval:train")


def _candidates(t: Trajectory) -> list[str | None]:
    out: list[str | None] = []
    for step in t.steps:
        blocks = python_blocks(step.reply)
        out.append(blocks[-1] if blocks else None)
    return out


def _repeats(cands: list[str | None], key: Any) -> bool:
    seen: set[str] = set()
    for c in cands:
        if c is None:
            continue
        k = key(c)
        if k in seen:
            return True
        seen.add(k)
    return False


def _feedback_kind(text: str) -> str:
    if "could not be shown" in text:
        return "no_value"
    if "` raised an exception:" in text:
        return "raised"
    if "` returned " in text or "` is " in text:
        return "value"
    if "Traceback" in text or "Error" in text:
        return "traceback"
    return "other"


def metrics(trajectories: list[Trajectory]) -> dict[str, Any]:
    """Accuracy, turns and the repeat counts of one model's trajectories in one mode."""
    n = len(trajectories)
    multi = [t for t in trajectories if t.turns > 1]
    normal = [_repeats(_candidates(t), normalise_code) for t in multi]
    exact = [_repeats(_candidates(t), lambda c: c) for t in multi]
    all_same = []
    for t in multi:
        cands = [normalise_code(c) for c in _candidates(t) if c is not None]
        all_same.append(len(cands) == t.turns and len(set(cands)) == 1)
    kinds: dict[str, int] = {}
    for t in trajectories:
        for step in t.steps:
            if step.feedback is not None and step.tool is not None:
                kind = _feedback_kind(step.feedback)
                kinds[kind] = kinds.get(kind, 0) + 1

    def rate(flags: list[bool]) -> float | None:
        return round(sum(flags) / len(flags), 4) if flags else None

    return {
        "tasks": n,
        "correct": sum(t.correct for t in trajectories),
        "accuracy": round(sum(t.correct for t in trajectories) / n, 4) if n else None,
        "mean_turns": round(sum(t.turns for t in trajectories) / n, 3) if n else None,
        "multi_turn": len(multi),
        "multi_turn_correct": sum(t.correct for t in multi),
        "repeat": sum(normal),
        "repeat_rate": rate(normal),
        "repeat_exact": sum(exact),
        "repeat_exact_rate": rate(exact),
        "all_same": sum(all_same),
        "all_same_rate": rate(all_same),
        "resampled_steps": sum(t.resampled for t in trajectories),
        "resampled_trajectories": sum(1 for t in trajectories if t.resampled),
        "model_calls": sum(t.turns + t.resampled for t in trajectories),
        "completion_tokens": sum(t.completion_tokens for t in trajectories),
        "feedback_kinds": dict(sorted(kinds.items())),
    }


def paired(a: list[Trajectory], b: list[Trajectory]) -> dict[str, int]:
    """Tasks correct in one mode only."""
    ca = {t.task_id: t.correct for t in a}
    cb = {t.task_id: t.correct for t in b}
    common = ca.keys() & cb.keys()
    return {
        "tasks": len(common),
        "only_first": sum(1 for k in common if ca[k] and not cb[k]),
        "only_second": sum(1 for k in common if cb[k] and not ca[k]),
        "both": sum(1 for k in common if ca[k] and cb[k]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["qwen2.5-coder-1.5b"])
    parser.add_argument("--tasks", nargs="+", default=["mbpp:validation"])
    parser.add_argument("--limit", type=int, default=None, help="First N tasks of the specs.")
    parser.add_argument("--modes", nargs="+", default=list(get_args(RepairMode)))
    parser.add_argument("--max-turns", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--work", type=Path, default=Path("/work/cache-repair"))
    parser.add_argument("--cache", type=Path, default=None, help="Default: WORK/calls.sqlite")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/repair/repair_loop.json"
    )
    args = parser.parse_args()
    for spec in args.tasks:
        if not spec.startswith(DEV_SPECS):
            parser.error(f"{spec}: development splits only ({', '.join(DEV_SPECS)})")
    for mode in args.modes:
        if mode not in get_args(RepairMode):
            parser.error(f"unknown mode {mode!r}")
    tasks = load_task_specs(args.tasks, args.data_dir)[: args.limit]
    fleet = Fleet.default()
    args.work.mkdir(parents=True, exist_ok=True)
    gateway = Gateway(CallCache(args.cache or args.work / "calls.sqlite"))
    results: dict[str, Any] = {}

    def write(complete: bool) -> None:
        payload = {
            "command": "python " + shlex.join(sys.argv),
            "complete": complete,
            "settings": {
                "tasks": args.tasks,
                "limit": args.limit,
                "task_count": len(tasks),
                "max_turns": args.max_turns,
                "max_tokens": args.max_tokens,
                "modes": args.modes,
            },
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "models": results,
            "gateway": {
                name: {"calls": s.calls, "cache_hits": s.cache_hits, "seconds": round(s.seconds, 1)}
                for name, s in gateway.stats().items()
            },
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2) + "\n")

    for model in args.models:
        runs: dict[str, list[Trajectory]] = {}
        results[model] = {}
        for mode in args.modes:
            agent = fleet_agent(
                fleet,
                gateway,
                model,
                max_turns=args.max_turns,
                max_tokens=args.max_tokens,
                repair=mode,
            )
            store = TrajectoryStore.in_dir(args.work / f"{model}-{mode}")
            started = time.perf_counter()
            done = collect([agent], tasks, store)
            wanted = {t.id for t in tasks}
            runs[mode] = [t for t in store if t.task_id in wanted and t.model == model]
            results[model][mode] = {
                **metrics(runs[mode]),
                "computed": done.computed,
                "wall_s": round(time.perf_counter() - started, 1),
            }
            if "v1" in runs and "live" in runs:
                results[model]["paired_v1_live"] = paired(runs["v1"], runs["live"])
            print(model, mode, json.dumps(results[model][mode]), flush=True)
            write(complete=False)  # what is done so far, in case the run is stopped
    write(complete=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
