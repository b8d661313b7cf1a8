"""The red team through the service (issue 28): every poisoned submission of
tests/memory/redteam/poisoned.jsonl sent through POST /v1/records, POST /v1/import (one
file) and the MCP tool add_constraint (the SDK's streamable HTTP client) is refused with
its reason and counted; afterwards no search (REST, MCP, the proxy's injected system
message) carries any of their text. And a benign constraint of an untrusted key is served
nowhere until it is released, then everywhere."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import anyio
import pytest

pytest.importorskip("mcp", reason="the MCP SDK (server extra) is not installed")

from memcollab.server.app import create_app  # noqa: E402
from tests.memory.redteam import HONEST, TASK, RedTeamCase, load_redteam  # noqa: E402
from tests.server.conftest import Service, Storage, service_for  # noqa: E402
from tests.server.mcp_cases import ok, refused  # noqa: E402
from tests.server.proxy_fixtures import Stub, fleet_for  # noqa: E402
from tests.server.test_mcp_http import session_for  # noqa: E402
from tests.support.stub_upstream import serve  # noqa: E402

CASES = load_redteam()
BUCKET = {"domain": "math", "category": "Arithmetic", "subcategory": "fractions"}
BENIGN = {
    "when": "a fraction can be simplified",
    "enforce": "dividing both parts by their greatest common divisor",
    "avoid": "stopping after dividing by a small common factor",
}
SEARCH = {"task": "Add 1/4 and 1/6 and give the result as a fraction.", "p": 20, **BUCKET}
MCP_SEARCH = {**{k: v for k, v in SEARCH.items() if k != "p"}, "k": 20}


def _rest_body(case: RedTeamCase) -> dict[str, Any]:
    record = case.record("a")
    return {
        **{k: getattr(record, k) for k in ("domain", "category", "subcategory", "task_text")},
        "source_task_id": record.source_task_id,
        "constraints": [
            {"when": c.when, "enforce": c.enforce, "avoid": c.avoid} for c in record.constraints
        ],
        "model_pos": record.model_pos,
        "model_neg": record.model_neg,
        "distiller": record.distiller,
    }


def _mcp_args(case: RedTeamCase) -> dict[str, Any]:
    return {
        **(case.constraint or HONEST),
        **BUCKET,
        "category": case.fields.get("category", BUCKET["category"]),
        "task": case.fields.get("task_text", TASK),
    }


def _poisoned_texts() -> list[str]:
    """The poisoned parts of every case (a case keeps the honest parts it did not change)."""
    texts = []
    for case in CASES:
        texts += [v for k, v in (case.constraint or {}).items() if v != HONEST[k]]
        texts += [str(v) for v in case.fields.values()]
    return texts


def _strings(blob: Any) -> list[str]:
    """Every string in a parsed JSON value (compared as text: no escaping in the way)."""
    if isinstance(blob, str):
        return [blob]
    if isinstance(blob, dict):
        return [s for v in blob.values() for s in _strings(v)]
    if isinstance(blob, list | tuple):
        return [s for v in blob for s in _strings(v)]
    return []


def _leaks(blob: Any) -> list[str]:
    """The poisoned texts found in `blob` (a parsed JSON value or a string)."""
    strings = _strings(blob)
    return [t for t in _poisoned_texts() if any(t in s for s in strings)]


@pytest.fixture
def svc(storage: Storage, kind: str, stub: Stub) -> Service:
    made = service_for(storage.new(kind))
    made.context.fleet = fleet_for(stub.url)
    return made


def _proxy_memory(svc: Service, stub: Stub, key: dict[str, str]) -> str:
    """The system message the proxy injected for the search task ('' when none)."""
    body = {
        "model": "stubbed",
        "messages": [{"role": "user", "content": SEARCH["task"]}],
        "metadata": {"domain": "math"},
    }
    r = svc.client.post("/v1/chat/completions", json=body, headers=key)
    assert r.status_code == 200, r.text
    sent = stub.state.requests[-1]["messages"]
    return "".join(m["content"] for m in sent if m["role"] == "system")


def test_every_poisoned_submission_is_refused_counted_and_never_served(
    svc: Service, stub: Stub
) -> None:
    assert len(CASES) >= 30
    assert len(_leaks([c.record("a").model_dump() for c in CASES])) == len(_poisoned_texts())
    writer, admin = svc.key("a", "write"), svc.key("a", "admin")
    honest = svc.client.post(
        "/v1/records", json={**BUCKET, "task_text": TASK, "constraints": [HONEST]}, headers=writer
    )
    assert honest.status_code == 201, honest.text
    honest_id = honest.json()["record"]["id"]

    for case in CASES:  # REST add, one by one
        r = svc.client.post("/v1/records", json=_rest_body(case), headers=writer)
        assert r.status_code == 422, (case.id, r.text)
        message = r.json()["error"]["message"]
        assert f"refused by the content screen: {case.expected} in" in message, (case.id, message)

    # REST import: all of them as one file, refused whole.
    lines = "".join(case.record_json("a") + "\n" for case in CASES).encode()
    r = svc.client.post("/v1/import", content=lines, headers=admin)
    assert r.status_code == 422, r.text
    assert f"{len(CASES)} of {len(CASES)} records refused" in r.json()["error"]["message"]

    with serve(create_app(svc.context)) as base:  # MCP over streamable HTTP

        async def mcp() -> tuple[dict[str, Any], dict[str, Any]]:
            secret = svc.secrets["a/write"]
            async with session_for(f"{base}/mcp", secret) as session:
                for case in CASES:
                    message = await refused(session, "add_constraint", _mcp_args(case))
                    needle = f"refused by the content screen: {case.expected} in"
                    assert needle in message, (case.id, message)
                found = await ok(session, "search_constraints", MCP_SEARCH)
                stats = await ok(session, "memory_stats", {})
            return found, stats

        found, stats = anyio.run(mcp)

    assert [r.id for r in svc.context.memory.list("a", include_flagged=True)] == [honest_id]
    expected = Counter(c.expected for c in CASES)
    refusals = {k: v for k, v in stats["guard"]["refusals"].items() if v}
    assert refusals == {reason: 3 * n for reason, n in expected.items()}
    assert stats["guard"]["refused"] == 3 * len(CASES)
    metrics = svc.client.get("/metrics").text
    for reason, n in expected.items():
        assert f'memcollab_memory_refusals_total{{reason="{reason}"}} {3 * n}.0' in metrics

    # Searches: the honest record, and none of the poisoned text, on every surface.
    assert [h["record_id"] for h in found["hits"]] == [honest_id] and _leaks(found) == []
    rest = svc.client.post("/v1/search", json=SEARCH, headers=writer).json()
    assert [h["record_id"] for h in rest["hits"]] == [honest_id] and _leaks(rest) == []
    injected = _proxy_memory(svc, stub, writer)
    assert HONEST["enforce"] in injected and _leaks(injected) == []
    exported = svc.client.get("/v1/export", headers=admin).text.splitlines()
    assert _leaks([json.loads(line) for line in exported]) == []


def test_a_benign_constraint_of_an_untrusted_key_is_served_only_once_released(
    svc: Service, stub: Stub
) -> None:
    untrusted = svc.context.keys.create("a", "write", trusted=False)[1]
    reader = svc.key("a", "write")
    r = svc.client.post(
        "/v1/records",
        json={**BUCKET, "task_text": TASK, "constraints": [BENIGN]},
        headers={"Authorization": f"Bearer {untrusted}"},
    )
    assert r.status_code == 201 and r.json()["status"] == "quarantined", r.text
    rid = r.json()["record"]["id"]

    with serve(create_app(svc.context)) as base:

        async def over_mcp() -> tuple[dict[str, Any], dict[str, Any]]:
            async with session_for(f"{base}/mcp", untrusted) as session:
                added = await ok(
                    session,
                    "add_constraint",
                    {**BENIGN, **BUCKET, "when": "a fraction can still be reduced"},
                )
                found = await ok(session, "search_constraints", MCP_SEARCH)
            return added, found

        added, found = anyio.run(over_mcp)
        assert added["status"] == "quarantined" and added["merged"] == []
        assert found["hits"] == []

        def served() -> tuple[list[str], list[str], str]:
            rest = svc.client.post("/v1/search", json=SEARCH, headers=reader).json()

            async def mcp_search() -> dict[str, Any]:
                async with session_for(f"{base}/mcp", svc.secrets["a/write"]) as session:
                    return await ok(session, "search_constraints", MCP_SEARCH)

            via_mcp = anyio.run(mcp_search)
            return (
                [h["record_id"] for h in rest["hits"]],
                [h["record_id"] for h in via_mcp["hits"]],
                _proxy_memory(svc, stub, reader),
            )

        assert served() == ([], [], "")
        done = svc.client.post(
            f"/v1/records/{rid}/release", json={"reason": "reviewed"}, headers=svc.key("a")
        )
        assert done.status_code == 200 and done.json()["changed"] is True, done.text
        rest_ids, mcp_ids, injected = served()
        assert rest_ids == mcp_ids == [rid]
        assert BENIGN["enforce"] in injected
        # The MCP one stays quarantined: released records are one by one.
        assert svc.context.memory.get(added["record_id"]).id not in rest_ids
