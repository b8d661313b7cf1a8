"""The few-shot completion frame for base models that have no chat template."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files

from memcollab.llm.base import Message


@dataclass(frozen=True)
class CompletionFrame:
    """Renders chat messages as one plain-text prompt a base model continues."""

    preamble: str
    system_prefix: str
    user_prefix: str
    assistant_prefix: str
    separator: str
    stop: tuple[str, ...]
    examples: tuple[tuple[str, str], ...]
    digest: str

    def render(self, messages: tuple[Message, ...] | list[Message]) -> str:
        """The prompt text: preamble, examples, the conversation, an open assistant turn."""
        parts = [self.preamble.rstrip("\n")]
        for question, answer in self.examples:
            parts.append(f"{self.user_prefix}{question}\n{self.assistant_prefix} {answer}")
        turns: list[str] = []
        for message in messages:
            if message.role == "system":
                turns.append(f"{self.system_prefix}{message.content}")
            elif message.role == "user":
                turns.append(f"{self.user_prefix}{message.content}")
            else:
                turns.append(f"{self.assistant_prefix} {message.content}")
        parts.append("\n".join(turns) + f"\n{self.assistant_prefix}")
        return self.separator.join(parts)


@lru_cache(maxsize=1)
def default_frame() -> CompletionFrame:
    """The frame shipped as package data (prompts/base_frame.toml)."""
    raw = files("memcollab").joinpath("prompts/base_frame.toml").read_bytes()
    data = tomllib.loads(raw.decode("utf-8"))
    return CompletionFrame(
        preamble=data["preamble"],
        system_prefix=data["system_prefix"],
        user_prefix=data["user_prefix"],
        assistant_prefix=data["assistant_prefix"],
        separator=data["separator"],
        stop=tuple(data["stop"]),
        examples=tuple((e["user"], e["assistant"]) for e in data["examples"]),
        digest=hashlib.sha256(raw).hexdigest()[:16],
    )
