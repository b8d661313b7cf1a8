"""The memory build's throughput: pairs distilled per minute, one at a time against many.

Issue 26, item 7: the build submits its distillation and labelling calls concurrently
(`build_memory(..., workers=N)`), so the batching engine decodes several pairs per step.
This measures it. In one run, on the same pairs, it builds a memory with `workers=1` (before)
and with `workers=W` (after; default: the distiller's batch width, what the experiment runner
uses), each with its OWN fresh call cache and fresh memory in a temporary folder, so no call
is replayed; `--repeats 2` interleaves them (1, W, 1, W). The distiller's engine is started
and warmed before the first timed build, and its prefix cache is emptied before each build,
so no build reuses a prompt prefix another build left behind (within a build it does, as
the engine always does).

Pairs: the first `--pairs` pairs in task-id order of the pairing rule over every trajectory
of the store (the rule sees the whole pool, as a real build does: near_miss's accuracy floor
depends on it); their tasks are the ones the store recorded (as `memcollab distill` and the
experiment runner load them). Distiller, screen and labeller default to the v2 experiment's
(benchmarks/results/v2/experiment.toml: the strongest model, k 3, 4000 prompt chars, 200
reply tokens, screen v2, the trained labeller; no merge, which calls no model).

Per build: wall seconds, pairs per minute, records written, model calls and their prompt and
completion tokens (the gateway's counters: distillation and, with the llm labeller,
labelling calls), the most calls that were in flight at once, the engine's counters; per
condition the pooled pairs per minute, and the ratio after / before. Each build's record ids
and constraints are compared with the first build's (batched kernels may round a greedy
token differently, so a pair may come out differently).

    python benchmarks/build_throughput.py [--runs runs/paper/train] [--pairs 16]
        [--pairing near_miss] [--distiller qwen2.5-coder-1.5b] [--workers W] [--repeats 1]
        [--labeller trained|llm] [--screen v2] [--data-dir DIR] [--fleet fleet.toml]
        [--out benchmarks/results/v2/build_throughput.json]

Writes benchmarks/results/v2/build_throughput.json (the command is recorded in it), after
every build (`complete` says whether all ran).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from memcollab.collect import TrajectoryStore
from memcollab.errors import UserError
from memcollab.llm.base import ChatRequest, Completion, Decoding, Message, Model
from memcollab.llm.cache import CallCache, Gateway
from memcollab.llm.fleet import Fleet
from memcollab.llm.llamacpp import LlamaCppModel
from memcollab.memory import Memory, PairingRule
from memcollab.memory.build import build_memory
from memcollab.memory.distill import SCREEN_VERSIONS, Distiller
from memcollab.memory.labeller import LABELLER_KINDS, make_labeller
from memcollab.memory.pairs import PairingResult
from memcollab.tasks.task import Task

ROOT = Path(__file__).resolve().parent.parent
NAMESPACE = "build-throughput"
# The v2 experiment's [memory] settings (tests/memory/test_build_throughput.py checks that
# they still match benchmarks/results/v2/experiment.toml).
V2_MEMORY = {
    "k": 3,
    "prompt_chars": 4000,
    "reply_tokens": 200,
    "labeller": "trained",
    "screen": "v2",
}


class InFlight:
    """A model that counts how many of its calls run at once (delegates everything)."""

    def __init__(self, model: Model) -> None:
        self.inner = model
        self.name = model.name
        self._lock = threading.Lock()
        self._now = 0
        self.peak = 0

    def identity(self) -> str:
        return self.inner.identity()

    def concurrency(self) -> tuple[str, int]:
        return self.inner.concurrency()

    def complete(self, request: ChatRequest) -> Completion:
        with self._lock:
            self._now += 1
            self.peak = max(self.peak, self._now)
        try:
            return self.inner.complete(request)
        finally:
            with self._lock:
                self._now -= 1

    def reset(self) -> None:
        with self._lock:
            self.peak = self._now


def open_store(runs: Path) -> TrajectoryStore:
    """The trajectory store of a runs folder, or the store file itself."""
    if runs.is_file():
        return TrajectoryStore(runs)
    return TrajectoryStore.open_existing(runs)


def first_pairs(
    store: TrajectoryStore, rule: PairingRule, fleet: Fleet, count: int
) -> tuple[PairingResult, dict[str, int], dict[str, Task]]:
    """The first `count` pairs in task-id order of `rule` over the whole store, the pool's
    pairing counts, and the store's tasks."""
    trajectories = list(store)
    if not trajectories:
        raise UserError(f"{store.path} holds no trajectories", "give --runs a collected run")
    tasks = store.tasks()
    if not tasks:
        raise UserError(
            f"{store.path} does not record its tasks (collected by an older memcollab)",
            "collect it again with this version",
        )
    strengths = {m: fleet.spec(m).strength for m in sorted({t.model for t in trajectories})}
    pool = Memory.pairs(trajectories, rule, strengths)
    chosen = tuple(sorted(pool.pairs, key=lambda p: p.task_id)[:count])
    if not chosen:
        raise UserError(f"the {rule.name} rule finds no pair in {store.path}", "try --pairing")
    return dataclasses.replace(pool, pairs=chosen), pool.summary(), tasks


