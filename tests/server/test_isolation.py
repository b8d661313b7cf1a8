"""Namespace isolation and scopes, for EVERY endpoint.

`ROUTES` lists each data endpoint with its scope and an attack: a key of namespace "a"
reaching for namespace "b"'s records and attempts. `test_every_route_is_covered` walks
the app's routes, so a new endpoint that is not listed here fails the suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from memcollab.llm.fleet import Fleet, ModelSpec
from memcollab.server.keys import SCOPE_RANK, SCOPES
from tests.server.conftest import Service, Storage, make_record, service_for

PUBLIC = {("GET", "/v1/health"), ("GET", "/v1/ready"), ("GET", "/metrics")}
B_TEXT = "Solve 4x - 3 = 13 for x."


@dataclass
class World:
    """Namespace b's things, and a key of namespace a."""

    svc: Service
    rid: str  # b's record
    flagged_rid: str  # b's flagged record
    attempt_id: str  # b's attempt
    task_id: str  # b's task (with a cross-model contrast)
    quarantined_rid: str  # b's quarantined record (from an untrusted key)

    @property
    def a(self) -> dict[str, str]:
        return self.svc.key("a", "admin")

    def b_state(self) -> Any:
        """Everything of namespace b that an attack could change."""
        ctx = self.svc.context
        return (
            [r.model_dump() for r in ctx.memory.list("b", include_flagged=True)],
            ctx.memory.flagged("b"),
            [a.model_dump() for a in ctx.attempts.list("b")[0]],
        )


@pytest.fixture
def world(storage: Storage, kind: str) -> World:
    svc = service_for(storage.new(kind))
    svc.context.fleet = Fleet([ModelSpec(name="m1", provider="scripted", responses=["4"])])
    rid = svc.add("b", B_TEXT)
    flagged = svc.add("b", "Solve 6x = 42.")
    svc.context.memory.flag(flagged, "b's own flag")
    held = make_record("b", "Solve 9x = 81.")
    svc.context.memory.add_or_merge(held, status="quarantined", reason="untrusted")
    hb = svc.key("b", "write")
    att = svc.client.post(
        "/v1/attempts",
        json={
            "id": "b-att",
            "response_id": "chatcmpl-b",
            "model": "m1",
            "task": B_TEXT,
            "task_id": "b-task",
            "answer": "4",
            "verdict": "correct",
            "injected_ids": [rid],
        },
        headers=hb,
    )
    assert att.status_code == 201, att.text
    svc.client.post(
        "/v1/attempts",
        json={
            "model": "m2",
            "task": B_TEXT,
            "task_id": "b-task",
            "answer": "5",
            "verdict": "incorrect",
        },
        headers=hb,
    )
    return World(svc, rid, flagged, "b-att", "b-task", held.id)


def _no_b_ids(w: World, text: str) -> None:
    for secret in (w.rid, w.flagged_rid, w.attempt_id, w.task_id, B_TEXT, w.quarantined_rid):
        assert secret not in text


# Each attack: (method, path, request kwargs) made from the world, and a check of the answer.
Attack = Callable[[World], tuple[str, str, dict[str, Any], Callable[[Any], None]]]


def _status(code: int) -> Callable[[Any], None]:
    def check(r: Any) -> None:
        assert r.status_code == code, r.text

    return check


def _ok_without_b(w: World) -> Callable[[Any], None]:
    def check(r: Any) -> None:
        assert r.status_code == 200, r.text
        _no_b_ids(w, r.text)

    return check


ADD_B = {
    "namespace": "b",
    "domain": "math",
    "category": "algebra",
    "subcategory": "linear equations",
    "task_text": "Solve 8x = 64.",
    "constraints": [{"when": "w", "enforce": "e", "avoid": "a"}],
}


def _import_b(w: World) -> tuple[str, str, dict[str, Any], Callable[[Any], None]]:
    line = make_record("b", "Solve 10x = 100.").model_dump_json().encode() + b"\n"
    return "POST", "/v1/import", {"content": line}, _status(403)


def _search(w: World) -> tuple[str, str, dict[str, Any], Callable[[Any], None]]:
    body = {"task": "Solve 4x - 2 = 14 for x.", "domain": "math", "category": "algebra"}
    return "POST", "/v1/search", {"json": body}, _ok_without_b(w)


