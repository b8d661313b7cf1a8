"""The memory store: the same behaviour from SQLite and PostgreSQL.

PostgreSQL tests use a real server at MEMCOLLAB_TEST_PG_URL (default below), one fresh schema
per test; without a server they skip, unless MEMCOLLAB_REQUIRE_PG=1 makes that a failure.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import sys
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memcollab.errors import UserError
from memcollab.memory.record import (
    MEMORY_FORMAT_VERSION,
    Constraint,
    MemoryRecord,
    PairType,
    record_id,
    task_hash,
)
from memcollab.memory.store import (
    ImportCounts,
    MemoryConflictError,
    MemoryConnectionError,
    MemoryFormatError,
    MemoryNotFoundError,
    MemoryStore,
    PostgresMemory,
    SQLiteMemory,
    open_memory,
)

PG_URL = os.environ.get(
    "MEMCOLLAB_TEST_PG_URL", "postgresql://memcollab:memcollab@127.0.0.1:5432/memcollab_test"
)
KINDS = ["sqlite", "postgres"]


def make(
    n: int,
    *,
    rid: str | None = None,
    namespace: str = "default",
    domain: str = "math",
    category: str = "algebra",
    subcategory: str = "linear",
    created_at: float | None = None,
    model_pos: str | None = "big",
    model_neg: str | None = "small",
    pair_type: PairType = "mixed",
    distiller: str = "big",
    constraints: int = 2,
) -> MemoryRecord:
    text = f"Task number {n}: solve it."
    source = f"toy/{n}"
    return MemoryRecord(
        id=rid or record_id(namespace, source, pair_type, model_pos, model_neg, distiller),
        namespace=namespace,
        domain=domain,
        category=category,
        subcategory=subcategory,
        task_text=text,
        task_hash=task_hash(text),
        source_task_id=source,
        constraints=tuple(
            Constraint(when=f"case {n}.{k}", enforce=f"rule {k}", avoid=f"error {k}")
            for k in range(constraints)
        ),
        model_pos=model_pos,
        model_neg=model_neg,
        pair_type=pair_type,
        distiller=distiller,
        created_at=1_700_000_000.25 + n if created_at is None else created_at,
    )


# --------------------------------------------------------------------------- fixtures


def _pg_unavailable(reason: str) -> None:
    if os.environ.get("MEMCOLLAB_REQUIRE_PG") == "1":
        pytest.fail(f"PostgreSQL required (MEMCOLLAB_REQUIRE_PG=1) but unavailable: {reason}")
    pytest.skip(f"PostgreSQL test server unavailable: {reason} (set MEMCOLLAB_TEST_PG_URL)")


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The test server's URL, once it answered; skip (or fail) otherwise."""
    try:
        import psycopg
    except ImportError:
        _pg_unavailable("psycopg is not installed (pip install 'memcollab[postgres]')")
        raise
    try:
        psycopg.connect(PG_URL, connect_timeout=5).close()
    except psycopg.Error as exc:
        _pg_unavailable(f"{PG_URL.split('@')[-1]}: {' '.join(str(exc).split())}")
    return PG_URL


