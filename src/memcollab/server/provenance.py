"""Who put a record into the memory through the service (table `server_record_provenance`).

A record itself carries its namespace, its models (l+ and l-) and its creation time; the
service adds the API key that added or imported it, in the same transaction as the record
(`ServerDB.write()` around `Memory.add` / `import_`), so a process killed mid-request
leaves both or neither. A record added outside the service (the CLI, a build) has no row
here: its key id reads as unknown (null), never as another key.

A record the online-learning worker distilled (server/learner.py) has no key; its row in
`server_learned_provenance` names the two attempts and their models, the distiller, the
distillation prompt's version, the worker and the time, written in the transaction that
adds the record and marks its queue row done. `many` returns it as "learned" (via "learn").
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from memcollab.server.db import Cursor, ServerDB

Via = Literal["add", "import", "mcp"]
LEARNED_FIELDS = (
    "namespace",
    "task_id",
    "pos_attempt",
    "neg_attempt",
    "model_pos",
    "model_neg",
    "distiller",
    "prompt_version",
    "worker",
    "at",
)


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

    @staticmethod
    def record_learned(cur: Cursor, record_id: str, learned: Mapping[str, Any]) -> None:
        """Inside the caller's `ServerDB.write()`: note how the online worker made a record
        (`learned`: namespace, task_id, pos_attempt, neg_attempt, model_pos, model_neg,
        distiller, prompt_version, worker, at); the first note of a record is kept."""
        columns = ("record_id", *LEARNED_FIELDS)
        cur.execute(
            f"INSERT INTO server_learned_provenance ({', '.join(columns)}) VALUES "
            f"({', '.join('?' * len(columns))}) ON CONFLICT (record_id) DO NOTHING",
            (record_id, *(learned[name] for name in LEARNED_FIELDS)),
        )

    def many(self, record_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """record id -> {key_id, via, at[, learned]}, for those of `record_ids` added
        through the service or by the online worker."""
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
            for row in self.db.query(
                f"SELECT record_id, {', '.join(LEARNED_FIELDS)} FROM server_learned_provenance "
                f"WHERE record_id IN ({marks})",
                chunk,
            ):
                learned = dict(zip(LEARNED_FIELDS, row[1:], strict=True))
                learned["at"] = float(learned["at"])
                seen = out.setdefault(row[0], {"key_id": None, "via": "learn", "at": None})
                seen["learned"] = learned
                if seen["at"] is None:
                    seen["at"] = learned["at"]
        return out
