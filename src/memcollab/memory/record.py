"""Memory records: reasoning constraints distilled from a contrastive pair, filed by category."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from memcollab.tasks.task import known_domain

MEMORY_FORMAT_VERSION = 4
"""The newest export format this memcollab reads. Format 1: the paper's records; format 2:
constraints may carry a `support` count above 1 (merged near-duplicates); format 3: an
export may hold namespace notes (lines with a `note` key; records stay format 1 or 2);
format 4: an export may hold its namespaces' change history (lines with a `change` key,
memory/store_changes.py). A record is written in the lowest format that holds it, so a
memory without merges stays format 1."""
SUPPORT_FORMAT = 2
NOTE_FORMAT = 3
CHANGE_FORMAT = 4

PairType = Literal["mixed", "tie_break", "own_success", "own_failure", "self_contrast", "near_miss"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Constraint(_Record):
    """One abstract reasoning constraint: When <situation>, enforce <invariant>; avoid <error>."""

    when: str = Field(min_length=1)
    enforce: str = Field(min_length=1)
    avoid: str = Field(min_length=1)
    support: int = Field(default=1, ge=1)
    """How many distilled pairs produced this constraint (near-duplicates merged into it,
    memory/merge.py); 1 unless merged, and then left out of the JSON."""

    @model_serializer(mode="wrap")
    def _without_default_support(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("support") == 1:
            del data["support"]
        return data

    def text(self) -> str:
        """The constraint as one sentence, as the agent sees it."""
        return f"When {self.when}, enforce {self.enforce}; avoid {self.avoid}."


class MemoryRecord(_Record):
    """What one training task contributes to memory (the paper: one record per task).

    `model_pos` / `model_neg` are the models of the preferred and unpreferred trajectory
    (the paper's l+ and l-); either may be None for single-trajectory conditions.
    """

    id: str
    namespace: str = "default"
    domain: str  # a registered domain (memcollab.domains)
    category: str
    subcategory: str
    task_text: str
    task_hash: str
    source_task_id: str
    constraints: tuple[Constraint, ...]
    model_pos: str | None = None
    model_neg: str | None = None
    pair_type: PairType
    distiller: str

    @field_validator("domain")
    @classmethod
    def _known_domain(cls, value: str) -> str:
        return known_domain(value)

    created_at: float
    format_version: int = 1

    @model_validator(mode="before")
    @classmethod
    def _format_of_support(cls, data: Any) -> Any:
        """A record holding a merged constraint (support above 1) is format 2."""
        if not isinstance(data, dict) or data.get("format_version", 1) >= SUPPORT_FORMAT:
            return data
        constraints = data.get("constraints")
        if not isinstance(constraints, list | tuple):
            return data
        for c in constraints:
            support = c.get("support", 1) if isinstance(c, dict) else getattr(c, "support", 1)
            if isinstance(support, int) and support > 1:
                return {**data, "format_version": SUPPORT_FORMAT}
        return data

    def with_constraints(self, constraints: tuple[Constraint, ...]) -> MemoryRecord:
        """This record with other constraints (its format follows their support)."""
        data = self.model_dump()
        data["constraints"] = [c.model_dump() for c in constraints]
        data["format_version"] = 1 if self.format_version <= SUPPORT_FORMAT else self.format_version
        return MemoryRecord.model_validate(data)


def task_hash(text: str) -> str:
    """sha256 of a task's text (whitespace-normalised), used to find duplicates."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def record_id(
    namespace: str,
    source_task_id: str,
    pair_type: str,
    model_pos: str | None,
    model_neg: str | None,
    distiller: str,
) -> str:
    """A deterministic id: the same pair distilled by the same model gets the same id, so
    importing or rebuilding twice never duplicates a record."""
    key = "\x1f".join(
        [namespace, source_task_id, pair_type, model_pos or "", model_neg or "", distiller]
    )
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:20]
