"""An in-process model's call that times out (504) keeps generating in its thread: with a
client attempt id, its late answer is stored under that id, and a retry waits for it (or
finds it stored) and gets it replayed instead of queueing a second generation behind the
first (which, on a loaded machine, timed out again and again: the online replay's stall)."""

from __future__ import annotations

import time
from typing import Any

from memcollab.llm.fleet import Fleet, ModelSpec
from memcollab.llm.scripted import ScriptedModel
from memcollab.server.context import Settings
from tests.server.conftest import Service, Storage, service_for

CHAT = "/v1/chat/completions"
BODY = {"model": "slow", "messages": [{"role": "user", "content": "Add 2 and 2."}]}


def _service(storage: Storage, delay_s: float) -> tuple[Service, ScriptedModel]:
    ctx = storage.new("sqlite", Settings(upstream_timeout_s=0.4, memory_timeout_s=30.0))
    spec = ModelSpec(name="slow", provider="scripted", responses=["4"], delay_s=delay_s)
    ctx.fleet = Fleet([spec], source="test fleet")
    model = ctx.fleet.model("slow")
    assert isinstance(model, ScriptedModel)
    return service_for(ctx), model


def _chat(svc: Service, attempt: str | None) -> Any:
    headers = svc.key("a", "write") | ({"x-memcollab-attempt-id": attempt} if attempt else {})
    return svc.client.post(CHAT, json=BODY, headers=headers)


def test_a_retry_gets_the_timed_out_generation_instead_of_a_second_one(storage: Storage) -> None:
    svc, model = _service(storage, delay_s=0.7)
    with svc.client:  # one event loop for every request, as under uvicorn
        first = _chat(svc, "late-1")
        assert first.status_code == 504 and first.json()["error"]["code"] == "upstream_timeout"
        again = _chat(svc, "late-1")  # the first generation ends 0.3 s into this wait
        assert again.status_code == 200, again.text
        assert again.headers["x-memcollab-replayed"] == "true"
        assert again.json()["choices"][0]["message"]["content"] == "4"
    assert len(model.requests) == 1  # one generation, not two
    page, total = svc.context.attempts.list("a")
    assert total == 1 and page[0].id == "late-1" and page[0].answer == "4"


def test_a_late_answer_is_stored_even_without_a_retry(storage: Storage) -> None:
    svc, model = _service(storage, delay_s=0.6)
    with svc.client:
        assert _chat(svc, "late-2").status_code == 504
        deadline = time.monotonic() + 10
        while svc.context.attempts.list("a")[1] == 0:
            assert time.monotonic() < deadline, "the late answer was never stored"
            time.sleep(0.05)
        again = _chat(svc, "late-2")
        assert again.status_code == 200 and again.headers["x-memcollab-replayed"] == "true"
    assert len(model.requests) == 1


def test_a_retry_while_the_generation_still_runs_is_504_without_a_new_call(
    storage: Storage,
) -> None:
    svc, model = _service(storage, delay_s=1.5)
    with svc.client:
        assert _chat(svc, "late-3").status_code == 504
        second = _chat(svc, "late-3")  # waits 0.4 s more: still running
        assert second.status_code == 504 and "still running" in second.text
        time.sleep(0.5)
        third = _chat(svc, "late-3")
        assert third.status_code == 200 and third.headers["x-memcollab-replayed"] == "true"
    assert len(model.requests) == 1


def test_without_an_attempt_id_a_timed_out_answer_is_not_stored(storage: Storage) -> None:
    svc, model = _service(storage, delay_s=0.6)
    with svc.client:
        assert _chat(svc, None).status_code == 504
        time.sleep(0.8)
    assert svc.context.attempts.list("a")[1] == 0
    assert len(model.requests) == 1
