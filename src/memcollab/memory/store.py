"""The memory store: MemoryRecords filed by (namespace, domain, category, subcategory).

One interface, `MemoryStore`, with two backends that behave identically:

* `SQLiteMemory` (the default): one file, WAL journal, a busy timeout and one connection
  per thread, so several threads and processes can read and write one file at once.
* `PostgresMemory` (`pip install 'memcollab[postgres]'`): psycopg 3 with a connection
  pool of bounded size per process, for memories shared between machines.

`open_memory(location)` picks the backend from a path or URL through a registry of URL
schemes (`register_backend`): the SQL both backends share is in store_sql.py, each
backend in its own file (store_sqlite.py, store_postgres.py), so a new backend is one file.

Semantics shared by both backends:

* A record's `id` is its identity (`record.record_id` makes it deterministic from the pair
  and the distiller). Adding a record whose id is already stored changes nothing and
  reports it as not added; an import decides conflicts explicitly (`on_conflict`).
* `records()` is ordered by (created_at, id), byte-wise on the id, in both backends.
* `version()` is a counter bumped in the same transaction as every change that retrieval
  must see (new or replaced records, flags); retrieval compares it to invalidate its
  per-bucket indexes.
* Usage counters (times retrieved; per model, times a record helped or harmed) live beside
  the records and are not part of the JSONL export: they are measurements of one
  deployment, while the export is the portable memory itself.

Schema: `memory_records` (id primary key; namespace, domain, category, subcategory,
task_hash, model_pos, model_neg, pair_type, distiller, n_constraints, json, created_at,
format_version; the constraints live inside `json`), indexed on (namespace, domain,
category, subcategory, created_at, id) so one bucket is read in order straight from the
index; `memory_retrievals` (record_id, retrieved); `memory_usage` (record_id, model, helped,
harmed); `memory_flags` (the records withheld from retrieval, with the reason) and
`memory_flag_history` (every flag and unflag); `memory_notes` (namespace, key, json: a
namespace's notes, e.g. the utility gate's decision); `memory_baselines` (per namespace,
model and bucket: the model's successes and failures without memory, the baseline of
memory/utility.py); `memory_status`, `memory_changes` and `memory_versions` (statuses other
than flagged, the change log, each namespace's latest version: memory/store_changes.py);
`memory_meta` (the version counter and the schema version). Schema 2 added the flag
tables, schema 3 the notes, schema 4 the baselines, schema 5 statuses and the change log;
opening an older store adds them.

Namespace notes: small JSON objects a namespace carries besides its records (`set_note`,
`notes`). An export of a namespace writes its notes after its records, one line each
(`{"format_version": 3, "note": {"namespace", "key", "value"}}`), and an import stores them
in the same transaction as the records, with the same conflict rules. An export without
notes is what it was before notes existed.
"""

from __future__ import annotations

import json
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from memcollab.atomic import replace_when_done
from memcollab.errors import UserError
from memcollab.memory.record import MEMORY_FORMAT_VERSION, NOTE_FORMAT, MemoryRecord
from memcollab.memory.store_changes import Change, Op, Status, export_lines, with_finals

SCHEMA_VERSION = 5
"""The layout of the store's tables; a store written by a newer layout is refused. Each
migration step is named in store_sql_schema.py (`MIGRATION_STEPS`)."""
UPGRADE_HINT = "upgrade memcollab: pip install -U memcollab"


class MemoryNotFoundError(UserError):
    """A record id that the store does not hold."""


class MemoryFormatError(UserError):
    """A memory file or store that cannot be read: bad JSON, a bad record, a newer format."""


class MemoryConnectionError(UserError):
    """A memory location that cannot be opened: a refused server, a bad path or URL."""


class MemoryFlagError(UserError):
    """A flag or unflag that cannot be made (no reason given)."""


class NamespaceNote(BaseModel):
    """A note a namespace carries besides its records: a JSON object under a key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(min_length=1)
    key: str = Field(min_length=1)
    value: dict[str, Any]

    def value_json(self) -> str:
        """The value as canonical JSON (sorted keys): what is stored and compared."""
        return json.dumps(self.value, sort_keys=True)

    def export_line(self) -> str:
        """The note as one line of a JSONL export."""
        note = {"namespace": self.namespace, "key": self.key, "value": self.value}
        return json.dumps({"format_version": NOTE_FORMAT, "note": note}, sort_keys=True)


class MemoryUnsupportedError(UserError):
    """An operation the memory's backend does not implement."""


class MemoryVersionError(UserError):
    """A version a namespace does not have (or a snapshot name it does not know)."""


