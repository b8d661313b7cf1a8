"""The optional model judge of the v2 screen: after the word rules (memory/semantic.py)
keep a constraint, a model grades it WRONG, VACUOUS or KEEP, and the first two reject it
(reasons `judged_wrong`, `judged_vacuous`). Opt-in: `Distiller(screen="v2",
judge=ModelJudge(client))`, `memcollab distill --screen v2 --judge MODEL`.

Why: the rules reject empty constraints but cannot tell a false one from a true one (the
blind graded sample of the v2 run's memory: 18 of 50 wrong; docs/SCREEN_GRADING.md). Its
prompt (prompts/judge.toml) is the rubric's three grades in short. A reply that names no
grade keeps the constraint and is counted (`unparsed`): the judge never drops what it
could not grade. Greedy, a few tokens: every call is cached by the gateway like any other.
"""

from __future__ import annotations

import re
import threading
import tomllib
from dataclasses import asdict, dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from memcollab.llm.base import ChatRequest, Decoding, user
from memcollab.llm.cache import ModelClient
from memcollab.memory.semantic import JUDGE_REASONS
from memcollab.tasks.task import Task

__all__ = ["JUDGE_REASONS", "JudgeCounts", "ModelJudge", "judge_prompt", "parse_grade"]
_TASK_CHARS = 3000  # the task text shown, at most (the constraint is short)
_GRADE = re.compile(r"\b(WRONG|VACUOUS|KEEP)\b", re.IGNORECASE)


@cache
def judge_prompt() -> dict[str, Any]:
    """The judge's prompt template and version (package data prompts/judge.toml)."""
    raw = files("memcollab").joinpath("prompts/judge.toml").read_text(encoding="utf-8")
    return tomllib.loads(raw)


@dataclass
class JudgeCounts:
    """What the judge did: constraints asked about, and its grades."""

    asked: int = 0
    kept: int = 0
    wrong: int = 0
    vacuous: int = 0
    unparsed: int = 0


class ModelJudge:
    """A `SemanticJudge` (memory/semantic.py) that asks a model; thread-safe counters."""

    def __init__(self, client: ModelClient, max_tokens: int = 8) -> None:
        self.client = client
        self.decoding = Decoding(temperature=0.0, max_tokens=max_tokens)
        self.counts = JudgeCounts()
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        return str(judge_prompt()["version"])

    def __call__(self, constraint: str, task: Task) -> str | None:
        """`judged_wrong`, `judged_vacuous`, or None (keep)."""
        text = judge_prompt()["template"].format(
            constraint=constraint.strip(), task=task.prompt.strip()[:_TASK_CHARS]
        )
        request = ChatRequest(messages=(user(text),), decoding=self.decoding)
        grade = parse_grade(self.client.complete(request).text)
        with self._lock:
            self.counts.asked += 1
            if grade is None:
                self.counts.unparsed += 1
            elif grade == "keep":
                self.counts.kept += 1
            else:
                setattr(self.counts, grade, getattr(self.counts, grade) + 1)
        return None if grade in (None, "keep") else f"judged_{grade}"

    def stats(self) -> dict[str, Any]:
        """The counters and the prompt version, for a build summary."""
        with self._lock:
            return {**asdict(self.counts), "prompt": self.version, "model": self.client.name}


def parse_grade(reply: str) -> str | None:
    """The first grade word of a reply (`wrong`, `vacuous`, `keep`), or None."""
    found = _GRADE.search(reply or "")
    return found.group(1).lower() if found else None
