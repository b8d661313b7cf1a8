"""The service's stores (keys, attempts, provenance) on SQLite and PostgreSQL, and two
contexts ("processes") on one database sharing them."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from memcollab.memory.store import SQLiteMemory
from memcollab.server.attempts import (
    AttemptConflictError,
    AttemptNotFoundError,
    NewAttempt,
    derive_task_id,
)
from memcollab.server.keys import ApiKeyError, InvalidKeyError
from tests.server.conftest import Storage


def test_key_create_verify_revoke(storage: Storage, kind: str) -> None:
    keys = storage.new(kind).keys
    key_id, secret = keys.create("team-a", "write", label="ci")
    info = keys.verify(secret)
    assert (info.key_id, info.namespace, info.scope, info.label) == (
        key_id,
        "team-a",
        "write",
        "ci",
    )
    assert info.allows("read") and info.allows("write") and not info.allows("admin")
    with pytest.raises(InvalidKeyError):
        keys.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B"))  # one character off
    with pytest.raises(InvalidKeyError):
        keys.verify("not a key")
    assert keys.revoke(key_id) is True
    assert keys.revoke(key_id) is False
    with pytest.raises(InvalidKeyError):
        keys.verify(secret)
    listed = keys.list()
    assert [k.key_id for k in listed] == [key_id] and listed[0].revoked


def test_key_input_is_checked(storage: Storage) -> None:
    keys = storage.new("sqlite").keys
    with pytest.raises(ApiKeyError, match="namespace"):
        keys.create("no spaces", "read")
    with pytest.raises(ApiKeyError, match="scope"):
        keys.create("a", "root")
    with pytest.raises(ApiKeyError, match="no key"):
        keys.revoke("0123456789abcdef")


def test_only_a_hash_of_the_secret_is_stored(tmp_path: Path, storage: Storage) -> None:
    ctx = storage.new("sqlite")
    _, secret = ctx.keys.create("a", "admin")
    token = secret.rsplit("_", 1)[-1]
    assert isinstance(ctx.memory.store, SQLiteMemory)
    path = ctx.memory.store.path
    ctx.close()
    raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
    assert raw, "the database files should exist"
    assert token.encode() not in raw and secret.encode() not in raw
    with sqlite3.connect(path) as conn:
        (stored,) = conn.execute("SELECT secret_sha256 FROM server_keys").fetchone()
    assert len(stored) == 64 and stored != secret


def test_bootstrap_key_only_on_a_database_that_never_had_one(storage: Storage, kind: str) -> None:
    ctx = storage.new(kind)
    created = ctx.keys.bootstrap()
    assert created is not None
    info = ctx.keys.verify(created[1])
    assert (info.namespace, info.scope) == ("default", "admin")
    assert ctx.keys.bootstrap() is None
    ctx.keys.revoke(created[0])
    assert ctx.keys.bootstrap() is None  # revoking every key does not bring one back
    other = storage.new(kind)
    other.keys.create("x", "read")
    assert other.keys.bootstrap() is None  # a key made by `keys create` first: no bootstrap


def test_concurrent_bootstraps_create_one_key(storage: Storage, kind: str) -> None:
    first = storage.new(kind)
    contexts = [first] + [storage.again(first) for _ in range(3)]
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda c=c: results.append(c.keys.bootstrap())) for c in contexts
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    assert len(first.keys.list()) == 1


def _attempt(**kw: object) -> NewAttempt:
    base: dict[str, object] = {"model": "m1", "task_text": "What is 2 + 2?", "answer": "4"}
    base.update(kw)
    return NewAttempt(**base)  # type: ignore[arg-type]


def test_attempts_are_idempotent_with_a_client_id(storage: Storage, kind: str) -> None:
    store = storage.new(kind).attempts
    first, created = store.add("a", "k1", _attempt(id="run-1"))
    assert created
    again, created_again = store.add("a", "k2", _attempt(id="run-1"))  # a retry, other key
    assert not created_again and again == first
    with pytest.raises(AttemptConflictError, match="other content"):
        store.add("a", "k1", _attempt(id="run-1", answer="5"))
    assert store.list("a")[1] == 1
    # The same id in another namespace is another attempt.
    _, created_b = store.add("b", "k3", _attempt(id="run-1"))
    assert created_b and store.list("b")[1] == 1
    # Without an id every submission is new.
    store.add("a", "k1", _attempt())
    store.add("a", "k1", _attempt())
    assert store.list("a")[1] == 3


def test_response_ids_are_unique_per_namespace(storage: Storage, kind: str) -> None:
    store = storage.new(kind).attempts
    att, _ = store.add("a", "k", _attempt(response_id="chatcmpl-1"))
    assert store.by_response_id("a", "chatcmpl-1").id == att.id
    with pytest.raises(AttemptConflictError, match="response id"):
        store.add("a", "k", _attempt(response_id="chatcmpl-1", model="m2"))
    with pytest.raises(AttemptNotFoundError):
        store.by_response_id("b", "chatcmpl-1")


def test_task_ids_group_models_and_contrast_is_found(storage: Storage, kind: str) -> None:
    store = storage.new(kind).attempts
    text = "A shop sells pens at 3 for $2. What do 12 cost?"
    # The same task from two models (whitespace differs): one derived task id.
    a1, _ = store.add("a", "k", _attempt(model="big", task_text=text, verdict="correct"))
    a2, _ = store.add("a", "k", _attempt(model="small", task_text=text.replace(" ", "  ")))
    assert a1.task_id == a2.task_id == derive_task_id(text)
    assert store.tasks_with_contrast("a") == []  # no verdict yet for the small model
    updated = store.set_verdict("a", a2.id, "incorrect", "k9")
    assert (updated.verdict, updated.verdict_key_id) == ("incorrect", "k9")
    assert updated.verdict_at is not None
    # A task where only one model both succeeded and failed is no cross-model contrast.
    store.add("a", "k", _attempt(model="big", task_id="t2", verdict="correct"))
    store.add("a", "k", _attempt(model="big", task_id="t2", verdict="incorrect"))
    # A client-named task groups by its id.
    store.add("a", "k", _attempt(model="x", task_id="t3", task_text="one", verdict="incorrect"))
    store.add("a", "k", _attempt(model="y", task_id="t3", task_text="two", verdict="correct"))
    found = {t.task_id: t for t in store.tasks_with_contrast("a")}
    assert set(found) == {a1.task_id, "t3"}
    assert found[a1.task_id].correct_models == ("big",)
    assert found[a1.task_id].incorrect_models == ("small",)
    assert [x.model for x in store.by_task("a", a1.task_id)] == ["big", "small"]
    assert store.tasks_with_contrast("b") == []
    assert store.tasks_with_contrast("a", since=updated.created_at + 3600) == []
    counts = store.counts("a")
    assert counts["total"] == 6 and counts["by_verdict"]["correct"] == 3
    with pytest.raises(AttemptNotFoundError):
        store.set_verdict("b", a1.id, "correct", "k")  # another namespace's attempt


def test_two_contexts_on_one_database_share_keys_and_attempts(storage: Storage, kind: str) -> None:
    one = storage.new(kind)
    two = storage.again(one)
    key_id, secret = one.keys.create("shared", "write")
    assert two.keys.verify(secret).key_id == key_id
    att, _ = two.attempts.add("shared", key_id, _attempt(id="x-1"))
    assert one.attempts.get("shared", "x-1") == att
    _, created = one.attempts.add("shared", key_id, _attempt(id="x-1"))
    assert not created  # the retry through the other process is no duplicate
    assert one.keys.revoke(key_id)
    with pytest.raises(InvalidKeyError):
        two.keys.verify(secret)  # revoked in one process: refused by the other at once