def _stats(w: World) -> tuple[str, str, dict[str, Any], Callable[[Any], None]]:
    def check(r: Any) -> None:
        assert r.status_code == 200
        body = r.json()
        assert body["namespace"] == "a" and body["memory"]["records"] == 0
        assert body["flagged"] == 0 and body["attempts"]["total"] == 0

    return "GET", "/v1/stats", {}, check


def _list_attempts(w: World) -> tuple[str, str, dict[str, Any], Callable[[Any], None]]:
    def check(r: Any) -> None:
        assert r.status_code == 200 and r.json()["total"] == 0
        _no_b_ids(w, r.text)

    return "GET", f"/v1/attempts?task_id={w.task_id}", {}, check


def _contrasting(w: World) -> tuple[str, str, dict[str, Any], Callable[[Any], None]]:
    def check(r: Any) -> None:
        assert r.status_code == 200 and r.json()["total"] == 0

    return "GET", "/v1/tasks/contrasting", {}, check


def _learning(w: World) -> tuple[str, str, dict[str, Any], Callable[[Any], None]]:
    def check(r: Any) -> None:
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["namespace"] == "a" and body["waiting"] == 0
        assert sum(body["queue"].values()) == 0 and body["deferred"] == 0
        _no_b_ids(w, r.text)

    # b's contrasting task is queued in b (its verdicts offered it), never counted for a.
    assert w.svc.context.learning.counts("b")["queue"]["pending"] == 1
    return "GET", "/v1/learning", {}, check


def _whoami(w: World) -> tuple[str, str, dict[str, Any], Callable[[Any], None]]:
    def check(r: Any) -> None:
        assert r.json()["namespace"] == "a"

    return "GET", "/v1/whoami", {}, check


def _submit_b(w: World) -> tuple[str, str, dict[str, Any], Callable[[Any], None]]:
    body = {"namespace": "b", "model": "m", "task": B_TEXT, "answer": "4"}
    return "POST", "/v1/attempts", {"json": body}, _status(403)


def _chat(w: World) -> tuple[str, str, dict[str, Any], Callable[[Any], None]]:
    body = {"model": "m1", "messages": [{"role": "user", "content": "Solve 4x - 2 = 14 for x."}]}

    def check(r: Any) -> None:
        assert r.status_code == 200, r.text
        assert r.headers["x-memcollab-memory"] == "none"  # b's records are never injected
        _no_b_ids(w, r.text + " ".join(r.headers.values()))

    return "POST", "/v1/chat/completions", {"json": body}, check


def _feedback_b(w: World) -> tuple[str, str, dict[str, Any], Callable[[Any], None]]:
    body = {"response_id": "chatcmpl-b", "verdict": "incorrect"}
    return "POST", "/v1/feedback", {"json": body}, _status(404)


