"""Record statuses and the versioned change log that both SQL backends share.

Every change of a namespace's records is one row of `memory_changes` under the next
version of that namespace (1, 2, 3, ...): a record added, replaced (a merge raised a
support count, an import replaced it), flagged or unflagged, quarantined, released,
archived or restored, or set back by a rollback. Each row keeps the record's status
before and after, its content after when the content changed, the reason, who did it
(a key id, a person, a rule) and when. So the state of a namespace at any version can be
read back from the log, and `rollback` sets it back by writing *new* changes: nothing is
deleted, and a rollback can itself be rolled back.

A record is in exactly one status: "active" (served), "flagged" (withheld; the table
`memory_flags`, as before versioning), "quarantined" (added by an untrusted source,
withheld until released) or "archived" (withheld; what a rollback does to a record added
after the version it returns to). Only active records are ever retrieved.

Versions are allocated from `memory_versions` by an upsert that locks the namespace's
row until the transaction ends, so two PostgreSQL writers never take the same version;
SQLite writers are serialised by BEGIN IMMEDIATE. Namespace notes (the utility gate's
decision, snapshot names) and usage counters are not versioned: notes are settings of
the namespace and usage counts are measurements, not memory.
"""

from __future__ import annotations

import json
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from memcollab.memory.record import CHANGE_FORMAT, MemoryRecord

Status = Literal["active", "flagged", "quarantined", "archived"]
STATUSES: tuple[Status, ...] = typing.get_args(Status)
Op = Literal[
    "add", "replace", "flag", "unflag", "quarantine", "release", "archive", "restore", "rollback"
]

SERVED_SQL = (
    "id NOT IN (SELECT record_id FROM memory_flags) "
    "AND id NOT IN (SELECT record_id FROM memory_status)"
)
"""The WHERE clause (on memory_records) of the records retrieval may serve: active ones."""

Sql = Callable[[str], str]
"""A backend's placeholder adapter (`?` -> the driver's)."""


