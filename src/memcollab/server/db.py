"""The service's own tables, in the same database as the memory they serve.

API keys, attempts and record provenance live beside the memory (one SQLite file or one
PostgreSQL database), so several service processes on one PostgreSQL share them. They are
a separate, separately versioned set of tables (`server_meta` holds their schema version):
the memory's own schema (memory/store_sql_schema.py) is untouched, so a memory file
written by an older memcollab opens unchanged and gains only these tables.

Statements run on the memory store's own connections (`MemoryStore.transaction()` and
`query()`): on SQLite this thread's connection (WAL, busy timeout, `BEGIN IMMEDIATE`
writes), on PostgreSQL the store's connection pool, so a process opens at most the pool's
size in connections for the memory and these tables together. A `write()` block is one
transaction that the memory's own writes inside it join: the service adds a record and its
provenance in one transaction (a process killed in between leaves neither).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from memcollab.errors import UserError
from memcollab.memory.store import (
    UPGRADE_HINT,
    MemoryConnectionError,
    MemoryFormatError,
    MemoryStore,
    PostgresMemory,
    SQLiteMemory,
)

SERVER_SCHEMA_VERSION = 3
"""The layout of the server tables; a database written by a newer layout is refused.
1: server_meta, server_keys, server_attempts, server_record_provenance.
2: the write guard (server/guard.py): `server_key_trust` (keys marked untrusted: their
   records are quarantined) and `server_counters` (per namespace: screen refusals by
   reason, dedup merges, quarantines, releases).
3: online learning (server/learn_queue.py): server_learn_queue (one row per namespace and
   task to distil, its pair and state), server_learn_counts (per-namespace counters such as
   "deferred") and server_learned_provenance (attempts, models, distiller, prompt version of
   each record the worker filed).
Every step adds new tables only: a database of an older layout gains what it lacks on open."""
_PG_SCHEMA_LOCK = 0x6D6373657276  # pg_advisory_xact_lock key serialising server-table creation


def _schema(text: str, real: str, big: str) -> list[str]:
    """CREATE statements of the server tables (idempotent), for one backend's types."""
    return [
        f"""CREATE TABLE IF NOT EXISTS server_meta (
            key {text} PRIMARY KEY,
            value {big} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS server_keys (
            key_id {text} PRIMARY KEY,
            namespace {text} NOT NULL,
            scope {text} NOT NULL,
            secret_sha256 {text} NOT NULL,
            label TEXT NOT NULL,
            created_at {real} NOT NULL,
            revoked_at {real}
        )""",
        f"""CREATE TABLE IF NOT EXISTS server_attempts (
            namespace {text} NOT NULL,
            id {text} NOT NULL,
            key_id {text} NOT NULL,
            model {text} NOT NULL,
            task_id {text} NOT NULL,
            task_hash {text} NOT NULL,
            domain {text},
            verdict {text} NOT NULL,
            response_id {text},
            created_at {real} NOT NULL,
            verdict_at {real},
            verdict_key_id {text},
            json TEXT NOT NULL,
            PRIMARY KEY (namespace, id),
            UNIQUE (namespace, response_id)
        )""",
        "CREATE INDEX IF NOT EXISTS server_attempts_task ON server_attempts "
        "(namespace, task_id, created_at)",
        "CREATE INDEX IF NOT EXISTS server_attempts_created ON server_attempts "
        "(namespace, created_at, id)",
        f"""CREATE TABLE IF NOT EXISTS server_record_provenance (
            record_id {text} PRIMARY KEY,
            namespace {text} NOT NULL,
            key_id {text} NOT NULL,
            via {text} NOT NULL,
            at {real} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS server_key_trust (
            key_id {text} PRIMARY KEY,
            trusted {big} NOT NULL,
            at {real} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS server_counters (
            namespace {text} NOT NULL,
            name {text} NOT NULL,
            n {big} NOT NULL,
            PRIMARY KEY (namespace, name)
        )""",
        f"""CREATE TABLE IF NOT EXISTS server_learn_queue (
            namespace {text} NOT NULL,
            task_id {text} NOT NULL,
            state {text} NOT NULL,
            pos_attempt {text} NOT NULL,
            neg_attempt {text} NOT NULL,
            model_pos {text} NOT NULL,
            model_neg {text} NOT NULL,
            tries {big} NOT NULL,
            lease_owner {text},
            lease_until {real},
            enqueued_at {real} NOT NULL,
            updated_at {real} NOT NULL,
            record_id {text},
            reason {text},
            detail TEXT,
            PRIMARY KEY (namespace, task_id)
        )""",
        "CREATE INDEX IF NOT EXISTS server_learn_queue_state ON server_learn_queue "
        "(state, enqueued_at)",
        f"""CREATE TABLE IF NOT EXISTS server_learn_counts (
            namespace {text} NOT NULL,
            name {text} NOT NULL,
            value {big} NOT NULL,
            PRIMARY KEY (namespace, name)
        )""",
        f"""CREATE TABLE IF NOT EXISTS server_learned_provenance (
            record_id {text} PRIMARY KEY,
            namespace {text} NOT NULL,
            task_id {text} NOT NULL,
            pos_attempt {text} NOT NULL,
            neg_attempt {text} NOT NULL,
            model_pos {text} NOT NULL,
            model_neg {text} NOT NULL,
            distiller {text} NOT NULL,
            prompt_version {text} NOT NULL,
            worker {text} NOT NULL,
            at {real} NOT NULL
        )""",
        f"INSERT INTO server_meta (key, value) VALUES ('schema_version', {SERVER_SCHEMA_VERSION}) "
        "ON CONFLICT (key) DO NOTHING",
        # An older database gained the tables above: say so (never lowers a newer version).
        f"UPDATE server_meta SET value = {SERVER_SCHEMA_VERSION} "
        f"WHERE key = 'schema_version' AND value < {SERVER_SCHEMA_VERSION}",
    ]


