"""Fixtures of the service tests: a ServerContext on fresh storage (a new SQLite file, or a
new PostgreSQL schema when the test server answers), an app with a TestClient, and keys."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from memcollab.memory.api import Memory  # noqa: E402
from memcollab.memory.record import Constraint, MemoryRecord, record_id, task_hash  # noqa: E402
from memcollab.memory.store import PostgresMemory, SQLiteMemory  # noqa: E402
from memcollab.server.app import create_app  # noqa: E402
from memcollab.server.context import ServerContext, Settings  # noqa: E402
from tests.memory.test_store import PG_URL, _pg_unavailable  # noqa: E402

KINDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The PostgreSQL test server's URL, once it answered; skip (or fail) otherwise."""
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


class Storage:
    """Opens ServerContexts on one new, empty storage per `new()` call (SQLite file or
    PostgreSQL schema); `again(ctx)` opens a second context on the same storage (another
    "process"). Everything opened is closed, and schemas dropped, after the test."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self._request = request
        self._tmp = tmp_path
        self._opened: list[ServerContext] = []
        self._schemas: list[str] = []
        self._openers: dict[int, Callable[[], Memory]] = {}

    def opener(self, kind: str) -> Callable[[], Memory]:
        if kind == "sqlite":
            path = self._tmp / f"memory-{uuid.uuid4().hex[:8]}.sqlite"
            return lambda: Memory(SQLiteMemory(path))
        url = self._request.getfixturevalue("pg_url")
        schema = f"srvtest_{uuid.uuid4().hex[:12]}"
        self._schemas.append(schema)
        return lambda: Memory(PostgresMemory(url, schema=schema))

    def new(self, kind: str, settings: Settings | None = None) -> ServerContext:
        opener = self.opener(kind)
        ctx = ServerContext(opener(), settings=settings)
        self._openers[id(ctx)] = opener
        self._opened.append(ctx)
        return ctx

    def again(self, ctx: ServerContext) -> ServerContext:
        other = ServerContext(self._openers[id(ctx)](), settings=ctx.settings)
        self._opened.append(other)
        return other

    def cleanup(self) -> None:
        for ctx in self._opened:
            ctx.close()
        if self._schemas:
            import psycopg

            with psycopg.connect(PG_URL, autocommit=True) as conn:
                for schema in self._schemas:
                    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    s = Storage(request, tmp_path)
    yield s
    s.cleanup()


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Service:
    """An app over a context, a TestClient, and helpers to make keys."""

    context: ServerContext
    client: TestClient
    secrets: dict[str, str] = field(default_factory=dict)

    def key(self, namespace: str = "a", scope: str = "admin") -> dict[str, str]:
        """Headers of a (cached) key of this namespace and scope."""
        name = f"{namespace}/{scope}"
        if name not in self.secrets:
            self.secrets[name] = self.context.keys.create(namespace, scope)[1]
        return {"Authorization": f"Bearer {self.secrets[name]}"}

    def add(self, namespace: str = "a", text: str = "Solve 2x + 3 = 7 for x.", **kw: Any) -> str:
        """Add a record straight to the memory (not through the API); returns its id."""
        record = make_record(namespace, text, **kw)
        self.context.memory.add(record)
        return record.id


def make_record(
    namespace: str = "a",
    text: str = "Solve 2x + 3 = 7 for x.",
    *,
    category: str = "algebra",
    subcategory: str = "linear equations",
    domain: str = "math",
    model_pos: str = "strong",
    model_neg: str = "weak",
) -> MemoryRecord:
    source = "t-" + task_hash(text)[:8]
    return MemoryRecord(
        id=record_id(namespace, source, "mixed", model_pos, model_neg, "distiller"),
        namespace=namespace,
        domain=domain,
        category=category,
        subcategory=subcategory,
        task_text=text,
        task_hash=task_hash(text),
        source_task_id=source,
        constraints=(
            Constraint(
                when="solving for a variable",
                enforce="undo operations in reverse",
                avoid="sign slips",
            ),
        ),
        model_pos=model_pos,
        model_neg=model_neg,
        pair_type="mixed",
        distiller="distiller",
        created_at=1_700_000_000.0 + len(text),
    )


def service_for(context: ServerContext) -> Service:
    return Service(context, TestClient(create_app(context), raise_server_exceptions=False))


@pytest.fixture
def service(storage: Storage) -> Service:
    """A service on a fresh SQLite memory."""
    return service_for(storage.new("sqlite"))


@pytest.fixture
def any_service(storage: Storage, kind: str) -> Service:
    """A service on a fresh memory of each backend."""
    return service_for(storage.new(kind))


# The proxy tests' stub upstream (served by uvicorn) and its per-test reset.
from tests.server.proxy_fixtures import stub, stub_server  # noqa: E402, F401


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Any]:
    """The MCP tests' world (tests/server/mcp_cases.py), one for both transports; imported
    here lazily because the MCP SDK is optional."""
    from tests.server.mcp_cases import make_world

    made = make_world(tmp_path)
    yield made
    made.context.close()


class CountingLabeller:
    """A labeller that files every task as unlabelled and records the prompts it was asked."""

    category = subcategory = "unlabelled"

    def __init__(self) -> None:
        self.asked: list[str] = []

    def classify(self, task: Any) -> CountingLabeller:
        self.asked.append(task.prompt)
        return self
