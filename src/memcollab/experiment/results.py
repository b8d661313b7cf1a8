"""The results of an experiment: the per-task table and the complete-task view of it.

`results.jsonl` holds one row per planned (benchmark, task, model, condition) cell that is
stored. Reports and plots read `Results`, which keeps only *complete* tasks: tasks for
which every planned (model, condition) cell is stored, so conditions are compared on the
same tasks however the run was split.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memcollab.atomic import replace_when_done
from memcollab.collect import TrajectoryStore
from memcollab.errors import UserError
from memcollab.trajectory import Trajectory


class ReportError(UserError):
    """An experiment folder that cannot be reported on."""


@dataclass
class ResultRow:
    """One line of the per-task table."""

    benchmark: str
    task_id: str
    model: str
    condition: str
    correct: bool
    turns: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    finish: str
    record_ids: list[str] = field(default_factory=list)
    constraints: int = 0
    level: str | None = None
    category: str | None = None
    subcategory: str | None = None
    gate: str | None = None  # a gated condition: "served" or "withheld" (experiment/gate.py)

    def as_json(self) -> dict[str, Any]:
        """The row for results.jsonl (`gate` only where a gate applied, so the tables of
        runs without one keep their shape)."""
        row = dict(self.__dict__)
        if row["gate"] is None:
            del row["gate"]
        return row


def result_rows(plan: dict[str, Any], trajectories: Sequence[Trajectory]) -> list[ResultRow]:
    """The per-task table of the planned (benchmark, task, model, condition) cells stored."""
    bench_of = {tid: bench for bench, ids in plan["benchmarks"].items() for tid in ids}
    conditions = set(plan["conditions"])
    models = set(plan["models"])
    rows: list[ResultRow] = []
    for t in trajectories:
        bench = bench_of.get(t.task_id)
        if bench is None or t.condition not in conditions or t.model not in models:
            continue
        note = t.retrieval or {}
        rows.append(
            ResultRow(
                benchmark=bench,
                task_id=t.task_id,
                model=t.model,
                condition=t.condition,
                correct=t.correct,
                turns=t.turns,
                prompt_tokens=t.prompt_tokens,
                completion_tokens=t.completion_tokens,
                wall_s=round(t.wall_s, 2),
                finish=t.finish,
                record_ids=list(note.get("record_ids", [])),
                constraints=int(note.get("constraints", 0)),
                level=note.get("level"),
                category=note.get("category"),
                subcategory=note.get("subcategory"),
                gate=note.get("gate"),
            )
        )
    order = {tid: i for i, tid in enumerate(bench_of)}
    cond_order = {c: i for i, c in enumerate(plan["conditions"])}
    rows.sort(key=lambda r: (order[r.task_id], cond_order[r.condition], r.model))
    return rows


def write_results(out: Path, plan: dict[str, Any], store: TrajectoryStore) -> Path:
    """results.jsonl: the per-task table (written atomically)."""
    path = out / "results.jsonl"
    with replace_when_done(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        for row in result_rows(plan, list(store)):
            fh.write(json.dumps(row.as_json()) + "\n")
    return path


@dataclass
class Results:
    """The per-task table of a run, restricted to complete tasks, with its plan."""

    plan: dict[str, Any]
    rows: list[ResultRow]
    planned_tasks: dict[str, int]
    complete_tasks: dict[str, list[str]]

    @property
    def models(self) -> list[str]:
        return list(self.plan["models"])

    @property
    def conditions(self) -> list[str]:
        return list(self.plan["conditions"])

    @property
    def benchmarks(self) -> list[str]:
        return list(self.plan["benchmarks"])

    def cell(self, model: str, condition: str, benchmark: str | None = None) -> list[ResultRow]:
        return [
            r
            for r in self.rows
            if r.model == model
            and r.condition == condition
            and (benchmark is None or r.benchmark == benchmark)
        ]


def load_results(folder: str | Path) -> Results:
    """Read plan.json and the evaluation trajectories of an experiment folder."""
    folder = Path(folder)
    plan_path = folder / "plan.json"
    if not plan_path.is_file():
        raise ReportError(
            f"{folder} is not an experiment folder (plan.json is missing)",
            "give the `out` folder of `memcollab experiment run`",
        )
    plan = json.loads(plan_path.read_text())
    store = TrajectoryStore.if_present(folder / "eval")
    if store is not None:
        rows = result_rows(plan, list(store))
    elif (folder / "results.jsonl").is_file():
        rows = [ResultRow(**json.loads(line)) for line in (folder / "results.jsonl").open()]
    else:
        raise ReportError(f"{folder} holds no evaluation results yet", "run the experiment first")
    cells = {(r.task_id, r.model, r.condition) for r in rows}
    complete: dict[str, list[str]] = {}
    for bench, ids in plan["benchmarks"].items():
        complete[bench] = [
            tid
            for tid in ids
            if all((tid, m, c) in cells for m in plan["models"] for c in plan["conditions"])
        ]
    keep = {tid for ids in complete.values() for tid in ids}
    return Results(
        plan=plan,
        rows=[r for r in rows if r.task_id in keep],
        planned_tasks={b: len(ids) for b, ids in plan["benchmarks"].items()},
        complete_tasks=complete,
    )


def accuracy(rows: Sequence[ResultRow]) -> float | None:
    return sum(r.correct for r in rows) / len(rows) if rows else None


def average_accuracy(results: Results, model: str, condition: str) -> float | None:
    """Mean of the per-benchmark accuracies (the paper's average column)."""
    values = [accuracy(results.cell(model, condition, b)) for b in results.benchmarks]
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def describe_phase(name: str, phase: dict[str, Any]) -> str:
    """What one phase of a part computed ("memory: 31 new records in 2.8 min (stopped);
    410 model calls, 96 replayed"; "(failed: ERROR)" where the phase raised)."""
    unit = "new records" if name == "memory" else "new"
    text = f"{name}: {phase['computed']} {unit} in {phase['seconds'] / 60:.1f} min"
    if phase.get("interrupted"):
        text += " (stopped)"
    if phase.get("failed"):
        text += f" (failed: {phase['failed']})"
    if "model_calls" in phase:  # parts written before these counters have no such keys
        text += f"; {phase['model_calls']} model calls, {phase['replayed_calls']} replayed"
    return text
