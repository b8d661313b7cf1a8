"""What the online replay's modules share (benchmarks/online_replay.py): its constants, its
error, the client attempt ids, and its training tasks (drawn by the learn step, stored in
WORK/tasks.json, read back by the eval step)."""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from memcollab.tasks.datasets import load_task_specs, load_tasks
from memcollab.tasks.task import Task

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "online"
MODELS = ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")
TRAIN_SPECS = ("gsm8k:train", "math:train", "mbpp:train")
DEV_SPECS = ("gsm8k:dev", "math:dev", "mbpp:validation", "humaneval:train")
EVAL_SPECS = {"gsm8k": "gsm8k:test", "math500": "math500:test", "mbpp": "mbpp:test"}
V2_MEMORY = "runs/v2/memories/memcollab-near-miss.by.qwen2.5-coder-1.5b.jsonl"
V2_PROMPT_CHARS, V2_REPLY_TOKENS = 4000, 200  # benchmarks/results/v2/experiment.toml [memory]


class ReplayError(RuntimeError):
    """The replay cannot go on (the message says why); main prints it and exits 2."""


def ids_of(path: Path) -> set[str]:
    """The task ids of a plan or task-list file (`train_tasks`, `benchmarks`)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    found = set(data.get("train_tasks", []))
    for ids in (data.get("benchmarks") or {}).values():
        found |= set(ids)
    return found


def v2_eval_ids(args: argparse.Namespace) -> set[str]:
    """The v2 run's evaluation tasks (`--v2-eval`); a missing file is an error, never an
    empty list (the held-out draw would then overlap the v2 evaluation unnoticed)."""
    if not Path(args.v2_eval).is_file():
        raise ReplayError(f"--v2-eval {args.v2_eval} does not exist (the v2 evaluation list)")
    return ids_of(args.v2_eval)


def training_tasks(args: argparse.Namespace) -> tuple[list[Task], dict[str, Any]]:
    """The seeded draw of the replay's training tasks, interleaved across the datasets."""
    left_out = v2_eval_ids(args)
    dev_ids = {t.id for t in load_task_specs(args.dev_specs, args.data_dir)}
    pool = ids_of(args.pool_from) if args.pool_from else None
    per_dataset: list[list[Task]] = []
    share, extra = divmod(args.tasks, len(args.train_specs))
    for i, spec in enumerate(args.train_specs):
        candidates = [
            t
            for t in load_tasks(spec, args.data_dir)
            if t.id not in dev_ids and t.id not in left_out and (pool is None or t.id in pool)
        ]
        want = share + (i < extra)
        if want > len(candidates):
            raise ReplayError(f"{spec}: {want} tasks wanted, {len(candidates)} available")
        rng = random.Random(f"{args.seed}:{spec}")
        per_dataset.append(rng.sample(candidates, want))
    tasks = [t for group in zip_longest_all(per_dataset) for t in group]
    about: dict[str, Any] = {
        "train_specs": list(args.train_specs),
        "drawn_from": f"the v2 training pool ({args.pool_from})" if pool else "whole splits",
        "dev_specs_left_out": list(args.dev_specs),
        "per_dataset": {
            spec: len(g) for spec, g in zip(args.train_specs, per_dataset, strict=True)
        },
    }
    v2_plan = args.pool_from or ROOT / "runs/v2/plan.json"
    if Path(v2_plan).is_file():
        v2_pool = set(json.loads(Path(v2_plan).read_text()).get("train_tasks", []))
        about["in_v2_training_pool"] = sum(t.id in v2_pool for t in tasks)
    return tasks, about


def stored_tasks(args: argparse.Namespace) -> list[str]:
    """The training task ids the learn step drew and streamed (WORK/tasks.json)."""
    path = args.work / "tasks.json"
    if not path.is_file():
        raise ReplayError(f"{path} does not exist: run the learn step first")
    ids: list[str] = json.loads(path.read_text(encoding="utf-8"))
    return ids


def zip_longest_all(groups: Sequence[Sequence[Task]]) -> Iterator[list[Task]]:
    """Round-robin: the first task of each group, then the second, ..."""
    for i in range(max((len(g) for g in groups), default=0)):
        yield [g[i] for g in groups if i < len(g)]


def client_id(task_id: str, model: str) -> str:
    """The attempt id the client sends for (task, model): the same on every retry/rerun."""
    digest = hashlib.sha256(f"{NAMESPACE}\n{task_id}\n{model}".encode()).hexdigest()
    return f"replay-{digest[:32]}"


def sha256_of(path: Path) -> str:
    """A file's SHA-256 (hex)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
