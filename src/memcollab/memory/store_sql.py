"""The SQL both memory backends share: records, flags, usage, stats (the schema:
store_sql_schema.py).

Statements are written with `?` placeholders; a backend adapts them to its driver
(`_sql`) and supplies connections and write transactions.
"""

from __future__ import annotations

import json
import os
import threading
import time
from abc import abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

from memcollab.memory import store_changes as changelog
from memcollab.memory.record import MEMORY_FORMAT_VERSION, MemoryRecord
from memcollab.memory.store import (
    SCHEMA_VERSION,
    UPGRADE_HINT,
    ImportCounts,
    MemoryConflictError,
    MemoryConnectionError,
    MemoryFlagError,
    MemoryFormatError,
    MemoryNotFoundError,
    MemoryStore,
    MemoryVersionError,
    NamespaceNote,
    OnConflict,
    RollbackCounts,
    conflict_error,
)
from memcollab.memory.store_changes import SERVED_SQL, Change, Op, Status
from memcollab.memory.store_sql_usage import UsageCounters, bucket_where, chunks, marks

_RECORD_COLUMNS = (
    "id, namespace, domain, category, subcategory, task_hash, model_pos, model_neg, "
    "pair_type, distiller, n_constraints, json, created_at, format_version"
)


def _row(record: MemoryRecord) -> tuple[Any, ...]:
    if record.format_version > MEMORY_FORMAT_VERSION:
        raise MemoryFormatError(
            f"record {record.id} has format {record.format_version}, newer than "
            f"{MEMORY_FORMAT_VERSION}",
            UPGRADE_HINT,
        )
    return (
        record.id,
        record.namespace,
        record.domain,
        record.category,
        record.subcategory,
        record.task_hash,
        record.model_pos,
        record.model_neg,
        record.pair_type,
        record.distiller,
        len(record.constraints),
        record.model_dump_json(),
        record.created_at,
        record.format_version,
    )


_TRANSITIONS: dict[Op, tuple[tuple[Status, ...], Status]] = {
    "flag": (("active",), "flagged"),
    "unflag": (("flagged",), "active"),
    "quarantine": (("active",), "quarantined"),
    "release": (("quarantined",), "active"),
    "archive": (("active", "flagged", "quarantined"), "archived"),
    "restore": (("archived",), "active"),  # back to the status it was archived from
}
"""Status change -> (the statuses it applies to, the status it leaves)."""


