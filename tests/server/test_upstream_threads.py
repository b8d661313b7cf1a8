"""An in-process model behind the proxy gets as many calls at once as it serves (its
concurrency limit, a batching engine's batch_width), not the few threads of asyncio's
default executor (min(32, cores + 4): 6 on a 2-core machine)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from memcollab.llm.base import ChatRequest, Completion
from memcollab.llm.cache import Gateway
from memcollab.llm.fleet import ModelSpec
from memcollab.server.upstream import LocalUpstream

WIDTH = 34  # more than asyncio's default executor ever has (32)


class BarrierModel:
    """Answers only once WIDTH calls are in it together (else the barrier breaks: 502)."""

    name = "wide"

    def __init__(self) -> None:
        self.barrier = threading.Barrier(WIDTH, timeout=20)

    def identity(self) -> str:
        return "test:barrier"

    def concurrency(self) -> tuple[str, int]:
        return "test:barrier", WIDTH

    def complete(self, request: ChatRequest) -> Completion:
        self.barrier.wait()
        return Completion(text="ok", finish_reason="stop")


class OneModelFleet:
    def __init__(self, model: BarrierModel) -> None:
        self._model = model

    def model(self, name: str) -> BarrierModel:
        return self._model


def test_a_full_batch_of_calls_is_in_flight_at_once() -> None:
    model = BarrierModel()
    spec = ModelSpec(name="wide", provider="scripted", responses=["unused"])
    fleet: Any = OneModelFleet(model)
    upstream = LocalUpstream(spec, fleet, Gateway(None), timeout_s=60.0)
    body = {"model": "wide", "messages": [{"role": "user", "content": "hi"}]}

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(upstream.complete(dict(body)) for _ in range(WIDTH)))

    answers = asyncio.run(all_at_once())
    assert [a.status for a in answers] == [200] * WIDTH
    assert not model.barrier.broken


def _model_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("model-wide")]


def test_closing_the_upstreams_ends_the_model_threads() -> None:
    """The proxy's lifespan closes its Upstreams at shutdown: each in-process model's
    threads end then (before, its pool lived as long as the process)."""
    from memcollab.server.upstream import Upstreams

    model = BarrierModel()
    model.barrier = threading.Barrier(1)  # one call at a time answers at once
    spec = ModelSpec(name="wide", provider="scripted", responses=["unused"])

    class Fleet1(OneModelFleet):
        def spec(self, name: str) -> ModelSpec:
            return spec

    upstreams = Upstreams(Fleet1(model), timeout_s=60.0)  # type: ignore[arg-type]
    body = {"model": "wide", "messages": [{"role": "user", "content": "hi"}]}

    async def serve_then_close() -> int:
        upstream = upstreams.get("wide")
        answers = await asyncio.gather(*(upstream.complete(dict(body)) for _ in range(3)))
        assert [a.status for a in answers] == [200] * 3
        running = len(_model_threads())
        await upstreams.aclose()
        return running

    assert asyncio.run(serve_then_close()) >= 1
    for thread in _model_threads():
        thread.join(timeout=10)
    assert _model_threads() == []
