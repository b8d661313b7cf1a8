"""The usage counters of the SQL memory stores: times each record was retrieved, how often
it helped or harmed each model, and each model's baseline per bucket (memory/utility.py
estimates from them); and the small SQL helpers store_sql.py shares."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from memcollab.domains import DOMAINS
from memcollab.memory.record import MemoryRecord
from memcollab.memory.store import MemoryNotFoundError


def chunks(ids: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    """`ids` in slices short enough for one IN (...) list of bound parameters."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def marks(n: int) -> str:
    return ", ".join("?" * n)


def bucket_where(
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
        domains = sorted(DOMAINS)
        clauses.append(f"domain IN ({marks(len(domains))})")
        params.extend(domains)
    if category is not None:
        clauses.append("category = ?")
        params.append(category)
    if subcategory is not None:
        clauses.append("subcategory = ?")
        params.append(subcategory)
    return " AND ".join(clauses), params


class UsageCounters:
    """The counter methods of `_SQLMemory` (store_sql.py), which supplies the hooks below."""

    location: str

    def _sql(self, statement: str) -> str:
        raise NotImplementedError

    def _connection(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def get(self, record_id: str) -> MemoryRecord:
        raise NotImplementedError

    def _require(self, cur: Any, record_ids: Iterable[str]) -> None:
        wanted = sorted(set(record_ids))
        cur.execute(
            self._sql(f"SELECT id FROM memory_records WHERE id IN ({marks(len(wanted))})"),
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
        self.get(record_id)  # its MemoryNotFoundError names a read, not a count
        return self.usages_of([record_id])[record_id]

    def usages_of(self, record_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        ids = sorted(set(record_ids))
        if not ids:
            return {}
        out: dict[str, dict[str, Any]] = {}
        with self._connection() as conn:
            cur = conn.cursor()
            self._require(cur, ids)
            for chunk in chunks(ids):
                placeholders = marks(len(chunk))
                out |= {rid: {"retrieved": 0, "models": {}} for rid in chunk}
                cur.execute(
                    self._sql(
                        "SELECT record_id, retrieved FROM memory_retrievals "
                        f"WHERE record_id IN ({placeholders})"
                    ),
                    chunk,
                )
                for rid, retrieved in cur.fetchall():
                    out[rid]["retrieved"] = int(retrieved)
                cur.execute(
                    self._sql(
                        "SELECT record_id, model, helped, harmed FROM memory_usage "
                        f"WHERE record_id IN ({placeholders}) ORDER BY record_id, model"
                    ),
                    chunk,
                )
                for rid, model, helped, harmed in cur.fetchall():
                    out[rid]["models"][model] = {"helped": int(helped), "harmed": int(harmed)}
        return {rid: out[rid] for rid in record_ids}

    def usage_counts(
        self,
        namespace: str = "default",
        model: str | None = None,
        domain: str | None = None,
        category: str | None = None,
        subcategory: str | None = None,
    ) -> dict[tuple[str, str], tuple[int, int]]:
        where, params = bucket_where(namespace, domain, category, subcategory)
        if model is not None:
            where += " AND u.model = ?"
            params.append(model)
        rows = self._query(
            "SELECT u.record_id, u.model, u.helped, u.harmed FROM memory_usage u "
            f"JOIN memory_records r ON r.id = u.record_id WHERE {where}",
            params,
        )
        return {(rid, m): (int(h), int(x)) for rid, m, h, x in sorted(rows)}

    def record_baseline(
        self,
        namespace: str,
        domain: str,
        category: str,
        subcategory: str,
        model: str,
        success: bool,
    ) -> None:
        with self._write() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO memory_baselines (namespace, domain, category, subcategory, "
                    "model, successes, failures) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (namespace, domain, category, subcategory, model) DO UPDATE "
                    "SET successes = memory_baselines.successes + excluded.successes, "
                    "failures = memory_baselines.failures + excluded.failures"
                ),
                (namespace, domain, category, subcategory, model, int(success), int(not success)),
            )

    def baselines(
        self, namespace: str = "default", model: str | None = None
    ) -> dict[tuple[str, str, str, str], tuple[int, int]]:
        statement = (
            "SELECT model, domain, category, subcategory, successes, failures "
            "FROM memory_baselines WHERE namespace = ?"
        )
        params: list[Any] = [namespace]
        if model is not None:
            statement += " AND model = ?"
            params.append(model)
        rows = self._query(statement, params)
        return {(m, d, c, s): (int(k), int(f)) for m, d, c, s, k, f in sorted(rows)}
