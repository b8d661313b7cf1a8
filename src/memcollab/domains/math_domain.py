"""The math domain: a final answer ends the loop; a ```python block is run and its output
sent back; anything else gets a nudge. Judged by answer equivalence (math-verify)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

from memcollab.domains.base import Domain, Reaction, clip, python_blocks, register_domain
from memcollab.tasks.checkers import CheckResult, answer_style
from memcollab.tasks.math_check import check_math, extract_answer
from memcollab.tasks.sandbox import CodeRunner, SandboxLimits
from memcollab.tasks.task import Task
from memcollab.trajectory import Step, ToolRun


class MathDomain(Domain):
    """GSM8K, MATH and any task with a reference answer."""

    name = "math"
    taxonomy = "math"

    def react(self, task: Task, reply: str, runner: CodeRunner, limits: SandboxLimits) -> Reaction:
        p = self.prompts()
        if extract_answer(reply, answer_style(task)) is not None:
            return Reaction(None, "", True, reply)
        blocks = python_blocks(reply)
        if not blocks:
            return Reaction(None, p["no_answer"], False, None)
        result = runner.run_code(blocks[-1], limits)
        output = result.stdout + (f"\n{result.stderr}" if result.stderr else "")
        if result.status == "timeout":
            output += f"\n(stopped: time limit of {limits.wall_s:g}s)"
        tool = ToolRun(
            kind="python",
            code=blocks[-1],
            status=result.status,
            output=clip(output.strip()),
            duration_s=round(result.duration_s, 3),
        )
        return Reaction(
            tool, p["tool_output"].format(output=tool.output or "(no output)"), False, None
        )

    def final_answer(self, task: Task, steps: Sequence[Step], answer: str | None) -> str | None:
        """The answering reply; else the last reply if it holds an answer."""
        if answer is None and steps and extract_answer(steps[-1].reply, answer_style(task)):
            return steps[-1].reply
        return answer

    def check(self, task: Task, final: str | None, limits: SandboxLimits) -> CheckResult:
        if final is None:
            return CheckResult(False, {"reason": "no_answer"})
        if task.answer is None:  # a user's free-form task: nothing to check against
            return CheckResult(False, {"reason": "no_reference"})
        verdict = check_math(final, task.answer, style=answer_style(task))
        return CheckResult(verdict.correct, asdict(verdict))


register_domain(MathDomain())
