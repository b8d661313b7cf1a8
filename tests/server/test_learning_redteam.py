"""Online learning under attack: poisoned distillations of the proxy's attempts (entries of
tests/memory/redteam/poisoned.jsonl as the distiller's output) end as counted refusals with
a reason, and no search ever returns them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from memcollab.llm.cache import Gateway
from memcollab.llm.fleet import Fleet, ModelSpec
from memcollab.llm.scripted import ScriptedModel
from memcollab.memory.distill import REJECT_REASONS, Distiller, ScreenVersion
from memcollab.server.learner import LearningWorker
from tests.memory.distill_helpers import MATH, line
from tests.server.conftest import Storage, service_for
from tests.server.test_learning import StubLabeller

POISONED = Path(__file__).parents[1] / "memory" / "redteam" / "poisoned.jsonl"


def _cases() -> list[dict[str, Any]]:
    """One poisoned constraint per expected reason (the file's first of each)."""
    seen: dict[str, dict[str, Any]] = {}
    for text in POISONED.read_text(encoding="utf-8").splitlines():
        entry = json.loads(text)
        if "constraint" in entry and entry["expected"] not in seen:
            seen[entry["expected"]] = entry
    return list(seen.values())


@pytest.mark.parametrize("screen", ["v1", "v2"])
def test_poisoned_distillations_of_proxied_attempts_are_refused(
    storage: Storage, kind: str, screen: ScreenVersion
) -> None:
    """Under v2 the semantic rules refuse most of them first ("unsupported": they are not
    about the attempts); under v1 the content screen names most attacks (a few break a
    form rule first)."""
    svc = service_for(storage.new(kind))
    svc.context.fleet = Fleet(
        [
            ModelSpec(name="good", provider="scripted", responses=["The answer is 72."]),
            ModelSpec(name="bad", provider="scripted", responses=["The answer is 24."]),
        ]
    )
    h = svc.key("a", "write")
    cases = _cases()
    assert len(cases) >= 8
    outputs: dict[str, str] = {}
    for i, case in enumerate(cases):
        task = f"Case {case['id']}: {MATH.prompt}"
        c = case["constraint"]
        outputs[case["id"]] = f"1. {line(c['when'], c['enforce'], c['avoid'])}"
        for model, verdict in (("good", "correct"), ("bad", "incorrect")):
            body = {
                "model": model,
                "messages": [{"role": "user", "content": task}],
                "metadata": {"task_id": f"rt-{i}", "domain": "math"},
            }
            r = svc.client.post("/v1/chat/completions", json=body, headers=h)
            assert r.status_code == 200, r.text
            fb = {"response_id": r.json()["id"], "verdict": verdict}
            assert svc.client.post("/v1/feedback", json=fb, headers=h).status_code == 200

    def respond(request: Any) -> str:
        text = "\n".join(m.content for m in request.messages)
        return next(out for cid, out in outputs.items() if f"Case {cid}:" in text)

    distiller_model = ScriptedModel(respond, name="distiller")
    distiller = Distiller(Gateway(None).bind(distiller_model), screen=screen)
    worker = LearningWorker(svc.context, svc.context.learning, distiller, StubLabeller())
    outcomes = []
    while (outcome := worker.step()) is not None:
        outcomes.append(outcome)
    assert len(outcomes) == len(cases)
    assert {o.status for o in outcomes} == {"refused"}
    allowed = set(REJECT_REASONS) | {"empty", "malformed"}
    for o in outcomes:
        assert o.reason in allowed or (o.reason or "").startswith("record:poison:"), o
    learning = svc.client.get("/v1/learning", headers=svc.key("a", "read")).json()
    assert sum(learning["refused"].values()) == len(cases) == learning["queue"]["refused"]
    if screen == "v1":
        assert sum(n for r, n in learning["refused"].items() if r.startswith("poison:")) >= 5
    assert learning["distilled"] == 0
    assert svc.context.memory.stats("a")["records"] == 0
    search = {"task": MATH.prompt, "domain": "math", "p": 20}
    r = svc.client.post("/v1/search", json=search, headers=svc.key("a", "read"))
    assert r.status_code == 200 and r.json()["hits"] == []
    metrics = svc.client.get("/metrics").text
    assert "memcollab_learn_refused{reason=" in metrics