class Cursor:
    """A DB-API cursor that takes `?` placeholders on every backend."""

    def __init__(self, cursor: Any, postgres: bool) -> None:
        self._cur = cursor
        self._pg = postgres

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s") if self._pg else statement

    def execute(self, statement: str, params: Sequence[Any] = ()) -> Cursor:
        self._cur.execute(self._sql(statement), tuple(params))
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._cur.fetchall())

    def fetchone(self) -> tuple[Any, ...] | None:
        row = self._cur.fetchone()
        return None if row is None else tuple(row)

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount)


class ServerDB:
    """The server tables, on the memory store's connections.

    `query` reads (autocommit, or inside the open `write()` of this thread); `write()` is
    one transaction, joined by the memory store's writes made inside it. Statements use `?`.
    """

    def __init__(self, store: MemoryStore) -> None:
        if isinstance(store, SQLiteMemory):
            self.postgres = False
        elif isinstance(store, PostgresMemory):
            self.postgres = True
        else:
            raise UserError(
                f"the service keeps its keys and attempts beside the memory, in SQLite or "
                f"PostgreSQL; {type(store).__name__} at {store.location} is neither",
                "serve a SQLite file or a postgresql:// URL",
            )
        self.store: SQLiteMemory | PostgresMemory = store
        self.location = store.location
        self._closed = False
        self._init_schema()

    def close(self) -> None:
        """Stop using the store (its owner closes its connections)."""
        self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise MemoryConnectionError(f"the server tables at {self.location} are closed")

    # -- statements
    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read (autocommit; inside this thread's `write()`, on its connection)."""
        self._check()
        return self.store.query(statement, params)

    @contextmanager
    def write(self) -> Iterator[Cursor]:
        """One write transaction; committed when the block ends, rolled back on an error.
        Memory writes (`Memory.add`, `import_`, ...) made inside the block on this thread
        join it, and so does a nested `write()`."""
        self._check()
        with self.store.transaction() as cur:
            yield Cursor(cur, self.postgres)

    def ping(self) -> None:
        """Raise unless the database answers a query."""
        self.query("SELECT value FROM server_meta WHERE key = 'schema_version'")

    # -- schema
    def _init_schema(self) -> None:
        with self.write() as cur:
            if self.postgres:
                # CREATE ... IF NOT EXISTS is not safe against a concurrent CREATE; serialise.
                cur.execute("SELECT pg_advisory_xact_lock(?)", (_PG_SCHEMA_LOCK,))
                statements = _schema('TEXT COLLATE "C"', "DOUBLE PRECISION", "BIGINT")
            else:  # the store switched the file to WAL already; BEGIN IMMEDIATE serialises
                statements = _schema("TEXT", "REAL", "INTEGER")
            for statement in statements:
                cur.execute(statement)
        found = int(self.query("SELECT value FROM server_meta WHERE key = 'schema_version'")[0][0])
        if found > SERVER_SCHEMA_VERSION:
            raise MemoryFormatError(
                f"the service tables at {self.location} have schema {found}, written by a "
                f"newer memcollab (this one reads up to {SERVER_SCHEMA_VERSION})",
                UPGRADE_HINT,
            )
