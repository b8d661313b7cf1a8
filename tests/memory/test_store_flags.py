"""Flags on both backends: withheld from records(), kept, counted in history, versioned."""

from __future__ import annotations

import pytest

from memcollab.memory.store import MemoryFlagError, MemoryNotFoundError, MemoryStore
from tests.memory.test_store import (  # noqa: F401 - fixtures
    Stores,
    kind,
    make,
    pg_url,
    store,
    stores,
)


def test_flag_unflag_history_and_version(stores: Stores, kind: str) -> None:  # noqa: F811
    open_store = stores.opener(kind)
    mem, other = stores.track(open_store()), stores.track(open_store())
    mem.add_many([make(1), make(2), make(3, namespace="other")])
    v0 = mem.version()
    rid = make(1).id
    assert mem.flag(rid, "harms small", actor="k1") is True
    assert other.version() != v0  # a retriever in another process re-reads the bucket
    assert mem.flag(rid, "twice") is False
    assert [r.id for r in other.records()] == [make(2).id]
    assert [r.id for r in other.records(include_flagged=True)] == [rid, make(2).id]
    assert other.flagged() == {rid: "harms small"}
    assert other.flagged("default") == {rid: "harms small"}
    assert other.flagged("other") == {}
    assert mem.namespaces() == {"default": 2, "other": 1}  # flagged records still count
    v1 = mem.version()
    assert mem.unflag(rid, "looked again") is True
    assert mem.version() != v1
    assert mem.unflag(rid, "again") is False
    history = other.flag_history(rid)
    assert [(e["action"], e["reason"], e["actor"]) for e in history] == [
        ("flag", "harms small", "k1"),
        ("unflag", "looked again", ""),
    ]
    assert [r.id for r in mem.records()] == [rid, make(2).id]


def test_flag_refusals(store: MemoryStore) -> None:  # noqa: F811
    store.add(make(1))
    with pytest.raises(MemoryFlagError, match="needs a reason"):
        store.flag(make(1).id, "")
    with pytest.raises(MemoryNotFoundError):
        store.flag("no-such-id", "why")
    with pytest.raises(MemoryNotFoundError):
        store.flag_history("no-such-id")
    assert store.flagged() == {}
