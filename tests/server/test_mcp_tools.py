"""The MCP tools in process (no transport): an outcome of an attempt is counted once under
concurrent calls, an unexpected failure is one error result, and the service still starts
when the MCP SDK is missing."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the MCP SDK (server extra) is not installed")

from mcp import types  # noqa: E402

from memcollab.server.auth import Principal  # noqa: E402
from memcollab.server.mcp_tools import McpTools, run_tool  # noqa: E402
from tests.server.conftest import CountingLabeller  # noqa: E402
from tests.server.mcp_cases import QUERY, McpWorld, make_world  # noqa: E402


@pytest.fixture
def world(tmp_path: Path) -> Iterator[McpWorld]:
    w = make_world(tmp_path)
    yield w
    w.context.close()


def test_an_attempts_outcome_is_counted_once_under_concurrent_calls(world: McpWorld) -> None:
    tools = McpTools(world.context)
    who = Principal("k", "a", "write")
    arguments = {"attempt_id": "a-att", "verdict": "correct"}
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: tools.call("record_outcome", arguments, who), range(8)))
    assert sorted(r["already_recorded"] for r in results) == [False] + [True] * 7
    assert world.context.memory.usage(world.a_rid)["models"] == {"m1": {"helped": 1, "harmed": 0}}
    assert world.context.attempts.get("a", "a-att").verdict_key_id == "k"


def test_an_unexpected_failure_is_one_error_result_with_an_incident_id(
    world: McpWorld, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tools = McpTools(world.context)

    def broken(*args: object) -> None:
        raise RuntimeError(f"boom at {world.path}")

    monkeypatch.setattr(tools, "memory_stats", broken)
    with caplog.at_level(logging.ERROR, logger="memcollab.server.mcp"):
        result = run_tool(tools, lambda _: Principal("k", "a", "read"), "memory_stats", {}, None)
    assert isinstance(result, types.CallToolResult) and result.isError
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith("internal error (incident ") and str(world.path) not in text
    assert "boom" in caplog.text and text.split()[3].rstrip(";") in caplog.text


def test_the_service_starts_without_the_mcp_sdk(
    world: McpWorld, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from fastapi.testclient import TestClient

    from memcollab.server.app import create_app

    for name in [
        m for m in sys.modules if m == "mcp" or m.startswith(("mcp.", "memcollab.server.mcp"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mcp", None)
    with caplog.at_level(logging.WARNING, logger="memcollab.server"):
        client = TestClient(create_app(world.context))
    assert "MCP not served at /mcp: mcp is not installed" in caplog.text
    assert client.get("/v1/health").status_code == 200
    assert client.post("/mcp", json={}).status_code == 404


def test_search_constraints_honours_the_namespaces_utility_gate(world: McpWorld) -> None:
    tools = McpTools(world.context)
    who = Principal("k", "a", "read")
    gate = {"rule": "non_negative", "decisions": {"m1": {"math": {"memory": False}}}}
    world.context.memory.set_note("a", "gate:v2", gate)
    labeller = CountingLabeller()
    world.context.labeller = labeller
    query = {"task": QUERY, "domain": "math", "k": 5}
    withheld = tools.call("search_constraints", {**query, "model": "m1"}, who)
    assert withheld["hits"] == [] and withheld["gate"]["verdict"] == "withheld"
    assert labeller.asked == [] and withheld["label_source"] == "none"  # nothing to label for
    served = tools.call("search_constraints", {**query, "model": "m2"}, who)
    assert [h["record_id"] for h in served["hits"]] == [world.a_rid]
    assert labeller.asked == [QUERY] and served["label_source"] == "labeller"
    assert served["gate"] == {"verdict": "undecided", "condition": "v2", "rule": "non_negative"}