class Stores:
    """Opens stores on fresh storage (a new file, or a new PostgreSQL schema) and cleans up."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self._request = request
        self._tmp = tmp_path
        self._opened: list[MemoryStore] = []
        self._schemas: list[str] = []

    def opener(self, kind: str) -> Callable[[], MemoryStore]:
        """A function opening a store on one new, empty storage (every call: same storage)."""
        if kind == "sqlite":
            path = self._tmp / f"memory-{uuid.uuid4().hex[:8]}.sqlite"
            return lambda: SQLiteMemory(path)
        url = self._request.getfixturevalue("pg_url")
        schema = f"memtest_{uuid.uuid4().hex[:12]}"
        self._schemas.append(schema)
        return lambda: PostgresMemory(url, schema=schema)

    def new(self, kind: str) -> MemoryStore:
        return self.track(self.opener(kind)())

    def track(self, store: MemoryStore) -> MemoryStore:
        self._opened.append(store)
        return store

    def cleanup(self) -> None:
        for store in self._opened:
            store.close()
        if self._schemas:
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as conn:
                for schema in self._schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    made = Stores(request, tmp_path)
    yield made
    made.cleanup()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(stores: Stores, kind: str) -> MemoryStore:
    return stores.new(kind)


# --------------------------------------------------------------------------- records


def test_add_get_and_duplicates(store: MemoryStore) -> None:
    record = make(1)
    assert store.add(record) is True
    assert store.get(record.id) == record
    assert store.add(record) is False
    changed = record.model_copy(update={"category": "geometry"})
    assert store.add(changed) is False  # same id: the first stored version wins
    assert store.get(record.id) == record
    assert store.records() == [record]
    with pytest.raises(MemoryNotFoundError, match="no record with id 'missing'") as err:
        store.get("missing")
    assert isinstance(err.value, UserError)


def test_add_many_counts_only_new_records(store: MemoryStore) -> None:
    assert store.add_many([]) == 0
    store.add(make(1))
    assert store.add_many([make(1), make(2), make(3), make(2)]) == 2
    assert [r.source_task_id for r in store.records()] == ["toy/1", "toy/2", "toy/3"]
    newer = make(4).model_copy(update={"format_version": MEMORY_FORMAT_VERSION + 1})
    with pytest.raises(MemoryFormatError, match="newer"):
        store.add_many([make(5), newer])
    assert len(store.records()) == 3  # nothing of the refused batch was stored


def test_records_filters_and_order(store: MemoryStore) -> None:
    same_time = 1_700_000_500.5
    placed = [
        make(1, rid="b-late", created_at=same_time + 1),
        make(2, rid="b", created_at=same_time),
        make(3, rid="a", created_at=same_time),
        make(4, rid="B", created_at=same_time),  # byte order: "B" < "a" < "b" in both backends
        make(5, rid="early", created_at=same_time - 100, subcategory="quadratic"),
        make(6, rid="geo", category="geometry", subcategory="linear"),
        make(7, rid="code", domain="code", created_at=same_time + 2),
        make(8, rid="other-ns", namespace="other"),
    ]
    assert store.add_many(reversed(placed)) == len(placed)

    def ids(**where: str) -> list[str]:
        return [r.id for r in store.records(**where)]  # type: ignore[arg-type]

    assert ids(domain="math", category="algebra", subcategory="linear") == ["B", "a", "b", "b-late"]
    assert ids(domain="math", category="algebra") == ["early", "B", "a", "b", "b-late"]
    assert ids(category="algebra", subcategory="linear") == ["B", "a", "b", "b-late", "code"]
    assert ids(subcategory="quadratic") == ["early"]
    assert ids(domain="code") == ["code"]
    assert ids(namespace="other") == ["other-ns"]
    assert ids(namespace="nobody") == []
    assert ids(domain="math", category="nothing") == []
    assert len(ids()) == 7
    assert ids() == [r.id for r in sorted(store.records(), key=lambda r: (r.created_at, r.id))]


def test_bucket_query_reads_the_index(store: MemoryStore) -> None:
    store.add(make(1))
    select = (
        "SELECT json FROM memory_records WHERE namespace = ? AND domain = ? AND category = ?"
        " AND subcategory = ? ORDER BY created_at, id"
    )
    params = ("default", "math", "algebra", "linear")
    if isinstance(store, SQLiteMemory):
        plan = " ".join(str(row) for row in store._query("EXPLAIN QUERY PLAN " + select, params))
        assert "USING INDEX memory_records_bucket" in plan
        assert "TEMP B-TREE" not in plan  # the index already gives the order
    else:
        assert isinstance(store, PostgresMemory)
        with store.transaction() as cur:  # reads inside it use its pooled connection
            cur.execute("SET LOCAL enable_seqscan = off")  # a tiny table would be scanned
            plan = " ".join(str(row) for row in store.query("EXPLAIN " + select, params))
        assert "memory_records_bucket" in plan
        assert "Sort" not in plan


def test_buckets(store: MemoryStore) -> None:
    store.add_many(
        [
            make(1),
            make(2),
            make(3, subcategory="quadratic"),
            make(4, domain="code", category="strings", subcategory="parsing"),
            make(5, namespace="other"),
        ]
    )
    assert store.buckets() == {
        ("code", "strings", "parsing"): 1,
        ("math", "algebra", "linear"): 2,
        ("math", "algebra", "quadratic"): 1,
    }
    assert list(store.buckets()) == sorted(store.buckets())
    assert store.buckets(domain="code") == {("code", "strings", "parsing"): 1}
    assert store.buckets(namespace="other") == {("math", "algebra", "linear"): 1}
    assert store.buckets(namespace="empty") == {}


def test_stats(store: MemoryStore) -> None:
    store.add_many(
        [
            make(1, constraints=1),
            make(2, constraints=3, subcategory="quadratic"),
            make(3, constraints=2, model_pos="small", model_neg=None, pair_type="own_success"),
            make(4, constraints=1, distiller="small", pair_type="tie_break"),
            make(5, constraints=4, namespace="other"),
        ]
    )
    stats = store.stats()
    assert json.loads(json.dumps(stats)) == stats
    assert (stats["namespace"], stats["records"], stats["constraints"]) == ("default", 4, 7)
    assert stats["buckets"] == [
        {"domain": "math", "category": "algebra", "subcategory": "linear", "records": 3,
         "constraints": 4},
        {"domain": "math", "category": "algebra", "subcategory": "quadratic", "records": 1,
         "constraints": 3},
    ]  # fmt: skip
    assert stats["pairs"] == [
        {"model_pos": "big", "model_neg": "small", "records": 3, "constraints": 5},
        {"model_pos": "small", "model_neg": None, "records": 1, "constraints": 2},
    ]
    assert stats["pair_types"] == {
        "mixed": {"records": 2, "constraints": 4},
        "own_success": {"records": 1, "constraints": 2},
        "tie_break": {"records": 1, "constraints": 1},
    }
    assert stats["distillers"] == {
        "big": {"records": 3, "constraints": 6},
        "small": {"records": 1, "constraints": 1},
    }
    empty = store.stats("empty")
    assert (empty["records"], empty["constraints"], empty["buckets"]) == (0, 0, [])


# --------------------------------------------------------------------------- usage, version


def test_usage_counters(stores: Stores, kind: str) -> None:
    open_store = stores.opener(kind)
    store = stores.track(open_store())
    one, two = make(1), make(2)
    store.add_many([one, two])
    assert store.usage(one.id) == {"retrieved": 0, "models": {}}
    store.count_retrieved([one.id, two.id, one.id])
    store.count_retrieved([one.id])
    store.count_retrieved([])
    store.record_usage(one.id, "small", helped=True)
    store.record_usage(one.id, "small", helped=True)
    store.record_usage(one.id, "small", helped=False)
    store.record_usage(one.id, "big", helped=False)
    expected = {
        "retrieved": 3,
        "models": {"big": {"helped": 0, "harmed": 1}, "small": {"helped": 2, "harmed": 1}},
    }
    assert store.usage(one.id) == expected
    assert store.usage(two.id) == {"retrieved": 1, "models": {}}
    with pytest.raises(MemoryNotFoundError, match="'ghost'"):
        store.count_retrieved([one.id, "ghost"])
    with pytest.raises(MemoryNotFoundError):
        store.record_usage("ghost", "small", helped=True)
    with pytest.raises(MemoryNotFoundError):
        store.usage("ghost")
    assert stores.track(open_store()).usage(one.id) == expected  # nothing half-counted; durable


def test_usages_of_reads_many_records_as_usage_reads_one(stores: Stores, kind: str) -> None:
    store = stores.new(kind)
    records = [make(n) for n in range(1, 1203)]  # more than two chunks of 500 ids
    store.add_many(records)
    ids = [r.id for r in records]
    store.count_retrieved(ids[::3])
    store.record_usage(ids[0], "small", helped=True)
    store.record_usage(ids[1100], "big", helped=False)
    store.record_usage(ids[1100], "small", helped=True)
    batched = store.usages_of(ids)
    assert list(batched) == ids  # in the order asked
    assert batched == {rid: store.usage(rid) for rid in ids}
    assert batched[ids[1100]]["models"] == {
        "big": {"helped": 0, "harmed": 1},
        "small": {"helped": 1, "harmed": 0},
    }
    assert sum(u["retrieved"] for u in batched.values()) == len(ids[::3])
    assert store.usages_of([]) == {}
    with pytest.raises(MemoryNotFoundError, match="'ghost'"):
        store.usages_of([ids[0], "ghost"])


def test_version_changes_when_records_are_added(stores: Stores, kind: str) -> None:
    open_store = stores.opener(kind)
    store, other = stores.track(open_store()), stores.track(open_store())
    v0 = store.version()
    assert other.version() == v0
    store.add(make(1))
    v1 = store.version()
    assert v1 != v0 and other.version() == v1  # another connection sees the change
    store.add(make(1))
    store.add_many([make(1)])
    store.count_retrieved([make(1).id])
    store.record_usage(make(1).id, "big", helped=True)
    assert store.version() == v1  # no new record, no new version
    other.add_many([make(2), make(3)])
    assert store.version() not in (v0, v1)


# --------------------------------------------------------------------------- JSONL


@pytest.mark.parametrize("target_kind", KINDS)
def test_export_import_round_trip(
    stores: Stores, store: MemoryStore, target_kind: str, tmp_path: Path
) -> None:
    records = [
        make(1),
        make(2, domain="code", category="strings", subcategory="parsing", model_neg=None),
        make(3, namespace="other", pair_type="self_contrast", constraints=0),
        make(4, rid="ünïcode-id", created_at=1_700_000_000.123456789),
    ]
    store.add_many(records)
    store.count_retrieved([records[0].id])
    first = tmp_path / "out" / "memory.jsonl"
    assert store.export_jsonl(first) == 4
    lines = first.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8  # four records, then each namespace's history: one add each
    assert [json.loads(line)["change"]["op"] for line in lines[4:]] == ["add"] * 4

    target = stores.new(target_kind)
    assert target.import_jsonl(first) == ImportCounts(added=4, changes=4)
    for namespace in ("default", "other"):
        assert target.records(namespace) == store.records(namespace)
        assert target.stats(namespace) == store.stats(namespace)
    assert target.buckets() == store.buckets()
    assert target.get("ünïcode-id") == records[3]
    assert target.usage(records[0].id)["retrieved"] == 0  # the export holds records only
    second = tmp_path / "again.jsonl"
    assert target.export_jsonl(second) == 4
    assert second.read_bytes() == first.read_bytes()

    version = target.version()
    assert target.import_jsonl(first) == ImportCounts(present=4)
    assert len(target.records()) + len(target.records("other")) == 4
    assert target.version() == version

    only = tmp_path / "other.jsonl"
    assert store.export_jsonl(only, namespace="other") == 1
    assert MemoryRecord.model_validate_json(only.read_text().splitlines()[0]) == records[2]


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_import_rejects_malformed_lines(store: MemoryStore, tmp_path: Path) -> None:
    good = make(1).model_dump_json()
    bad_json = _write_lines(tmp_path / "bad.jsonl", [good, "", '{"id": "x", oops}'])
    with pytest.raises(MemoryFormatError, match=rf"{bad_json}:3: not valid JSON"):
        store.import_jsonl(bad_json)
    not_object = _write_lines(tmp_path / "list.jsonl", [good, "[1, 2]"])
    with pytest.raises(MemoryFormatError, match=rf"{not_object}:2: not a memory record"):
        store.import_jsonl(not_object)
    incomplete = json.loads(good)
    del incomplete["category"]
    invalid = _write_lines(tmp_path / "invalid.jsonl", [json.dumps(incomplete)])
    with pytest.raises(MemoryFormatError, match=rf"{invalid}:1: not a valid memory record"):
        store.import_jsonl(invalid)
    with pytest.raises(MemoryFormatError, match="does not exist"):
        store.import_jsonl(tmp_path / "absent.jsonl")
    nested = _write_lines(tmp_path / "nested.jsonl", [good, "[" * 100_000])
    with pytest.raises(MemoryFormatError, match=rf"{nested}:2: not valid JSON"):
        store.import_jsonl(nested)
    assert store.records() == []  # a bad file imports nothing, not even its good lines
    assert store.import_jsonl(_write_lines(tmp_path / "ok.jsonl", [good, "  "])).added == 1


def _edited(record: MemoryRecord) -> MemoryRecord:
    """The same id with different content."""
    changed = Constraint(when="another case", enforce="another rule", avoid="another error")
    return record.model_copy(update={"constraints": (changed,)})


def _reordered(record: MemoryRecord) -> str:
    """The record's JSON with its keys in reverse order: the same content."""
    return json.dumps(dict(reversed(list(json.loads(record.model_dump_json()).items()))))


