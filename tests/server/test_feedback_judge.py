"""POST /v1/feedback without a verdict: the service judges an attempt on a benchmark task
with the task's own checker (server/judge.py); anything else is one clear 422."""

from __future__ import annotations

from typing import Any

import pytest

from memcollab.server.context import Settings
from tests.server.conftest import Service, Storage
from tests.server.proxy_fixtures import Stub, proxy_service
from tests.support.data import DATA_DIR, needs_data

ADD_CODE = "```python\ndef add(a, b):\n    return a + b\n```"


@pytest.fixture
def svc(storage: Storage, stub: Stub) -> Service:
    return proxy_service(storage, stub, Settings(memory_timeout_s=30.0, data_dir=str(DATA_DIR)))


def attempt(svc: Service, task_id: str, answer: str, model: str = "m") -> str:
    body = {"model": model, "task": "(the task's text)", "task_id": task_id, "answer": answer}
    r = svc.client.post("/v1/attempts", json=body, headers=svc.key("a", "write"))
    assert r.status_code in (200, 201), r.text
    return str(r.json()["attempt"]["id"])


def feedback(svc: Service, body: dict[str, Any]) -> Any:
    return svc.client.post("/v1/feedback", json=body, headers=svc.key("a", "write"))


@needs_data
@pytest.mark.parametrize(
    ("answer", "verdict"),
    [("She makes 9 * 2 = 18 dollars.\n#### 18", "correct"), ("#### 17", "incorrect")],
)
def test_a_gsm8k_attempt_is_judged_by_its_checker(svc: Service, answer: str, verdict: str) -> None:
    aid = attempt(svc, "gsm8k/test/0", answer)  # Janet's ducks: 18
    r = feedback(svc, {"task_id": "gsm8k/test/0", "model": "m"})
    assert r.status_code == 200, r.text
    assert r.json()["judged"] is True and r.json()["counted"] is True
    assert svc.context.attempts.get("a", aid).verdict == verdict


def test_a_code_attempt_runs_against_the_hidden_tests(svc: Service) -> None:
    """HumanEval ships with its package (no data directory needed)."""
    from memcollab.tasks.datasets import load_tasks

    task = load_tasks("humaneval:test[:1]")[0]
    wrong = attempt(svc, task.id, ADD_CODE)
    r = feedback(svc, {"attempt_id": wrong})
    assert r.status_code == 200, r.text
    assert svc.context.attempts.get("a", wrong).verdict == "incorrect"


def test_an_explicit_verdict_is_not_judged(svc: Service) -> None:
    aid = attempt(svc, "humaneval/64", ADD_CODE)
    r = feedback(svc, {"attempt_id": aid, "verdict": "correct"})
    assert r.json()["judged"] is False
    assert svc.context.attempts.get("a", aid).verdict == "correct"


@pytest.mark.parametrize(
    "task_id",
    ["my-own-task", pytest.param("gsm8k/test/999999", marks=needs_data), "humaneval/9999"],
)
def test_an_unknown_task_without_a_verdict_is_422_and_writes_nothing(
    svc: Service, task_id: str
) -> None:
    aid = attempt(svc, task_id, "#### 1")
    r = feedback(svc, {"attempt_id": aid})
    assert r.status_code == 422, r.text
    assert "not a benchmark task the service can judge" in r.text
    assert svc.context.attempts.get("a", aid).verdict == "unknown"


def test_missing_benchmark_data_is_a_clear_422(storage: Storage, stub: Stub, tmp_path) -> None:
    svc = proxy_service(storage, stub, Settings(data_dir=str(tmp_path / "none")))
    aid = attempt(svc, "gsm8k/test/0", "#### 18")
    r = feedback(svc, {"attempt_id": aid})
    assert r.status_code == 422 and "--data-dir" in r.text, r.text
    assert svc.context.attempts.get("a", aid).verdict == "unknown"


@pytest.mark.parametrize("task_id", ["humaneval/0", pytest.param("gsm8k/test/0", marks=needs_data)])
def test_an_empty_reply_is_judged_incorrect_not_an_error(svc: Service, task_id: str) -> None:
    """A model that answered nothing (the proxy stores answer "") gets a verdict: a counted
    outcome, not a 422 that leaves the attempt unjudged."""
    aid = attempt(svc, task_id, "")
    r = feedback(svc, {"attempt_id": aid})
    assert r.status_code == 200, r.text
    assert r.json()["judged"] is True and r.json()["counted"] is True
    assert svc.context.attempts.get("a", aid).verdict == "incorrect"
