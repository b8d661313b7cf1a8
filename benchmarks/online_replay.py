"""Online learning through the proxy, live (issue 28): training tasks streamed through
`memcollab serve` to the evaluated models, judged by the service, memory learned online;
then an experiment file that evaluates that memory against the batch-built v2 memory and
against no memory on held-out tasks.

Step `learn` starts `memcollab serve --memory MEM --fleet FLEET --learn --distiller D
--learn-prompt-chars 4000 --learn-reply-tokens 200 --data-dir DATA` on 127.0.0.1 (the v2
batch build's distillation settings; `--prompt-chars`/`--reply-tokens` to change; a
subprocess started and stopped by its PID; with `--worker separate` the service runs without
--learn and a `memcollab learn` process beside it), creates a write key for namespace
`online`, and sends every training task to every model through the proxy with the official
`openai` client: the domain's own system prompt and first user message (the agent's first
turn), `x-memcollab-task-id` = the benchmark task id, so POST /v1/feedback without a verdict
has the service judge it, and `x-memcollab-attempt-id` = a client id derived from
(namespace, task, model), so a retry after any crash replays the stored exchange instead of
doubling it. Each finished (task, model) is a line of WORK/progress.jsonl: a rerun of the
same command skips them. A (task, model) is finished when its feedback answered 200 with a
verdict; a call or feedback that fails (transport, any HTTP error, no verdict) is retried
`--retries` times with the same client id, then written as a counted `error` line and the
stream goes on (replay.json: `checks.calls_failed`; `--retry-errors` redoes them on a
rerun). The call timeout (`--call-timeout`, also serve's `--upstream-timeout`) is 3600 s: a
first turn queued behind a full batch took up to ~1,500 s on this machine; a generation the
timeout cuts still ends and is stored, and the retry gets it replayed. `--concurrency N`
calls are in flight at once (worker threads; default: what the models' engines decode at
once, the sum of their batch widths as `collect` sizes its workers, 32 for the two Qwen
models), in stream order, so both models of a task and several tasks are in flight together;
one lock serializes the progress lines, and a line cut by a kill of the harness is dropped
on resume (its call is redone, replayed by the proxy). At the end it waits until GET
/v1/learning shows nothing pending, claimed or waiting, stops the processes, checks the
database and exports the namespace to OUT/online.jsonl.

Training tasks: a seeded draw of `--tasks` (default 300) spread evenly over GSM8K, MATH and
MBPP train, less the development slices (`--dev-specs`, whole: the rows the v2 run's dev
phase draws from) and the v2 run's evaluation tasks; drawn from the whole train splits,
or with `--pool-from runs/v2/plan.json` from the v2 run's training pool (its
`train_tasks`), so online and batch memory learn from the same tasks. replay.json says
which and counts the overlap with that pool.

`--chaos`: at `--kills` seeded points of the stream the service (or, with `--worker
separate`, the worker or the service, a seeded choice) is killed with SIGKILL, every other
kill after a seeded delay in [0, --kill-delay-max] s from the start of that call (mid-call
or between calls), the others as soon as that call's answer arrives (before its feedback),
restarted, and the stream goes on: every call in flight then fails and is retried
with the same client id (one stored but not yet answered comes back replayed; replay.json
counts `chaos.replayed`, and each kill's `in_flight`). The end checks
are the "zero lost, zero twice" numbers (online_replay_checks.py lists them; each can fail).

Step `eval` copies --v2-memory to OUT/v2-batch.jsonl once (its SHA-256 in
OUT/v2-batch.json; a changed source or copy is refused), writes OUT/experiment.toml
(vanilla, online = OUT/online.jsonl, v2-batch = OUT/v2-batch.jsonl; the two Qwen models;
[analysis] primary = "online") and OUT/excluded_tasks.json (the training tasks the learn
step streamed, read from WORK/tasks.json, and the development slices): its held-out tasks
are drawn
from GSM8K test, MATH-500 and MBPP test (HumanEval's test split is the v2 run's
evaluation whole), `[eval] exclude` leaves out those ids and the v2 evaluation list, and
each draw is sized so that `--per-benchmark` tasks remain. It needs both memories (an
experiment file naming a missing export does not load) and prints the command that runs
the evaluation (niced, with a persistent --cache under --run-out so parts resume); it does
not run it. Step `compare` writes OUT/secondary.json: the pre-registered secondary
comparison online - v2-batch per model from the evaluation's results (the report compares
each condition against vanilla only).

    python benchmarks/online_replay.py learn --data-dir DATA [--tasks 300] [--chaos]
        [--worker inline|separate] [--pool-from runs/v2/plan.json] [--concurrency N]
    python benchmarks/online_replay.py eval --data-dir DATA [--v2-memory PATH]
    python benchmarks/online_replay.py compare

Writes OUT/replay.json (the command recorded in it), OUT/online.jsonl, OUT/experiment.toml,
OUT/excluded_tasks.json, OUT/v2-batch.jsonl (+ .json), OUT/secondary.json; working files
(memory, progress, logs, key, tasks) under WORK. Modules: online_replay_common.py (tasks,
ids), _procs (the processes), _stream (calls, chaos, progress), _checks, _eval.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from online_replay_checks import check  # noqa: E402 - the sibling modules of this script
from online_replay_common import (  # noqa: E402
    DEV_SPECS,
    EVAL_SPECS,
    MODELS,
    NAMESPACE,
    ROOT,
    TRAIN_SPECS,
    V2_MEMORY,
    V2_PROMPT_CHARS,
    V2_REPLY_TOKENS,
    ReplayError,
    training_tasks,
)
from online_replay_eval import compare_step, eval_step  # noqa: E402
from online_replay_procs import Processes, create_key, free_port  # noqa: E402
from online_replay_stream import Progress, chaos_plan, default_concurrency, drain, stream  # noqa: E402

from memcollab.memory.api import Memory  # noqa: E402

__all__ = ["main", "parse_args", "training_tasks"]


def learn_step(args: argparse.Namespace) -> dict[str, Any]:
    """Stream the training tasks through the proxy, drain the queue, check, export."""
    began = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    lock = (args.work / "replay.lock").open("w")  # held until this process ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ReplayError(f"another replay is running on {args.work}") from None
    if args.concurrency is None:
        args.concurrency = default_concurrency(args)
    tasks, about = training_tasks(args)
    (args.work / "tasks.json").write_text(json.dumps([t.id for t in tasks], indent=1))
    progress = Progress(args.work / "progress.jsonl", retry_errors=args.retry_errors)
    print(
        f"{len(progress.done)}/{len(tasks) * len(args.models)} calls done before;"
        f" {args.concurrency} at a time",
        flush=True,
    )
    key = create_key(args)
    procs = Processes(args, free_port())
    try:
        counts = stream(args, procs, key, tasks, progress)
        learning = drain(args, procs, key)
    finally:
        procs.stop()
    rows = list(progress.done.values())
    result = check(
        args.work / "memory.sqlite", [t.id for t in tasks], args.models, rows, len(progress.kills)
    )
    with Memory.open(args.work / "memory.sqlite", create=False) as memory:
        exported = memory.export(args.out / "online.jsonl", NAMESPACE)
    report = {
        "command": "python " + shlex.join(sys.argv),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "models": list(args.models),
        "distiller": {
            "model": args.distiller,
            "prompt_chars": args.prompt_chars,
            "reply_tokens": args.reply_tokens,
        },
        "worker": args.worker,
        "concurrency": args.concurrency,
        "call_timeout_s": args.call_timeout,
        "chaos": {
            "on": args.chaos,
            "planned": chaos_plan(args, len(tasks) * len(args.models)),
            "made": progress.kills,
            "starts": dict(procs.starts),
            "replayed": sum(bool(r.get("replayed")) for r in rows),
            "retries": sum(int(r.get("retries", 0)) for r in rows),
        },
        # the proxy's memory status per call: applied, none, skipped, or error (memory
        # not found within serve's 5 s memory timeout, or failed)
        "memory_statuses": dict(sorted(Counter(str(r.get("memory")) for r in rows).items())),
        "errors": [{k: r[k] for k in ("task", "model", "error")} for r in rows if "error" in r],
        "tasks": {"count": len(tasks), **about},
        "this_run": {**counts, "wall_s": round(time.time() - began, 1)},
        "served_learning": learning,
        "exported_records": exported,
        **result,
    }
    out = args.out / "replay.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(result["checks"]), flush=True)
    print(f"wrote {out} and {args.out / 'online.jsonl'} ({exported} records)")
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["learn", "eval", "compare"])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--fleet", type=Path, default=None, help="default: the packaged models")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--distiller", default="qwen2.5-coder-1.5b")
    parser.add_argument("--labeller", default="trained", help="who files learned records")
    parser.add_argument("--search-labeller", default="trained", help="serve --labeller")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--train-specs", nargs="+", default=list(TRAIN_SPECS))
    parser.add_argument("--dev-specs", nargs="+", default=list(DEV_SPECS))
    parser.add_argument(
        "--v2-eval", type=Path, default=ROOT / "benchmarks/results/v2/eval_tasks.json"
    )
    parser.add_argument("--pool-from", type=Path, default=None)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--worker", choices=["inline", "separate"], default="inline")
    parser.add_argument("--lease", type=float, default=120.0, help="seconds a claimed pair is held")
    parser.add_argument(
        "--concurrency", type=int, default=None,
        help="calls in flight (default: the models' batch widths summed, as collect does)",
    )  # fmt: skip
    parser.add_argument("--chaos", action="store_true")
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--kill-delay-max", type=float, default=20.0)
    parser.add_argument("--retries", type=int, default=20)
    parser.add_argument("--retry-errors", action="store_true", help="redo error rows")
    parser.add_argument(
        "--call-timeout", type=float, default=3600.0, help="serve --upstream-timeout, s"
    )
    parser.add_argument("--prompt-chars", type=int, default=V2_PROMPT_CHARS)
    parser.add_argument("--reply-tokens", type=int, default=V2_REPLY_TOKENS)
    parser.add_argument("--drain-timeout", type=float, default=7200.0)
    parser.add_argument("--work", type=Path, default=ROOT / "runs/online-replay")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/online")
    parser.add_argument("--v2-memory", type=Path, default=ROOT / V2_MEMORY)
    parser.add_argument("--per-benchmark", type=int, default=100)
    parser.add_argument("--run-out", type=Path, default=ROOT / "runs/online")
    args = parser.parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    args.eval_specs = dict(EVAL_SPECS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.step == "learn":
            report = learn_step(args)
            checks = report["checks"]
            return 0 if checks["passed"] and not checks["calls_failed"] else 1
        if args.step == "eval":
            eval_step(args)
        else:
            compare_step(args)
        return 0
    except ReplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
