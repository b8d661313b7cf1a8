"""The memory store: MemoryRecords filed by (namespace, domain, category, subcategory).

One interface, `MemoryStore`, with two backends that behave identically:

* `SQLiteMemory` (the default): one file, WAL journal, a busy timeout and one connection
  per thread, so several threads and processes can read and write one file at once.
* `PostgresMemory` (`pip install 'memcollab[postgres]'`): psycopg 3, one connection per
  thread, for memories shared between machines.

`open_memory(location)` picks the backend from a path or URL.

Semantics shared by both backends:

* A record's `id` is its identity (`record.record_id` makes it deterministic from the pair
  and the distiller). Adding a record whose id is already stored changes nothing and
  reports it as not added; the first stored version wins.
* `records()` is ordered by (created_at, id), byte-wise on the id, in both backends.
* `version()` is a counter bumped in the same transaction as every add that stores at least
  one new record; retrieval compares it to invalidate its per-bucket indexes.
* Usage counters (times retrieved; per model, times a record helped or harmed) live beside
  the records and are not part of the JSONL export: they are measurements of one
  deployment, while the export is the portable memory itself.

Schema: `memory_records` (id primary key; namespace, domain, category, subcategory,
task_hash, model_pos, model_neg, pair_type, distiller, n_constraints, json, created_at,
format_version; the constraints live inside `json`), indexed on (namespace, domain,
category, subcategory, created_at, id) so one bucket is read in order straight from the
index; `memory_retrievals` (record_id, retrieved); `memory_usage` (record_id, model, helped,
harmed); `memory_flags` (the records withheld from retrieval, with the reason) and
`memory_flag_history` (every flag and unflag); `memory_meta` (the version counter and the
schema version). Schema 2 added the flag tables; opening a schema-1 store adds them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import typing
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic import ValidationError

from memcollab.atomic import replace_when_done
from memcollab.errors import UserError
from memcollab.memory.record import MEMORY_FORMAT_VERSION, MemoryRecord

SCHEMA_VERSION = 2
"""The layout of the store's tables; a store written by a newer layout is refused."""

_DOMAINS: tuple[str, ...] = typing.get_args(MemoryRecord.model_fields["domain"].annotation)
_BUSY_TIMEOUT_MS = 60_000
_PG_CONNECT_TIMEOUT_S = 10
_PG_SCHEMA_LOCK = 0x6D656D636F6C6C  # pg_advisory_xact_lock key serialising schema creation
_UPGRADE = "upgrade memcollab: pip install -U memcollab"


class MemoryNotFoundError(UserError):
    """A record id that the store does not hold."""


class MemoryFormatError(UserError):
    """A memory file or store that cannot be read: bad JSON, a bad record, a newer format."""


class MemoryConnectionError(UserError):
    """A memory location that cannot be opened: a refused server, a bad path or URL."""


class MemoryFlagError(UserError):
    """A flag or unflag that cannot be made (no reason given)."""


# --------------------------------------------------------------------------- interface