@dataclass(frozen=True)
class RollbackCounts:
    """What a rollback did: the namespace's versions before and after, the changes it
    wrote (one per record whose status or content it set back), how many contents it
    restored and how many records (added after the target version) it archived."""

    namespace: str
    to_version: int
    from_version: int
    new_version: int
    changed: int
    contents_restored: int
    archived: int


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

    def save(
        self, records: Sequence[MemoryRecord], *, reason: str = "", actor: str = ""
    ) -> ImportCounts:
        """Store records in one transaction, replacing the stored ones of the same ids (a
        merge's changed records); `version()` changes when anything did. Counted as an
        import with on_conflict="replace": `added` new ids, `replaced` changed ones,
        `present` unchanged ones. Backends with history log each change with `reason`
        (default: "save") and `actor`."""
        return self._import_records(records, "replace", f"save into {self.location}")

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
        """One page of `records(...)` (the same order) and how many records match in all.
        This default slices the full list; the SQL backends page in the database."""
        found = self.records(
            namespace, domain, category, subcategory, include_flagged=include_flagged
        )
        return found[offset : offset + limit], len(found)

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

    def usages_of(self, record_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """id -> `usage(id)` for each of the given stored ids (MemoryNotFoundError if one is
        not stored). This default reads record by record; SQL backends answer in two
        queries."""
        return {rid: self.usage(rid) for rid in record_ids}

    def usage_counts(
        self,
        namespace: str = "default",
        model: str | None = None,
        domain: str | None = None,
        category: str | None = None,
        subcategory: str | None = None,
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """(record id, model) -> (helped, harmed) for the records of a namespace (of one
        bucket, for one model, when given; flagged records included). This default reads
        record by record; SQL backends answer in one query."""
        out: dict[tuple[str, str], tuple[int, int]] = {}
        for record in self.records(namespace, domain, category, subcategory, include_flagged=True):
            for name, counts in self.usage(record.id)["models"].items():
                if model is None or name == model:
                    out[(record.id, name)] = (int(counts["helped"]), int(counts["harmed"]))
        return out

    def record_baseline(
        self,
        namespace: str,
        domain: str,
        category: str,
        subcategory: str,
        model: str,
        success: bool,
    ) -> None:
        """Count one outcome of `model` on a task of this bucket solved without memory (the
        baseline that memory/utility.py compares a record's outcomes with)."""
        raise MemoryUnsupportedError(
            f"the memory at {self.location} does not keep baseline outcomes",
            "use a SQLite or PostgreSQL memory for per-model utility",
        )

    def baselines(
        self, namespace: str = "default", model: str | None = None
    ) -> dict[tuple[str, str, str, str], tuple[int, int]]:
        """(model, domain, category, subcategory) -> (successes, failures) without memory,
        for the namespace (and one model, when given). Empty where none were counted."""
        return {}

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

    # -- statuses and versions (memory/store_changes.py); the SQL backends keep them
    keeps_history: bool = False
    """Whether the backend keeps record statuses beyond flags and a versioned change log."""

    def add_records(
        self,
        records: Iterable[MemoryRecord],
        *,
        status: Status = "active",
        reason: str = "",
        actor: str = "",
    ) -> list[str]:
        """Store records in one transaction, each new one in `status` ("active" or
        "quarantined"), its change logged with `reason` and `actor`; returns the ids that
        were new. This default (no history) adds them active, one by one."""
        if status != "active":
            raise self._no_history(f"adding records {status}")
        return [record.id for record in records if self.add(record)]

    def transition(self, record_id: str, op: Op, reason: str, actor: str = "") -> bool:
        """Change a record's status: flag (active -> flagged), unflag (flagged -> active),
        quarantine (active -> quarantined), release (quarantined -> active), archive (any
        -> archived), restore (archived -> what it was before). False when the record is
        in the target status already; MemoryFlagError when the change does not apply to
        its status or no reason is given. Logged as a new version of its namespace."""
        if op == "flag":
            return self.flag(record_id, reason, actor)
        if op == "unflag":
            return self.unflag(record_id, reason, actor)
        raise self._no_history(op)

    def status(self, record_id: str) -> Status:
        """The record's status; MemoryNotFoundError when it is not stored."""
        self.get(record_id)
        return self.statuses_of([record_id])[record_id]

    def statuses_of(self, record_ids: Sequence[str]) -> dict[str, Status]:
        """id -> status of the given stored ids, in one lookup (active unless marked)."""
        flagged = self.flagged()
        return {rid: "flagged" if rid in flagged else "active" for rid in record_ids}

    def statuses(self, namespace: str = "default") -> dict[str, Status]:
        """id -> status of the namespace's records that are not active."""
        return {rid: "flagged" for rid in self.flagged(namespace)}

    def changes(
        self,
        namespace: str = "default",
        *,
        record_id: str | None = None,
        since: int = 0,
        until: int | None = None,
    ) -> list[Change]:
        """The namespace's change log (of one record, when given), versions in
        (since, until], oldest first."""
        raise self._no_history("a change log")

    def changes_of(self, namespace: str, record_ids: Sequence[str]) -> list[Change]:
        """The change log of the given records of a namespace, ordered by version. This
        default reads record by record; SQL backends answer in one query per 500 ids."""
        found = [c for rid in set(record_ids) for c in self.changes(namespace, record_id=rid)]
        return sorted(found, key=lambda c: c.version)

    def namespace_version(self, namespace: str = "default") -> int:
        """The namespace's latest version (0 before its first change)."""
        raise self._no_history("versions")

    def rollback(
        self, namespace: str, version: int, reason: str, actor: str = ""
    ) -> RollbackCounts:
        """Set every record of the namespace back to its status and content at `version`,
        as new changes (nothing is deleted; records added later are archived), in one
        transaction. MemoryVersionError for a version the namespace does not have."""
        raise self._no_history("rollback")

    def _no_history(self, what: str) -> MemoryUnsupportedError:
        return MemoryUnsupportedError(
            f"the memory at {self.location} ({type(self).__name__}) keeps no history: "
            f"{what} is not available",
            "use a SQLite or PostgreSQL memory",
        )

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

    keeps_notes: bool = False
    """Whether the backend stores namespace notes (the SQL backends do)."""

    def set_note(self, namespace: str, key: str, value: dict[str, Any]) -> bool:
        """Store `value` as the note `key` of `namespace`, replacing an older one; False
        when the same value was stored already."""
        raise self._no_notes()

    def notes(self, namespace: str | None = None) -> list[NamespaceNote]:
        """The notes of one namespace (or all), ordered by (namespace, key)."""
        return []

    def _no_notes(self) -> MemoryFormatError:
        return MemoryFormatError(
            f"the memory at {self.location} ({type(self).__name__}) keeps no namespace notes",
            "use a SQLite or PostgreSQL memory",
        )

    @abstractmethod
    def _iter_json(self, namespace: str | None) -> Iterator[str]:
        """The stored JSON of every record (of one namespace, or all), by (created_at, id)."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection this store opened."""

    def export_jsonl(self, path: str | Path, namespace: str | None = None) -> int:
        """Write the records (of one namespace, or all) as JSON Lines; returns the count.

        The file holds the records, one `MemoryRecord.model_dump_json()` per line ordered by
        (created_at, id), then the namespaces' notes (if any), one line each, then (backends
        that keep history) each namespace's change log, one change per line, oldest first;
        usage counters are not exported. Written atomically (a temporary file renamed into place).
        `import_jsonl` of it into an empty store of either backend gives the same records
        and notes.
        """
        count = 0
        finals: dict[str, dict[str, str]] = {}  # namespace -> id -> canonical record written
        with replace_when_done(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
            for blob in self._iter_json(namespace):
                fh.write(blob + "\n")
                count += 1
                if self.keeps_history:  # read once: the history refers to these lines
                    record = MemoryRecord.model_validate_json(blob)
                    finals.setdefault(record.namespace, {})[record.id] = record.model_dump_json()
            for note in self.notes(namespace):
                fh.write(note.export_line() + "\n")
            if self.keeps_history:
                names = [namespace] if namespace is not None else sorted(self.namespaces())
                for name in names:
                    for line in export_lines(self.changes(name), finals.get(name, {})):
                        fh.write(line + "\n")
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
        records, notes, changes = read_export_with_history(path)
        return self.import_parsed(records, notes, on_conflict, str(path), changes)

    def import_parsed(
        self,
        records: Sequence[MemoryRecord],
        notes: Sequence[NamespaceNote],
        on_conflict: OnConflict,
        source: str,
        changes: Sequence[Change] = (),
    ) -> ImportCounts:
        """`import_jsonl` of records and notes already read (`source` names them in errors);
        a note conflicts like a record (same namespace and key, another value). A
        namespace's change history (`changes`) is reproduced, versions included, where the
        namespace has no history here yet; elsewhere the import is logged as changes of
        this store. A backend without history ignores it."""
        if on_conflict not in ON_CONFLICT:
            raise ValueError(
                f"on_conflict must be one of {', '.join(ON_CONFLICT)}, not {on_conflict!r}"
            )
        if self.keeps_history and changes:
            return self._import_with_notes(records, notes, on_conflict, source, changes)
        if not notes:
            return self._import_records(records, on_conflict, source)
        if not self.keeps_notes:
            raise self._no_notes()
        return self._import_with_notes(records, notes, on_conflict, source)

    def _import_with_notes(
        self,
        records: Sequence[MemoryRecord],
        notes: Sequence[NamespaceNote],
        on_conflict: OnConflict,
        source: str,
        changes: Sequence[Change] = (),
    ) -> ImportCounts:
        """Records, notes and history in one transaction (backends with `keeps_notes`)."""
        raise self._no_notes()

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
    notes: int = 0  # namespace notes stored or replaced
    changes: int = 0  # history changes reproduced from the file (memory/store_changes.py)


class MemoryConflictError(UserError):
    """An import whose records have ids already stored with different content."""


def conflict_error(source: str, conflicts: Sequence[str]) -> MemoryConflictError:
    n = len(conflicts)
    return MemoryConflictError(
        f"{source}: record {conflicts[0]!r} is already stored with different content "
        f"({n} conflicting record{'s' if n != 1 else ''} in all); nothing was imported",
        "keep the stored versions with on_conflict='skip', or overwrite them with "
        "on_conflict='replace'; on the command line: --on-conflict skip|replace",
    )


def read_jsonl(path: str | Path) -> list[MemoryRecord]:
    """The records of a memory JSONL file (its namespace notes left out: `read_export`)."""
    return read_export(path)[0]


def read_export(path: str | Path) -> tuple[list[MemoryRecord], list[NamespaceNote]]:
    """Parse a memory JSONL file into records and namespace notes (its change history left
    out: `read_export_with_history`)."""
    records, notes, _ = read_export_with_history(path)
    return records, notes


def read_export_with_history(
    path: str | Path,
) -> tuple[list[MemoryRecord], list[NamespaceNote], list[Change]]:
    """Parse a memory JSONL file into records, namespace notes and changes;
    MemoryFormatError (file:line) on anything else.

    Blank lines are ignored; every other line must be one current-or-older-format record,
    note or change.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MemoryFormatError(f"memory file {path} does not exist", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MemoryFormatError(f"cannot read memory file {path}: {exc}") from None
    records = []
    notes: list[NamespaceNote] = []
    changes: list[Change] = []
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
                UPGRADE_HINT,
            )
        try:
            if "note" in obj:
                notes.append(NamespaceNote.model_validate(obj["note"]))
            elif "change" in obj:
                changes.append(Change.model_validate(obj["change"]))
            else:
                records.append(MemoryRecord.model_validate_json(line))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(part) for part in first["loc"]) or "record"
            more = f" and {exc.error_count() - 1} more" if exc.error_count() > 1 else ""
            what = "namespace note" if "note" in obj else "memory record"
            what = "change" if "change" in obj else what
            raise MemoryFormatError(
                f"{where}: not a valid {what} ({loc}: {first['msg']}{more})",
                "each line must be one memory record (or note, or change) as written by "
                "export_jsonl",
            ) from None
    return records, notes, with_finals(changes, records)


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
        from memcollab.memory.store_sqlite import open_sqlite_path

        return open_sqlite_path(text, create)
    opener = _backend(scheme)
    if opener is None:
        known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
        raise MemoryConnectionError(
            f"unsupported memory location {text!r}",
            f"give a file path or a URL of a known backend ({known})",
        )
    return opener(text, create)


# The built-in backends register their URL schemes when imported; imported last because
# they build on the interface above. Their classes are re-exported here.
from memcollab.memory.store_postgres import PostgresMemory  # noqa: E402
from memcollab.memory.store_sqlite import SQLiteMemory  # noqa: E402

__all__ = [
    "BACKENDS",
    "ON_CONFLICT",
    "SCHEMA_VERSION",
    "ImportCounts",
    "MemoryConflictError",
    "MemoryConnectionError",
    "MemoryFlagError",
    "MemoryFormatError",
    "MemoryNotFoundError",
    "MemoryStore",
    "NamespaceNote",
    "MemoryUnsupportedError",
    "MemoryVersionError",
    "OnConflict",
    "PostgresMemory",
    "RollbackCounts",
    "SQLiteMemory",
    "open_memory",
    "read_export",
    "read_export_with_history",
    "read_jsonl",
    "register_backend",
]
