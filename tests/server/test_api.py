"""The REST API through FastAPI's TestClient: what each endpoint does, and bad input."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from memcollab.server.context import Settings
from tests.server.conftest import CountingLabeller, Service, Storage, make_record, service_for

ADD = {
    "domain": "math",
    "category": "algebra",
    "subcategory": "linear equations",
    "task_text": "Solve 5x - 2 = 13.",
    "constraints": [
        {"when": "an equation is linear", "enforce": "isolate x", "avoid": "sign slips"}
    ],
    "model_pos": "strong",
    "model_neg": "weak",
}


def test_health_ready_and_docs_need_no_key(service: Service) -> None:
    c = service.client
    assert c.get("/v1/health").json()["status"] == "ok"
    assert c.get("/v1/ready").json() == {"status": "ready"}
    spec = c.get("/openapi.json").json()
    assert "/v1/search" in spec["paths"] and "apiKey" in spec["components"]["securitySchemes"]
    assert c.get("/docs").status_code == 200


def test_ready_is_503_when_the_database_is_gone(service: Service) -> None:
    service.context.close()
    r = service.client.get("/v1/ready")
    assert r.status_code == 503 and r.json() == {"status": "unavailable"}


def test_add_search_get_list(any_service: Service) -> None:
    c, h = any_service.client, any_service.key("a", "write")
    r = c.post("/v1/records", json=ADD, headers=h)
    assert r.status_code == 201, r.text
    body = r.json()
    rid = body["record"]["id"]
    assert body["created"] is True
    key_id = c.get("/v1/whoami", headers=h).json()["key_id"]
    prov = body["record"]["provenance"]
    assert (prov["namespace"], prov["key_id"], prov["via"]) == ("a", key_id, "add")
    assert (prov["model_pos"], prov["model_neg"]) == ("strong", "weak")
    # A retry stores nothing new; other content under the same id is a conflict.
    again = c.post("/v1/records", json=ADD, headers=h)
    assert again.status_code == 200 and again.json()["created"] is False
    assert again.json()["record"]["id"] == rid
    other = {**ADD, "constraints": [{"when": "w", "enforce": "e", "avoid": "a"}]}
    assert c.post("/v1/records", json=other, headers=h).status_code == 409
    other_id = any_service.add(
        "a", "Solve 7x + 1 = 22.", category="geometry", subcategory="circles"
    )

    found = c.post(
        "/v1/search",
        json={
            "task": "Solve 3x + 4 = 19.",
            "domain": "math",
            "model": "weak",
            "category": "algebra",
            "subcategory": "linear equations",
        },
        headers=h,
    ).json()
    assert found["label_source"] == "request" and found["level"] == "subcategory"
    assert [hit["record_id"] for hit in found["hits"]] == [rid]
    hit = found["hits"][0]
    assert hit["score"] > 0 and hit["constraints"][0]["text"].startswith("When an equation")
    unlabelled = c.post(
        "/v1/search", json={"task": "Solve 3x = 9.", "domain": "math"}, headers=h
    ).json()
    assert unlabelled["level"] == "domain" and len(unlabelled["hits"]) == 2

    got = c.get(f"/v1/records/{rid}", headers=h).json()
    assert got["usage"] == {"retrieved": 0, "models": {}}  # a REST search counts no usage
    page = c.get("/v1/records", params={"limit": 1}, headers=h).json()
    assert page["total"] == 2 and len(page["records"]) == 1 and page["next_offset"] == 1
    last = c.get("/v1/records", params={"limit": 1, "offset": 1}, headers=h).json()
    assert last["next_offset"] is None
    assert {page["records"][0]["id"], last["records"][0]["id"]} == {rid, other_id}
    only = c.get("/v1/records", params={"category": "geometry"}, headers=h).json()
    assert [r["category"] for r in only["records"]] == ["geometry"]


def test_flag_unflag_history_and_no_delete(any_service: Service) -> None:
    c, h = any_service.client, any_service.key("a", "admin")
    rid = any_service.add("a")
    assert c.post(f"/v1/records/{rid}/flag", json={"reason": " "}, headers=h).status_code == 422
    assert c.post(f"/v1/records/{rid}/flag", json={}, headers=h).status_code == 422
    r = c.post(f"/v1/records/{rid}/flag", json={"reason": "wrong advice"}, headers=h)
    assert r.json() == {"record_id": rid, "flagged": True, "changed": True}
    assert (
        c.post(f"/v1/records/{rid}/flag", json={"reason": "again"}, headers=h).json()["changed"]
        is False
    )
    assert c.get("/v1/records", headers=h).json()["total"] == 0
    listed = c.get("/v1/records", params={"include_flagged": True}, headers=h).json()
    assert listed["records"][0]["flagged"] and listed["records"][0]["flag_reason"] == "wrong advice"
    search = c.post(
        "/v1/search", json={"task": "Solve 2x = 8.", "domain": "math"}, headers=h
    ).json()
    assert search["hits"] == []
    c.post(f"/v1/records/{rid}/unflag", json={"reason": "fixed upstream"}, headers=h)
    events = c.get(f"/v1/records/{rid}/history", headers=h).json()["events"]
    key_id = c.get("/v1/whoami", headers=h).json()["key_id"]
    assert [(e["action"], e["reason"], e["actor"]) for e in events] == [
        ("flag", "wrong advice", f"key:{key_id}"),
        ("unflag", "fixed upstream", f"key:{key_id}"),
    ]
    assert c.delete(f"/v1/records/{rid}", headers=h).status_code == 405


def test_export_import_round_trip(storage: Storage, kind: str) -> None:
    source = service_for(storage.new(kind))
    target = service_for(storage.new(kind))
    source.add("a", "Solve 2x = 4.")
    source.add("a", "Solve 3x = 9.")
    source.add("b", "Solve 4x = 16.")  # another namespace: never exported with a's key
    export = source.client.get("/v1/export", headers=source.key("a", "read"))
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = export.text.splitlines()
    assert len(lines) == 4 and all(json.loads(line)["namespace"] == "a" for line in lines[:2])
    assert [json.loads(line)["change"]["namespace"] for line in lines[2:]] == ["a", "a"]

    h = target.key("a", "admin")
    r = target.client.post("/v1/import", content=export.content, headers=h)
    assert r.json() == {
        "added": 2,
        "present": 0,
        "conflicts_skipped": 0,
        "replaced": 0,
        "changes": 2,
    }
    again = target.client.post("/v1/import", content=export.content, headers=h).json()
    assert again["added"] == 0 and again["present"] == 2
    # a history line of another namespace is refused like a record of it (nothing written)
    foreign = json.loads(lines[2])
    foreign["change"]["namespace"] = "b"
    body = "\n".join([lines[0], json.dumps(foreign)]).encode()
    assert target.client.post("/v1/import", content=body, headers=h).status_code == 403
    listed = target.client.get("/v1/records", headers=h).json()["records"]
    assert {r["provenance"]["via"] for r in listed} == {"import"}
    # A changed record is a conflict: refused by default (nothing written), or replaced.
    changed = json.loads(lines[0])
    changed["category"] = "changed"
    body = (json.dumps(changed) + "\n").encode()
    refused = target.client.post("/v1/import", content=body, headers=h)
    assert refused.status_code == 409 and "tmp" not in refused.json()["error"]["message"]
    assert (
        target.client.post("/v1/import?on_conflict=bogus", content=body, headers=h).status_code
        == 422
    )
    replaced = target.client.post("/v1/import?on_conflict=replace", content=body, headers=h)
    assert replaced.json()["replaced"] == 1
    # A bad line: one clear error naming the line, nothing imported.
    bad = export.content + b"{not json}\n"  # after 2 records and their 2 changes
    fresh = service_for(storage.new(kind))
    r = fresh.client.post("/v1/import", content=bad, headers=fresh.key("a", "admin"))
    assert r.status_code == 422 and "line:5" in r.json()["error"]["message"]
    assert fresh.context.memory.namespaces() == {}


def test_an_import_never_touches_another_namespace_s_record(service: Service) -> None:
    rid = service.add("b", "Solve 9x = 81.")
    stolen = make_record("b", "Solve 9x = 81.").model_copy(
        update={"namespace": "a", "category": "x"}
    )
    body = stolen.model_dump_json().encode() + b"\n"
    for mode in ("error", "skip", "replace"):
        r = service.client.post(
            f"/v1/import?on_conflict={mode}", content=body, headers=service.key("a")
        )
        assert r.status_code == 409
    assert service.context.memory.get(rid).namespace == "b"
    assert service.context.memory.get(rid).category == "algebra"


def test_attempts_endpoints(any_service: Service) -> None:
    c, h = any_service.client, any_service.key("a", "write")
    rid = any_service.add("a")
    payload = {
        "id": "run-7",
        "model": "small",
        "task": "What is 6 * 7?",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 6 * 7?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "calc", "arguments": '{"x": "6*7"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "42"},
            {"role": "assistant", "content": "42"},
        ],
        "injected_ids": [rid],
        "response_id": "chatcmpl-1",
    }
    r = c.post("/v1/attempts", json=payload, headers=h)
    assert r.status_code == 201, r.text
    attempt = r.json()["attempt"]
    assert attempt["messages"][2]["tool_calls"][0]["function"]["name"] == "calc"  # kept as sent
    assert attempt["verdict"] == "unknown" and attempt["injected_ids"] == [rid]
    retry = c.post("/v1/attempts", json=payload, headers=h)
    assert retry.status_code == 200 and retry.json()["created"] is False
    assert c.post("/v1/attempts", json={**payload, "answer": "41"}, headers=h).status_code == 409
    assert c.post("/v1/attempts", json={"model": "m", "task": "t"}, headers=h).status_code == 422
    unknown = c.post(
        "/v1/attempts",
        json={**payload, "id": "run-8", "response_id": None, "injected_ids": ["nope"]},
        headers=h,
    )
    assert unknown.status_code == 422 and "nope" in unknown.json()["error"]["message"]
    c.post(
        "/v1/attempts",
        json={"model": "big", "task": "What is 6 *  7?", "answer": "42", "verdict": "correct"},
        headers=h,
    )
    v = c.post("/v1/attempts/run-7/verdict", json={"verdict": "incorrect"}, headers=h)
    assert v.json()["verdict"] == "incorrect"
    # the first verdict counts the injected record's outcome once, as feedback does
    usage = any_service.context.memory.usage(rid)["models"]
    assert usage == {"small": {"helped": 0, "harmed": 1}}
    again = c.post("/v1/attempts/run-7/verdict", json={"verdict": "incorrect"}, headers=h)
    changed = c.post("/v1/attempts/run-7/verdict", json={"verdict": "correct"}, headers=h)
    assert again.status_code == changed.status_code == 200
    assert changed.json()["verdict"] == "correct"  # stored, but not counted again
    assert any_service.context.memory.usage(rid)["models"] == usage
    c.post("/v1/attempts/run-7/verdict", json={"verdict": "incorrect"}, headers=h)
    contrast = c.get("/v1/tasks/contrasting", headers=h).json()
    assert contrast["total"] == 1
    task = contrast["tasks"][0]
    assert task["correct_models"] == ["big"] and task["incorrect_models"] == ["small"]
    by_task = c.get(f"/v1/tasks/{task['task_id']}/attempts", headers=h).json()
    assert [a["model"] for a in by_task] == ["small", "big"]
    assert c.get("/v1/tasks/nope/attempts", headers=h).status_code == 404
    assert c.get("/v1/attempts/run-7", headers=h).json()["response_id"] == "chatcmpl-1"
    assert c.get("/v1/attempts/none-such", headers=h).status_code == 404
    page = c.get("/v1/attempts", params={"model": "big"}, headers=h).json()
    assert page["total"] == 1 and page["attempts"][0]["verdict"] == "correct"
    stats = c.get("/v1/stats", headers=h).json()
    assert stats["attempts"]["total"] == 2 and stats["memory"]["records"] == 1


# --------------------------------------------------------------------------- bad input


def test_malformed_json_is_400_and_a_bad_body_422(service: Service) -> None:
    c, h = service.client, service.key("a", "write")
    h_json = {**h, "Content-Type": "application/json"}
    r = c.post("/v1/records", content=b'{"domain": "math",', headers=h_json)
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = c.post("/v1/records", content=b"[1, 2]", headers=h_json)
    assert r.status_code == 422
    r = c.post("/v1/records", json={**ADD, "domain": "chemistry"}, headers=h)
    assert r.status_code == 422 and "unknown domain" in r.json()["error"]["message"]
    r = c.post("/v1/records", json={**ADD, "surprise": 1}, headers=h)
    assert r.status_code == 422 and "surprise" in r.json()["error"]["message"]
    r = c.post("/v1/records", json={**ADD, "task_text": "nul \x00 byte"}, headers=h)
    assert r.status_code == 422
    r = c.post("/v1/records", content=b"not json at all", headers=h)  # no content type
    assert r.status_code == 422 and "JSON object" in r.json()["error"]["message"]
    assert service.context.memory.namespaces() == {}


def test_unknown_record_id_is_404(service: Service) -> None:
    h = service.key("a", "admin")
    for method, path, body in [
        ("GET", "/v1/records/0123456789abcdef0123", None),
        ("GET", "/v1/records/0123456789abcdef0123/history", None),
        ("POST", "/v1/records/0123456789abcdef0123/flag", {"reason": "r"}),
        ("POST", "/v1/records/0123456789abcdef0123/unflag", {"reason": "r"}),
        ("GET", "/v1/records/a%00b", None),
    ]:
        r = service.client.request(method, path, json=body, headers=h)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["type"] == "not_found"
        assert str(service.context.location) not in r.text


def _chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_oversized_bodies_are_413_and_write_nothing(storage: Storage, declared: bool) -> None:
    svc = service_for(storage.new("sqlite", Settings(body_limit=4096, import_limit=64 * 1024)))
    c, h = svc.client, svc.key("a", "admin")
    big = {**ADD, "task_text": "x" * 5000}
    body = json.dumps(big).encode()
    headers = {**h, "Content-Type": "application/json"}
    content = body if declared else _chunks(body, 1000)
    r = c.post("/v1/records", content=content, headers=headers)
    assert r.status_code == 413
    assert (
        c.post(
            "/v1/attempts", content=body if declared else _chunks(body, 1000), headers=headers
        ).status_code
        == 413
    )
    assert svc.context.memory.namespaces() == {}
    assert svc.context.attempts.list("a")[1] == 0
    # The same body under the import limit is accepted by the import endpoint (as JSONL) ...
    line = make_record("a", "y" * 5000).model_dump_json().encode() + b"\n"
    ok = c.post("/v1/import", content=line if declared else _chunks(line, 1000), headers=h)
    assert ok.status_code == 200 and ok.json()["added"] == 1
    # ... and a file over the import limit is refused whole.
    lines = b"".join(
        make_record("a", f"Task {i} " + "z" * 2000).model_dump_json().encode() + b"\n"
        for i in range(40)
    )
    assert len(lines) > 64 * 1024
    r = c.post("/v1/import", content=lines if declared else _chunks(lines, 4096), headers=h)
    assert r.status_code == 413
    assert svc.context.memory.namespaces() == {"a": 1}
    metrics = c.get("/metrics").text
    assert 'status="413"' in metrics


def test_a_server_error_never_leaks_a_traceback(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internals at /srv/private/path")

    monkeypatch.setattr(service.context.memory, "stats", boom)
    r = service.client.get("/v1/stats", headers=service.key("a", "read"))
    assert r.status_code == 500
    text = r.text
    assert "Traceback" not in text and "secret internals" not in text and "/srv/private" not in text
    assert r.json()["error"]["type"] == "error" and "incident" in r.json()["error"]["message"]


def test_metrics_count_requests_by_route_template(service: Service) -> None:
    c, h = service.client, service.key("a", "read")
    c.get("/v1/records/abc", headers=h)
    c.get("/v1/records/def", headers=h)
    c.get("/v1/nowhere")
    text = c.get("/metrics").text
    series = 'memcollab_http_requests_total{method="GET",route="/v1/records/{record_id}",'
    assert series + 'status="404"} 2.0' in text
    assert 'route="unmatched",status="404"' in text
    assert "memcollab_http_request_duration_seconds_bucket" in text
    assert "abc" not in text


def test_search_says_what_the_namespaces_utility_gate_decided(service: Service) -> None:
    c, h = service.client, service.key("a", "read")
    rid = service.add("a", "Solve 7x + 1 = 22.")
    service.context.memory.set_note(
        "a", "gate:v2", {"rule": "non_negative", "decisions": {"weak": {"math": {"memory": False}}}}
    )
    labeller = CountingLabeller()
    service.context.labeller = labeller
    query = {"task": "Solve 3x + 4 = 19.", "domain": "math"}
    withheld = c.post("/v1/search", json={**query, "model": "weak"}, headers=h).json()
    assert withheld["hits"] == []
    assert withheld["gate"] == {"verdict": "withheld", "condition": "v2", "rule": "non_negative"}
    # The labeller is not asked for a query the gate answers with nothing.
    assert labeller.asked == []
    assert (withheld["category"], withheld["label_source"]) == (None, "none")
    labelled = {**query, "model": "weak", "category": "algebra"}
    withheld = c.post("/v1/search", json=labelled, headers=h).json()
    assert (withheld["category"], withheld["label_source"]) == ("algebra", "request")
    other = c.post("/v1/search", json={**query, "model": "strong"}, headers=h).json()
    assert [x["record_id"] for x in other["hits"]] == [rid]
    assert other["gate"]["verdict"] == "undecided"
    assert labeller.asked == [query["task"]] and other["label_source"] == "labeller"
    anonymous = c.post("/v1/search", json=query, headers=h).json()
    assert [x["record_id"] for x in anonymous["hits"]] == [rid] and anonymous["gate"] is None
    # Another namespace's key never sees this namespace's gate or records.
    elsewhere = c.post(
        "/v1/search", json={**query, "model": "weak"}, headers=service.key("b", "read")
    ).json()
    assert elsewhere["hits"] == [] and elsewhere["gate"] is None