class MemoryStore(ABC):
    """The memory: records filed by (namespace, domain, category, subcategory), plus usage.

    Use as a context manager, or call `close()`, to release the connections.
    """

    location: str
    """Where the store lives (a path, or a URL without its password); for messages."""

    @abstractmethod
    def add(self, record: MemoryRecord) -> bool:
        """Store one record; False (and nothing changes) when its id is already stored."""

    @abstractmethod
    def add_many(self, records: Iterable[MemoryRecord]) -> int:
        """Store records in one transaction; returns how many were new (duplicates skipped)."""

    @abstractmethod
    def get(self, record_id: str) -> MemoryRecord:
        """The record with this id; MemoryNotFoundError when there is none."""

    @abstractmethod
    def records(
        self,
        namespace: str = "default",
        domain: str | None = None,
        category: str | None = None,
        subcategory: str | None = None,
        *,
        include_flagged: bool = False,
    ) -> list[MemoryRecord]:
        """The records of a namespace, optionally of one domain / category / subcategory,
        ordered by (created_at, id); flagged records only with `include_flagged`. One full
        bucket is read through the bucket index."""

    @abstractmethod
    def buckets(
        self, namespace: str = "default", domain: str | None = None
    ) -> dict[tuple[str, str, str], int]:
        """(domain, category, subcategory) -> record count, sorted by key."""

    @abstractmethod
    def count_retrieved(self, record_ids: Iterable[str]) -> None:
        """Add one to each record's times-retrieved counter (an id listed twice counts twice).

        Raises MemoryNotFoundError, counting nothing, if an id is not stored."""

    @abstractmethod
    def record_usage(self, record_id: str, model: str, helped: bool) -> None:
        """Count that the record, given to `model`, helped (True) or harmed (False)."""

    @abstractmethod
    def usage(self, record_id: str) -> dict[str, Any]:
        """`{"retrieved": n, "models": {model: {"helped": h, "harmed": m}}}` for one record."""

    @abstractmethod
    def flag(self, record_id: str, reason: str, actor: str = "") -> bool:
        """Withhold a record from retrieval, with a reason; False if it was already flagged.

        Nothing is deleted: the record stays stored and exported, and every flag and
        unflag is kept in its history (`flag_history`)."""

    @abstractmethod
    def unflag(self, record_id: str, reason: str, actor: str = "") -> bool:
        """Serve a flagged record again; False if it was not flagged."""

    @abstractmethod
    def flagged(self, namespace: str | None = None) -> dict[str, str]:
        """Flagged record id -> the reason of its flag (of one namespace, or all)."""

    @abstractmethod
    def flag_history(self, record_id: str) -> list[dict[str, Any]]:
        """Every flag and unflag of a record, oldest first: action, reason, actor, at."""

    @abstractmethod
    def namespaces(self) -> dict[str, int]:
        """Namespace -> record count, for every namespace that holds a record."""

    @abstractmethod
    def stats(self, namespace: str = "default") -> dict[str, Any]:
        """Records and constraints in a namespace: in total, per bucket, per (model_pos,
        model_neg) pair, per pair type and per distiller. JSON-serialisable, sorted."""

    @abstractmethod
    def version(self) -> int:
        """A counter that changes whenever records are added (by any process)."""

    @abstractmethod
    def _iter_json(self, namespace: str | None) -> Iterator[str]:
        """The stored JSON of every record (of one namespace, or all), by (created_at, id)."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection this store opened."""

    def export_jsonl(self, path: str | Path, namespace: str | None = None) -> int:
        """Write the records (of one namespace, or all) as JSON Lines; returns the count.

        The file holds records only, one `MemoryRecord.model_dump_json()` per line ordered by
        (created_at, id); usage counters are not exported. Written atomically (a temporary
        file renamed into place). `import_jsonl` of it into an empty store of either backend
        gives the same records.
        """
        count = 0
        with replace_when_done(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
            for blob in self._iter_json(namespace):
                fh.write(blob + "\n")
                count += 1
        return count

    def import_jsonl(self, path: str | Path, on_conflict: OnConflict = "error") -> ImportCounts:
        """Add the records of a JSONL export, all or nothing, in one transaction.

        A record whose id is already stored with the same content (compared as records, so
        JSON key order does not matter) is counted `present` and skipped, so importing twice
        adds nothing. An id stored with different content, or given twice in the file with
        different content, is a conflict: with `on_conflict="error"` (the default) the
        import is refused with MemoryConflictError naming the first conflicting id and the
        count, and nothing is written; "skip" keeps the stored (or earlier) version and
        counts it in `conflicts_skipped`; "replace" writes the file's version (the last one,
        for an id given twice), counts it in `replaced`, and bumps `version()`.
        The whole file is checked before anything is added: a bad line raises
        MemoryFormatError naming the file and line, and nothing is imported.
        """
        if on_conflict not in ON_CONFLICT:
            raise ValueError(
                f"on_conflict must be one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}"
            )
        records = read_jsonl(path)
        return self._import_records(records, on_conflict, str(path))

    @abstractmethod
    def _import_records(
        self, records: Sequence[MemoryRecord], on_conflict: OnConflict, source: str
    ) -> ImportCounts:
        """Store `records` as `import_jsonl` says, in one transaction (`source` names the
        file in errors)."""

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


OnConflict = Literal["error", "skip", "replace"]
"""What `import_jsonl` does with a record whose id is stored with different content."""
ON_CONFLICT: tuple[OnConflict, ...] = typing.get_args(OnConflict)


@dataclass(frozen=True)
class ImportCounts:
    """What an import did, per record of the file: `added` (new ids), `present` (already
    stored with the same content, skipped), `conflicts_skipped` (stored with different
    content, stored version kept) and `replaced` (stored with different content, replaced)."""

    added: int = 0
    present: int = 0
    conflicts_skipped: int = 0
    replaced: int = 0


class MemoryConflictError(UserError):
    """An import whose records have ids already stored with different content."""


def _conflict_error(source: str, conflicts: Sequence[str]) -> MemoryConflictError:
    n = len(conflicts)
    return MemoryConflictError(
        f"{source}: record {conflicts[0]!r} is already stored with different content "
        f"({n} conflicting record{'s' if n != 1 else ''} in all); nothing was imported",
        "keep the stored versions with on_conflict='skip', or overwrite them with "
        "on_conflict='replace'; on the command line: --on-conflict skip|replace",
    )


def read_jsonl(path: str | Path) -> list[MemoryRecord]:
    """Parse a memory JSONL file; MemoryFormatError (file:line) on anything not a record.

    Blank lines are ignored; every other line must be one current-or-older-format record.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MemoryFormatError(f"memory file {path} does not exist", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MemoryFormatError(f"cannot read memory file {path}: {exc}") from None
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MemoryFormatError(
                f"{where}: not valid JSON ({exc.msg} at column {exc.colno})",
                "each line must be one memory record as written by export_jsonl",
            ) from None
        except RecursionError:
            raise MemoryFormatError(
                f"{where}: not valid JSON (nested too deeply)",
                "each line must be one memory record as written by export_jsonl",
            ) from None
        if not isinstance(obj, dict):
            raise MemoryFormatError(
                f"{where}: not a memory record (a JSON {type(obj).__name__}, not an object)",
                "each line must be one memory record as written by export_jsonl",
            )
        found = obj.get("format_version")
        if isinstance(found, int) and found > MEMORY_FORMAT_VERSION:
            raise MemoryFormatError(
                f"{where}: record format {found} was written by a newer memcollab "
                f"(this one reads formats up to {MEMORY_FORMAT_VERSION})",
                _UPGRADE,
            )
        try:
            records.append(MemoryRecord.model_validate_json(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(part) for part in first["loc"]) or "record"
            more = f" and {exc.error_count() - 1} more" if exc.error_count() > 1 else ""
            raise MemoryFormatError(
                f"{where}: not a valid memory record ({loc}: {first['msg']}{more})",
                "each line must be one memory record as written by export_jsonl",
            ) from None
    return records


Opener = Callable[[str, bool], "MemoryStore"]
"""Opens the store at a location (the URL as given) ; the flag says whether to create it."""
BACKENDS: dict[str, Opener] = {}
_BACKEND_ENTRY_POINTS = "memcollab.memory_backends"


def register_backend(*schemes: str) -> Callable[[Opener], Opener]:
    """Register the opener of a memory backend for URL schemes (`scheme://...`).

    A backend in another package registers through the entry point group
    `memcollab.memory_backends` (name = scheme, value = the opener), loaded on first use.
    """

    def wrap(opener: Opener) -> Opener:
        for scheme in schemes:
            BACKENDS[scheme] = opener
        return opener

    return wrap


def _backend(scheme: str) -> Opener | None:
    if scheme not in BACKENDS:
        for entry in entry_points(group=_BACKEND_ENTRY_POINTS, name=scheme):
            try:
                BACKENDS[scheme] = entry.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is one message
                raise MemoryConnectionError(
                    f"the memory backend {entry.value!r} for {scheme}:// cannot be loaded: {exc}"
                ) from None
    return BACKENDS.get(scheme)


def open_memory(location: str | Path, *, create: bool = True) -> MemoryStore:
    """Open (creating if needed, unless `create=False`) the memory at a location.

    * a path, or `sqlite:///relative/path` / `sqlite:////absolute/path` (SQLAlchemy's
      convention) -> `SQLiteMemory`;
    * `postgresql://user:password@host:port/dbname` (or `postgres://`) -> `PostgresMemory`.
      libpq parameters in the query string apply, e.g. `?options=-csearch_path%3Dmyschema`;
    * `scheme://...` of any registered backend (`register_backend`).
    """
    text = str(location).strip()
    scheme, sep, _ = text.partition("://")
    if isinstance(location, Path) or not sep:
        return _open_sqlite(text, create)
    opener = _backend(scheme)
    if opener is None:
        known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
        raise MemoryConnectionError(
            f"unsupported memory location {text!r}",
            f"give a file path or a URL of a known backend ({known})",
        )
    return opener(text, create)


def _open_sqlite(path: str, create: bool) -> MemoryStore:
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
    return _open_sqlite(rest[1:], create)


@register_backend("postgresql", "postgres")
def _open_postgres(url: str, create: bool) -> MemoryStore:
    # A PostgreSQL memory is a database that exists; its tables are created on first use.
    return PostgresMemory(url)


# --------------------------------------------------------------------------- shared SQL

_RECORD_COLUMNS = (
    "id, namespace, domain, category, subcategory, task_hash, model_pos, model_neg, "
    "pair_type, distiller, n_constraints, json, created_at, format_version"
)


def _row(record: MemoryRecord) -> tuple[Any, ...]:
    if record.format_version > MEMORY_FORMAT_VERSION:
        raise MemoryFormatError(
            f"record {record.id} has format {record.format_version}, newer than "
            f"{MEMORY_FORMAT_VERSION}",
            _UPGRADE,
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


def _marks(n: int) -> str:
    return ", ".join("?" * n)


class _SQLMemory(MemoryStore):
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
    def _write(self) -> AbstractContextManager[Any]:
        """A write transaction; yields a DB-API cursor."""

    def _sql(self, statement: str) -> str:
        return statement

    # -- connections
    def _conn(self) -> Any:
        if self._pid != os.getpid():  # forked: the parent's connections are not ours to use
            with self._lock:
                self._inherited.extend(self._conns)
                self._conns = []
                self._local = threading.local()
                self._pid = os.getpid()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise MemoryConnectionError(f"the memory at {self.location} is closed")
            conn = self._connect()
            with self._lock:
                self._conns.append(conn)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
            self._closed = True
            self._local = threading.local()
        for conn in conns:
            conn.close()

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn().execute(self._sql(statement), tuple(params)).fetchall())

    # -- records
    def add(self, record: MemoryRecord) -> bool:
        return self.add_many([record]) == 1

    def add_many(self, records: Iterable[MemoryRecord]) -> int:
        rows = [_row(record) for record in records]
        if not rows:
            return 0
        insert = self._sql(
            f"INSERT INTO memory_records ({_RECORD_COLUMNS}) VALUES ({_marks(14)}) "
            "ON CONFLICT (id) DO NOTHING"
        )
        with self._write() as cur:
            if len(rows) == 1:
                cur.execute(insert, rows[0])
            else:
                cur.executemany(insert, rows)
            added = max(cur.rowcount, 0)
            if added:
                cur.execute(
                    self._sql("UPDATE memory_meta SET value = value + 1 WHERE key = 'version'")
                )
        return added

    def _import_records(
        self, records: Sequence[MemoryRecord], on_conflict: OnConflict, source: str
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
                raise _conflict_error(source, conflicts)
            if new:
                cur.executemany(
                    self._sql(
                        f"INSERT INTO memory_records ({_RECORD_COLUMNS}) VALUES ({_marks(14)}) "
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
            if new or changed:
                cur.execute(
                    self._sql("UPDATE memory_meta SET value = value + 1 WHERE key = 'version'")
                )
        skipped = 0 if on_conflict == "replace" else len(conflicts)
        return ImportCounts(added, present, skipped, len(conflicts) - skipped)

    def _stored_json(self, cur: Any, ids: Sequence[str]) -> dict[str, str]:
        """id -> the stored record as canonical JSON, for those of `ids` that are stored."""
        found: dict[str, str] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            cur.execute(
                self._sql(
                    f"SELECT id, json FROM memory_records WHERE id IN ({_marks(len(chunk))})"
                ),
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

    @staticmethod
    def _where(
        namespace: str,
        domain: str | None,
        category: str | None = None,
        subcategory: str | None = None,
    ) -> tuple[str, list[Any]]:
        clauses, params = ["namespace = ?"], [namespace]
        if domain is not None:
            clauses.append("domain = ?")
            params.append(domain)
        elif category is not None or subcategory is not None:
            # Keeps the bucket index usable below the domain column.
            clauses.append(f"domain IN ({_marks(len(_DOMAINS))})")
            params.extend(_DOMAINS)
        if category is not None:
            clauses.append("category = ?")
            params.append(category)
        if subcategory is not None:
            clauses.append("subcategory = ?")
            params.append(subcategory)
        return " AND ".join(clauses), params

    def records(
        self,
        namespace: str = "default",
        domain: str | None = None,
        category: str | None = None,
        subcategory: str | None = None,
        *,
        include_flagged: bool = False,
    ) -> list[MemoryRecord]:
        where, params = self._where(namespace, domain, category, subcategory)
        if not include_flagged:
            where += " AND id NOT IN (SELECT record_id FROM memory_flags)"
        rows = self._query(
            f"SELECT json FROM memory_records WHERE {where} ORDER BY created_at, id", params
        )
        return [MemoryRecord.model_validate_json(blob) for (blob,) in rows]

    def buckets(
        self, namespace: str = "default", domain: str | None = None
    ) -> dict[tuple[str, str, str], int]:
        where, params = self._where(namespace, domain)
        rows = self._query(
            f"SELECT domain, category, subcategory, COUNT(*) FROM memory_records WHERE {where} "
            "GROUP BY domain, category, subcategory",
            params,
        )
        return {(d, c, s): int(n) for d, c, s, n in sorted(rows)}

    # -- usage
    def _require(self, cur: Any, record_ids: Iterable[str]) -> None:
        wanted = sorted(set(record_ids))
        cur.execute(
            self._sql(f"SELECT id FROM memory_records WHERE id IN ({_marks(len(wanted))})"),
            wanted,
        )
        missing = set(wanted) - {row[0] for row in cur.fetchall()}
        if missing:
            shown = ", ".join(repr(m) for m in sorted(missing)[:5])
            raise MemoryNotFoundError(
                f"the memory at {self.location} holds no record with id {shown}",
                "count usage only of records retrieved from this store",
            )

    def count_retrieved(self, record_ids: Iterable[str]) -> None:
        counts = Counter(record_ids)
        if not counts:
            return
        with self._write() as cur:
            self._require(cur, counts)
            cur.executemany(
                self._sql(
                    "INSERT INTO memory_retrievals (record_id, retrieved) VALUES (?, ?) "
                    "ON CONFLICT (record_id) DO UPDATE "
                    "SET retrieved = memory_retrievals.retrieved + excluded.retrieved"
                ),
                sorted(counts.items()),
            )

    def record_usage(self, record_id: str, model: str, helped: bool) -> None:
        with self._write() as cur:
            self._require(cur, [record_id])
            cur.execute(
                self._sql(
                    "INSERT INTO memory_usage (record_id, model, helped, harmed) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (record_id, model) DO UPDATE SET "
                    "helped = memory_usage.helped + excluded.helped, "
                    "harmed = memory_usage.harmed + excluded.harmed"
                ),
                (record_id, model, int(helped), int(not helped)),
            )

    def usage(self, record_id: str) -> dict[str, Any]:
        self.get(record_id)
        retrieved = self._query(
            "SELECT retrieved FROM memory_retrievals WHERE record_id = ?", (record_id,)
        )
        models = self._query(
            "SELECT model, helped, harmed FROM memory_usage WHERE record_id = ?", (record_id,)
        )
        return {
            "retrieved": int(retrieved[0][0]) if retrieved else 0,
            "models": {m: {"helped": int(h), "harmed": int(x)} for m, h, x in sorted(models)},
        }

    # -- flags
    def _flag_event(self, record_id: str, action: str, reason: str, actor: str) -> bool:
        if not reason.strip():
            raise MemoryFlagError(f"{action} of {record_id!r} needs a reason")
        now = time.time()
        with self._write() as cur:
            self._require(cur, [record_id])
            if action == "flag":
                cur.execute(
                    self._sql(
                        "INSERT INTO memory_flags (record_id, reason, actor, at) "
                        "VALUES (?, ?, ?, ?) ON CONFLICT (record_id) DO NOTHING"
                    ),
                    (record_id, reason, actor, now),
                )
            else:
                cur.execute(self._sql("DELETE FROM memory_flags WHERE record_id = ?"), (record_id,))
            if cur.rowcount < 1:
                return False
            cur.execute(
                self._sql(
                    "INSERT INTO memory_flag_history (record_id, action, reason, actor, at) "
                    "VALUES (?, ?, ?, ?, ?)"
                ),
                (record_id, action, reason, actor, now),
            )
            cur.execute(self._sql("UPDATE memory_meta SET value = value + 1 WHERE key = 'version'"))
        return True

    def flag(self, record_id: str, reason: str, actor: str = "") -> bool:
        return self._flag_event(record_id, "flag", reason, actor)

    def unflag(self, record_id: str, reason: str, actor: str = "") -> bool:
        return self._flag_event(record_id, "unflag", reason, actor)

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
                _UPGRADE,
            )


def _schema(text_type: str, real_type: str, int_type: str, serial: str) -> list[str]:
    return [
        f"""CREATE TABLE IF NOT EXISTS memory_records (
            id {text_type} PRIMARY KEY,
            namespace {text_type} NOT NULL,
            domain {text_type} NOT NULL,
            category {text_type} NOT NULL,
            subcategory {text_type} NOT NULL,
            task_hash TEXT NOT NULL,
            model_pos {text_type},
            model_neg {text_type},
            pair_type {text_type} NOT NULL,
            distiller {text_type} NOT NULL,
            n_constraints INTEGER NOT NULL,
            json TEXT NOT NULL,
            created_at {real_type} NOT NULL,
            format_version INTEGER NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS memory_records_bucket ON memory_records "
        "(namespace, domain, category, subcategory, created_at, id)",
        "CREATE INDEX IF NOT EXISTS memory_records_task ON memory_records (namespace, task_hash)",
        f"""CREATE TABLE IF NOT EXISTS memory_retrievals (
            record_id {text_type} PRIMARY KEY,
            retrieved {int_type} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS memory_usage (
            record_id {text_type} NOT NULL,
            model {text_type} NOT NULL,
            helped {int_type} NOT NULL,
            harmed {int_type} NOT NULL,
            PRIMARY KEY (record_id, model)
        )""",
        f"""CREATE TABLE IF NOT EXISTS memory_flags (
            record_id {text_type} PRIMARY KEY,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            at {real_type} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS memory_flag_history (
            seq {serial},
            record_id {text_type} NOT NULL,
            action {text_type} NOT NULL,
            reason TEXT NOT NULL,
            actor TEXT NOT NULL,
            at {real_type} NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS memory_flag_history_record ON memory_flag_history "
        "(record_id, at)",
        f"""CREATE TABLE IF NOT EXISTS memory_meta (
            key TEXT PRIMARY KEY,
            value {int_type} NOT NULL
        )""",
        "INSERT INTO memory_meta (key, value) VALUES ('version', 0) ON CONFLICT (key) DO NOTHING",
        f"INSERT INTO memory_meta (key, value) VALUES ('schema_version', {SCHEMA_VERSION}) "
        "ON CONFLICT (key) DO NOTHING",
        # Schema 1 -> 2 added the flag tables above (created by the same statements); a
        # version-1 memcollab would serve flagged records, so it must refuse this store.
        f"UPDATE memory_meta SET value = {SCHEMA_VERSION} WHERE key = 'schema_version' "
        f"AND value < {SCHEMA_VERSION}",
    ]


# --------------------------------------------------------------------------- SQLite


class SQLiteMemory(_SQLMemory):
    """The memory in one SQLite file (WAL, busy timeout, a connection per thread)."""

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
            conn = sqlite3.connect(
                self.path,
                timeout=_BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise MemoryConnectionError(
                f"cannot open the SQLite memory {self.path}: {exc}",
                "check that the path is a writable file or a new name in a writable folder",
            ) from None
        return conn

    def _init_schema(self) -> None:
        # Switching to WAL takes a brief exclusive lock for which SQLite does not call its
        # busy handler, so processes racing on a brand-new file retry here.
        for attempt in range(60):
            try:
                conn = self._conn()
                conn.execute("PRAGMA journal_mode=WAL")
                with self._write() as cur:
                    for statement in _schema(
                        "TEXT", "REAL", "INTEGER", "INTEGER PRIMARY KEY AUTOINCREMENT"
                    ):
                        cur.execute(statement)
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or attempt == 59:
                    raise MemoryConnectionError(
                        f"cannot open the SQLite memory {self.path}: {exc}"
                    ) from None
                time.sleep(0.02 * (attempt + 1))
            except sqlite3.DatabaseError as exc:
                raise MemoryConnectionError(
                    f"cannot open the SQLite memory {self.path}: {exc}",
                    "is it a memcollab memory file?",
                ) from None
        self._check_schema_version()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Cursor]:
        conn = self._conn()
        # IMMEDIATE takes the write lock up front (waiting through busy_timeout) instead of
        # failing when a read transaction must be upgraded.
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn.cursor()
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _iter_json(self, namespace: str | None) -> Iterator[str]:
        if namespace is None:
            cur = self._conn().execute("SELECT json FROM memory_records ORDER BY created_at, id")
        else:
            cur = self._conn().execute(
                "SELECT json FROM memory_records WHERE namespace = ? ORDER BY created_at, id",
                (namespace,),
            )
        for (blob,) in cur:
            yield blob


# --------------------------------------------------------------------------- PostgreSQL


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise UserError(
            "a PostgreSQL memory needs psycopg, which is not installed",
            "pip install 'memcollab[postgres]'",
        ) from None
    return psycopg


def _pg_failure(url: str, exc: Exception) -> MemoryConnectionError:
    """One line: where, why, and what to do, from a psycopg connection error."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        info = {}
    host = str(info.get("host") or "localhost")
    port = str(info.get("port") or "5432")
    dbname = str(info.get("dbname") or info.get("user") or "")
    user = str(info.get("user") or "")
    first = (str(exc).strip().splitlines() or ["unknown error"])[0]
    reason = first.rsplit(" failed: ", 1)[-1]
    for prefix in ("connection failed: ", "connection is bad: "):
        reason = reason.removeprefix(prefix)
    reason = " ".join(reason.replace("FATAL:", "").split())
    low = reason.lower()
    if "refused" in low or "no such file" in low or "timeout" in low or "timed out" in low:
        fix = "is PostgreSQL running there? start it, or fix the host and port in the URL"
    elif "password" in low:
        fix = "check the user name and password in the URL"
    elif "database" in low and "does not exist" in low:
        fix = f"create the database (createdb -O {user or 'USER'} {dbname}) or fix the URL"
    elif "role" in low and "does not exist" in low:
        fix = "create that role in PostgreSQL or fix the user name in the URL"
    elif "resolve host" in low:
        fix = "fix the host name in the URL"
    else:
        fix = "check the URL: postgresql://user:password@host:port/dbname"
    return MemoryConnectionError(
        f"cannot connect to PostgreSQL at {host}:{port}/{dbname}: {reason}", fix
    )


def _redact(url: str) -> str:
    """The URL without its password."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, hostpart = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}@{hostpart}"


class PostgresMemory(_SQLMemory):
    """The memory in PostgreSQL (psycopg 3; a connection per thread, autocommit reads).

    `schema`, when given, is created if needed and used as the search path, so several
    memories (or test runs) can share one database.
    """

    def __init__(self, url: str, schema: str | None = None) -> None:
        super().__init__()
        self._pg = _psycopg()
        self.url = url
        self.schema = schema
        self.location = _redact(url) + (f" (schema {schema})" if schema else "")
        try:
            self._init_schema()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> Any:
        from psycopg import sql
        from psycopg.conninfo import conninfo_to_dict

        pg = self._pg
        try:
            options = conninfo_to_dict(self.url)
        except pg.Error as exc:
            raise MemoryConnectionError(
                f"cannot read the PostgreSQL URL {_redact(self.url)!r}: {exc}",
                "write postgresql://user:password@host:port/dbname",
            ) from None
        extra = {} if "connect_timeout" in options else {"connect_timeout": _PG_CONNECT_TIMEOUT_S}
        try:
            conn = pg.connect(self.url, autocommit=True, **extra)
        except pg.Error as exc:
            raise _pg_failure(self.url, exc) from None
        if self.schema:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        return conn

    def _init_schema(self) -> None:
        from psycopg import sql

        with self._write() as cur:
            # CREATE ... IF NOT EXISTS is not safe against a concurrent CREATE; serialise.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
            if self.schema:
                cur.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
                )
            for statement in _schema(
                'TEXT COLLATE "C"', "DOUBLE PRECISION", "BIGINT", "BIGSERIAL PRIMARY KEY"
            ):
                cur.execute(statement)
        self._check_schema_version()

    def _sql(self, statement: str) -> str:
        return statement.replace("?", "%s")

    @contextmanager
    def _write(self) -> Iterator[Any]:
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def _iter_json(self, namespace: str | None) -> Iterator[str]:
        conn = self._conn()
        with conn.cursor() as cur:
            if namespace is None:
                rows = cur.stream("SELECT json FROM memory_records ORDER BY created_at, id")
            else:
                rows = cur.stream(
                    "SELECT json FROM memory_records WHERE namespace = %s ORDER BY created_at, id",
                    (namespace,),
                )
            for (blob,) in rows:
                yield blob
