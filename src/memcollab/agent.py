"""The solve loop: a model plus a prompt policy solves a task in turns.

Each turn is one model call; the task's domain (`memcollab.domains`) says what a reply
does. Math: a reply with a final answer (`\\boxed{}`; for GSM8K also `#### N` / `The
answer is N`) ends the loop; a reply with a ```python block gets the block run in the
sandbox and its output sent back; anything else gets a nudge. Code: the last ```python
block of a reply is the candidate; it runs against the task's visible checks (HumanEval
docstring examples, the first MBPP assert) and a pass ends the loop, a failure is fed
back. The loop also ends at `max_turns`. Code runs through a `CodeRunner` (default: the
local sandbox). Hidden tests judge only the final answer.
Memory guidance, when given, enters the system prompt as one delimited block, and the
trajectory records which memory records were given.

Repair modes (`repair`): "v1" (the default) is the loop above. "live" makes the failures
carry more: the domain's `react_live` feedback (code: a failed assert shows what its
operands actually returned, `domains/code_repair.py`), and a reply whose candidate (the
domain's `candidate`: code, its last block, whitespace-normalised) equals an earlier turn's
is asked once more, sampled at `resample_temperature` with a seed derived from the task and
turn (`resample_seed`), so the retry is reproducible and cached like any call. The step is
marked `resampled` and the trajectory counts such steps.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from memcollab.domains import agent_prompts, get_domain, python_blocks
from memcollab.errors import ContextOverflowError
from memcollab.llm.base import ChatRequest, Completion, Decoding, Message, Usage
from memcollab.llm.cache import Gateway, ModelClient
from memcollab.llm.fleet import Fleet
from memcollab.memory.guidance import Guidance
from memcollab.tasks.sandbox import CodeRunner, LocalSandbox, SandboxLimits
from memcollab.tasks.task import Task
from memcollab.trajectory import Step, Trajectory

__all__ = ["MEMORY_CLOSE", "MEMORY_OPEN", "Agent", "Guidance", "fleet_agent", "memory_block"]
__all__ += ["REPAIR_MODES", "RepairMode", "prompts", "python_blocks", "resample_seed"]

RepairMode = Literal["v1", "live"]
REPAIR_MODES: tuple[str, ...] = get_args(RepairMode)
RESAMPLE_TEMPERATURE = 0.7

MEMORY_OPEN = "<memory>"
MEMORY_CLOSE = "</memory>"
prompts = agent_prompts  # the loop's prompt templates (kept under its old name)


def resample_seed(task_id: str, turn: int) -> int:
    """The seed of the resampled reply of `turn` on task `task_id` (31 bits of a sha256)."""
    digest = hashlib.sha256(f"{task_id}\x00{turn}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


def _both(first: Completion, second: Completion) -> Completion:
    """The second completion, with the usage, latency and cache status of both calls."""
    usage = Usage(
        prompt_tokens=first.usage.prompt_tokens + second.usage.prompt_tokens,
        completion_tokens=first.usage.completion_tokens + second.usage.completion_tokens,
    )
    return second.model_copy(
        update={
            "usage": usage,
            "latency_s": first.latency_s + second.latency_s,
            "cached": first.cached and second.cached,
        }
    )


def memory_block(guidance: Sequence[Guidance]) -> str:
    """The one delimited block that carries memory into the prompt."""
    lines = [MEMORY_OPEN, prompts()["memory"]["header"]]
    lines += [f"{i}. {g.text}" for i, g in enumerate(guidance, start=1)]
    lines.append(MEMORY_CLOSE)
    return "\n".join(lines)


@dataclass
class Agent:
    """A model plus the prompt policy and limits of the solve loop (`repair`: see the
    module docstring)."""

    client: ModelClient
    max_turns: int = 5
    decoding: Decoding = field(default_factory=Decoding)
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    runner: CodeRunner = field(default_factory=LocalSandbox)
    repair: RepairMode = "v1"
    resample_temperature: float = RESAMPLE_TEMPERATURE

    def __post_init__(self) -> None:
        if self.repair not in REPAIR_MODES:
            raise ValueError(f"unknown repair mode {self.repair!r}; use one of {REPAIR_MODES}")
        if not self.resample_temperature > 0:
            raise ValueError("resample_temperature must be positive")

    def first_messages(self, task: Task, guidance: Sequence[Guidance] = ()) -> list[Message]:
        """System and user messages that open the conversation."""
        domain = get_domain(task.domain)
        system_text = domain.system_prompt(task)
        if guidance:
            system_text = f"{system_text}\n\n{memory_block(guidance)}"
        user_text = domain.user_message(task)
        return [
            Message(role="system", content=system_text),
            Message(role="user", content=user_text),
        ]

    def request(self, messages: Sequence[Message], sample_index: int = 0) -> ChatRequest:
        """The model call of a turn with `messages` (the first: `first_messages(task)`); a
        dry run asks the call cache for it."""
        return ChatRequest(
            messages=tuple(messages), decoding=self.decoding, sample_index=sample_index
        )

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
        domain = get_domain(task.domain)
        messages = self.first_messages(task, guidance)
        steps: list[Step] = []
        final: str | None = None
        finish = "max_turns"
        error: str | None = None
        live = self.repair == "live"
        seen: set[str] = set()  # candidates of earlier turns (repair "live")
        for turn in range(1, self.max_turns + 1):
            request = self.request(messages, sample_index)
            resampled = False
            try:
                completion = self.client.complete(request)
                if live and domain.candidate(completion.text) in seen:
                    retry = self._resample(request, task, turn)
                    completion = _both(completion, self.client.complete(retry))
                    resampled = True
            except ContextOverflowError as exc:
                finish, error = "error", str(exc)
                break
            reply = completion.text
            if live and (candidate := domain.candidate(reply)) is not None:
                seen.add(candidate)
            messages.append(Message(role="assistant", content=reply))
            # The last turn's feedback is never sent: no live feedback is computed for it.
            react = domain.react_live if live and turn < self.max_turns else domain.react
            reaction = react(task, reply, self.runner, self.limits)
            tool, feedback, done = reaction.tool, reaction.feedback, reaction.done
            if reaction.answer is not None:
                final = reaction.answer
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
                    resampled=resampled,
                )
            )
            if done:
                finish = "answer"
                break
            if turn < self.max_turns:
                messages.append(Message(role="user", content=feedback))
        final = domain.final_answer(task, steps, final)
        result = domain.check(task, final, self.limits)
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
            resampled=sum(s.resampled for s in steps),
        )

    def _resample(self, request: ChatRequest, task: Task, turn: int) -> ChatRequest:
        """`request` again, sampled at `resample_temperature` with the turn's own seed."""
        update = {"temperature": self.resample_temperature, "seed": resample_seed(task.id, turn)}
        return request.model_copy(update={"decoding": request.decoding.model_copy(update=update)})


def fleet_agent(
    fleet: Fleet,
    gateway: Gateway,
    name: str,
    *,
    max_turns: int = 5,
    max_tokens: int | None = None,
    temperature: float | None = None,
    repair: RepairMode = "v1",
) -> Agent:
    """The agent of fleet model `name`: its decoding settings (with `max_tokens` and
    `temperature` overriding them when given), its calls through `gateway`, the loop's
    `repair` mode."""
    update: dict[str, Any] = {}
    if max_tokens is not None:
        update["max_tokens"] = max_tokens
    if temperature is not None:
        update["temperature"] = temperature
    decoding = fleet.spec(name).decoding.model_copy(update=update)
    return Agent(
        gateway.bind(fleet.model(name)), max_turns=max_turns, decoding=decoding, repair=repair
    )
