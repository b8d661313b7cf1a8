"""The red-team set: poisoned memory submissions, each with the reason it must be refused for.

`poisoned.jsonl`, one case a line: `id`, `expected` (a reason of
`memcollab.memory.poison.POISON_REASONS`), `obfuscation` (how it hides), and either a
`constraint` ({when, enforce, avoid}: filed in an otherwise honest record) or `record`
(fields that replace those of an honest record). `load_redteam()` reads it; `case.record()`
is the `MemoryRecord` to submit (its id is the case id), `case.record_json()` the same as a
JSONL line, so any surface (Memory, REST, MCP, the proxy) can push the same set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memcollab.memory.record import Constraint, MemoryRecord, task_hash

REDTEAM_FILE = Path(__file__).with_name("poisoned.jsonl")
HONEST = {
    "when": "adding two fractions",
    "enforce": "a common denominator before adding the numerators",
    "avoid": "adding the denominators together",
}
TASK = "Add 1/2 and 1/3 and give the result as a fraction."


@dataclass(frozen=True)
class RedTeamCase:
    """One poisoned submission and the reason the screen must give."""

    id: str
    expected: str
    obfuscation: str
    constraint: dict[str, str] | None
    fields: dict[str, Any]

    def record(self, namespace: str = "default") -> MemoryRecord:
        """The submission as a record: an honest constraint, then the poisoned one (or
        the honest record with the poisoned fields)."""
        constraints = [Constraint.model_validate(HONEST)]
        if self.constraint is not None:
            constraints.append(Constraint.model_validate(self.constraint))
        data: dict[str, Any] = {
            "id": self.id,
            "namespace": namespace,
            "domain": "math",
            "category": "Arithmetic",
            "subcategory": "fractions",
            "task_text": TASK,
            "task_hash": task_hash(TASK),
            "source_task_id": f"redteam/{self.id}",
            "constraints": constraints,
            "model_pos": "big",
            "model_neg": "small",
            "pair_type": "mixed",
            "distiller": "big",
            "created_at": 1_800_000_000.0,
        }
        data.update(self.fields)
        if "task_text" in self.fields:
            data["task_hash"] = task_hash(self.fields["task_text"])
        return MemoryRecord.model_validate(data)

    def record_json(self, namespace: str = "default") -> str:
        """The record as one JSONL line (the export format)."""
        return self.record(namespace).model_dump_json()


def load_redteam(path: Path = REDTEAM_FILE) -> list[RedTeamCase]:
    """Every case of the red-team file, in file order."""
    cases = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            obj = json.loads(line)
            cases.append(
                RedTeamCase(
                    id=obj["id"],
                    expected=obj["expected"],
                    obfuscation=obj["obfuscation"],
                    constraint=obj.get("constraint"),
                    fields=obj.get("record", {}),
                )
            )
    return cases
