"""The Trajectory record: everything one agent did on one task, and how it was judged.

Frozen pydantic models of JSON-native fields only, so `Trajectory.model_validate_json(
t.model_dump_json()) == t` holds exactly, today and for files written by older versions of
the same `format_version`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

from memcollab.llm.base import Message

FORMAT_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Optional(_Record):
    """A record with fields added after FORMAT_VERSION 1: left out of its JSON while they hold
    their defaults, so the records of runs that do not use them stay byte-identical."""

    _omit_when_default: ClassVar[dict[str, object]] = {}

    @model_serializer(mode="wrap")
    def _drop_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name, default in self._omit_when_default.items():
            if name in data and data[name] == default:
                del data[name]
        return data


class ToolRun(_Record):
    """Code the loop ran for the agent: a Python snippet, or the candidate on visible tests."""

    kind: Literal["python", "visible_tests"]
    code: str
    status: str
    output: str
    duration_s: float


class Step(_Optional):
    """One turn: one model call (two when the reply was resampled), and what the loop did
    with the reply."""

    _omit_when_default: ClassVar[dict[str, object]] = {"resampled": False}

    turn: int
    reply: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    cached: bool
    tool: ToolRun | None = None
    feedback: str | None = None
    resampled: bool = False  # repair "live": the first reply repeated an earlier candidate


class Trajectory(_Optional):
    """One agent's attempt at one task."""

    _omit_when_default: ClassVar[dict[str, object]] = {"resampled": 0}

    task_id: str
    domain: str  # a registered domain (memcollab.domains)
    model: str
    condition: str = "vanilla"
    memory_ids: tuple[str, ...] = ()
    retrieval: dict[str, Any] | None = None  # where the memory came from (experiments)
    sample_index: int = 0
    seed: int | None = None
    messages: tuple[Message, ...]
    steps: tuple[Step, ...]
    final_answer: str | None
    correct: bool
    check: dict[str, Any]
    finish: Literal["answer", "max_turns", "error"]
    error: str | None = None
    turns: int
    prompt_tokens: int
    completion_tokens: int
    wall_s: float
    format_version: int = FORMAT_VERSION
    resampled: int = 0  # steps whose reply was asked again (repair "live")

    def key(self) -> tuple[str, str, str, int]:
        """What identifies a trajectory in a run: task, model, condition, sample."""
        return (self.task_id, self.model, self.condition, self.sample_index)
