"""The service tables beside an existing memory: added on first open, nothing else changed,
and a database written by a newer service layout is refused."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from memcollab.memory.api import Memory
from memcollab.memory.store import SCHEMA_VERSION, MemoryFormatError, PostgresMemory, SQLiteMemory
from memcollab.server.context import ServerContext
from memcollab.server.db import SERVER_SCHEMA_VERSION
from tests.server.conftest import Storage, make_record


def _tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_an_existing_schema_2_file_gains_only_the_server_tables(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    with SQLiteMemory(path) as store:  # a memory as memcollab wrote it before the service
        store.add(make_record("default", "Solve 2x = 4."))
        store.flag(make_record("default", "Solve 2x = 4.").id, "test")
    before = _tables(path)
    assert not any(t.startswith("server_") for t in before)
    with sqlite3.connect(path) as conn:
        dump_before = list(conn.iterdump())

    with ServerContext.open(path) as ctx:
        _, secret = ctx.keys.create("default", "read")
        assert ctx.keys.verify(secret).namespace == "default"
        assert [r.task_text for r in ctx.memory.list(include_flagged=True)] == ["Solve 2x = 4."]

    after = _tables(path)
    assert after - before == {
        "server_meta",
        "server_keys",
        "server_attempts",
        "server_record_provenance",
        "server_key_trust",
        "server_counters",
        "server_learn_queue",
        "server_learn_counts",
        "server_learned_provenance",
    }
    with sqlite3.connect(path) as conn:
        assert conn.execute(
            "SELECT value FROM memory_meta WHERE key='schema_version'"
        ).fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        dump_after = [line for line in conn.iterdump() if "server_" not in line]
    assert dump_after == [line for line in dump_before if "server_" not in line]
    # Opening it again (as a plain memory, or as a service) keeps everything.
    with Memory.open(path, create=False) as memory:
        assert memory.flagged() and memory.namespaces() == {"default": 1}
    with ServerContext.open(path) as ctx:
        assert len(ctx.keys.list()) == 1


GUARD_TABLES = ("server_key_trust", "server_counters")  # step 2
LEARNING_TABLES = ("server_learn_queue", "server_learn_counts", "server_learned_provenance")
LACKING = {1: GUARD_TABLES + LEARNING_TABLES, 2: LEARNING_TABLES}
"""What a service database of each older layout lacks (db.py's SERVER_SCHEMA_VERSION steps)."""


def _present(ctx: ServerContext, tables: tuple[str, ...]) -> set[str]:
    if ctx.db.postgres:
        rows = ctx.db.query(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
    else:
        rows = ctx.db.query("SELECT name FROM sqlite_master WHERE type = 'table'")
    return {str(r[0]) for r in rows} & set(tables)


@pytest.mark.parametrize("version", sorted(LACKING))
def test_an_older_service_database_gains_what_it_lacks(
    storage: Storage, kind: str, version: int
) -> None:
    ctx = storage.new(kind)
    key_id, secret = ctx.keys.create("default", "write")
    record = make_record("default", "Solve 5x = 10.")
    ctx.memory.add(record)
    with ctx.db.write() as cur:  # as the service of that layout wrote it
        for table in LACKING[version]:
            cur.execute(f"DROP TABLE {table}")
        cur.execute("UPDATE server_meta SET value = ? WHERE key = 'schema_version'", (version,))
    assert not _present(ctx, LACKING[version])
    ctx.close()

    again = storage.again(ctx)
    assert _present(again, LACKING[version]) == set(LACKING[version])
    assert again.db.query("SELECT value FROM server_meta WHERE key = 'schema_version'") == [
        (SERVER_SCHEMA_VERSION,)
    ]
    # What was there is kept, and what was added works.
    assert [r.id for r in again.memory.list()] == [record.id]
    info = again.keys.verify(secret)
    assert info.key_id == key_id
    # A key of version 1 has no trust row: it reads as trusted; version 2 kept its row.
    assert info.trusted
    again.counters.bump("default", {"stored": 1})
    assert again.counters.of("default") == {"stored": 1}
    assert again.learning.counts()["distilled"] == 0


def test_a_newer_service_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite"
    ServerContext.open(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE server_meta SET value = ? WHERE key = 'schema_version'",
            (SERVER_SCHEMA_VERSION + 1,),
        )
    with pytest.raises(MemoryFormatError, match="newer memcollab"):
        ServerContext.open(path)


def test_an_existing_postgres_memory_gains_the_server_tables(pg_url: str) -> None:
    import psycopg

    schema = f"srvtest_{uuid.uuid4().hex[:12]}"
    try:
        with PostgresMemory(pg_url, schema=schema) as store:
            store.add(make_record("default", "Solve 3x = 9."))
        with ServerContext(Memory(PostgresMemory(pg_url, schema=schema))) as ctx:
            ctx.keys.create("default", "read")
            assert ctx.memory.namespaces() == {"default": 1}
        with ServerContext(Memory(PostgresMemory(pg_url, schema=schema))) as ctx:  # again
            assert len(ctx.keys.list()) == 1
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
