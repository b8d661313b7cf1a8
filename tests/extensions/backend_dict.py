"""Extension scenario "a storage backend": this one file (registration included).

`dict://NAME`: a memory held in this process's dictionaries (one per NAME, shared by every
store opened on it), e.g. for tests or a short-lived notebook. It implements the whole
`MemoryStore` interface; `Memory.open("dict://x")` then works like any other memory.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from memcollab.memory.record import MemoryRecord
from memcollab.memory.store import (
    ImportCounts,
    MemoryFlagError,
    MemoryNotFoundError,
    MemoryStore,
    OnConflict,
    conflict_error,
    register_backend,
)


@dataclass
class _Data:
    records: dict[str, MemoryRecord] = field(default_factory=dict)
    retrieved: Counter[str] = field(default_factory=Counter)
    usage: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


_SPACES: dict[str, _Data] = {}


class DictMemory(MemoryStore):
    """A memory in process memory (nothing persists)."""

    def __init__(self, name: str) -> None:
        self.location = f"dict://{name}"
        self._data = _SPACES.setdefault(name, _Data())

    def _need(self, record_id: str) -> None:
        if record_id not in self._data.records:
            raise MemoryNotFoundError(f"{self.location} holds no record {record_id!r}")

    def add(self, record: MemoryRecord) -> bool:
        return self.add_many([record]) == 1

    def add_many(self, records: Iterable[MemoryRecord]) -> int:
        d = self._data
        with d.lock:
            new = [r for r in records if r.id not in d.records]
            d.records.update({r.id: r for r in new})
            d.version += bool(new)
        return len(new)

    def get(self, record_id: str) -> MemoryRecord:
        self._need(record_id)
        return self._data.records[record_id]

    def records(
        self,
        namespace: str = "default",
        domain: str | None = None,
        category: str | None = None,
        subcategory: str | None = None,
        *,
        include_flagged: bool = False,
    ) -> list[MemoryRecord]:
        wanted = {"namespace": namespace, "domain": domain, "category": category}
        wanted["subcategory"] = subcategory
        out = [
            r
            for r in self._data.records.values()
            if all(v is None or getattr(r, k) == v for k, v in wanted.items())
            and (include_flagged or r.id not in self._data.flags)
        ]
        return sorted(out, key=lambda r: (r.created_at, r.id))

    def buckets(
        self, namespace: str = "default", domain: str | None = None
    ) -> dict[tuple[str, str, str], int]:
        counts = Counter(
            (r.domain, r.category, r.subcategory)
            for r in self._data.records.values()
            if r.namespace == namespace and domain in (None, r.domain)
        )
        return dict(sorted(counts.items()))

    def count_retrieved(self, record_ids: Iterable[str]) -> None:
        ids = list(record_ids)
        for rid in ids:
            self._need(rid)
        self._data.retrieved.update(ids)

    def record_usage(self, record_id: str, model: str, helped: bool) -> None:
        self._need(record_id)
        counts = self._data.usage.setdefault((record_id, model), [0, 0])
        counts[0 if helped else 1] += 1

    def usage(self, record_id: str) -> dict[str, Any]:
        self._need(record_id)
        models = {
            m: {"helped": h, "harmed": x}
            for (rid, m), (h, x) in sorted(self._data.usage.items())
            if rid == record_id
        }
        return {"retrieved": self._data.retrieved[record_id], "models": models}

    def _flag_event(self, record_id: str, action: str, reason: str, actor: str) -> bool:
        if not reason.strip():
            raise MemoryFlagError(f"{action} of {record_id!r} needs a reason")
        self._need(record_id)
        d = self._data
        with d.lock:
            if (record_id in d.flags) == (action == "flag"):
                return False
            if action == "flag":
                d.flags[record_id] = reason
            else:
                del d.flags[record_id]
            d.history.append(
                {"id": record_id, "action": action, "reason": reason, "actor": actor}
                | {"at": time.time()}
            )
            d.version += 1
        return True

    def flag(self, record_id: str, reason: str, actor: str = "") -> bool:
        return self._flag_event(record_id, "flag", reason, actor)

    def unflag(self, record_id: str, reason: str, actor: str = "") -> bool:
        return self._flag_event(record_id, "unflag", reason, actor)

    def flagged(self, namespace: str | None = None) -> dict[str, str]:
        records = self._data.records
        return {
            rid: why
            for rid, why in sorted(self._data.flags.items())
            if namespace in (None, records[rid].namespace)
        }

    def flag_history(self, record_id: str) -> list[dict[str, Any]]:
        self._need(record_id)
        events = [e for e in self._data.history if e["id"] == record_id]
        return [{k: v for k, v in e.items() if k != "id"} for e in events]

    def namespaces(self) -> dict[str, int]:
        return dict(sorted(Counter(r.namespace for r in self._data.records.values()).items()))

    def stats(self, namespace: str = "default") -> dict[str, Any]:
        mine = self.records(namespace, include_flagged=True)
        return {
            "namespace": namespace,
            "records": len(mine),
            "constraints": sum(len(r.constraints) for r in mine),
        }

    def version(self) -> int:
        return self._data.version

    def _iter_json(self, namespace: str | None) -> Iterator[str]:
        for r in sorted(self._data.records.values(), key=lambda r: (r.created_at, r.id)):
            if namespace in (None, r.namespace):
                yield r.model_dump_json()

    def _import_records(
        self, records: Sequence[MemoryRecord], on_conflict: OnConflict, source: str
    ) -> ImportCounts:
        d = self._data
        with d.lock:
            stored = d.records
            conflicts = [r.id for r in records if r.id in stored and stored[r.id] != r]
            if conflicts and on_conflict == "error":
                raise conflict_error(source, conflicts)
            new = [r for r in records if r.id not in stored]
            present = len(records) - len(new) - len(conflicts)
            stored.update({r.id: r for r in new})
            if on_conflict == "replace":
                stored.update({r.id: r for r in records if r.id in conflicts})
            d.version += bool(new) or (on_conflict == "replace" and bool(conflicts))
        skipped = 0 if on_conflict == "replace" else len(conflicts)
        return ImportCounts(len(new), present, skipped, len(conflicts) - skipped)

    def close(self) -> None:
        """Nothing to release: the data lives as long as the process."""


@register_backend("dict")
def open_dict(url: str, create: bool) -> MemoryStore:
    """`dict://NAME`; with `create=False` a NAME never opened before is refused."""
    name = url[len("dict://") :]
    if not create and name not in _SPACES:
        raise MemoryNotFoundError(f"no memory at {url}")
    return DictMemory(name)
