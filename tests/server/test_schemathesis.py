"""schemathesis against the app's own OpenAPI document: no 500 on any generated input.

Bounded: 25 examples per operation, no deadline, no example database. Requests carry an
admin key; the optional `namespace` parameter is dropped (otherwise nearly every request
would stop at the 403 for naming another namespace, which test_isolation covers).
The app is built when the module is collected (schemathesis reads its OpenAPI document
then; its lazy fixture loader does not run under pytest 9), on a temporary SQLite memory
removed after the module; the same again on PostgreSQL when its test server answers.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

schemathesis = pytest.importorskip("schemathesis")
if TYPE_CHECKING:
    from schemathesis import BaseSchema, Case

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from memcollab.memory.api import Memory  # noqa: E402
from memcollab.memory.store import PostgresMemory  # noqa: E402
from memcollab.server.app import create_app  # noqa: E402
from memcollab.server.context import ServerContext  # noqa: E402
from tests.memory.test_store import PG_URL, _pg_unavailable  # noqa: E402
from tests.server.conftest import make_record  # noqa: E402

# POST /v1/import takes JSONL text: send generated strings as they are.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
_DIR = Path(tempfile.mkdtemp(prefix="memcollab-schemathesis-"))
_CONTEXTS: list[ServerContext] = []
_SECRET: dict[int, str] = {}


def _schema(ctx: ServerContext) -> BaseSchema:
    """The OpenAPI schema of an app over `ctx`, with an admin key and a few records."""
    _CONTEXTS.append(ctx)
    _SECRET[id(ctx)] = ctx.keys.create("default", "admin")[1]
    for n, text in enumerate(["Solve 2x = 4.", "Solve 3x + 1 = 10.", "Find the area of a circle."]):
        ctx.memory.add(make_record("default", text, category="algebra" if n < 2 else "geometry"))
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(ctx))


def _postgres() -> ServerContext | None:
    """A context on a fresh PostgreSQL schema, when the test server answers."""
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=5).close()
    except Exception:  # noqa: BLE001 - no server, no driver: the PostgreSQL run skips
        return None
    return ServerContext(Memory(PostgresMemory(PG_URL, schema=_PG_SCHEMA)))


_PG_SCHEMA = f"srvtest_{uuid.uuid4().hex[:12]}"
_SQLITE = _schema(ServerContext.open(_DIR / "m.sqlite"))
_PG_CTX = _postgres()
_PG = _schema(_PG_CTX) if _PG_CTX is not None else _SQLITE


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    for ctx in _CONTEXTS:
        ctx.close()
    shutil.rmtree(_DIR, ignore_errors=True)
    if _PG_CTX is not None:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{_PG_SCHEMA}" CASCADE')


def _check(case: Case, ctx: ServerContext) -> None:
    if case.query:
        case.query.pop("namespace", None)
    response = case.call(headers={"Authorization": f"Bearer {_SECRET[id(ctx)]}"})
    case.validate_response(response, checks=[not_a_server_error])


_BOUNDED = settings(
    max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@_SQLITE.parametrize()
@_BOUNDED
def test_no_server_error_on_any_generated_input(case: Case) -> None:
    _check(case, _CONTEXTS[0])


@_PG.parametrize()
@_BOUNDED
def test_no_server_error_on_postgres(case: Case) -> None:
    if _PG_CTX is None:
        _pg_unavailable(f"no PostgreSQL test server at {PG_URL.split('@')[-1]}")
    _check(case, _CONTEXTS[-1])