def test_import_refuses_conflicting_content_by_default(store: MemoryStore, tmp_path: Path) -> None:
    one, two, three = make(1), make(2), make(3)
    store.add_many([one, two])
    version = store.version()
    path = _write_lines(
        tmp_path / "in.jsonl",
        [
            make(4).model_dump_json(),  # new
            _reordered(one),  # the same content, keys in another order: already present
            _edited(two).model_dump_json(),  # conflict
            _edited(three).model_dump_json(),  # new
        ],
    )
    with pytest.raises(MemoryConflictError, match=rf"{two.id}.*1 conflicting record in all") as err:
        store.import_jsonl(path)
    assert isinstance(err.value, UserError)
    assert "on_conflict" in str(err.value)
    # all or nothing: not even the new records were added, and the version did not move
    assert store.records() == [one, two] and store.version() == version

    store.add(make(5))
    version = store.version()
    many = _write_lines(
        tmp_path / "many.jsonl",
        [make(5).model_dump_json(), _edited(make(5)).model_dump_json()]
        + [_edited(r).model_dump_json() for r in (two, one)],
    )
    with pytest.raises(MemoryConflictError, match=rf"{make(5).id}.*3 conflicting records"):
        store.import_jsonl(many)
    assert store.version() == version


def test_import_skips_or_replaces_conflicts_when_asked(store: MemoryStore, tmp_path: Path) -> None:
    one, two = make(1), make(2)
    store.add_many([one, two])
    path = _write_lines(
        tmp_path / "in.jsonl",
        [make(3).model_dump_json(), _reordered(one), _edited(two).model_dump_json()],
    )
    version = store.version()
    assert store.import_jsonl(path, on_conflict="skip") == ImportCounts(
        added=1, present=1, conflicts_skipped=1
    )
    assert store.get(two.id) == two  # the stored version was kept
    assert store.get(make(3).id) == make(3)
    assert store.version() != version

    version = store.version()
    assert store.import_jsonl(path, on_conflict="skip") == ImportCounts(
        present=2, conflicts_skipped=1
    )
    assert store.version() == version  # nothing written

    assert store.import_jsonl(path, on_conflict="replace") == ImportCounts(present=2, replaced=1)
    assert store.get(two.id) == _edited(two)
    assert store.version() != version  # retrieval indexes must refresh
    assert store.import_jsonl(path) == ImportCounts(present=3)  # now identical: no conflict
    assert len(store.records()) == 3

    with pytest.raises(ValueError, match="on_conflict"):
        store.import_jsonl(path, on_conflict="overwrite")  # type: ignore[arg-type]