def warm_up(model: Model) -> float:
    """Start a local model's engine and run one tiny call outside any gateway (so no timed
    build pays the load or the first call's set-up); seconds taken."""
    started = time.perf_counter()
    if isinstance(model, LlamaCppModel):
        request = ChatRequest(
            messages=(Message(role="user", content="Say OK."),), decoding=Decoding(max_tokens=4)
        )
        model.complete(request)
    return time.perf_counter() - started


def engine_counters(model: Model) -> dict[str, float] | None:
    """The batching engine's counters (None: not a batching llama.cpp model)."""
    if isinstance(model, LlamaCppModel) and model.engine_mode == "batch":
        return dict(dataclasses.asdict(model.engine().stats))
    return None


def clear_prefixes(model: Model) -> None:
    """Drop the prompt prefixes the engine keeps, so a build cannot reuse another's."""
    if isinstance(model, LlamaCppModel) and model.engine_mode == "batch":
        model.engine().clear_prefix_cache()


def build_once(
    probe: InFlight,
    pairs: PairingResult,
    tasks: dict[str, Task],
    args: argparse.Namespace,
    workers: int,
    folder: Path,
) -> tuple[dict[str, Any], dict[str, tuple[str, ...]]]:
    """One build with a fresh call cache and memory under `folder`: its row, and the
    constraints of every record it wrote (by record id)."""
    folder.mkdir(parents=True)
    gateway = Gateway(CallCache(folder / "calls.sqlite"))
    client = gateway.bind(probe)
    labeller = make_labeller(args.labeller, client=client, data_dir=args.data_dir)
    distiller = Distiller(
        client,
        max_constraints=args.k,
        max_prompt_chars=args.prompt_chars,
        decoding=Decoding(temperature=0.0, max_tokens=args.reply_tokens),
        screen=args.screen,
    )
    clear_prefixes(probe.inner)
    probe.reset()
    engine_before = engine_counters(probe.inner)
    load = os.getloadavg()[0]
    with Memory.open(folder / "memory.sqlite") as memory:
        started = time.perf_counter()
        summary = build_memory(
            pairs, tasks, memory.store, distiller, labeller, namespace=NAMESPACE, workers=workers
        )
        wall = time.perf_counter() - started
        records = {
            r.id: tuple(c.text() for c in r.constraints) for r in memory.store.records(NAMESPACE)
        }
    stats = gateway.stats().get(probe.name)
    engine_after = engine_counters(probe.inner)
    row: dict[str, Any] = {
        "workers": workers,
        "wall_s": round(wall, 2),
        "pairs": len(pairs.pairs),
        "pairs_per_min": round(len(pairs.pairs) / wall * 60, 3),
        "records_written": summary.records_added,
        "pairs_without_constraints": summary.pairs_without_constraints,
        "model_calls": stats.calls if stats else 0,
        "cache_hits": stats.cache_hits if stats else 0,
        "prompt_tokens": stats.prompt_tokens if stats else 0,
        "completion_tokens": stats.completion_tokens if stats else 0,
        "call_seconds": round(stats.seconds, 2) if stats else 0.0,
        "peak_calls_in_flight": probe.peak,
        "loadavg_1min_before": round(load, 2),
        "distill": summary.distill,
        "labeller": labeller.stats(),
    }
    if engine_before is not None and engine_after is not None:
        row["engine"] = {
            k: round(engine_after[k] - engine_before[k], 3) for k in sorted(engine_after)
        }
    return row, records


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One condition's builds together: pairs per minute over their summed wall time."""
    pairs = sum(r["pairs"] for r in rows)
    wall = sum(r["wall_s"] for r in rows)
    return {
        "workers": rows[0]["workers"],
        "builds": len(rows),
        "wall_s": round(wall, 2),
        "pairs_per_min": round(pairs / wall * 60, 3) if wall > 0 else None,
        "pairs_per_min_each": [r["pairs_per_min"] for r in rows],
        "records_written_each": [r["records_written"] for r in rows],
        "model_calls_each": [r["model_calls"] for r in rows],
        "completion_tokens_each": [r["completion_tokens"] for r in rows],
    }


