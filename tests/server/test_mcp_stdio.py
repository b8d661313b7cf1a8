"""`memcollab mcp` over stdio: `python -m memcollab mcp ...` spawned by the MCP SDK's own
stdio client, running the same checks as the HTTP tests; and the one-line errors of a
command that cannot start."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

pytest.importorskip("mcp", reason="the MCP SDK (server extra) is not installed")

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.types import TextContent  # noqa: E402

from memcollab.cli import main  # noqa: E402
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


@asynccontextmanager
async def spawned(
    world: McpWorld, *args: str, env: dict[str, str] | None = None
) -> AsyncIterator[ClientSession]:
    """`python -m memcollab mcp --memory PATH ARGS` as the SDK's stdio client runs it."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "memcollab", "mcp", "--memory", str(world.path), *args],
        env={**os.environ, **(env or {})},
    )
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


def test_every_tool_over_stdio_bound_to_the_keys_namespace(world: McpWorld) -> None:
    async def main_() -> None:
        async with spawned(world, "--key", world.key("a", "write"), "--namespace", "a") as s:
            info = s.get_server_capabilities()
            assert info is not None and info.tools is not None
            await check_tools_listed(s)
            await check_each_tool(s, world)
            await check_isolation(s, world)
            await check_bad_arguments(s, world)
            await check_add_constraint(s, world)

    anyio.run(main_)


def test_a_read_key_from_the_environment_and_revocation(world: McpWorld) -> None:
    read = world.key("a", "read")

    async def main_() -> None:
        async with spawned(world, env={"MEMCOLLAB_API_KEY": read}) as s:
            await check_read_scope(s, world)
            # Revoked while the process runs: refused from the next call on.
            world.context.keys.revoke(read.split("_")[1])
            result = await s.call_tool("memory_stats", {})
            assert result.isError and isinstance(result.content[0], TextContent)
            assert result.content[0].text == "invalid or revoked API key"
        async with spawned(world, "--key", world.key("b", "write")) as s:
            await check_b_sees_its_own(s, world)

    anyio.run(main_)


def _error_line(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["mcp", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is the protocol's: nothing else goes there
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


def test_a_command_that_cannot_serve_says_why_in_one_line(
    world: McpWorld,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MEMCOLLAB_API_KEY", raising=False)
    memory = str(world.path)
    assert "needs an API key" in _error_line(capsys, "--memory", memory)
    assert "invalid or revoked API key" in _error_line(
        capsys, "--memory", memory, "--key", "mck_0123456789abcdef_" + "x" * 43
    )
    line = _error_line(
        capsys, "--memory", memory, "--key", world.key("a", "read"), "--namespace", "b"
    )
    assert "bound to namespace 'a', not 'b'" in line
    missing = str(tmp_path / "none.sqlite")
    assert "no memory" in _error_line(capsys, "--memory", missing, "--key", world.key("a", "read"))
    assert not Path(missing).exists()
    assert "unknown labeller" in _error_line(
        capsys, "--memory", memory, "--key", world.key("a", "read"), "--labeller", "llm"
    )
    for name in [
        m for m in sys.modules if m == "mcp" or m.startswith(("mcp.", "memcollab.server.mcp"))
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "mcp", None)
    line = _error_line(capsys, "--memory", memory, "--key", world.key("a", "read"))
    assert "needs the server extra (mcp is not installed)" in line
    assert "pip install 'memcollab[server]'" in line
