"""A deterministic test double: fixed or computed responses, no model.

Users test their own code on it; memcollab's tests run on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from memcollab.llm.base import ChatRequest, Completion, Usage

Responder = Callable[[ChatRequest], str]


class ScriptExhaustedError(RuntimeError):
    """A scripted model was asked more often than it has responses."""


class ScriptedModel:
    """Answers from a list of responses (in order) or from a function of the request.

    Token counts are whitespace word counts, so usage is deterministic too. Every
    call is recorded in `requests`. `delay_s` makes each call take that long.
    """

    def __init__(
        self,
        responses: Sequence[str] | Responder,
        *,
        name: str = "scripted",
        cycle: bool = False,
        max_concurrency: int = 4,
        delay_s: float = 0.0,
    ) -> None:
        self.name = name
        self._responses = responses
        self._cycle = cycle
        self._max_concurrency = max_concurrency
        self._delay_s = delay_s
        self._lock = threading.Lock()
        self.requests: list[ChatRequest] = []

    def identity(self) -> str:
        return f"scripted:{self.name}"

    def concurrency(self) -> tuple[str, int]:
        return self.identity(), self._max_concurrency

    def complete(self, request: ChatRequest) -> Completion:
        with self._lock:
            index = len(self.requests)
            self.requests.append(request)
        text = self._respond(request, index)
        if self._delay_s:
            time.sleep(self._delay_s)  # stands in for generation time in tests of long runs
        finish = "stop"
        words = text.split()
        if len(words) > request.decoding.max_tokens:
            text = " ".join(words[: request.decoding.max_tokens])
            finish = "length"
        for stop in request.decoding.stop:
            if stop and stop in text:
                text = text[: text.index(stop)]
        prompt_words = sum(len(m.content.split()) for m in request.messages)
        return Completion(
            text=text,
            finish_reason=finish,
            usage=Usage(prompt_tokens=prompt_words, completion_tokens=len(text.split())),
            latency_s=0.0,
            model=self.name,
        )

    def _respond(self, request: ChatRequest, index: int) -> str:
        if callable(self._responses):
            return self._responses(request)
        responses = list(self._responses)
        if not responses:
            raise ScriptExhaustedError(f"scripted model {self.name!r} has no responses")
        if index >= len(responses):
            if not self._cycle:
                raise ScriptExhaustedError(
                    f"scripted model {self.name!r} was called {index + 1} times "
                    f"but has {len(responses)} responses"
                )
            index %= len(responses)
        return responses[index]


def rule_responder(rules: dict[str, str], default: Sequence[str] = ()) -> Responder:
    """Reply by content, whatever the call order: the reply of the first rule (in order)
    whose key occurs anywhere in the request's messages, else `default[0]`. An empty key
    matches every request.

    Order-free replies keep concurrent runs on scripted models deterministic.
    """

    def respond(request: ChatRequest) -> str:
        text = "\n".join(m.content for m in request.messages)
        for key, reply in rules.items():
            if key in text:
                return reply
        if default:
            return default[0]
        last = request.messages[-1].content if request.messages else ""
        raise ScriptExhaustedError(f"no rule matches the request: {last[:200]!r}")

    return respond