def test_import_conflicts_inside_one_file(store: MemoryStore, tmp_path: Path) -> None:
    one = make(1)
    path = _write_lines(
        tmp_path / "twice.jsonl", [one.model_dump_json(), _edited(one).model_dump_json()]
    )
    with pytest.raises(MemoryConflictError, match=one.id):
        store.import_jsonl(path)
    assert store.records() == []
    assert store.import_jsonl(path, on_conflict="skip") == ImportCounts(
        added=1, conflicts_skipped=1
    )
    assert store.get(one.id) == one
    store2 = _write_lines(tmp_path / "same.jsonl", [one.model_dump_json(), _reordered(one)])
    assert store.import_jsonl(store2) == ImportCounts(present=2)


def test_import_replace_in_one_file_keeps_the_last(store: MemoryStore, tmp_path: Path) -> None:
    one = make(1)
    path = _write_lines(
        tmp_path / "twice.jsonl", [one.model_dump_json(), _edited(one).model_dump_json()]
    )
    assert store.import_jsonl(path, on_conflict="replace") == ImportCounts(added=1, replaced=1)
    assert store.records() == [_edited(one)]


def test_import_refuses_a_newer_format(store: MemoryStore, tmp_path: Path) -> None:
    future = json.loads(make(1).model_dump_json())
    future["format_version"] = MEMORY_FORMAT_VERSION + 1
    future["field_from_the_future"] = True
    path = _write_lines(tmp_path / "future.jsonl", [make(2).model_dump_json(), json.dumps(future)])
    with pytest.raises(MemoryFormatError, match=rf"{path}:2: .*newer memcollab") as err:
        store.import_jsonl(path)
    assert "upgrade" in str(err.value)
    assert store.records() == []


