"""One SQLite file shared by threads and processes: a connection per thread, WAL, busy timeout.

`connect` and `create_with_wal` are the plumbing every SQLite file of memcollab uses (the
call cache and the trajectory store through `LocalSQLite`, and the SQLite memory backend).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

BUSY_TIMEOUT_MS = 60_000
_WAL_ATTEMPTS = 60


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection in autocommit mode that waits up to BUSY_TIMEOUT_MS for a lock."""
    conn = sqlite3.connect(
        path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def create_with_wal(
    conn: Callable[[], sqlite3.Connection], create: Callable[[sqlite3.Connection], None]
) -> None:
    """Switch the file to WAL and run `create` (the schema), retrying while it is locked.

    Switching to WAL takes a brief exclusive lock for which SQLite does not consult its
    busy handler, so a process racing another one on a brand-new file retries here
    instead of failing with "database is locked". Other errors are raised at once.
    """
    for attempt in range(_WAL_ATTEMPTS):
        try:
            connection = conn()
            connection.execute("PRAGMA journal_mode=WAL")
            create(connection)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == _WAL_ATTEMPTS - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


class LocalSQLite:
    """Per-thread connections to one SQLite file, created with `schema` (a SQL script)."""

    def __init__(self, path: str | Path, schema: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()

        def create(conn: sqlite3.Connection) -> None:
            conn.executescript(schema)

        create_with_wal(self.conn, create)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
