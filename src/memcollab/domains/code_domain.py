"""The code domain: the last ```python block of a reply is the candidate; it runs against
the task's visible checks, a pass ends the loop and a failure is fed back (under the agent's
repair mode "live", with the actual values of a failed assert: `code_repair.py`). Judged by
the hidden tests in the sandbox."""

from __future__ import annotations

from typing import Any, cast

from memcollab.domains.base import (
    Domain,
    Reaction,
    agent_prompts,
    clip,
    python_blocks,
    register_domain,
)
from memcollab.domains.code_repair import live_failure_details, normalise_code
from memcollab.tasks.checkers import CheckResult
from memcollab.tasks.sandbox import CodeRunner, SandboxLimits, run_tests
from memcollab.tasks.task import Task
from memcollab.trajectory import ToolRun


class CodeDomain(Domain):
    """MBPP, HumanEval and any task with unit tests."""

    name = "code"
    taxonomy = "code"
    prompt_is_code = True

    def user_message(self, task: Task) -> str:
        p = self.prompts()
        if task.prompt.lstrip().startswith(("def ", "from ", "import ")):
            return p["user_function"].format(prompt=task.prompt)
        return p["user_text"].format(prompt=task.prompt)

    def react(self, task: Task, reply: str, runner: CodeRunner, limits: SandboxLimits) -> Reaction:
        return self._react(task, reply, runner, limits, live=False)

    def react_live(
        self, task: Task, reply: str, runner: CodeRunner, limits: SandboxLimits
    ) -> Reaction:
        """`react`, but a failed assert's feedback shows what its operands actually were
        (`code_repair.live_failure_details`, texts from the [code_live] prompts)."""
        return self._react(task, reply, runner, limits, live=True)

    def candidate(self, reply: str) -> str | None:
        """The reply's candidate (its last code block), whitespace-normalised."""
        blocks = python_blocks(reply)
        return normalise_code(blocks[-1]) if blocks else None

    def _react(
        self, task: Task, reply: str, runner: CodeRunner, limits: SandboxLimits, *, live: bool
    ) -> Reaction:
        p = self.prompts()
        blocks = python_blocks(reply)
        if not blocks:
            return Reaction(None, p["no_code"], False, None)
        candidate = blocks[-1]
        if not task.visible_tests:
            return Reaction(None, "", True, candidate)
        verdict = runner.run_tests(candidate, list(task.visible_tests), task.setup_code, limits)
        details = clip(
            "\n".join(
                x
                for x in (verdict.failed_test and f"Test: {verdict.failed_test}", verdict.error)
                if x
            )
            or verdict.status
        )
        tool = ToolRun(
            kind="visible_tests",
            code=candidate,
            status=verdict.status,
            output=details,
            duration_s=round(verdict.duration_s, 3),
        )
        if verdict.passed:
            return Reaction(tool, "", True, candidate)
        if live:
            shown = live_failure_details(task, candidate, verdict, details, runner, limits)
            feedback = agent_prompts()["code_live"]["test_failed"].format(details=shown)
            return Reaction(tool, feedback, False, candidate)
        return Reaction(tool, p["test_failed"].format(details=details), False, candidate)

    def check(self, task: Task, final: str | None, limits: SandboxLimits) -> CheckResult:
        if final is None:
            return CheckResult(False, {"reason": "no_answer"})
        if not task.tests:
            return CheckResult(False, {"reason": "no_tests"})
        result = run_tests(final, list(task.tests), task.setup_code, limits)
        details = {
            "status": result.status,
            "passed_tests": result.passed_tests,
            "total_tests": result.total_tests,
            "failed_test": result.failed_test,
            "error": result.error,
            "duration_s": round(result.duration_s, 3),
        }
        return CheckResult(bool(result.passed), cast(dict[str, Any], details))


register_domain(CodeDomain())