ROUTES: dict[tuple[str, str], tuple[str, Attack]] = {
    ("POST", "/v1/chat/completions"): ("write", _chat),
    ("GET", "/v1/models"): ("read", lambda w: ("GET", "/v1/models", {}, _ok_without_b(w))),
    ("POST", "/v1/feedback"): ("write", _feedback_b),
    ("POST", "/v1/search"): ("read", _search),
    ("GET", "/v1/records"): (
        "read",
        lambda w: ("GET", "/v1/records?include_flagged=true", {}, _ok_without_b(w)),
    ),
    ("GET", "/v1/records/{record_id}"): (
        "read",
        lambda w: ("GET", f"/v1/records/{w.rid}", {}, _status(404)),
    ),
    ("GET", "/v1/records/{record_id}/history"): (
        "read",
        lambda w: ("GET", f"/v1/records/{w.flagged_rid}/history", {}, _status(404)),
    ),
    ("POST", "/v1/records"): (
        "write",
        lambda w: ("POST", "/v1/records", {"json": ADD_B}, _status(403)),
    ),
    ("POST", "/v1/records/{record_id}/flag"): (
        "admin",
        lambda w: ("POST", f"/v1/records/{w.rid}/flag", {"json": {"reason": "x"}}, _status(404)),
    ),
    ("POST", "/v1/records/{record_id}/unflag"): (
        "admin",
        lambda w: (
            "POST",
            f"/v1/records/{w.flagged_rid}/unflag",
            {"json": {"reason": "x"}},
            _status(404),
        ),
    ),
    ("POST", "/v1/records/{record_id}/release"): (
        "admin",
        lambda w: (
            "POST",
            f"/v1/records/{w.quarantined_rid}/release",
            {"json": {"reason": "x"}},
            _status(404),
        ),
    ),
    ("GET", "/v1/export"): ("read", lambda w: ("GET", "/v1/export", {}, _ok_without_b(w))),
    ("GET", "/v1/browse"): ("read", lambda w: ("GET", "/v1/browse", {}, _ok_without_b(w))),
    ("POST", "/v1/import"): ("admin", _import_b),
    ("GET", "/v1/stats"): ("read", _stats),
    ("POST", "/v1/attempts"): ("write", _submit_b),
    ("POST", "/v1/attempts/{attempt_id}/verdict"): (
        "write",
        lambda w: (
            "POST",
            f"/v1/attempts/{w.attempt_id}/verdict",
            {"json": {"verdict": "incorrect"}},
            _status(404),
        ),
    ),
    ("GET", "/v1/attempts/{attempt_id}"): (
        "read",
        lambda w: ("GET", f"/v1/attempts/{w.attempt_id}", {}, _status(404)),
    ),
    ("GET", "/v1/attempts"): ("read", _list_attempts),
    ("GET", "/v1/tasks/{task_id}/attempts"): (
        "read",
        lambda w: ("GET", f"/v1/tasks/{w.task_id}/attempts", {}, _status(404)),
    ),
    ("GET", "/v1/tasks/contrasting"): ("read", _contrasting),
    ("GET", "/v1/whoami"): ("read", _whoami),
    ("GET", "/v1/learning"): ("read", _learning),
}


def test_every_route_is_covered(service: Service) -> None:
    """Every operation of the app (read from its OpenAPI document, so routes added by any
    router count) is public by name, or listed in ROUTES and guarded by the API key."""
    operations = {
        (method.upper(), path): op
        for path, item in service.client.get("/openapi.json").json()["paths"].items()
        for method, op in item.items()
    }
    assert set(operations) == set(ROUTES) | PUBLIC, "update the isolation table"
    for key, op in operations.items():
        if key in PUBLIC:
            assert "security" not in op, key
            assert service.client.request(*key).status_code == 200, key
        else:
            assert op.get("security") == [{"apiKey": []}], key


@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
def test_a_key_never_reaches_another_namespace(world: World, route: tuple[str, str]) -> None:
    before = world.b_state()
    method, path, kwargs, check = ROUTES[route][1](world)
    check(world.svc.client.request(method, path, headers=world.a, **kwargs))
    assert world.b_state() == before


@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
def test_naming_another_namespace_is_403(world: World, route: tuple[str, str]) -> None:
    before = world.b_state()
    method, path, kwargs, _ = ROUTES[route][1](world)
    sep = "&" if "?" in path else "?"
    r = world.svc.client.request(method, f"{path}{sep}namespace=b", headers=world.a, **kwargs)
    assert r.status_code == 403, r.text
    assert "bound to namespace 'a'" in r.json()["error"]["message"]
    _no_b_ids(world, r.text)
    assert world.b_state() == before


@pytest.mark.parametrize("route", sorted(ROUTES), ids=lambda r: f"{r[0]} {r[1]}")
def test_scopes_and_bad_keys(world: World, route: tuple[str, str]) -> None:
    scope, attack = ROUTES[route]
    before = world.b_state()
    svc = world.svc
    # Aim at b's own things with b's keys, so only the key decides.
    method, path, kwargs, _ = attack(world)
    for lower in SCOPES[: SCOPE_RANK[scope]]:
        r = svc.client.request(method, path, headers=svc.key("b", lower), **kwargs)
        assert r.status_code == 403, (lower, r.text)
        assert f"needs '{scope}'" in r.json()["error"]["message"]
    key_id, secret = svc.context.keys.create("b", "admin")
    svc.context.keys.revoke(key_id)
    for headers in (
        {},
        {"Authorization": "Bearer mck_0123456789abcdef_" + "x" * 43},
        {"Authorization": "Basic dXNlcjpwdw=="},
        {"Authorization": f"Bearer {secret}"},  # revoked
    ):
        r = svc.client.request(method, path, headers=headers, **kwargs)
        assert r.status_code == 401, (headers, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    assert world.b_state() == before
