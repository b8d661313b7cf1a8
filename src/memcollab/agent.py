"""The solve loop: a model plus a prompt policy solves a task in turns.

Each turn is one model call. Math: a reply with a final answer (`\\boxed{}`; for GSM8K also
`#### N` / `The answer is N`) ends the loop; a reply with a ```python block gets the block
run in the sandbox and its output sent back; anything else gets a nudge. Code: the last
```python block of a reply is the candidate; it runs against the task's visible checks
(HumanEval docstring examples, the first MBPP assert) and a pass ends the loop, a failure is
fed back. The loop also ends at `max_turns`. Hidden tests judge only the final answer.
Memory guidance, when given, enters the system prompt as one delimited block, and the
trajectory records which memory records were given.
"""

from __future__ import annotations

import re
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from typing import Any

from memcollab.errors import ContextOverflowError
from memcollab.llm.base import ChatRequest, Decoding, Message
from memcollab.llm.cache import Gateway, ModelClient
from memcollab.llm.fleet import Fleet
from memcollab.memory.guidance import Guidance
from memcollab.tasks.checkers import answer_style, check
from memcollab.tasks.math_check import extract_answer
from memcollab.tasks.sandbox import CodeRunner, LocalSandbox, SandboxLimits
from memcollab.tasks.task import Task
from memcollab.trajectory import Step, ToolRun, Trajectory

MEMORY_OPEN = "<memory>"
MEMORY_CLOSE = "</memory>"
_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_TOOL_OUTPUT_CHARS = 2000


@lru_cache(maxsize=1)
def prompts() -> dict[str, Any]:
    """The loop's prompt templates (package data prompts/agent.toml)."""
    raw = files("memcollab").joinpath("prompts/agent.toml").read_text(encoding="utf-8")
    return tomllib.loads(raw)


def python_blocks(text: str) -> list[str]:
    """The fenced code blocks of a reply (an unclosed last block counts: output was cut)."""
    return [block for block in _FENCE.findall(text) if block.strip()]


def memory_block(guidance: Sequence[Guidance]) -> str:
    """The one delimited block that carries memory into the prompt."""
    lines = [MEMORY_OPEN, prompts()["memory"]["header"]]
    lines += [f"{i}. {g.text}" for i, g in enumerate(guidance, start=1)]
    lines.append(MEMORY_CLOSE)
    return "\n".join(lines)


def _clip(text: str, limit: int = _TOOL_OUTPUT_CHARS) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


@dataclass
class Agent:
    """A model plus the prompt policy and limits of the solve loop."""

    client: ModelClient
    max_turns: int = 5
    decoding: Decoding = field(default_factory=Decoding)
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    runner: CodeRunner = field(default_factory=LocalSandbox)

    def first_messages(self, task: Task, guidance: Sequence[Guidance] = ()) -> list[Message]:
        """System and user messages that open the conversation."""
        p = prompts()[task.domain]
        system_text = p["system"]
        if guidance:
            system_text = f"{system_text}\n\n{memory_block(guidance)}"
        if task.domain == "math":
            user_text = p["user"].format(prompt=task.prompt)
        elif task.prompt.lstrip().startswith(("def ", "from ", "import ")):
            user_text = p["user_function"].format(prompt=task.prompt)
        else:
            user_text = p["user_text"].format(prompt=task.prompt)
        return [
            Message(role="system", content=system_text),
            Message(role="user", content=user_text),
        ]

    def solve(
        self,
        task: Task,
        guidance: Sequence[Guidance] = (),
        *,
        condition: str = "vanilla",
        sample_index: int = 0,
    ) -> Trajectory:
        """Run the loop on `task` and judge the final answer."""
        started = time.perf_counter()
        messages = self.first_messages(task, guidance)
        steps: list[Step] = []
        final: str | None = None
        finish = "max_turns"
        error: str | None = None
        for turn in range(1, self.max_turns + 1):
            request = ChatRequest(
                messages=tuple(messages), decoding=self.decoding, sample_index=sample_index
            )
            try:
                completion = self.client.complete(request)
            except ContextOverflowError as exc:
                finish, error = "error", str(exc)
                break
            reply = completion.text
            messages.append(Message(role="assistant", content=reply))
            tool, feedback, done, answer = self._react(task, reply)
            if answer is not None:
                final = answer
            steps.append(
                Step(
                    turn=turn,
                    reply=reply,
                    finish_reason=completion.finish_reason,
                    prompt_tokens=completion.usage.prompt_tokens,
                    completion_tokens=completion.usage.completion_tokens,
                    latency_s=completion.latency_s,
                    cached=completion.cached,
                    tool=tool,
                    feedback=None if done or turn == self.max_turns else feedback,
                )
            )
            if done:
                finish = "answer"
                break
            if turn < self.max_turns:
                messages.append(Message(role="user", content=feedback))
        if task.domain == "math" and final is None and steps:
            final = steps[-1].reply if extract_answer(steps[-1].reply, answer_style(task)) else None
        result = check(task, final, self.limits)
        return Trajectory(
            task_id=task.id,
            domain=task.domain,
            model=self.client.name,
            condition=condition,
            memory_ids=tuple(g.record_id for g in guidance),
            sample_index=sample_index,
            seed=request.effective_seed(),
            messages=tuple(messages),
            steps=tuple(steps),
            final_answer=final,
            correct=result.correct,
            check=result.details,
            finish=finish,  # type: ignore[arg-type]
            error=error,
            turns=len(steps),
            prompt_tokens=sum(s.prompt_tokens for s in steps),
            completion_tokens=sum(s.completion_tokens for s in steps),
            wall_s=round(time.perf_counter() - started, 3),
        )

    def _react(self, task: Task, reply: str) -> tuple[ToolRun | None, str, bool, str | None]:
        """What the loop does with a reply: (tool run, feedback, done, final answer)."""
        p = prompts()[task.domain]
        blocks = python_blocks(reply)
        if task.domain == "math":
            if extract_answer(reply, answer_style(task)) is not None:
                return None, "", True, reply
            if not blocks:
                return None, p["no_answer"], False, None
            result = self.runner.run_code(blocks[-1], self.limits)
            output = result.stdout + (f"\n{result.stderr}" if result.stderr else "")
            if result.status == "timeout":
                output += f"\n(stopped: time limit of {self.limits.wall_s:g}s)"
            tool = ToolRun(
                kind="python",
                code=blocks[-1],
                status=result.status,
                output=_clip(output.strip()),
                duration_s=round(result.duration_s, 3),
            )
            return tool, p["tool_output"].format(output=tool.output or "(no output)"), False, None
        if not blocks:
            return None, p["no_code"], False, None
        candidate = blocks[-1]
        if not task.visible_tests:
            return None, "", True, candidate
        verdict = self.runner.run_tests(
            candidate, list(task.visible_tests), task.setup_code, self.limits
        )
        details = _clip(
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
            return tool, "", True, candidate
        return tool, p["test_failed"].format(details=details), False, candidate


def fleet_agent(
    fleet: Fleet,
    gateway: Gateway,
    name: str,
    *,
    max_turns: int = 5,
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> Agent:
    """The agent of fleet model `name`: its decoding settings (with `max_tokens` and
    `temperature` overriding them when given), its calls through `gateway`."""
    update: dict[str, Any] = {}
    if max_tokens is not None:
        update["max_tokens"] = max_tokens
    if temperature is not None:
        update["temperature"] = temperature
    decoding = fleet.spec(name).decoding.model_copy(update=update)
    return Agent(gateway.bind(fleet.model(name)), max_turns=max_turns, decoding=decoding)
