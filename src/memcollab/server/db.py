"""The service's own tables, in the same database as the memory they serve.

API keys, attempts and record provenance live beside the memory (one SQLite file or one
PostgreSQL database), so several service processes on one PostgreSQL share them. They are
a separate, separately versioned set of tables (`server_meta` holds their schema version):
the memory's own schema (memory/store_sql.py) is untouched, so a memory file written by an
older memcollab opens unchanged and gains only these tables.

Connections follow the memory store's patterns: one connection per thread in autocommit
mode, SQLite in WAL mode with a busy timeout and `BEGIN IMMEDIATE` write transactions,
PostgreSQL through psycopg 3 with schema creation serialised by an advisory lock. The
connections are this module's own (opened from the store's path or URL), because the
memory store's connections are private to it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
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
from memcollab.sqlite_local import connect, create_with_wal

SERVER_SCHEMA_VERSION = 1
"""The layout of the server tables; a database written by a newer layout is refused."""
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
        f"INSERT INTO server_meta (key, value) VALUES ('schema_version', {SERVER_SCHEMA_VERSION}) "
        "ON CONFLICT (key) DO NOTHING",
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
    """Per-thread connections to the memory's database, for the server tables.

    `query` reads in autocommit mode; `write()` is one transaction. Statements use `?`.
    """

    def __init__(self, store: MemoryStore) -> None:
        if isinstance(store, SQLiteMemory):
            self.postgres = False
            self._path = store.path
        elif isinstance(store, PostgresMemory):
            self.postgres = True
            self._url, self._pg_schema = store.url, store.schema
        else:
            raise UserError(
                f"the service keeps its keys and attempts beside the memory, in SQLite or "
                f"PostgreSQL; {type(store).__name__} at {store.location} is neither",
                "serve a SQLite file or a postgresql:// URL",
            )
        self.location = store.location
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[Any] = []
        self._pid = os.getpid()
        self._closed = False
        try:
            self._init_schema()
        except BaseException:
            self.close()
            raise

    # -- connections
    def _connect(self) -> Any:
        if not self.postgres:
            try:
                return connect(self._path)
            except sqlite3.Error as exc:
                raise MemoryConnectionError(f"cannot open {self._path}: {exc}") from None
        import psycopg
        from psycopg import sql

        from memcollab.memory.store_postgres import _PG_CONNECT_TIMEOUT_S, _pg_failure

        try:
            conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=_PG_CONNECT_TIMEOUT_S
            )
        except psycopg.Error as exc:
            raise _pg_failure(self._url, exc) from None
        if self._pg_schema:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self._pg_schema)))
        return conn

    def _conn(self) -> Any:
        if self._pid != os.getpid():  # forked: the parent's connections are not ours to use
            with self._lock:
                self._conns = []
                self._local = threading.local()
                self._pid = os.getpid()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise MemoryConnectionError(f"the server tables at {self.location} are closed")
            conn = self._connect()
            with self._lock:
                self._conns.append(conn)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close every connection this object opened."""
        with self._lock:
            conns, self._conns = self._conns, []
            self._closed = True
            self._local = threading.local()
        for conn in conns:
            conn.close()

    # -- statements
    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one read (autocommit)."""
        conn = self._conn()
        if self.postgres:
            with conn.cursor() as cur:
                return Cursor(cur, True).execute(statement, params).fetchall()
        return Cursor(conn.cursor(), False).execute(statement, params).fetchall()

    def write(self) -> AbstractContextManager[Cursor]:
        """One write transaction; committed when the block ends, rolled back on an error."""
        return self._pg_write() if self.postgres else self._sqlite_write()

    @contextmanager
    def _sqlite_write(self) -> Iterator[Cursor]:
        conn = self._conn()
        # IMMEDIATE takes the write lock up front (waiting through busy_timeout), as the
        # memory store does, instead of failing when a read must be upgraded.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield Cursor(conn.cursor(), False)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _pg_write(self) -> Iterator[Cursor]:
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            yield Cursor(cur, True)

    def ping(self) -> None:
        """Raise unless the database answers a query."""
        self.query("SELECT value FROM server_meta WHERE key = 'schema_version'")

    # -- schema
    def _init_schema(self) -> None:
        if self.postgres:
            statements = _schema('TEXT COLLATE "C"', "DOUBLE PRECISION", "BIGINT")
            with self.write() as cur:
                # CREATE ... IF NOT EXISTS is not safe against a concurrent CREATE; serialise.
                cur.execute("SELECT pg_advisory_xact_lock(?)", (_PG_SCHEMA_LOCK,))
                for statement in statements:
                    cur.execute(statement)
        else:
            statements = _schema("TEXT", "REAL", "INTEGER")

            def create(conn: sqlite3.Connection) -> None:
                with self.write() as cur:
                    for statement in statements:
                        cur.execute(statement)

            create_with_wal(self._conn, create)
        found = int(self.query("SELECT value FROM server_meta WHERE key = 'schema_version'")[0][0])
        if found > SERVER_SCHEMA_VERSION:
            raise MemoryFormatError(
                f"the service tables at {self.location} have schema {found}, written by a "
                f"newer memcollab (this one reads up to {SERVER_SCHEMA_VERSION})",
                UPGRADE_HINT,
            )
