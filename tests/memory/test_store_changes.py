# ruff: noqa: F811 - the store fixtures are imported by name and used as parameters
"""Record statuses, the versioned change log, rollback, snapshots, history in an export,
and the schema 4 -> 5 migration, on both SQL backends (memory/store_changes.py)."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

import pytest

from memcollab.memory import Memory
from memcollab.memory.record import Constraint
from memcollab.memory.store import (
    SCHEMA_VERSION,
    MemoryFlagError,
    MemoryFormatError,
    MemoryStore,
    MemoryUnsupportedError,
    MemoryVersionError,
)
from tests.memory.test_store import (  # noqa: F401 - fixtures
    Stores,
    kind,
    make,
    pg_url,
    store,
    stores,
)


def _served(store: MemoryStore, namespace: str = "default") -> list[str]:
    return [r.id for r in store.records(namespace)]


def _state(store: MemoryStore, namespace: str = "default") -> dict[str, tuple[str, str]]:
    """id -> (status, content) of every record of the namespace."""
    status = store.statuses(namespace)
    return {
        r.id: (status.get(r.id, "active"), r.model_dump_json())
        for r in store.records(namespace, include_flagged=True)
    }


def test_statuses_decide_what_is_served(store: MemoryStore) -> None:
    one, two = make(1), make(2)
    assert store.add_records([one]) == [one.id]
    assert store.add_records([two, two], status="quarantined", reason="untrusted", actor="k1") == [
        two.id
    ]
    assert store.add_records([two]) == []  # stored already: nothing changes
    assert _served(store) == [one.id]
    assert store.status(two.id) == "quarantined"
    assert store.statuses() == {two.id: "quarantined"}
    with pytest.raises(MemoryFlagError, match="is quarantined: unflag applies"):
        store.transition(two.id, "unflag", "not a way out of quarantine")
    with pytest.raises(MemoryFlagError, match="is quarantined: flag applies"):
        store.transition(two.id, "flag", "withheld already")
    assert store.transition(two.id, "release", "checked by a person", "alice")
    assert not store.transition(two.id, "release", "again")  # active already
    assert _served(store) == [one.id, two.id]
    # archive -> restore returns a record to the status it was archived from
    assert store.transition(one.id, "quarantine", "suspicious")
    assert store.transition(one.id, "archive", "obsolete")
    assert store.status(one.id) == "archived"
    assert store.transition(one.id, "restore", "needed after all")
    assert store.status(one.id) == "quarantined"
    with pytest.raises(MemoryFlagError, match="needs a reason"):
        store.transition(one.id, "release", "  ")
    with pytest.raises(ValueError, match="active or quarantined"):
        store.add_records([make(3)], status="archived")


def test_every_change_is_a_new_version_of_its_namespace(store: MemoryStore) -> None:
    assert store.namespace_version() == 0
    store.add_many([make(1), make(2)])
    store.add(make(3, namespace="other"))
    store.flag(make(1).id, "wrong", "bob")
    store.unflag(make(1).id, "fixed", "bob")
    log = store.changes()
    assert [(c.version, c.op, c.status_before, c.status_after) for c in log] == [
        (1, "add", None, "active"),
        (2, "add", None, "active"),
        (3, "flag", "active", "flagged"),
        (4, "unflag", "flagged", "active"),
    ]
    assert log[2].reason == "wrong" and log[2].actor == "bob" and log[2].record is None
    assert log[0].record == make(1).model_dump(mode="json")
    assert store.namespace_version() == 4 and store.namespace_version("other") == 1
    assert [c.version for c in store.changes(since=1, until=3)] == [2, 3]
    assert [c.op for c in store.changes(record_id=make(1).id)] == ["add", "flag", "unflag"]
    changed = make(2).with_constraints((Constraint(when="w", enforce="e", avoid="a", support=3),))
    store.save([changed])
    last = store.changes()[-1]
    assert (last.version, last.op, last.record) == (5, "replace", changed.model_dump(mode="json"))


def test_rollback_sets_the_served_memory_back_and_can_itself_be_undone(
    stores: Stores,
    kind: str,
) -> None:
    store = stores.new(kind)
    memory = Memory(store)
    memory.add(make(1))
    memory.add(make(2))
    assert memory.snapshot("default", "v-good") == 2
    before = _state(store)
    memory.flag(make(1).id, "looks wrong")
    memory.add(make(3))
    memory.add(make(4), status="quarantined", reason="untrusted key", actor="k9")
    changed = make(2).with_constraints((Constraint(when="w", enforce="e", avoid="a", support=2),))
    store.save([changed])
    after = _state(store)
    assert _served(store) == [make(2).id, make(3).id]

    counts = memory.rollback("default", "v-good", "a bad batch", actor="alice")
    assert (counts.to_version, counts.from_version) == (2, 6)
    assert (counts.changed, counts.contents_restored, counts.archived) == (4, 1, 2)
    assert counts.new_version == 10 == memory.version("default")
    assert _served(store) == [make(1).id, make(2).id]
    assert {rid: s for rid, s in _state(store).items() if rid in before} == before
    assert store.statuses() == {make(3).id: "archived", make(4).id: "archived"}
    assert all(
        c.op == "rollback" and c.reason == "rollback to version 2: a bad batch"
        for c in memory.changes(since=6)
    )
    # the rollback is history too: rolling back to version 6 restores the state after it
    memory.rollback("default", 6, "undo the rollback")
    assert _state(store) == after
    assert len(store.records(include_flagged=True)) == 4  # nothing was ever deleted
    with pytest.raises(MemoryVersionError, match=r"versions 0\.\.14, not 99"):
        memory.rollback("default", 99, "no such version")
    with pytest.raises(MemoryVersionError, match="no snapshot 'nope'.*v-good"):
        memory.rollback("default", "nope", "no such name")
    with pytest.raises(MemoryVersionError, match="already names version 2"):
        memory.snapshot("default", "v-good")
    assert memory.snapshots("default") == {"v-good": 2}
    # rolling back to version 0 withholds everything the namespace ever held
    memory.rollback("default", 0, "start over")
    assert _served(store) == []


def test_an_export_carries_the_history_and_an_import_reproduces_it(
    stores: Stores,
    kind: str,
    tmp_path: Path,
) -> None:
    source = Memory(stores.new("sqlite"))
    source.add(make(1))
    source.add(make(2), status="quarantined", reason="untrusted", actor="k1")
    source.flag(make(1).id, "checked", "bob")
    source.store.save(
        [make(1).with_constraints((Constraint(when="w", enforce="e", avoid="a", support=2),))]
    )
    source.add(make(3, namespace="other"))
    source.snapshot("default", "s1")
    out = tmp_path / "all.jsonl"
    source.export(out)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    changes = [line["change"] for line in lines if "change" in line]
    assert [c["op"] for c in changes] == ["add", "add", "flag", "replace", "add"]
    # the last content of a record is its line in the file, not written twice
    assert changes[3]["record"] is None and changes[3]["record_is_final"] is True
    assert changes[0]["record"] is not None  # an older content is kept

    target = Memory(stores.new(kind))
    counts = target.import_(out)
    assert (counts.added, counts.changes) == (3, 5)
    for namespace in ("default", "other"):
        assert target.changes(namespace) == source.changes(namespace)
        assert _state(target.store, namespace) == _state(source.store, namespace)
    assert target.snapshots("default") == {"s1": 4}
    again = tmp_path / "again.jsonl"
    target.export(again)
    assert again.read_bytes() == out.read_bytes()
    # twice: nothing new, and the namespace's own history is kept
    assert target.import_(out).changes == 0
    assert target.version("default") == 4
    # into a namespace with a history of its own: the import is logged as its changes
    other = Memory(stores.new(kind))
    other.add(make(9))
    counts = other.import_(out)
    assert counts.changes == 1  # "other" reproduced; "default" logged here
    assert [c.op for c in other.changes("default")] == ["add", "add", "add"]
    assert other.changes("default")[-1].reason == f"import from {out}"


def test_a_history_that_does_not_end_in_the_records_is_refused_whole(
    stores: Stores,
    tmp_path: Path,
) -> None:
    source = Memory(stores.new("sqlite"))
    source.add(make(1))
    source.add(make(2))
    out = tmp_path / "m.jsonl"
    source.export(out)
    lines = out.read_text().splitlines()
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join([lines[0], *lines[2:]]) + "\n")  # record 2 left out
    target = Memory(stores.new("sqlite"))
    with pytest.raises(MemoryFormatError, match="changes record .* before adding it"):
        target.import_(tampered)
    gap = tmp_path / "gap.jsonl"
    gap.write_text("\n".join([*lines[:2], lines[3]]) + "\n")  # version 1 left out
    with pytest.raises(MemoryFormatError, match="not versions 1..1 in order"):
        target.import_(gap)
    assert target.list() == [] and target.version() == 0


def test_concurrent_writers_never_share_a_version(stores: Stores, kind: str) -> None:
    opener = stores.opener(kind)
    first = stores.track(opener())
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        mine = stores.track(opener())
        try:
            for n in range(offset, offset + 20):
                mine.add(make(n))
                mine.flag(make(n).id, "race")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i * 100,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [c.version for c in first.changes()] == list(range(1, 121))
    assert first.namespace_version() == 120


def test_a_schema_4_store_gains_statuses_and_a_history_of_its_records(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with Memory.open(path) as memory:
        memory.add(make(1))
        memory.add(make(2, namespace="other"))
        memory.add(make(3))
        memory.flag(make(3).id, "kept through the upgrade")
    conn = sqlite3.connect(path)
    for table in ("memory_changes", "memory_versions", "memory_status"):
        conn.execute(f"DROP TABLE {table}")
    conn.execute("UPDATE memory_meta SET value = 4 WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with Memory.open(path) as memory:
        log = memory.changes("default")
        assert [(c.version, c.record_id, c.op, c.status_after) for c in log] == [
            (1, make(1).id, "add", "active"),
            (2, make(3).id, "add", "flagged"),
        ]
        assert log[0].reason == "stored before versioning" and log[0].record is not None
        assert memory.version("other") == 1
        memory.add(make(4))
        assert memory.version("default") == 3
        assert memory.rollback("default", 2, "the upgrade state").archived == 1
    conn = sqlite3.connect(path)
    found = conn.execute("SELECT value FROM memory_meta WHERE key = 'schema_version'").fetchone()
    conn.close()
    assert found[0] == SCHEMA_VERSION == 5


def test_a_backend_without_history_says_so(tmp_path: Path) -> None:
    from tests.extensions.backend_dict import DictMemory

    mem = Memory(DictMemory("changes-test"))
    mem.add(make(1))
    assert mem.status(make(1).id) == "active"
    with pytest.raises(MemoryUnsupportedError, match="keeps no history"):
        mem.add(make(2), status="quarantined")
    with pytest.raises(MemoryUnsupportedError, match="keeps no history"):
        mem.rollback("default", 0, "no")
    mem.export(tmp_path / "d.jsonl")
    assert len((tmp_path / "d.jsonl").read_text().splitlines()) == 1  # records only


def test_a_merge_logs_its_reason_and_actor(store: MemoryStore) -> None:
    memory = Memory(store)
    first = make(1, constraints=1)
    memory.add(first)
    twin = make(2, constraints=1).with_constraints(first.constraints)
    result = memory.add_or_merge(twin, reason="attempts a1, a2", actor="learn:w1")
    assert [m.record_id for m in result.merged] == [first.id]
    last = memory.changes()[-1]
    assert (last.record_id, last.op, last.actor) == (first.id, "replace", "learn:w1")
    assert last.reason == f"merged a near-duplicate constraint of {twin.id}: attempts a1, a2"
    assert last.record is not None and last.record["constraints"][0]["support"] == 2
    store.save([first], reason="")  # no reason given: logged as a save
    assert memory.changes()[-1].reason == "save"
