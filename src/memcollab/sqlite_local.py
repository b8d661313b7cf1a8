"""One SQLite file shared by threads and processes: a connection per thread, WAL, busy timeout.

Used by the call cache and the trajectory store (the memory store has its own backend layer,
which also serves PostgreSQL).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

BUSY_TIMEOUT_MS = 60_000


class LocalSQLite:
    """Per-thread connections to one SQLite file, created with `schema` (a SQL script)."""

    def __init__(self, path: str | Path, schema: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        # Switching to WAL takes a brief exclusive lock. SQLite's busy handler is not
        # consulted for that switch, so a process that races another one on a brand-new
        # file retries here instead of failing with "database is locked".
        for attempt in range(50):
            try:
                conn = self.conn()
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(schema)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (autocommit; opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
