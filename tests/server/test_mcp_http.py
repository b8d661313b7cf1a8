"""The MCP tools over streamable HTTP at /mcp: the app served by uvicorn on 127.0.0.1 (a
free port, in a thread), spoken to with the MCP SDK's own streamable HTTP client and the
Authorization header; and once through `memcollab serve` itself."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

pytest.importorskip("mcp", reason="the MCP SDK (server extra) is not installed")

import httpx  # noqa: E402  (the MCP SDK's HTTP client)
import uvicorn  # noqa: E402
from mcp import ClientSession  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402
from mcp.shared._httpx_utils import create_mcp_http_client  # noqa: E402

from memcollab.server.app import create_app  # noqa: E402
from tests.server.mcp_cases import (  # noqa: E402
    McpWorld,
    check_add_constraint,
    check_b_sees_its_own,
    check_bad_arguments,
    check_each_tool,
    check_isolation,
    check_read_scope,
    check_tools_listed,
)
from tests.server.test_cli_serve import serving  # noqa: E402


@pytest.fixture
def base_url(world: McpWorld) -> Iterator[str]:
    """The app over the world's context, served by uvicorn (lifespan on) on 127.0.0.1."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(world.context), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@asynccontextmanager
async def session_for(url: str, secret: str | None) -> AsyncIterator[ClientSession]:
    """An initialised MCP client session to `url`, sending the key as a Bearer token."""
    headers = {"Authorization": f"Bearer {secret}"} if secret is not None else None
    async with (
        create_mcp_http_client(headers=headers) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def test_every_tool_over_http_bound_to_the_keys_namespace(world: McpWorld, base_url: str) -> None:
    url = f"{base_url}/mcp"

    async def main() -> None:
        async with session_for(url, world.key("a", "write")) as session:
            await check_tools_listed(session)
            await check_each_tool(session, world)
            await check_isolation(session, world)
            await check_bad_arguments(session, world)
        async with session_for(url, world.key("a", "read")) as session:
            await check_read_scope(session, world)
        async with session_for(url, world.key("b", "admin")) as session:
            await check_b_sees_its_own(session, world)
        async with session_for(url, world.key("a", "write")) as session:
            await check_add_constraint(session, world)

    anyio.run(main)


def test_no_key_a_wrong_key_or_a_revoked_key_is_401(world: McpWorld, base_url: str) -> None:
    url = f"{base_url}/mcp"
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    accept = {"Accept": "application/json, text/event-stream"}
    secret = world.key("a", "write")
    wrong = re.sub(r"_[^_]+$", "_" + "x" * 43, secret)
    for headers in ({}, {"Authorization": "Bearer mck_nope"}, {"Authorization": f"Bearer {wrong}"}):
        r = httpx.post(url, json=initialize, headers={**accept, **headers})
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["error"]["type"] == "unauthorized"
    r = httpx.post(url, json=initialize, headers={**accept, "Authorization": f"Bearer {secret}"})
    assert r.status_code == 200 and r.json()["result"]["serverInfo"]["name"] == "memcollab"

    async def connect(key: str | None) -> None:
        async with session_for(url, key) as session:
            await session.list_tools()

    # The SDK's client sees the 401 as a failed request (httpx.HTTPStatusError).
    for key in (None, "mck_nope", wrong):
        assert http_status(connect, key) == 401

    # Revoked while a client is connected: its next request is refused.
    async def revoked_midway() -> None:
        async with session_for(url, secret) as session:
            await session.list_tools()
            world.context.keys.revoke(secret.split("_")[1])
            await session.call_tool("record_outcome", {"attempt_id": "a-att", "verdict": "correct"})

    assert http_status(revoked_midway) == 401
    assert world.context.attempts.get("a", "a-att").verdict == "unknown"


def http_status(run: Callable[..., Awaitable[None]], *args: object) -> int:
    """The HTTP status of the request that made `run` fail (found in exception groups)."""
    try:
        anyio.run(run, *args)
    except BaseException as exc:
        pending: list[BaseException] = [exc]
        while pending:
            one = pending.pop()
            if isinstance(one, httpx.HTTPStatusError):
                return one.response.status_code
            pending.extend(getattr(one, "exceptions", ()))
            pending.extend(e for e in (one.__cause__, one.__context__) if e is not None)
        raise
    pytest.fail("the client did not fail")


def test_memcollab_serve_mounts_the_tools_at_mcp(tmp_path: Path) -> None:
    """The real command: its lifespan runs the MCP endpoint; the bootstrap key reaches it."""
    from tests.server.test_cli_serve import SECRET

    with serving(str(tmp_path / "m.sqlite"), tmp_path) as (base, out):
        (secret,) = SECRET.findall(out)
        assert httpx.post(f"{base}/mcp", json={}).status_code == 401

        async def main() -> None:
            async with session_for(f"{base}/mcp", secret) as session:
                await check_tools_listed(session)
                result = await session.call_tool("memory_stats", {})
                assert result.structuredContent is not None
                assert result.structuredContent["namespace"] == "default"

        anyio.run(main)
