"""The browser page's server side: GET /v1/browse (what the page shows per record), the
page and its assets (security headers), and the script's no-HTML-parsing rule."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from tests.server.browse_seed import (
    BIG,
    FLAG_REASON,
    NS,
    OTHER,
    OTHER_MARK,
    SMALL,
    XSS_WHEN,
    Seeded,
    seed,
)
from tests.server.conftest import Service, Storage, service_for


@pytest.fixture
def seeded(storage: Storage, kind: str) -> tuple[Service, Seeded]:
    svc = service_for(storage.new(kind))
    return svc, seed(svc.context)


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_browse_gives_each_record_its_usage_history_utility_and_provenance(
    seeded: tuple[Service, Seeded],
) -> None:
    svc, s = seeded
    r = svc.client.get("/v1/browse", headers=_auth(s.key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["namespace"], body["scope"], body["total"]) == (NS, "read", 3)
    assert body["next_offset"] is None
    by_id = {rec["id"]: rec for rec in body["records"]}
    assert set(by_id) == {s.linear, s.divisible, s.xss}

    linear = by_id[s.linear]
    assert linear["usage"] == {
        "retrieved": 12,
        "models": {BIG: {"helped": 5, "harmed": 1}, SMALL: {"helped": 2, "harmed": 3}},
    }
    assert linear["provenance"]["key_id"] == s.writer_id
    assert linear["provenance"]["via"] == "add"
    assert linear["history"] == [] and not linear["flagged"]
    # Beta(1+5, 1+1) vs Beta(1+14, 1+10) for the 1.5B model: means 0.75 and 15/26.
    big = linear["utility"][BIG]
    assert big["outcomes"] == 6 and big["baseline_level"] == "subcategory"
    assert big["utility"] == pytest.approx(0.75 - 15 / 26)
    assert 0 < big["p_harm"] < 0.5 and big["verdict"] == "unsure"  # 6 < 80 outcomes
    assert set(linear["utility"]) == {BIG, SMALL}

    flagged = by_id[s.divisible]
    assert flagged["flagged"] and flagged["flag_reason"] == FLAG_REASON
    assert [e["action"] for e in flagged["history"]] == ["flag", "unflag", "flag"]
    assert flagged["history"][-1]["actor"] == f"key:{s.writer_id}"
    assert flagged["usage"] == {"retrieved": 4, "models": {}} and flagged["utility"] == {}
    assert flagged["provenance"]["key_id"] is None  # added offline
    assert flagged["constraints"][0]["support"] == 3
    # Model text comes back as data, unchanged (the page escapes it).
    assert by_id[s.xss]["constraints"][0]["when"] == XSS_WHEN


def test_browse_shows_only_the_keys_namespace(seeded: tuple[Service, Seeded]) -> None:
    svc, s = seeded
    mine = svc.client.get("/v1/browse", headers=_auth(s.key))
    assert OTHER_MARK not in mine.text and not any(rid in mine.text for rid in s.other)
    theirs = svc.client.get("/v1/browse", headers=_auth(s.other_key)).json()
    assert theirs["namespace"] == OTHER
    assert {r["id"] for r in theirs["records"]} == set(s.other)  # the flagged one too
    named = svc.client.get(f"/v1/browse?namespace={OTHER}", headers=_auth(s.key))
    assert named.status_code == 403 and OTHER_MARK not in named.text
    assert svc.client.get("/v1/browse").status_code == 401


def test_browse_pages(seeded: tuple[Service, Seeded]) -> None:
    svc, s = seeded
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        page = svc.client.get(f"/v1/browse?limit=2&offset={offset}", headers=_auth(s.key)).json()
        assert page["total"] == 3 and len(page["records"]) <= 2
        seen += [r["id"] for r in page["records"]]
        offset = page["next_offset"]
    assert sorted(seen) == sorted([s.linear, s.divisible, s.xss]) and len(seen) == 3
    bad = svc.client.get("/v1/browse?limit=0", headers=_auth(s.key))
    assert bad.status_code == 422


def test_the_page_and_its_assets_need_no_key_and_forbid_inline_script(service: Service) -> None:
    c = service.client
    page = c.get("/browse")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    # Everything the page loads is served here: no other origin is named.
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)
    for name, kind in (("browse.js", "text/javascript"), ("browse.css", "text/css")):
        r = c.get(f"/browse/static/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind), name
    assert c.get("/browse/static/index.html").status_code == 404
    assert c.get("/browse/static/..%2Fapp.py").status_code == 404
    assert "/browse" not in c.get("/openapi.json").json()["paths"]


def test_the_script_never_parses_data_as_html() -> None:
    """The page's only defence-in-depth is CSP; the first is that browse.js builds every
    element with textContent. Any HTML-parsing sink in it fails this test."""
    script = resources.files("memcollab.server").joinpath("browser", "browse.js").read_text("utf-8")
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in code, sink
    assert "textContent" in code


def test_browse_reads_a_page_in_queries_that_do_not_grow_with_its_records(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batched reads: the statements one page takes stay the same when the namespace holds
    ten times as many records with usage, flags and outcomes (SQLite's trace callback)."""
    import sqlite3

    from memcollab.memory import store_sqlite
    from memcollab.memory.record import Constraint
    from tests.server.browse_seed import _record

    statements: list[str] = []

    def traced(path: str) -> sqlite3.Connection:
        conn = connect(path)
        conn.set_trace_callback(statements.append)
        return conn

    connect = store_sqlite.connect
    monkeypatch.setattr(store_sqlite, "connect", traced)
    svc = service_for(storage.new("sqlite"))
    s = seed(svc.context)
    memory = svc.context.memory

    def page_statements() -> int:
        statements.clear()
        r = svc.client.get("/v1/browse", headers=_auth(s.key), params={"limit": 1000})
        assert r.status_code == 200, r.text
        return len(statements)

    def add(start: int, stop: int) -> None:
        for i in range(start, stop):
            c = Constraint(when=f"case {i}", enforce="check it", avoid="skipping it")
            record = _record(NS, f"task {i} of many", "math", "algebra", "x", [c], 100.0 + i)
            memory.add(record)
            memory.record_outcome(record.id, BIG, i % 2 == 0)
            if i % 3 == 0:
                memory.flag(record.id, "looked odd", actor="test")

    add(0, 3)
    few = page_statements()
    add(3, 63)
    assert len(memory.list(NS, include_flagged=True)) >= 60
    assert page_statements() == few