class _SQLMemory(UsageCounters, MemoryStore):
    """Everything but connections and transactions, in SQL both backends accept.

    Statements are written with `?` placeholders; `_sql` adapts them to the driver.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[Any] = []
        self._inherited: list[Any] = []  # connections of a parent process: never touched
        self._pid = os.getpid()
        self._closed = False

    # -- backend hooks
    @abstractmethod
    def _connect(self) -> Any:
        """A new connection in autocommit mode."""

    @abstractmethod
    def _begin(self) -> AbstractContextManager[tuple[Any, Any]]:
        """One write transaction on a connection of this thread: yields (connection, DB-API
        cursor); commits when the block ends, rolls back on an error."""

    def _sql(self, statement: str) -> str:
        return statement

    def _forked(self) -> None:
        """Forget the parent process's connection sources (never touch them: they share
        the parent's sockets). Called with `_lock` held."""

    # -- connections
    def _check_fork(self) -> None:
        if self._pid != os.getpid():  # forked: the parent's connections are not ours to use
            with self._lock:
                if self._pid != os.getpid():
                    self._inherited.extend(self._conns)
                    self._conns = []
                    self._local = threading.local()
                    self._forked()
                    self._pid = os.getpid()

    def _conn(self) -> Any:
        """This thread's own connection (opened on first use)."""
        self._check_fork()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise MemoryConnectionError(f"the memory at {self.location} is closed")
            conn = self._connect()
            with self._lock:
                self._conns.append(conn)
            self._local.conn = conn
        return conn

    @contextmanager
    def _borrow(self) -> Iterator[Any]:
        """A connection for statements outside a transaction (SQLite: this thread's own;
        PostgreSQL overrides it with one lent by its pool)."""
        yield self._conn()

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """The connection a read uses: the open transaction's when this thread is in one
        (so it sees what the transaction wrote), else a borrowed one."""
        self._check_fork()
        tx = getattr(self._local, "tx", None)
        if tx is not None:
            yield tx[0]
            return
        with self._borrow() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Any]:
        """A write transaction; yields a DB-API cursor. Inside `transaction()` on this
        thread it joins that transaction (committed or rolled back with it)."""
        self._check_fork()
        tx = getattr(self._local, "tx", None)
        if tx is not None:
            yield tx[1]
            return
        with self._begin() as (conn, cur):
            self._local.tx = (conn, cur)
            try:
                yield cur
            finally:
                self._local.tx = None

    def transaction(self) -> AbstractContextManager[Any]:
        """One write transaction: every write of this store made inside the block on this
        thread (add, import, flag, ...) joins it, as do statements run on the cursor it
        yields (the driver's placeholders: `?` for SQLite, `%s` for PostgreSQL), and
        reads inside it see its writes. Committed when the block ends, rolled back on an
        error. The service writes a record and its provenance this way (server/db.py)."""
        return self._write()

    def query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of one statement written with `?` placeholders (inside `transaction()`,
        on its connection)."""
        return self._query(statement, params)

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
            self._closed = True
            self._local = threading.local()
        for conn in conns:
            conn.close()

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return list(conn.execute(self._sql(statement), tuple(params)).fetchall())

    # -- records
    keeps_history = True

    def add(self, record: MemoryRecord) -> bool:
        return self.add_many([record]) == 1

    def add_many(self, records: Iterable[MemoryRecord]) -> int:
        return len(self.add_records(records))

    def add_records(
        self,
        records: Iterable[MemoryRecord],
        *,
        status: Status = "active",
        reason: str = "",
        actor: str = "",
    ) -> list[str]:
        if status not in ("active", "quarantined"):
            raise ValueError(f"a record is added active or quarantined, not {status!r}")
        rows: dict[str, tuple[Any, ...]] = {}
        for record in records:  # an id given twice: the first one is added
            rows.setdefault(record.id, _row(record))
        if not rows:
            return []
        insert = self._sql(
            f"INSERT INTO memory_records ({_RECORD_COLUMNS}) VALUES ({marks(14)}) "
            "ON CONFLICT (id) DO NOTHING RETURNING id"
        )
        added: list[tuple[str, Any]] = []
        now = time.time()
        with self._write() as cur:
            # One statement per record: RETURNING says which were new, also when another
            # PostgreSQL transaction inserted one of them meanwhile.
            for rid, row in rows.items():
                cur.execute(insert, row)
                if cur.fetchone() is not None:
                    added.append((rid, row))
                    if status != "active":
                        changelog.set_status(cur, self._sql, rid, status, reason, actor, now)
            if added:
                changelog.log(
                    cur,
                    self._sql,
                    [(row[1], rid, "add", None, status, row[11]) for rid, row in added],
                    reason,
                    actor,
                )
                self._bump(cur)
        return [rid for rid, _ in added]

    def _bump(self, cur: Any) -> None:
        """Raise the version counter retrieval watches (inside the write transaction)."""
        cur.execute(self._sql("UPDATE memory_meta SET value = value + 1 WHERE key = 'version'"))

    def _import_records(
        self, records: Sequence[MemoryRecord], on_conflict: OnConflict, source: str
    ) -> ImportCounts:
        return self._import_with_notes(records, (), on_conflict, source)

    def save(
        self, records: Sequence[MemoryRecord], *, reason: str = "", actor: str = ""
    ) -> ImportCounts:
        return self._import_with_notes(
            records,
            (),
            "replace",
            f"save into {self.location}",
            logged_as=(reason or "save", actor),
        )

    def _import_with_notes(
        self,
        records: Sequence[MemoryRecord],
        notes: Sequence[NamespaceNote],
        on_conflict: OnConflict,
        source: str,
        changes: Sequence[Change] = (),
        logged_as: tuple[str, str] | None = None,
    ) -> ImportCounts:
        rows = [_row(record) for record in records]
        added = present = 0
        conflicts: list[str] = []
        new: dict[str, tuple[Any, ...]] = {}  # ids not stored before: the row to insert
        changed: dict[str, tuple[Any, ...]] = {}  # stored ids: the row replacing theirs
        with self._write() as cur:
            # Read inside the write transaction, so what is compared is what is replaced.
            current = self._stored_json(cur, sorted({r.id for r in records}))
            for record, row in zip(records, rows, strict=True):
                blob, canonical = current.get(record.id), record.model_dump_json()
                if blob is None:
                    added += 1
                elif blob == canonical:
                    present += 1
                    continue
                else:
                    conflicts.append(record.id)
                    if on_conflict != "replace":
                        continue
                current[record.id] = canonical
                (new if blob is None or record.id in new else changed)[record.id] = row
            if conflicts and on_conflict == "error":
                raise conflict_error(source, conflicts)
            history = self._history_to_reproduce(cur, changes, records, source)
            stored_notes = self._put_notes(cur, notes, on_conflict, source)
            if new:
                cur.executemany(
                    self._sql(
                        f"INSERT INTO memory_records ({_RECORD_COLUMNS}) VALUES ({marks(14)}) "
                        "ON CONFLICT (id) DO NOTHING"
                    ),
                    list(new.values()),
                )
                if cur.rowcount != len(new):  # another process added one of them meanwhile
                    raise MemoryConflictError(
                        f"{source}: the memory at {self.location} changed during the import; "
                        "nothing was imported",
                        "run the import again",
                    )
            if changed:
                columns = _RECORD_COLUMNS.split(", ")[1:]
                cur.executemany(
                    self._sql(
                        f"UPDATE memory_records SET {', '.join(f'{c} = ?' for c in columns)} "
                        "WHERE id = ?"
                    ),
                    [row[1:] + row[:1] for row in changed.values()],
                )
            reproduced = self._reproduce(cur, history)
            befores = changelog.statuses(cur, self._sql, sorted(changed))
            self._log_import(
                cur,
                [(row[1], rid, "add", None, "active", row[11]) for rid, row in new.items()]
                + [
                    (row[1], rid, "replace", befores[rid], befores[rid], row[11])
                    for rid, row in changed.items()
                ],
                history,
                logged_as or (f"import from {source}", ""),
            )
            if new or changed or reproduced:
                self._bump(cur)
        skipped = 0 if on_conflict == "replace" else len(conflicts)
        return ImportCounts(
            added, present, skipped, len(conflicts) - skipped, stored_notes, reproduced
        )

    def _log_import(
        self,
        cur: Any,
        entries: list[tuple[str, str, Op, Status | None, Status, str | None]],
        history: dict[str, list[Change]],
        logged_as: tuple[str, str],
    ) -> None:
        """Log an import's added and replaced records (with reason and actor), except in
        namespaces whose history the file carried and the import reproduced (their changes
        say it already)."""
        mine = [entry for entry in entries if entry[0] not in history]
        changelog.log(cur, self._sql, mine, *logged_as)

    def _history_to_reproduce(
        self, cur: Any, changes: Sequence[Change], records: Sequence[MemoryRecord], source: str
    ) -> dict[str, list[Change]]:
        """The file's change history per namespace that this import reproduces: namespaces
        with no history (and no records) here yet. A namespace with history here keeps its
        own; the import's records are then logged as changes of this store. A history that
        does not end in the file's records is refused (MemoryFormatError)."""
        by_namespace: dict[str, list[Change]] = {}
        for change in changes:
            by_namespace.setdefault(change.namespace, []).append(change)
        reproduce: dict[str, list[Change]] = {}
        for namespace, log in by_namespace.items():
            log.sort(key=lambda c: c.version)
            if [c.version for c in log] != list(range(1, len(log) + 1)):
                raise MemoryFormatError(
                    f"{source}: the history of namespace {namespace!r} is not versions "
                    f"1..{len(log)} in order; nothing was imported",
                    "import a file written by `memory export`",
                )
            try:
                final = changelog.state_at(log)
            except KeyError as exc:
                raise MemoryFormatError(
                    f"{source}: the history of namespace {namespace!r} changes record {exc} "
                    "before adding it; nothing was imported",
                    "import a file written by `memory export`",
                ) from None
            given = {r.id: r.model_dump_json() for r in records if r.namespace == namespace}
            ended = {
                rid: MemoryRecord.model_validate(content).model_dump_json()
                for rid, (_, content) in final.items()
            }
            if given != ended:
                raise MemoryFormatError(
                    f"{source}: the history of namespace {namespace!r} does not end in the "
                    "file's records of that namespace; nothing was imported",
                    "import a file written by `memory export`",
                )
            if changelog.current_version(cur, self._sql, namespace) == 0 and not self._query(
                "SELECT 1 FROM memory_records WHERE namespace = ? LIMIT 1", (namespace,)
            ):
                reproduce[namespace] = log
        return reproduce

    def _reproduce(self, cur: Any, history: dict[str, list[Change]]) -> int:
        """Write the histories `_history_to_reproduce` chose, with their own versions, and
        put every record in the status its history ends in. Returns the changes written."""
        written = 0
        for namespace, log in history.items():
            changelog.write(cur, self._sql, log)
            cur.execute(
                self._sql(
                    "INSERT INTO memory_versions (namespace, version) VALUES (?, ?) "
                    "ON CONFLICT (namespace) DO UPDATE SET version = excluded.version"
                ),
                (namespace, log[-1].version),
            )
            last = {c.record_id: c for c in log}
            for rid, change in last.items():
                if change.status_after != "active":
                    changelog.set_status(
                        cur,
                        self._sql,
                        rid,
                        change.status_after,
                        change.reason,
                        change.actor,
                        change.at,
                    )
            written += len(log)
        return written

    # -- namespace notes
    keeps_notes = True

    def _put_notes(
        self, cur: Any, notes: Sequence[NamespaceNote], on_conflict: OnConflict, source: str
    ) -> int:
        """Store notes inside the caller's transaction; a stored note with another value is
        a conflict (refused, kept or replaced, as for records). Returns how many changed."""
        latest = {(n.namespace, n.key): n for n in notes}  # the last one of a key wins
        changed = 0
        for (namespace, key), note in sorted(latest.items()):
            cur.execute(
                self._sql("SELECT json FROM memory_notes WHERE namespace = ? AND key = ?"),
                (namespace, key),
            )
            row = cur.fetchone()
            blob = note.value_json()
            if row is not None and row[0] == blob:
                continue
            if row is not None and on_conflict != "replace":
                if on_conflict == "error":
                    raise MemoryConflictError(
                        f"{source}: note {key!r} of namespace {namespace!r} is already stored"
                        " with another value; nothing was imported",
                        "keep the stored note with on_conflict='skip', or overwrite it with"
                        " on_conflict='replace'; on the command line: --on-conflict skip|replace",
                    )
                continue
            if row is None:
                statement = (
                    "INSERT INTO memory_notes (json, at, namespace, key) VALUES (?, ?, ?, ?)"
                )
            else:
                statement = (
                    "UPDATE memory_notes SET json = ?, at = ? WHERE namespace = ? AND key = ?"
                )
            cur.execute(self._sql(statement), (blob, time.time(), namespace, key))
            changed += 1
        return changed

    def set_note(self, namespace: str, key: str, value: dict[str, Any]) -> bool:
        note = NamespaceNote(namespace=namespace, key=key, value=value)
        with self._write() as cur:
            return self._put_notes(cur, [note], "replace", self.location) == 1

    def notes(self, namespace: str | None = None) -> list[NamespaceNote]:
        statement = "SELECT namespace, key, json FROM memory_notes"
        params: tuple[str, ...] = ()
        if namespace is not None:
            statement, params = statement + " WHERE namespace = ?", (namespace,)
        rows = sorted(self._query(statement, params), key=lambda r: (r[0], r[1]))
        return [NamespaceNote(namespace=n, key=k, value=json.loads(v)) for n, k, v in rows]

    def _stored_json(self, cur: Any, ids: Sequence[str]) -> dict[str, str]:
        """id -> the stored record as canonical JSON, for those of `ids` that are stored."""
        found: dict[str, str] = {}
        for chunk in chunks(ids):
            cur.execute(
                self._sql(f"SELECT id, json FROM memory_records WHERE id IN ({marks(len(chunk))})"),
                chunk,
            )
            for rid, blob in cur.fetchall():
                found[rid] = MemoryRecord.model_validate_json(blob).model_dump_json()
        return found

    def get(self, record_id: str) -> MemoryRecord:
        rows = self._query("SELECT json FROM memory_records WHERE id = ?", (record_id,))
        if not rows:
            raise MemoryNotFoundError(
                f"the memory at {self.location} holds no record with id {record_id!r}",
                "check the id; `memcollab memory list` shows the ids of a namespace",
            )
        return MemoryRecord.model_validate_json(rows[0][0])

    def records(
        self,
        namespace: str = "default",
        domain: str | None = None,
        category: str | None = None,
        subcategory: str | None = None,
        *,
        include_flagged: bool = False,
    ) -> list[MemoryRecord]:
        where, params = bucket_where(namespace, domain, category, subcategory)
        if not include_flagged:
            where += f" AND {SERVED_SQL}"
        rows = self._query(
            f"SELECT json FROM memory_records WHERE {where} ORDER BY created_at, id", params
        )
        return [MemoryRecord.model_validate_json(blob) for (blob,) in rows]

    def records_page(
        self,
        namespace: str = "default",
        domain: str | None = None,
        category: str | None = None,
        subcategory: str | None = None,
        *,
        include_flagged: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[MemoryRecord], int]:
        if limit < 0 or offset < 0:
            raise ValueError("limit and offset must not be negative")
        where, params = bucket_where(namespace, domain, category, subcategory)
        if not include_flagged:
            where += f" AND {SERVED_SQL}"
        # LIMIT/OFFSET in SQL: only the page's records are read and parsed.
        rows = self._query(
            f"SELECT json FROM memory_records WHERE {where} ORDER BY created_at, id "
            "LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        total = self._query(f"SELECT COUNT(*) FROM memory_records WHERE {where}", params)
        return [MemoryRecord.model_validate_json(blob) for (blob,) in rows], int(total[0][0])

    def buckets(
        self, namespace: str = "default", domain: str | None = None
    ) -> dict[tuple[str, str, str], int]:
        where, params = bucket_where(namespace, domain)
        rows = self._query(
            f"SELECT domain, category, subcategory, COUNT(*) FROM memory_records WHERE {where} "
            "GROUP BY domain, category, subcategory",
            params,
        )
        return {(d, c, s): int(n) for d, c, s, n in sorted(rows)}

    # -- statuses and versions (memory/store_changes.py)
    def transition(self, record_id: str, op: Op, reason: str, actor: str = "") -> bool:
        if op not in _TRANSITIONS:
            raise ValueError(f"{op!r} is not a status change")
        if not reason.strip():
            raise MemoryFlagError(f"{op} of {record_id!r} needs a reason")
        allowed, target = _TRANSITIONS[op]
        now = time.time()
        with self._write() as cur:
            self._require(cur, [record_id])
            before = changelog.statuses(cur, self._sql, [record_id])[record_id]
            if op == "restore" and before == "archived":
                target = self._status_before_archive(cur, record_id)
            if before == target:
                return False
            if before not in allowed:
                raise MemoryFlagError(
                    f"record {record_id!r} is {before}: {op} applies to a record that is "
                    f"{' or '.join(allowed)}"
                )
            changelog.set_status(cur, self._sql, record_id, target, reason, actor, now)
            if op in ("flag", "unflag"):  # the flag history kept since schema 2
                cur.execute(
                    self._sql(
                        "INSERT INTO memory_flag_history (record_id, action, reason, actor, at) "
                        "VALUES (?, ?, ?, ?, ?)"
                    ),
                    (record_id, op, reason, actor, now),
                )
            namespace = self._namespace_of(cur, record_id)
            changelog.log(
                cur, self._sql, [(namespace, record_id, op, before, target, None)], reason, actor
            )
            self._bump(cur)
        return True

    def _namespace_of(self, cur: Any, record_id: str) -> str:
        cur.execute(self._sql("SELECT namespace FROM memory_records WHERE id = ?"), (record_id,))
        return str(cur.fetchone()[0])

    def _status_before_archive(self, cur: Any, record_id: str) -> Status:
        """What an archived record was before its last change into "archived" (active if
        that change created it)."""
        cur.execute(
            self._sql(
                "SELECT status_before FROM memory_changes WHERE record_id = ? "
                "AND status_after = 'archived' ORDER BY version DESC LIMIT 1"
            ),
            (record_id,),
        )
        row = cur.fetchone()
        return "active" if row is None or row[0] in (None, "archived") else row[0]

    def statuses_of(self, record_ids: Sequence[str]) -> dict[str, Status]:
        with self._connection() as conn:
            return changelog.statuses(conn.cursor(), self._sql, list(record_ids))

    def statuses(self, namespace: str = "default") -> dict[str, Status]:
        rows = self._query(
            "SELECT f.record_id, 'flagged' FROM memory_flags f JOIN memory_records r "
            "ON r.id = f.record_id WHERE r.namespace = ? UNION ALL "
            "SELECT s.record_id, s.status FROM memory_status s JOIN memory_records r "
            "ON r.id = s.record_id WHERE r.namespace = ?",
            (namespace, namespace),
        )
        return dict(sorted(rows))

    def changes(
        self,
        namespace: str = "default",
        *,
        record_id: str | None = None,
        since: int = 0,
        until: int | None = None,
    ) -> list[Change]:
        with self._connection() as conn:
            return changelog.read(
                conn.cursor(), self._sql, namespace, record_id=record_id, since=since, until=until
            )

    def changes_of(self, namespace: str, record_ids: Sequence[str]) -> list[Change]:
        found: list[Change] = []
        with self._connection() as conn:
            for chunk in chunks(sorted(set(record_ids))):
                found += changelog.read(conn.cursor(), self._sql, namespace, record_ids=chunk)
        return sorted(found, key=lambda c: c.version)

    def namespace_version(self, namespace: str = "default") -> int:
        with self._connection() as conn:
            return changelog.current_version(conn.cursor(), self._sql, namespace)

    def rollback(
        self, namespace: str, version: int, reason: str, actor: str = ""
    ) -> RollbackCounts:
        if not reason.strip():
            raise MemoryFlagError(f"a rollback of namespace {namespace!r} needs a reason")
        with self._write() as cur:
            latest = changelog.current_version(cur, self._sql, namespace)
            if not 0 <= version <= latest:
                raise MemoryVersionError(
                    f"namespace {namespace!r} has versions 0..{latest}, not {version}",
                    "`memcollab memory versions` lists them",
                )
            target = changelog.state_at(changelog.read(cur, self._sql, namespace, until=version))
            later = changelog.read(cur, self._sql, namespace, since=version)
            touched = list(dict.fromkeys(c.record_id for c in later))
            now_status = changelog.statuses(cur, self._sql, touched)
            now_json = self._stored_json(cur, touched)
            entries: list[tuple[str, str, Op, Status | None, Status, str | None]] = []
            restored = archived = 0
            for rid in touched:
                status: Status = "archived"  # added after `version`: archived
                blob: str | None = None
                if rid in target:
                    status = target[rid][0]
                    canonical = MemoryRecord.model_validate(target[rid][1]).model_dump_json()
                    blob = None if canonical == now_json[rid] else canonical
                if blob is None and status == now_status[rid]:
                    continue
                if blob is not None:
                    row = _row(MemoryRecord.model_validate_json(blob))
                    columns = _RECORD_COLUMNS.split(", ")[1:]
                    cur.execute(
                        self._sql(
                            f"UPDATE memory_records SET {', '.join(f'{c} = ?' for c in columns)} "
                            "WHERE id = ?"
                        ),
                        row[1:] + row[:1],
                    )
                    restored += 1
                if status != now_status[rid]:
                    changelog.set_status(
                        cur,
                        self._sql,
                        rid,
                        status,
                        f"rollback to version {version}: {reason}",
                        actor,
                        time.time(),
                    )
                archived += rid not in target
                entries.append((namespace, rid, "rollback", now_status[rid], status, blob))
            written = changelog.log(
                cur, self._sql, entries, f"rollback to version {version}: {reason}", actor
            )
            if written:
                self._bump(cur)
        return RollbackCounts(
            namespace=namespace,
            to_version=version,
            from_version=latest,
            new_version=written[-1].version if written else latest,
            changed=len(written),
            contents_restored=restored,
            archived=archived,
        )

    def flag(self, record_id: str, reason: str, actor: str = "") -> bool:
        return self.transition(record_id, "flag", reason, actor)

    def unflag(self, record_id: str, reason: str, actor: str = "") -> bool:
        return self.transition(record_id, "unflag", reason, actor)

    def flagged(self, namespace: str | None = None) -> dict[str, str]:
        statement = "SELECT f.record_id, f.reason FROM memory_flags f"
        params: tuple[Any, ...] = ()
        if namespace is not None:
            statement += " JOIN memory_records r ON r.id = f.record_id WHERE r.namespace = ?"
            params = (namespace,)
        return dict(sorted(self._query(statement, params)))

    def flag_history(self, record_id: str) -> list[dict[str, Any]]:
        self.get(record_id)
        rows = self._query(
            "SELECT action, reason, actor, at FROM memory_flag_history WHERE record_id = ? "
            "ORDER BY at, seq",
            (record_id,),
        )
        return [{"action": a, "reason": r, "actor": w, "at": float(t)} for a, r, w, t in rows]

    def namespaces(self) -> dict[str, int]:
        rows = self._query("SELECT namespace, COUNT(*) FROM memory_records GROUP BY namespace")
        return {ns: int(n) for ns, n in sorted(rows)}

    # -- summaries
    def stats(self, namespace: str = "default") -> dict[str, Any]:
        def grouped(columns: str) -> list[tuple[Any, ...]]:
            rows = self._query(
                f"SELECT {columns}, COUNT(*), SUM(n_constraints) FROM memory_records "
                f"WHERE namespace = ? GROUP BY {columns}",
                (namespace,),
            )
            return sorted(rows, key=lambda r: tuple("" if v is None else str(v) for v in r))

        buckets = grouped("domain, category, subcategory")
        return {
            "namespace": namespace,
            "records": sum(int(r[3]) for r in buckets),
            "constraints": sum(int(r[4]) for r in buckets),
            "buckets": [
                {
                    "domain": d,
                    "category": c,
                    "subcategory": s,
                    "records": int(n),
                    "constraints": int(k),
                }
                for d, c, s, n, k in buckets
            ],
            "pairs": [
                {"model_pos": p, "model_neg": q, "records": int(n), "constraints": int(k)}
                for p, q, n, k in grouped("model_pos, model_neg")
            ],
            "pair_types": {
                t: {"records": int(n), "constraints": int(k)} for t, n, k in grouped("pair_type")
            },
            "distillers": {
                d: {"records": int(n), "constraints": int(k)} for d, n, k in grouped("distiller")
            },
        }

    def version(self) -> int:
        return int(self._query("SELECT value FROM memory_meta WHERE key = 'version'")[0][0])

    def _check_schema_version(self) -> None:
        found = int(self._query("SELECT value FROM memory_meta WHERE key = 'schema_version'")[0][0])
        if found > SCHEMA_VERSION:
            raise MemoryFormatError(
                f"the memory at {self.location} has schema {found}, written by a newer "
                f"memcollab (this one reads up to {SCHEMA_VERSION})",
                UPGRADE_HINT,
            )
