"""Who put a record into the memory through the service (table `server_record_provenance`).

A record itself carries its namespace, its models (l+ and l-) and its creation time; the
service adds the API key that added or imported it, in the same transaction as the record
(`ServerDB.write()` around `Memory.add` / `import_`), so a process killed mid-request
leaves both or neither. A record added outside the service (the CLI, a build) has no row
here: its key id reads as unknown (null), never as another key.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from memcollab.server.db import ServerDB

Via = Literal["add", "import", "mcp"]


class ProvenanceStore:
    """Record id -> (key id, how, when) for records added through the service."""

    def __init__(self, db: ServerDB) -> None:
        self.db = db

    def record(self, record_ids: Iterable[str], namespace: str, key_id: str, via: Via) -> None:
        """Note that `key_id` added these records (the first note of a record is kept)."""
        rows = [(rid, namespace, key_id, via, time.time()) for rid in record_ids]
        if not rows:
            return
        with self.db.write() as cur:
            for row in rows:
                cur.execute(
                    "INSERT INTO server_record_provenance (record_id, namespace, key_id, via, at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (record_id) DO NOTHING",
                    row,
                )

    def many(self, record_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """record id -> {key_id, via, at}, for those of `record_ids` added through the service."""
        out: dict[str, dict[str, Any]] = {}
        ids = list(dict.fromkeys(record_ids))
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for rid, key_id, via, at in self.db.query(
                "SELECT record_id, key_id, via, at FROM server_record_provenance "
                f"WHERE record_id IN ({marks})",
                chunk,
            ):
                out[rid] = {"key_id": key_id, "via": via, "at": float(at)}
        return out
