"""Judge a final answer against a task by its domain's rules (math: answer equivalence,
code: hidden tests); `CheckResult` and the math answer style live here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from memcollab.tasks.sandbox import SandboxLimits
from memcollab.tasks.task import Task


@dataclass(frozen=True)
class CheckResult:
    """Whether the answer is right, with the checker's details (JSON-native)."""

    correct: bool
    details: dict[str, Any]


def answer_style(task: Task) -> Literal["math", "gsm8k"]:
    """How a math task's answer is written: GSM8K also accepts `#### N`, `The answer is N`."""
    return "gsm8k" if task.metadata.get("answer_style") == "gsm8k" else "math"


def check(task: Task, final: str | None, limits: SandboxLimits | None = None) -> CheckResult:
    """Judge `final` (math: the model's final reply; code: the candidate program) by the
    rules of the task's domain (`memcollab.domains`)."""
    from memcollab.domains import get_domain  # the domains build on this module

    return get_domain(task.domain).check(task, final, limits or SandboxLimits())
