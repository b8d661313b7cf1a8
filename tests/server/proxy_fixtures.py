"""Fixtures of the proxy tests: a stub OpenAI-compatible upstream under uvicorn, and a
service whose fleet has that upstream ("stubbed", provider openai) and an in-process
scripted model ("local")."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from memcollab.llm.fleet import Fleet, ModelSpec
from memcollab.server.context import Settings
from tests.server.conftest import Service, Storage, service_for
from tests.support.stub_upstream import StubState, serve, stub_app

MATH = "A shop sells pens at 3 for $2. How much do 12 pens cost?"


@dataclass
class Stub:
    state: StubState
    url: str  # http://127.0.0.1:PORT

    def reset(self) -> None:
        self.state.requests.clear()
        self.state.headers.clear()
        self.state.delay_s, self.state.status = 0.0, 200
        self.state.reply, self.state.fixed_id = "stub says hi", None


@pytest.fixture(scope="module")
def stub_server() -> Iterator[Stub]:
    state = StubState()
    with serve(stub_app(state)) as url:
        yield Stub(state, url)


@pytest.fixture
def stub(stub_server: Stub) -> Iterator[Stub]:
    stub_server.reset()
    yield stub_server
    stub_server.reset()


def fleet_for(stub_url: str, *, timeout_base: str | None = None) -> Fleet:
    return Fleet(
        [
            ModelSpec(
                name="stubbed", provider="openai", model="stub-upstream", base_url=stub_url + "/v1"
            ),
            ModelSpec(name="local", provider="scripted", responses=["The answer is 8."]),
            # Nothing listens on port 9 (discard) of this machine: a refused connection.
            ModelSpec(name="down", provider="openai", model="x", base_url="http://127.0.0.1:9/v1"),
        ],
        source="test fleet",
    )


def proxy_service(storage: Storage, stub: Stub, settings: Settings | None = None) -> Service:
    """A service whose fleet reaches the stub. Memory gets 30 s (not 5): on a loaded test
    machine a first search can stall, and these tests assert memory statuses."""
    settings = settings or Settings(memory_timeout_s=30.0)
    svc = service_for(storage.new("sqlite", settings))
    svc.context.fleet = fleet_for(stub.url)
    return svc
