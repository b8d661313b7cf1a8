"""Memory records: reasoning constraints distilled from a contrastive pair, filed by category."""

from __future__ import annotations

import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from memcollab.tasks.task import known_domain

MEMORY_FORMAT_VERSION = 1

PairType = Literal["mixed", "tie_break", "own_success", "own_failure", "self_contrast", "near_miss"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Constraint(_Record):
    """One abstract reasoning constraint: When <situation>, enforce <invariant>; avoid <error>."""

    when: str = Field(min_length=1)
    enforce: str = Field(min_length=1)
    avoid: str = Field(min_length=1)

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
    format_version: int = MEMORY_FORMAT_VERSION


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
