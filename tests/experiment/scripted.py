"""A scripted two-model fleet and tiny task files for experiment tests.

`right` answers every math task correctly; `wrong` answers wrongly unless its prompt holds
a memory block, so any condition that hands it constraints turns it right, and the
effect of each condition is known in advance. Both can distil and classify: tasks that
say "Add" are Algebra, tasks that say "Multiply" are Prealgebra.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DISTILLED = (
    "1. When combining two quantities, enforce reading which operation is asked;"
    " avoid multiplying when the task asks for a sum."
)
CLASSIFY = {  # in order: the topic question also shows the task
    "Which topic fits it best?": "functions",
    "Math problem:\nAdd": "Algebra",
    "Math problem:\nMultiply": "Prealgebra",
}


def rules(answer: str, with_memory: str | None = None) -> dict[str, str]:
    out = {"reusable reasoning rules": DISTILLED, **CLASSIFY}
    if with_memory is not None:
        out["<memory>"] = with_memory
    out["Math problem"] = "1"  # anything else a classifier asks
    out[""] = answer
    return out


def fleet_dict() -> dict[str, Any]:
    return {
        "models": {
            "right": {
                "provider": "scripted",
                "strength": 2,
                "rules": rules("I add them. \\boxed{4}"),
            },
            "wrong": {
                "provider": "scripted",
                "strength": 1,
                "rules": rules("I multiply wrongly. \\boxed{5}", "With the rule: \\boxed{4}"),
            },
        }
    }


def fleet_toml() -> str:
    lines = []
    for name, spec in fleet_dict()["models"].items():
        lines += [f"[models.{name}]", f'provider = "{spec["provider"]}"']
        lines.append(f"strength = {spec['strength']}")
        lines.append(f"[models.{name}.rules]")
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in spec["rules"].items()]
    return "\n".join(lines) + "\n"


def task_file(path: Path, prefix: str, cases: str) -> str:
    """A JSONL task file: for each letter, an Add and a Multiply task whose answer is 4."""
    rows = []
    for letter in cases:
        rows.append(
            {"id": f"{prefix}-add-{letter}", "q": f"Add two and two, case {letter}.", "a": 4}
        )
        rows.append(
            {"id": f"{prefix}-mul-{letter}", "q": f"Multiply two by two, case {letter}.", "a": 4}
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"jsonl:{path}#domain=math,prompt=q,answer=a,id=id"


def experiment_dict(tmp_path: Path, conditions: list[str] | None = None) -> dict[str, Any]:
    return {
        "name": "scripted",
        "out": str(tmp_path / "out"),
        "seed": 3,
        "agent": {"max_turns": 2},
        "train": {"tasks": [task_file(tmp_path / "train.jsonl", "train", "ab")]},
        "eval": {"toy": task_file(tmp_path / "test.jsonl", "test", "xyz")},
        "conditions": conditions
        or ["vanilla", "own", "other", "memcollab", "placebo", "memcollab-p1"],
    }
