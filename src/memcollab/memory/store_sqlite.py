"""The memory in one SQLite file (the default backend): WAL, busy timeout, a connection
per thread, so several threads and processes can read and write one file at once."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from memcollab.memory.store import MemoryConnectionError, MemoryStore, register_backend
from memcollab.memory.store_sql import _SQLMemory
from memcollab.memory.store_sql_schema import memory_schema
from memcollab.sqlite_local import connect, create_with_wal


class SQLiteMemory(_SQLMemory):
    """The memory in one SQLite file (WAL, busy timeout, a connection per thread: threads
    are bounded by whoever runs them, e.g. the service's thread pool)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.location = str(self.path)
        if str(path) in ("", ":memory:"):
            raise MemoryConnectionError(
                f"SQLiteMemory needs a file, not {str(path)!r}",
                "give a path, e.g. a file under a temporary folder",
            )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MemoryConnectionError(
                f"cannot create the folder of the memory {self.path}: {exc.strerror}",
                "choose a writable location",
            ) from None
        self._init_schema()

    def _connect(self) -> sqlite3.Connection:
        try:
            return connect(self.path)
        except sqlite3.Error as exc:
            raise MemoryConnectionError(
                f"cannot open the SQLite memory {self.path}: {exc}",
                "check that the path is a writable file or a new name in a writable folder",
            ) from None

    def _init_schema(self) -> None:
        def create(conn: sqlite3.Connection) -> None:
            with self._write() as cur:
                for statement in memory_schema(
                    "TEXT", "REAL", "INTEGER", "INTEGER PRIMARY KEY AUTOINCREMENT"
                ):
                    cur.execute(statement)

        try:
            create_with_wal(self._conn, create)
        except sqlite3.OperationalError as exc:
            raise MemoryConnectionError(
                f"cannot open the SQLite memory {self.path}: {exc}"
            ) from None
        except sqlite3.DatabaseError as exc:
            raise MemoryConnectionError(
                f"cannot open the SQLite memory {self.path}: {exc}",
                "is it a memcollab memory file?",
            ) from None
        self._check_schema_version()

    @contextmanager
    def _begin(self) -> Iterator[tuple[sqlite3.Connection, sqlite3.Cursor]]:
        conn = self._conn()
        # IMMEDIATE takes the write lock up front (waiting through busy_timeout) instead of
        # failing when a read transaction must be upgraded.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn, conn.cursor()
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _iter_json(self, namespace: str | None) -> Iterator[str]:
        with self._connection() as conn:
            if namespace is None:
                cur = conn.execute("SELECT json FROM memory_records ORDER BY created_at, id")
            else:
                cur = conn.execute(
                    "SELECT json FROM memory_records WHERE namespace = ? ORDER BY created_at, id",
                    (namespace,),
                )
            for (blob,) in cur:
                yield blob


def open_sqlite_path(path: str, create: bool) -> MemoryStore:
    """The SQLite memory at a file path; with `create=False` a missing file is refused."""
    if not create and path not in ("", ":memory:") and not Path(path).is_file():
        raise MemoryConnectionError(
            f"no memory at {path}",
            "check the path (commands that only read a memory never create one)",
        )
    return SQLiteMemory(path)


@register_backend("sqlite")
def _open_sqlite_url(url: str, create: bool) -> MemoryStore:
    rest = url[len("sqlite://") :]
    if not rest.startswith("/") or len(rest) == 1:
        raise MemoryConnectionError(
            f"cannot read the SQLite URL {url!r}",
            "write sqlite:///relative/path.sqlite or sqlite:////absolute/path.sqlite",
        )
    return open_sqlite_path(rest[1:], create)