# --------------------------------------------------------------------------- concurrency


def _writer(
    open_store: Callable[[], MemoryStore], worker: int, start: object, errors: Path
) -> None:
    try:
        start.wait(30)  # type: ignore[attr-defined]
        with open_store() as store:  # every worker races to create the schema
            for n in range(worker * 20, worker * 20 + 20):
                store.add(make(n))
            store.add_many([make(n) for n in range(100)])  # overlaps every other worker
            store.count_retrieved([make(worker).id])
    except BaseException:  # noqa: BLE001 - report anything to the parent, then fail
        (errors / f"worker-{worker}.txt").write_text(traceback.format_exc())
        raise


def test_concurrent_writer_processes(stores: Stores, kind: str, tmp_path: Path) -> None:
    open_store = stores.opener(kind)
    ctx = multiprocessing.get_context("fork")
    workers = 4
    start = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=_writer, args=(open_store, w, start, tmp_path)) for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    reports = "\n".join(p.read_text() for p in sorted(tmp_path.glob("worker-*.txt")))
    assert [p.exitcode for p in procs] == [0] * workers, reports
    store = stores.track(open_store())
    assert len(store.records()) == 100
    assert store.usage(make(0).id)["retrieved"] == 1


def test_concurrent_writer_threads(store: MemoryStore) -> None:
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(worker * 10, worker * 10 + 10):
                store.add(make(n))
                store.count_retrieved([make(n).id])
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(store.records()) == 40
    assert store.stats()["records"] == 40


