"""Trajectories, pairs and a scripted distiller shared by the distillation and build tests."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from memcollab.llm.base import ChatRequest, Message
from memcollab.llm.cache import Gateway
from memcollab.llm.scripted import ScriptedModel
from memcollab.memory.distill import Distiller
from memcollab.memory.pairs import Pair
from memcollab.tasks.task import Task
from memcollab.trajectory import Step, ToolRun, Trajectory

MATH = Task(
    id="gsm/1",
    domain="math",
    prompt=(
        "Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May. How many clips did Natalia sell altogether in April and May?"
    ),
    answer="REF-ANSWER-72",
)
CODE = Task(
    id="he/1",
    domain="code",
    prompt='def sum_of_digits(n: int) -> int:\n    """Return the sum of the digits of n."""\n',
    tests=("assert sum_of_digits(HIDDEN_TEST_MARKER) == 6",),
    visible_tests=("assert sum_of_digits(5) == 5",),
    entry_point="sum_of_digits",
)

GOOD = [
    (
        "a quantity is given for one period and a fraction of it for another",
        "computing each period separately before summing",
        "adding the fraction itself",
    ),
    (
        "a problem asks for a total over several parts",
        "listing every part before adding",
        "forgetting a part",
    ),
    (
        "the answer is a count",
        "checking that it is a whole number",
        "keeping a fractional intermediate result",
    ),
    ("units change within a problem", "converting to one unit first", "mixing units"),
    ("the result seems too large", "re-reading what is asked", "answering a different question"),
]


def line(when: str, enforce: str, avoid: str) -> str:
    return f"When {when}, enforce {enforce}; avoid {avoid}."


def step(turn: int, reply: str, tool: ToolRun | None = None) -> Step:
    return Step(
        turn=turn,
        reply=reply,
        finish_reason="stop",
        prompt_tokens=1,
        completion_tokens=1,
        latency_s=0.0,
        cached=False,
        tool=tool,
    )


def traj(
    task: Task,
    model: str,
    correct: bool,
    replies: Sequence[str] = ("The answer is \\boxed{72}.",),
    *,
    tool: ToolRun | None = None,
) -> Trajectory:
    steps = tuple(step(i, r, tool if i == 1 else None) for i, r in enumerate(replies, start=1))
    return Trajectory(
        task_id=task.id,
        domain=task.domain,
        model=model,
        memory_ids=("mem-1",),
        messages=(
            Message(role="system", content="solve <memory>SECRET-MEMORY-BLOCK</memory>"),
            Message(role="user", content=task.prompt),
        ),
        steps=steps,
        final_answer=replies[-1],
        correct=correct,
        check={"reference": "REF-ANSWER-72", "failed_test": "HIDDEN_TEST_MARKER"},
        finish="answer",
        turns=len(steps),
        prompt_tokens=1,
        completion_tokens=1,
        wall_s=0.0,
    )


def math_pair(pair_type: str = "mixed") -> Pair:
    pos = traj(MATH, "model-alpha", True, ("48 / 2 = 24, 48 + 24 = 72. \\boxed{72}",))
    neg = traj(MATH, "model-beta", False, ("48 / 2 = 24. \\boxed{24}",))
    return Pair(MATH.id, pos, neg, "model-alpha", "model-beta", pair_type)  # type: ignore[arg-type]


def distiller(
    responses: Sequence[str] | Callable[[ChatRequest], str], **kwargs: object
) -> tuple[Distiller, ScriptedModel]:
    model = ScriptedModel(responses, name="distiller")
    return Distiller(Gateway(None).bind(model), **kwargs), model  # type: ignore[arg-type]
