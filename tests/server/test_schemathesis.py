"""schemathesis against the app's own OpenAPI document: no 500 on any generated input.

Bounded: 25 examples per operation, no deadline, no example database. Requests carry an
admin key; the optional `namespace` parameter is dropped (otherwise nearly every request
would stop at the 403 for naming another namespace, which test_isolation covers).
The app is built when the module is collected (schemathesis reads its OpenAPI document
then; its lazy fixture loader does not run under pytest 9), on a temporary SQLite memory
removed after the module.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402

from memcollab.server.app import create_app  # noqa: E402
from memcollab.server.context import ServerContext  # noqa: E402
from tests.server.conftest import make_record  # noqa: E402

# POST /v1/import takes JSONL text: send generated strings as they are.
schemathesis.serializer.alias("application/x-ndjson", "text/plain")
_DIR = Path(tempfile.mkdtemp(prefix="memcollab-schemathesis-"))
_CTX = ServerContext.open(_DIR / "m.sqlite")
_SECRET = _CTX.keys.create("default", "admin")[1]
for _n, _text in enumerate(["Solve 2x = 4.", "Solve 3x + 1 = 10.", "Find the area of a circle."]):
    _CTX.memory.add(make_record("default", _text, category="algebra" if _n < 2 else "geometry"))
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(_CTX))


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _CTX.close()
    shutil.rmtree(_DIR, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_on_any_generated_input(case: schemathesis.Case) -> None:
    if case.query:
        case.query.pop("namespace", None)
    response = case.call(headers={"Authorization": f"Bearer {_SECRET}"})
    case.validate_response(response, checks=[not_a_server_error])
