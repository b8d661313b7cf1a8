"""A record and its provenance are written in one transaction, and the record list is
paged in the database: through the REST API, on each backend."""

from __future__ import annotations

import pytest

from memcollab.server.provenance import ProvenanceStore
from tests.server.conftest import Service, Storage, service_for
from tests.server.test_api import ADD


def _fail(*args: object, **kw: object) -> None:
    raise RuntimeError("the process died here")


def test_a_record_is_never_stored_without_its_provenance(
    any_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, h = any_service.client, any_service.key("a", "write")
    monkeypatch.setattr(ProvenanceStore, "record", _fail)
    r = c.post("/v1/records", json=ADD, headers=h)
    assert r.status_code == 500
    assert c.get("/v1/records", headers=h).json()["total"] == 0  # rolled back with it
    monkeypatch.undo()
    r = c.post("/v1/records", json=ADD, headers=h)  # the client's retry
    assert r.status_code == 201 and r.json()["created"] is True
    assert r.json()["record"]["provenance"]["via"] == "add"
    assert r.json()["record"]["provenance"]["key_id"] is not None


def test_an_import_is_never_stored_without_its_provenance(
    storage: Storage, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = service_for(storage.new(kind))
    target = service_for(storage.new(kind))
    source.add("a", "Solve 2x = 4.")
    source.add("a", "Solve 3x = 9.")
    export = source.client.get("/v1/export", headers=source.key("a", "read")).content
    h = target.key("a", "admin")
    monkeypatch.setattr(ProvenanceStore, "record", _fail)
    assert target.client.post("/v1/import", content=export, headers=h).status_code == 500
    assert target.context.memory.list("a") == []
    monkeypatch.undo()
    r = target.client.post("/v1/import", content=export, headers=h)
    assert r.json()["added"] == 2
    listed = target.client.get("/v1/records", headers=h).json()["records"]
    assert [x["provenance"]["via"] for x in listed] == ["import", "import"]


def test_the_record_list_pages_in_the_database(
    any_service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    c, h = any_service.client, any_service.key("a", "read")
    ids = [any_service.add("a", f"Solve {n}x = {n * 2}.") for n in range(1, 8)]
    any_service.add("b", "Solve 9x = 18.")  # another namespace: never counted
    store = any_service.context.memory.store
    monkeypatch.setattr(store, "records", _fail)  # the full list is never read
    first = c.get("/v1/records?limit=3", headers=h).json()
    assert first["total"] == 7 and first["next_offset"] == 3
    pages = [first]
    while pages[-1]["next_offset"] is not None:
        offset = pages[-1]["next_offset"]
        pages.append(c.get(f"/v1/records?limit=3&offset={offset}", headers=h).json())
    seen = [r["id"] for page in pages for r in page["records"]]
    assert sorted(seen) == sorted(ids) and len(pages) == 3
    beyond = c.get("/v1/records?limit=3&offset=50", headers=h).json()
    assert beyond["records"] == [] and beyond["total"] == 7 and beyond["next_offset"] is None