def compare(first: dict[str, tuple[str, ...]], other: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """How a build's records differ from the first build's."""
    common = first.keys() & other.keys()
    return {
        "same_record_ids": first.keys() == other.keys(),
        "only_in_first": len(first.keys() - other.keys()),
        "only_in_this": len(other.keys() - first.keys()),
        "identical_constraints": sum(first[i] == other[i] for i in common),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs",
        type=Path,
        default=ROOT / "runs/paper/train/trajectories.sqlite",
        help="A runs folder or its trajectories.sqlite (default: the paper run's training store).",
    )
    parser.add_argument("--pairs", type=int, default=16, help="The first N pairs by task id.")
    parser.add_argument("--pairing", choices=["near_miss", "contrastive"], default="near_miss")
    parser.add_argument("--fleet", type=Path, default=None, help="Default: the packaged models.")
    parser.add_argument("--distiller", default=None, help="Default: the fleet's strongest.")
    parser.add_argument("--workers", type=int, default=None, help="Default: its batch width.")
    parser.add_argument("--repeats", type=int, default=1, help="Builds per condition (1, W, ..).")
    parser.add_argument("--k", type=int, default=V2_MEMORY["k"])
    parser.add_argument("--prompt-chars", type=int, default=V2_MEMORY["prompt_chars"])
    parser.add_argument("--reply-tokens", type=int, default=V2_MEMORY["reply_tokens"])
    parser.add_argument("--labeller", choices=LABELLER_KINDS, default=V2_MEMORY["labeller"])
    parser.add_argument("--screen", choices=SCREEN_VERSIONS, default=V2_MEMORY["screen"])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="Default: MEMCOLLAB_DATA_DIR (trained labeller).",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/v2/build_throughput.json"
    )
    args = parser.parse_args(argv)
    for name in ("pairs", "repeats", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be at least 1")
    if not args.runs.exists():
        parser.error(f"--runs: {args.runs} does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    try:
        return run(args, "python benchmarks/build_throughput.py " + shlex.join(argv))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, command: str) -> int:
    fleet = Fleet.load(args.fleet)
    name = args.distiller or fleet.strongest()
    rule = PairingRule(args.pairing)
    pairs, pool, tasks = first_pairs(open_store(args.runs), rule, fleet, args.pairs)
    probe = InFlight(fleet.model(name))
    width = probe.concurrency()[1]
    workers = args.workers or width
    labeller_fit = time.perf_counter()
    if args.labeller == "trained":  # fitted once per process: not inside a timed build
        make_labeller("trained", data_dir=args.data_dir)
    labeller_fit_s = time.perf_counter() - labeller_fit
    warm_s = warm_up(probe.inner)
    plan = [("before", 1), ("after", workers)] * args.repeats
    builds: list[dict[str, Any]] = []
    records: list[dict[str, tuple[str, ...]]] = []
    started = time.time()

    def write(complete: bool) -> None:
        conditions = {
            c: pooled([b for b in builds if b["condition"] == c])
            for c in ("before", "after")
            if any(b["condition"] == c for b in builds)
        }
        ratio = None
        if len(conditions) == 2 and conditions["before"]["pairs_per_min"]:
            ratio = round(
                conditions["after"]["pairs_per_min"] / conditions["before"]["pairs_per_min"], 3
            )
        payload = {
            "benchmark": "build_throughput",
            "command": command,
            "complete": complete,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "settings": {
                "runs": str(args.runs),
                "pairing": args.pairing,
                "pairs": len(pairs.pairs),
                "task_ids": [p.task_id for p in pairs.pairs],
                "distiller": name,
                "distiller_identity": probe.identity(),
                "batch_width": width,
                "workers_after": workers,
                "repeats": args.repeats,
                "order": [c for c, _ in plan],
                "k": args.k,
                "prompt_chars": args.prompt_chars,
                "reply_tokens": args.reply_tokens,
                "labeller": args.labeller,
                "screen": args.screen,
                "merge": False,
                "fleet": str(args.fleet) if args.fleet else "packaged models",
            },
            "pool_pairing": pool,
            "setup_s": {"labeller_fit": round(labeller_fit_s, 2), "warm_up": round(warm_s, 2)},
            "builds": builds,
            "conditions": conditions,
            "ratio_after_before": ratio,
            "same_record_ids": all(b["vs_first"]["same_record_ids"] for b in builds),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(payload, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="build-throughput-") as tmp:
        for index, (condition, n) in enumerate(plan):
            row, made = build_once(probe, pairs, tasks, args, n, Path(tmp) / f"{index}-{condition}")
            records.append(made)
            row = {"condition": condition, **row, "vs_first": compare(records[0], made)}
            builds.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("distill", "labeller")}))
            write(complete=False)  # what is done so far, in case the run is stopped
    write(complete=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
