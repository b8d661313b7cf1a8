"""The solve loop on a real base model (Gemma 3 270M through llama.cpp, completion frame)."""

from pathlib import Path

import pytest

from memcollab.agent import Agent
from memcollab.llm.base import Decoding
from memcollab.llm.cache import Gateway
from memcollab.llm.llamacpp import LlamaCppModel
from memcollab.tasks.task import Task
from memcollab.trajectory import Trajectory

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def gemma_agent(gemma_path: Path) -> Agent:
    model = LlamaCppModel("gemma3-270m", gemma_path, n_ctx=2048)
    return Agent(Gateway(None).bind(model), max_turns=2, decoding=Decoding(max_tokens=48))


def test_base_model_solves_in_turns_and_is_judged(gemma_agent: Agent) -> None:
    task = Task(
        id="live/math",
        domain="math",
        prompt="What is 5 + 3?",
        answer="8",
        metadata={"answer_style": "gsm8k"},
    )
    t = gemma_agent.solve(task)
    assert 1 <= t.turns <= 2 and len(t.steps) == t.turns
    assert all(s.completion_tokens > 0 for s in t.steps)
    assert t.messages[0].role == "system" and t.messages[2].role == "assistant"
    assert t.correct == (t.check.get("reason") == "match")
    assert Trajectory.model_validate_json(t.model_dump_json()) == t


def test_base_model_code_task_runs_visible_check(gemma_agent: Agent) -> None:
    task = Task(
        id="live/code",
        domain="code",
        prompt="Write a function double(x) that returns 2 * x.\nassert double(2) == 4",
        tests=("assert double(2) == 4", "assert double(-3) == -6"),
        visible_tests=("assert double(2) == 4",),
        entry_point="double",
    )
    t = gemma_agent.solve(task)
    assert 1 <= t.turns <= 2
    ran = [s.tool for s in t.steps if s.tool is not None]
    assert all(tool.kind == "visible_tests" for tool in ran)
    assert (
        t.check.get("status") in {"passed", "failed", "error", "timeout"} or t.final_answer is None
    )
