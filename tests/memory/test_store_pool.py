"""Connection handling of the SQL stores: one transaction that store writes join, paging
in SQL, and PostgreSQL's connection pool (bounded per process, shared, fork-safe)."""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections.abc import Iterator

import pytest

from memcollab.errors import UserError
from memcollab.memory.store import MemoryNotFoundError, MemoryStore, PostgresMemory
from tests.memory.test_store import (  # noqa: F401 - fixtures
    Stores,
    kind,
    make,
    pg_url,
    store,
    stores,
)

# --------------------------------------------------------------------------- transactions


def test_writes_inside_a_transaction_commit_together(store: MemoryStore) -> None:  # noqa: F811
    version = store.version()
    with store.transaction():  # type: ignore[attr-defined]
        assert store.add(make(1)) is True
        assert store.add_many([make(2), make(3)]) == 2
        assert store.get(make(1).id) == make(1)  # a read inside sees the transaction's write
    assert {r.id for r in store.records()} == {make(n).id for n in (1, 2, 3)}
    assert store.version() == version + 2


def test_an_error_inside_a_transaction_rolls_back_every_joined_write(store: MemoryStore) -> None:  # noqa: F811
    store.add(make(0))
    version = store.version()
    with pytest.raises(RuntimeError, match="boom"), store.transaction() as cur:  # type: ignore[attr-defined]
        store.add(make(1))
        store.flag(make(0).id, "bad", "test")
        cur.execute(
            store._sql(  # type: ignore[attr-defined]
                "UPDATE memory_meta SET value = value + 100 WHERE key = ?"
            ),
            ("version",),
        )
        raise RuntimeError("boom")
    with pytest.raises(MemoryNotFoundError):
        store.get(make(1).id)
    assert store.flagged() == {}
    assert store.version() == version
    store.add(make(2))  # the thread's connection is usable again, outside any transaction
    assert store.get(make(2).id) == make(2)


# --------------------------------------------------------------------------- paging


def test_records_page_is_a_slice_of_records_in_sql(store: MemoryStore) -> None:  # noqa: F811
    store.add_many([make(n, category="algebra" if n % 2 else "geometry") for n in range(12)])
    store.flag(make(3).id, "bad", "test")
    for flagged in (False, True):
        everything = store.records(include_flagged=flagged)
        for limit, offset in ((5, 0), (5, 5), (5, 10), (100, 0), (3, 11), (4, 40), (0, 0)):
            page, total = store.records_page(include_flagged=flagged, limit=limit, offset=offset)
            assert page == everything[offset : offset + limit]
            assert total == len(everything)
    page, total = store.records_page(category="algebra", limit=2, offset=1)
    assert page == store.records(category="algebra")[1:3] and total == 5  # 6, less one flagged
    with pytest.raises(ValueError):
        store.records_page(limit=-1)


def test_records_page_reads_only_the_page(
    store: MemoryStore,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store.add_many([make(n) for n in range(5)])

    def refuse(*args: object, **kw: object) -> None:
        raise AssertionError("records() reads every record")

    monkeypatch.setattr(store, "records", refuse)
    page, total = store.records_page(limit=2, offset=2)
    assert [r.id for r in page] == [make(2).id, make(3).id] and total == 5


# --------------------------------------------------------------------------- the pool


@pytest.fixture
def pg_store(stores: Stores) -> Iterator[PostgresMemory]:  # noqa: F811
    made = stores.new("postgres")
    assert isinstance(made, PostgresMemory)
    yield made


def _backends(url: str, application: str) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = %s", (application,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_threads_share_a_bounded_pool(pg_url: str, stores: Stores) -> None:  # noqa: F811
    application = f"mctest_{uuid.uuid4().hex[:10]}"
    url = f"{pg_url}?application_name={application}"
    schema = f"memtest_{uuid.uuid4().hex[:12]}"
    stores._schemas.append(schema)
    pooled = stores.track(PostgresMemory(url, schema=schema, pool_size=3))
    assert isinstance(pooled, PostgresMemory)
    pooled.add(make(1))
    errors: list[BaseException] = []
    seen: set[int] = set()
    peak = [0]
    start = threading.Barrier(12)

    def work() -> None:
        try:
            start.wait(30)
            for _ in range(3):
                with pooled.transaction() as cur:
                    cur.execute("SELECT pg_backend_pid(), pg_sleep(0.05)")
                    seen.add(int(cur.fetchone()[0]))
                    peak[0] = max(peak[0], _backends(pg_url, application))
                pooled.get(make(1).id)
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(seen) <= 3  # 12 threads, never more than 3 connections
    assert 1 <= peak[0] <= 3
    assert pooled.pool_stats()["pool_size"] <= 3
    pooled.set_pool_size(1)
    assert pooled.pool_size == 1 and pooled.pool_stats()["pool_max"] == 1


def test_pool_size_from_the_environment(
    pg_url: str,  # noqa: F811
    stores: Stores,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema = f"memtest_{uuid.uuid4().hex[:12]}"
    stores._schemas.append(schema)
    monkeypatch.setenv("MEMCOLLAB_PG_POOL_SIZE", "4")
    sized = stores.track(PostgresMemory(pg_url, schema=schema))
    assert isinstance(sized, PostgresMemory) and sized.pool_size == 4
    for bad in ("many", "0"):
        monkeypatch.setenv("MEMCOLLAB_PG_POOL_SIZE", bad)
        with pytest.raises(UserError, match="MEMCOLLAB_PG_POOL_SIZE|at least 1"):
            PostgresMemory(pg_url, schema=schema)


def _child_adds(shared: PostgresMemory) -> None:
    shared.add(make(7))
    raise SystemExit(0 if shared.get(make(7).id) == make(7) else 1)


def test_a_forked_child_opens_its_own_pool(pg_store: PostgresMemory) -> None:
    pg_store.add(make(1))  # the parent's pool exists now
    child = multiprocessing.get_context("fork").Process(target=_child_adds, args=(pg_store,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert pg_store.get(make(7).id) == make(7)  # the parent's connections still work
    pg_store.add(make(2))
    assert len(pg_store.records()) == 3
