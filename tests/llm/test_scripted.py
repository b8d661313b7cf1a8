from typing import Any

import pytest

from memcollab.llm.base import ChatRequest, Decoding, user
from memcollab.llm.scripted import ScriptedModel, ScriptExhaustedError


def _ask(text: str = "hi", **decoding: Any) -> ChatRequest:
    return ChatRequest(messages=(user(text),), decoding=Decoding(**decoding))


def test_responses_in_order_then_exhausted() -> None:
    model = ScriptedModel(["one", "two"])
    assert model.complete(_ask()).text == "one"
    assert model.complete(_ask()).text == "two"
    with pytest.raises(ScriptExhaustedError):
        model.complete(_ask())
    assert len(model.requests) == 3


def test_cycle_and_callable() -> None:
    cycling = ScriptedModel(["a", "b"], cycle=True)
    assert [cycling.complete(_ask()).text for _ in range(3)] == ["a", "b", "a"]
    echo = ScriptedModel(lambda r: r.messages[-1].content.upper())
    assert echo.complete(_ask("shout")).text == "SHOUT"


def test_stop_max_tokens_and_usage() -> None:
    model = ScriptedModel(["one two three four five"], cycle=True)
    cut = model.complete(_ask(max_tokens=2))
    assert (cut.text, cut.finish_reason) == ("one two", "length")
    stopped = model.complete(_ask(stop=(" four",)))
    assert stopped.text == "one two three"
    assert stopped.usage.completion_tokens == 3
    assert stopped.usage.prompt_tokens == 1
