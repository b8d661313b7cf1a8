"""Judge a final answer against a task: math by answer equivalence, code by hidden tests."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

from memcollab.tasks.math_check import check_math
from memcollab.tasks.sandbox import SandboxLimits, run_tests
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
    """Judge `final` (math: the model's final reply; code: the candidate program)."""
    if final is None:
        return CheckResult(False, {"reason": "no_answer"})
    if task.domain == "math":
        if task.answer is None:  # a user's free-form task: nothing to check against
            return CheckResult(False, {"reason": "no_reference"})
        verdict = check_math(final, task.answer, style=answer_style(task))
        return CheckResult(verdict.correct, asdict(verdict))
    if not task.tests:
        return CheckResult(False, {"reason": "no_tests"})
    result = run_tests(final, list(task.tests), task.setup_code, limits or SandboxLimits())
    details = {
        "status": result.status,
        "passed_tests": result.passed_tests,
        "total_tests": result.total_tests,
        "failed_test": result.failed_test,
        "error": result.error,
        "duration_s": round(result.duration_s, 3),
    }
    return CheckResult(bool(result.passed), cast(dict[str, Any], details))
