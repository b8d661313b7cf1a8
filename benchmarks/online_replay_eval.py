"""The online replay's evaluation side (benchmarks/online_replay.py): step `eval` writes the
held-out experiment file (with the v2 memory frozen into OUT first), step `compare` the
pre-registered secondary comparison online - v2-batch from the evaluation's results."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from online_replay_common import ReplayError, sha256_of, stored_tasks, v2_eval_ids

from memcollab.experiment.results import ReportError, load_results
from memcollab.experiment.stats import compare_paired, holm_adjust
from memcollab.memory.store import read_export_with_history
from memcollab.tasks.datasets import load_task_specs, load_tasks

FROZEN = "v2-batch.jsonl"  # the v2 memory as this evaluation serves it (in OUT)
GATE_NOTE = "gate:"  # experiment/gate.py NOTE_PREFIX: the v2 dev phase's note
PART_LIMIT_S = 10_000  # one part of the evaluation: under 170 minutes
SECONDARY = ("v2-batch", "online")  # (baseline, condition): online - v2-batch


def freeze_v2_memory(args: argparse.Namespace) -> dict[str, Any]:
    """Copy the v2 memory (`--v2-memory`) to OUT/v2-batch.jsonl once and record its SHA-256
    (OUT/v2-batch.json). The v2 run's dev phase rewrites its export with a gate note, which
    changes the SHA-256 and so the namespace an import serves it under: every part of this
    evaluation must read one file. Refused (ReplayError) when the copy's SHA-256 is not the
    recorded one, or the source is not the frozen copy's content any more (to keep the
    copy, give it as --v2-memory; to freeze the new file, delete both OUT files)."""
    copy, record = args.out / FROZEN, args.out / "v2-batch.json"
    source = Path(args.v2_memory)
    if not source.is_file():
        raise ReplayError(
            f"the v2 memory {source} does not exist yet: run the v2 run's memory phase first"
        )
    now = sha256_of(source)
    if copy.is_file():
        frozen = json.loads(record.read_text()) if record.is_file() else {}
        have = sha256_of(copy)
        if have != frozen.get("sha256"):
            raise ReplayError(
                f"{copy} has SHA-256 {have[:12]}, not the recorded {str(frozen.get('sha256'))[:12]}"
            )
        if now != have:
            raise ReplayError(
                f"{source} (SHA-256 {now[:12]}) is not the frozen {copy} ({have[:12]}): give"
                f" --v2-memory {copy} to keep the frozen one"
            )
        return dict(frozen)
    _, notes, _ = read_export_with_history(source)
    frozen = {
        "source": str(source),
        "sha256": now,
        "gate_notes": sorted(n.key for n in notes if n.key.startswith(GATE_NOTE)),
        "frozen_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = copy.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    if sha256_of(tmp) != now:
        raise ReplayError(f"{source} changed while it was copied; run the eval step again")
    tmp.replace(copy)
    record.write_text(json.dumps(frozen, indent=1) + "\n")
    return frozen


def _draw_spec(
    base: str, want: int, seed: int, left_out: set[str], data_dir: Path | None
) -> tuple[str, int]:
    """The smallest seeded draw of `base` that keeps `want` tasks outside `left_out`."""
    total = len(load_tasks(base, data_dir))
    for size in range(want, total + 1):
        spec = f"{base}[~{size}@{seed}]"
        kept = sum(t.id not in left_out for t in load_tasks(spec, data_dir))
        if kept >= want:
            return spec, kept
    raise ReplayError(f"{base}: fewer than {want} tasks are held out")


def eval_step(args: argparse.Namespace) -> dict[str, Any]:
    """OUT/experiment.toml and OUT/excluded_tasks.json (see the main module's doc)."""
    # An experiment file whose memories are missing cannot load (and a committed one must).
    if not (args.out / "online.jsonl").is_file():
        raise ReplayError(
            f"the online memory {args.out / 'online.jsonl'} does not exist yet: run the learn"
            " step first"
        )
    training = stored_tasks(args)
    v2_eval = v2_eval_ids(args)
    frozen = freeze_v2_memory(args)
    dev = sorted({t.id for t in load_task_specs(args.dev_specs, args.data_dir)})
    mine = sorted(set(training) | set(dev))
    (args.out / "excluded_tasks.json").write_text(
        json.dumps(
            {"why": {"replay_training": len(training), "development": len(dev)}, "tasks": mine},
            indent=1,
        )
        + "\n"
    )
    left_out = set(mine) | v2_eval
    specs = {
        bench: _draw_spec(base, args.per_benchmark, args.seed, left_out, args.data_dir)
        for bench, base in args.eval_specs.items()
    }
    toml_path = args.out / "experiment.toml"
    here = toml_path.parent.resolve()

    def rel(path: Path) -> str:
        return os.path.relpath(Path(path).resolve(), here)

    lines = [
        "# Online memory (issue 28), generated by benchmarks/online_replay.py eval:",
        f"#   {'python ' + shlex.join(sys.argv)}",
        "# online = the replay's learned namespace; v2-batch = the v2 run's batch memory, frozen",
        f"# here from {frozen['source']} (SHA-256 {frozen['sha256']}, v2-batch.json).",
        "# Held out: [eval] exclude leaves out the v2 run's evaluation tasks, the replay's",
        f"# training tasks and the development slices; each draw keeps {args.per_benchmark} tasks.",
        'name = "online"',
        f"out = {json.dumps(rel(args.run_out))}",
        *([f"fleet = {json.dumps(rel(args.fleet))}"] if args.fleet else []),
        f"seed = {args.seed}",
        f"eval_models = {json.dumps(list(args.models))}",
        'conditions = ["vanilla", "online", "v2-batch"]',
        "",
        "[agent]   # as the v2 run",
        'max_turns = 4\nmax_tokens = 384\nrepair = "live"',
        "",
        '[memory]\nlabeller = "trained"   # both memories\' records were filed by it',
        "",
        "[eval]",
        *[
            f"{bench} = {json.dumps(spec)}   # {kept} held out"
            for bench, (spec, kept) in specs.items()
        ],
        f"exclude = {json.dumps(['excluded_tasks.json', rel(args.v2_eval)])}",
        "",
        '[condition.online]\nkind = "memcollab"\nmemory = "online.jsonl"',
        "",
        f'[condition.v2-batch]\nkind = "memcollab"\nmemory = "{FROZEN}"',
        "",
        '[analysis]\nprimary = "online"\nbaseline = "vanilla"',
    ]
    toml_path.write_text("\n".join(lines) + "\n")
    data = f" --data-dir {shlex.quote(str(args.data_dir))}" if args.data_dir else ""
    shown = (
        os.path.relpath(toml_path) if toml_path.resolve().is_relative_to(Path.cwd()) else toml_path
    )
    cache = shlex.quote(str(Path(args.run_out) / "calls.sqlite"))
    # A persistent call cache: each part (under 170 min) resumes from the stored calls.
    command = f"nice -n 10 memcollab experiment run {shown} --cache {cache}{data}"
    print(f"wrote {toml_path}; run the evaluation (in parts; rerun to resume) with:\n  {command}")
    return {"toml": str(toml_path), "specs": specs, "command": command, "v2_memory": frozen}


def compare_step(args: argparse.Namespace) -> dict[str, Any]:
    """The pre-registered secondary comparison, online - v2-batch per model, pooled over
    the complete held-out tasks (and per benchmark): paired difference, bootstrap 95%
    interval, exact McNemar p, Holm-adjusted across the models. Written to
    OUT/secondary.json (the report compares every condition against vanilla only)."""
    try:
        results = load_results(args.run_out)
    except ReportError as exc:
        raise ReplayError(str(exc)) from None
    baseline, condition = SECONDARY
    missing = [c for c in SECONDARY if c not in results.conditions]
    if missing:
        raise ReplayError(f"{args.run_out} has no condition {', '.join(missing)}")
    rows: list[dict[str, Any]] = []
    for model in results.models:
        base = {(r.benchmark, r.task_id): r.correct for r in results.cell(model, baseline)}
        cond = {(r.benchmark, r.task_id): r.correct for r in results.cell(model, condition)}
        for bench in [*results.benchmarks, "all"]:
            keys = sorted(k for k in base if k in cond and bench in (k[0], "all"))
            if not keys:
                continue
            c = compare_paired([base[k] for k in keys], [cond[k] for k in keys], seed=args.seed)
            rows.append({"model": model, "benchmark": bench, **dataclasses.asdict(c)})
    pooled = [r for r in rows if r["benchmark"] == "all"]
    for row, p in zip(pooled, holm_adjust([r["p_value"] for r in pooled]), strict=True):
        row["holm_p_across_models"] = p
    report = {
        "comparison": f"{condition} - {baseline}",
        "predicted": "negative or zero (PREREGISTRATION.md)",
        "tasks_complete": {b: len(ids) for b, ids in results.complete_tasks.items()},
        "tasks_planned": results.planned_tasks,
        "rows": rows,
    }
    out = args.out / "secondary.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return report