# --------------------------------------------------------------------------- opening


def test_open_memory_sqlite_locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with open_memory(tmp_path / "a.sqlite") as store:
        assert isinstance(store, SQLiteMemory)
        store.add(make(1))
    with open_memory(str(tmp_path / "a.sqlite")) as store:
        assert store.get(make(1).id) == make(1)
    with open_memory(f"sqlite:///{tmp_path}/a.sqlite") as store:  # four slashes: absolute
        assert store.get(make(1).id) == make(1)
    with open_memory("sqlite:///rel/b.sqlite") as store:  # three slashes: relative
        assert isinstance(store, SQLiteMemory)
    assert (tmp_path / "rel" / "b.sqlite").is_file()
    for bad in ("mysql://host/db", "sqlite://", ":memory:"):
        with pytest.raises(MemoryConnectionError):
            open_memory(bad)


def test_sqlite_file_that_is_not_a_memory(tmp_path: Path) -> None:
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"this is not a database file" * 100)
    with pytest.raises(MemoryConnectionError, match="junk.sqlite"):
        SQLiteMemory(path)


def test_closed_store_refuses_work(store: MemoryStore) -> None:
    with store:
        store.add(make(1))
    with pytest.raises(MemoryConnectionError, match="closed"):
        store.records()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_refused_postgres_url_is_one_clear_line() -> None:
    pytest.importorskip("psycopg")
    port = _free_port()
    with pytest.raises(MemoryConnectionError) as err:
        open_memory(f"postgresql://memcollab:s3cret@127.0.0.1:{port}/memcollab_test")
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "refused" in message.lower()
    assert "running" in message  # the fix
    assert "\n" not in message and "s3cret" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_postgres_refusals_name_the_fix(pg_url: str) -> None:
    base, _, dbname = pg_url.rpartition("/")
    with pytest.raises(MemoryConnectionError, match="createdb") as err:
        open_memory(f"{base}/memcollab_no_such_db_{uuid.uuid4().hex[:6]}")
    assert "does not exist" in str(err.value)
    scheme, _, rest = pg_url.partition("://")
    user, _, hostpart = rest.partition("@")
    wrong = f"{scheme}://{user.split(':')[0]}:wrong-password@{hostpart}"
    with pytest.raises(MemoryConnectionError, match="password") as err:
        open_memory(wrong)
    assert "wrong-password" not in str(err.value) and "\n" not in str(err.value)


def test_open_memory_postgres_url(stores: Stores, pg_url: str) -> None:
    import psycopg

    fresh = stores.new("postgres")  # a fresh schema, dropped after the test
    assert isinstance(fresh, PostgresMemory)
    schema = fresh.schema
    sep = "&" if "?" in pg_url else "?"
    with open_memory(f"{pg_url}{sep}options=-csearch_path%3D{schema}") as store:
        assert isinstance(store, PostgresMemory)
        store.add(make(1))
    with psycopg.connect(pg_url) as conn:
        count = conn.execute(f'SELECT COUNT(*) FROM "{schema}".memory_records').fetchone()
    assert count == (1,)
    with open_memory(pg_url.replace("postgresql://", "postgres://", 1) + sep + "options="
                     f"-csearch_path%3D{schema}") as store:  # fmt: skip
        assert store.get(make(1).id) == make(1)


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(UserError, match=r"pip install 'memcollab\[postgres\]'"):
        open_memory("postgresql://memcollab:memcollab@127.0.0.1:5432/memcollab_test")