class Change(BaseModel):
    """One change of a record: its namespace's version, what happened, the status before
    and after, the content after (when it changed), why, who and when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(min_length=1)
    version: int = Field(ge=1)
    record_id: str = Field(min_length=1)
    op: Op
    status_before: Status | None = None
    """None: the record did not exist before this change."""
    status_after: Status
    record: dict[str, Any] | None = None
    """The record's content after the change, when the change set it (add, replace, a
    rollback that restored an older content); None when the content stayed."""
    reason: str = ""
    actor: str = ""
    at: float
    record_is_final: bool = False
    """Export only: the content this change set is the record's line in the same file
    (left out of the change line so an export does not hold every record twice)."""

    def export_line(self, final: str | None = None) -> str:
        """The change as one line of a JSONL export; when the content it set is `final`
        (the record's canonical JSON in the same file), the line says so instead."""
        body = self.model_dump(mode="json", exclude={"record_is_final"})
        if final is not None and self.record is not None and _canonical(self.record) == final:
            body["record"], body["record_is_final"] = None, True
        return json.dumps({"format_version": CHANGE_FORMAT, "change": body}, sort_keys=True)


def export_lines(changes: Sequence[Change], finals: dict[str, str]) -> Iterable[str]:
    """A namespace's change log as export lines: the last content each record's history
    sets is written as `record_is_final` when it is the record's content (`finals`: id ->
    canonical JSON of the exported record)."""
    last_content = {c.record_id: i for i, c in enumerate(changes) if c.record is not None}
    for i, change in enumerate(changes):
        final = finals.get(change.record_id) if last_content.get(change.record_id) == i else None
        yield change.export_line(final)


def with_finals(changes: Sequence[Change], records: Iterable[MemoryRecord]) -> list[Change]:
    """Changes read from an export with their `record_is_final` content filled in from the
    file's records (a change naming a record the file lacks keeps no content)."""
    by_id = {r.id: r for r in records}
    out = []
    for change in changes:
        if change.record_is_final and change.record_id in by_id:
            content = by_id[change.record_id].model_dump(mode="json")
            change = change.model_copy(update={"record": content, "record_is_final": False})
        out.append(change)
    return out


def schema(text_type: str, real_type: str, int_type: str) -> list[str]:
    """Migration step "changes" (schema 5): the status table, the change log and the
    per-namespace version counters; on a store written before it, every stored record
    gets one "add" change (in (created_at, id) order, flagged ones as flagged), so its
    history starts at version 1. Runs inside the schema transaction, before the schema
    version is raised (the backfill only runs while it is below 5)."""
    old = "(SELECT value FROM memory_meta WHERE key = 'schema_version') < 5"
    return [
        f"""CREATE TABLE IF NOT EXISTS memory_status (
            record_id {text_type} PRIMARY KEY,
            status {text_type} NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            at {real_type} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS memory_changes (
            namespace {text_type} NOT NULL,
            version {int_type} NOT NULL,
            record_id {text_type} NOT NULL,
            op {text_type} NOT NULL,
            status_before {text_type},
            status_after {text_type} NOT NULL,
            json TEXT,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            at {real_type} NOT NULL,
            PRIMARY KEY (namespace, version)
        )""",
        "CREATE INDEX IF NOT EXISTS memory_changes_record ON memory_changes (record_id, version)",
        f"""CREATE TABLE IF NOT EXISTS memory_versions (
            namespace {text_type} PRIMARY KEY,
            version {int_type} NOT NULL
        )""",
        "INSERT INTO memory_changes (namespace, version, record_id, op, status_before, "
        "status_after, json, reason, actor, at) "
        "SELECT namespace, (SELECT COALESCE(MAX(c.version), 0) FROM memory_changes c "
        "WHERE c.namespace = r.namespace) "
        "+ ROW_NUMBER() OVER (PARTITION BY namespace ORDER BY created_at, id), "
        "id, 'add', NULL, CASE WHEN id IN (SELECT record_id FROM memory_flags) "
        "THEN 'flagged' ELSE 'active' END, json, 'stored before versioning', '', created_at "
        f"FROM memory_records r WHERE {old} "
        "AND id NOT IN (SELECT record_id FROM memory_changes)",
        "INSERT INTO memory_versions (namespace, version) "
        f"SELECT namespace, MAX(version) FROM memory_changes WHERE {old} GROUP BY namespace "
        "ON CONFLICT (namespace) DO UPDATE SET version = excluded.version",
    ]


def _canonical(content: dict[str, Any]) -> str:
    return MemoryRecord.model_validate(content).model_dump_json()


def allocate(cur: Any, sql: Sql, namespace: str, count: int) -> int:
    """Take `count` consecutive versions of `namespace` inside the caller's transaction;
    returns the first. The upsert locks the namespace's counter row until commit."""
    cur.execute(
        sql(
            "INSERT INTO memory_versions (namespace, version) VALUES (?, ?) "
            "ON CONFLICT (namespace) DO UPDATE SET version = memory_versions.version + ? "
            "RETURNING version"
        ),
        (namespace, count, count),
    )
    last = int(cur.fetchone()[0])
    return last - count + 1


def write(cur: Any, sql: Sql, changes: Sequence[Change]) -> None:
    """Insert changes whose versions the caller set (`allocate`, or an import's)."""
    if not changes:
        return
    cur.executemany(
        sql(
            "INSERT INTO memory_changes (namespace, version, record_id, op, status_before, "
            "status_after, json, reason, actor, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ),
        [
            (
                c.namespace,
                c.version,
                c.record_id,
                c.op,
                c.status_before,
                c.status_after,
                None if c.record is None else _canonical(c.record),
                c.reason,
                c.actor,
                c.at,
            )
            for c in changes
        ],
    )


def log(
    cur: Any,
    sql: Sql,
    entries: Iterable[tuple[str, str, Op, Status | None, Status, str | None]],
    reason: str,
    actor: str,
) -> list[Change]:
    """Write one change per (namespace, record id, op, status before, status after,
    record JSON after or None), each namespace's under its next versions, in order."""
    now = time.time()
    by_namespace: dict[str, list[tuple[str, Op, Status | None, Status, str | None]]] = {}
    for namespace, rid, op, before, after, blob in entries:
        by_namespace.setdefault(namespace, []).append((rid, op, before, after, blob))
    written: list[Change] = []
    for namespace, rows in by_namespace.items():
        first = allocate(cur, sql, namespace, len(rows))
        changes = [
            _change(namespace, first + i, rid, op, before, after, blob, reason, actor, now)
            for i, (rid, op, before, after, blob) in enumerate(rows)
        ]
        write(cur, sql, changes)
        written.extend(changes)
    return written


def statuses(cur: Any, sql: Sql, record_ids: Sequence[str]) -> dict[str, Status]:
    """id -> status for the given stored ids (active unless a status table holds it)."""
    found: dict[str, Status] = {rid: "active" for rid in record_ids}
    for start in range(0, len(record_ids), 500):
        chunk = list(record_ids[start : start + 500])
        marks = ", ".join("?" * len(chunk))
        cur.execute(sql(f"SELECT record_id FROM memory_flags WHERE record_id IN ({marks})"), chunk)
        for (rid,) in cur.fetchall():
            found[rid] = "flagged"
        cur.execute(
            sql(f"SELECT record_id, status FROM memory_status WHERE record_id IN ({marks})"),
            chunk,
        )
        for rid, status in cur.fetchall():
            found[rid] = status
    return found


def set_status(
    cur: Any, sql: Sql, record_id: str, status: Status, reason: str, actor: str, at: float
) -> None:
    """Put the record in `status` (one row in the table of that status, none elsewhere)."""
    cur.execute(sql("DELETE FROM memory_flags WHERE record_id = ?"), (record_id,))
    cur.execute(sql("DELETE FROM memory_status WHERE record_id = ?"), (record_id,))
    if status == "flagged":
        cur.execute(
            sql("INSERT INTO memory_flags (record_id, reason, actor, at) VALUES (?, ?, ?, ?)"),
            (record_id, reason, actor, at),
        )
    elif status != "active":
        cur.execute(
            sql(
                "INSERT INTO memory_status (record_id, status, reason, actor, at) "
                "VALUES (?, ?, ?, ?, ?)"
            ),
            (record_id, status, reason, actor, at),
        )


def read(
    cur: Any,
    sql: Sql,
    namespace: str,
    *,
    record_id: str | None = None,
    record_ids: Sequence[str] | None = None,
    since: int = 0,
    until: int | None = None,
) -> list[Change]:
    """The changes of a namespace (of one record, or of `record_ids`, when given) with
    since < version <= until, oldest first."""
    statement = (
        "SELECT namespace, version, record_id, op, status_before, status_after, json, "
        "reason, actor, at FROM memory_changes WHERE namespace = ? AND version > ?"
    )
    params: list[Any] = [namespace, since]
    if until is not None:
        statement += " AND version <= ?"
        params.append(until)
    if record_id is not None:
        statement += " AND record_id = ?"
        params.append(record_id)
    if record_ids is not None:
        statement += f" AND record_id IN ({', '.join('?' for _ in record_ids) or 'NULL'})"
        params.extend(record_ids)
    cur.execute(sql(statement + " ORDER BY version"), params)
    return [_change(*row) for row in cur.fetchall()]


def _change(
    namespace: str,
    version: int,
    record_id: str,
    op: str,
    before: str | None,
    after: str,
    blob: str | None,
    reason: str,
    actor: str,
    at: float,
) -> Change:
    """A Change from its stored columns (the record's content as its JSON text)."""
    return Change.model_validate(
        {
            "namespace": namespace,
            "version": int(version),
            "record_id": record_id,
            "op": op,
            "status_before": before,
            "status_after": after,
            "record": None if blob is None else json.loads(blob),
            "reason": reason,
            "actor": actor,
            "at": float(at),
        }
    )


def current_version(cur: Any, sql: Sql, namespace: str) -> int:
    """The namespace's latest version (0 before its first change)."""
    cur.execute(sql("SELECT version FROM memory_versions WHERE namespace = ?"), (namespace,))
    row = cur.fetchone()
    return 0 if row is None else int(row[0])


def state_at(changes: Iterable[Change]) -> dict[str, tuple[Status, dict[str, Any]]]:
    """Replay changes (oldest first) into record id -> (status, content)."""
    state: dict[str, tuple[Status, dict[str, Any]]] = {}
    for change in changes:
        content = change.record if change.record is not None else state[change.record_id][1]
        state[change.record_id] = (change.status_after, content)
    return state
