"""What a kind of benchmark is to memcollab: a `Domain` registered by name.

A domain says how the solve loop opens a task, what it does with each reply (run code,
stop on a final answer, send feedback), how the final answer is judged, and which
taxonomy files its memory. Tasks, trajectories and memory records carry the domain's
name; the agent, the checkers, the classifier and the CLI look the domain up here instead
of branching on "math" / "code". A new kind of benchmark is one file with a `Domain`
subclass passed to `register_domain` (plus its loader and, if it has its own, a taxonomy
TOML file).
"""

from __future__ import annotations

import re
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from typing import TYPE_CHECKING, Any, ClassVar

from memcollab.errors import UserError
from memcollab.trajectory import Step, ToolRun

if TYPE_CHECKING:
    from memcollab.tasks.checkers import CheckResult
    from memcollab.tasks.sandbox import CodeRunner, SandboxLimits
    from memcollab.tasks.task import Task

_FENCE = re.compile(r"```[ \t]*(?:python|py|Python)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
TOOL_OUTPUT_CHARS = 2000


class UnknownDomainError(UserError):
    """A domain name no `Domain` is registered under."""


@dataclass(frozen=True)
class Reaction:
    """What the loop does with one reply: the tool run it made (if any), the feedback for
    the next turn, whether the loop stops, and the final answer so far (if any)."""

    tool: ToolRun | None
    feedback: str
    done: bool
    answer: str | None


@lru_cache(maxsize=1)
def agent_prompts() -> dict[str, Any]:
    """The solve loop's prompt templates (package data prompts/agent.toml)."""
    raw = files("memcollab").joinpath("prompts/agent.toml").read_text(encoding="utf-8")
    return tomllib.loads(raw)


def python_blocks(text: str) -> list[str]:
    """The fenced code blocks of a reply (an unclosed last block counts: output was cut)."""
    return [block for block in _FENCE.findall(text) if block.strip()]


def clip(text: str, limit: int = TOOL_OUTPUT_CHARS) -> str:
    """The tail of a long tool output (errors are at the end)."""
    return text if len(text) <= limit else "...\n" + text[-limit:]


class Domain(ABC):
    """A kind of benchmark: how its tasks are posed, worked on and judged."""

    name: ClassVar[str]
    taxonomy: ClassVar[str]
    """The taxonomy its memory is filed under: a built-in name or a TOML path."""
    prompt_is_code: ClassVar[bool] = False
    """Whether task prompts are code (names in them count as task-specific when screening
    distilled constraints)."""

    def prompts(self) -> dict[str, str]:
        """The loop's texts for this domain (default: its table in prompts/agent.toml)."""
        return dict(agent_prompts()[self.name])

    def system_prompt(self, task: Task) -> str:
        """The system message that opens a task (memory is appended to it)."""
        return self.prompts()["system"]

    def user_message(self, task: Task) -> str:
        """The first user message of a task."""
        return self.prompts()["user"].format(prompt=task.prompt)

    @abstractmethod
    def react(self, task: Task, reply: str, runner: CodeRunner, limits: SandboxLimits) -> Reaction:
        """What the loop does with one reply."""

    def react_live(
        self, task: Task, reply: str, runner: CodeRunner, limits: SandboxLimits
    ) -> Reaction:
        """`react` for the agent's repair mode "live": feedback that shows more of what went
        wrong (default: the same as `react`). It must agree with `react` on everything but
        the feedback: the loop calls `react` on its last turn, where no feedback is sent."""
        return self.react(task, reply, runner, limits)

    def candidate(self, reply: str) -> str | None:
        """What a reply proposes, compared across turns by the repair mode "live" (a
        candidate equal to an earlier one gets the reply asked again); None: not compared
        (the default)."""
        return None

    def final_answer(self, task: Task, steps: Sequence[Step], answer: str | None) -> str | None:
        """The answer judged when the loop ends (default: the last answer a reply gave)."""
        return answer

    @abstractmethod
    def check(self, task: Task, final: str | None, limits: SandboxLimits) -> CheckResult:
        """Judge the final answer."""


DOMAINS: dict[str, Domain] = {}


def register_domain(domain: Domain) -> Domain:
    """Register a domain under its name (a second registration of a name replaces it)."""
    DOMAINS[domain.name] = domain
    return domain


def get_domain(name: str) -> Domain:
    """The domain registered under `name`; UnknownDomainError names the known ones."""
    domain = DOMAINS.get(name)
    if domain is None:
        raise UnknownDomainError(
            f"unknown domain {name!r}", f"registered domains: {', '.join(sorted(DOMAINS))}"
        )
    return domain
