"""A client-given attempt id (`x-memcollab-attempt-id` / `metadata.attempt_id`) makes a
proxied call idempotent: stored under that id, and a retry gets the stored answer back
without a second model call or a second attempt (what the online replay's retries after
a kill -9 rely on)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.server.conftest import Service, Storage
from tests.server.proxy_fixtures import MATH, Stub, proxy_service

CHAT = "/v1/chat/completions"


@pytest.fixture
def svc(storage: Storage, stub: Stub) -> Service:
    return proxy_service(storage, stub)


def chat(svc: Service, body: dict[str, Any], **headers: str) -> Any:
    return svc.client.post(CHAT, json=body, headers={**svc.key("a", "write"), **headers})


def body_for(model: str = "stubbed", text: str = MATH, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def test_a_retry_with_the_same_attempt_id_replays_without_a_model_call(
    svc: Service, stub: Stub
) -> None:
    rid = svc.add("a", "A shop sells apples at 2 for $1. How much do 10 apples cost?")
    headers = {"x-memcollab-attempt-id": "client-1", "x-memcollab-task-id": "t-1"}
    first = chat(svc, body_for(), **headers)
    assert first.status_code == 200, first.text
    assert first.headers["x-memcollab-attempt"] == "client-1"
    assert "x-memcollab-replayed" not in first.headers
    stub.state.reply = "a different answer"  # a second model call would show it
    again = chat(svc, body_for(), **headers)
    assert again.status_code == 200, again.text
    assert again.headers["x-memcollab-replayed"] == "true"
    assert again.headers["x-memcollab-attempt"] == "client-1"
    assert again.headers["x-memcollab-memory"] == "applied"
    assert again.headers["x-memcollab-records"] == rid
    assert again.json()["choices"][0]["message"]["content"] == "stub says hi"
    assert again.json()["id"] == first.json()["id"]
    assert len(stub.state.requests) == 1
    page, total = svc.context.attempts.list("a")
    assert total == 1 and page[0].id == "client-1" and page[0].task_id == "t-1"


def test_the_id_may_come_in_metadata_and_is_not_forwarded(svc: Service, stub: Stub) -> None:
    r = chat(svc, body_for(metadata={"attempt_id": "client-2", "user_tag": "x"}))
    assert r.status_code == 200 and r.headers["x-memcollab-attempt"] == "client-2"
    assert stub.state.requests[0]["metadata"] == {"user_tag": "x"}


def test_a_streamed_retry_replays_as_a_stream(svc: Service) -> None:
    headers = {"x-memcollab-attempt-id": "client-3"}
    first = chat(svc, body_for("local"), **headers)
    assert first.status_code == 200, first.text
    again = chat(svc, body_for("local", stream=True), **headers)
    assert again.status_code == 200 and again.headers["x-memcollab-replayed"] == "true"
    events = [line[5:].strip() for line in again.text.splitlines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert text == "The answer is 8."


def test_the_same_id_for_another_model_or_task_is_409(svc: Service, stub: Stub) -> None:
    assert chat(svc, body_for(), **{"x-memcollab-attempt-id": "client-4"}).status_code == 200
    other_model = chat(svc, body_for("local"), **{"x-memcollab-attempt-id": "client-4"})
    other_task = chat(svc, body_for(text="Other words."), **{"x-memcollab-attempt-id": "client-4"})
    for r in (other_model, other_task):
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "attempt_conflict"
    assert len(stub.state.requests) == 1
    assert svc.context.attempts.list("a")[1] == 1


@pytest.mark.parametrize("bad", ["", "has space", "a/b", "x" * 129])
def test_a_malformed_attempt_id_is_400_and_stores_nothing(
    svc: Service, stub: Stub, bad: str
) -> None:
    r = chat(svc, body_for(metadata={"attempt_id": bad}))
    assert r.status_code == 400 and "attempt id" in r.text
    assert stub.state.requests == [] and svc.context.attempts.list("a")[1] == 0
