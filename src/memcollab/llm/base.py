"""The model protocol every backend implements, and the records that cross it.

All records are frozen pydantic models, so they serialise to JSON and back exactly.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Message(_Record):
    """One chat message."""

    role: Role
    content: str


class Decoding(_Record):
    """Decoding parameters of one request."""

    temperature: float = Field(default=0.0, ge=0.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=512, ge=1)
    stop: tuple[str, ...] = ()
    seed: int | None = 42


class ChatRequest(_Record):
    """Chat messages plus decoding parameters, and which sample of that prompt this is.

    `sample_index` keeps several samples of one prompt distinct (in the cache and,
    for seeded samplers, in the seed actually used).
    """

    messages: tuple[Message, ...]
    decoding: Decoding = Decoding()
    sample_index: int = Field(default=0, ge=0)

    def cache_key(self, model_identity: str) -> str:
        """A stable sha256 over the model identity and the full request."""
        payload = {"model": model_identity, "request": self.model_dump(mode="json")}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def effective_seed(self) -> int | None:
        """The seed a seeded sampler should use: the base seed offset by the sample index."""
        if self.decoding.seed is None:
            return None
        return self.decoding.seed + self.sample_index


class Usage(_Record):
    """Token counts of one call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Completion(_Record):
    """What a model returned for one request."""

    text: str
    finish_reason: str
    usage: Usage = Usage()
    latency_s: float = 0.0
    model: str = ""
    cached: bool = False


def user(content: str) -> Message:
    """Shorthand for a user message."""
    return Message(role="user", content=content)


def system(content: str) -> Message:
    """Shorthand for a system message."""
    return Message(role="system", content=content)


def assistant(content: str) -> Message:
    """Shorthand for an assistant message."""
    return Message(role="assistant", content=content)


@runtime_checkable
class Model(Protocol):
    """A backend that answers chat requests. Implementations may block; see `ModelClient`."""

    name: str

    def identity(self) -> str:
        """What makes outputs reproducible: weights sha256, or endpoint plus model name."""
        ...

    def concurrency(self) -> tuple[str, int]:
        """A key shared by calls that compete for one resource, and how many may run at once."""
        ...

    def complete(self, request: ChatRequest) -> Completion:
        """Answer one request (blocking)."""
        ...
