"""The MCP tools over stdio (`memcollab mcp`): one local process, one API key.

The rule is the one of the HTTP transport: the key (`--key` or `MEMCOLLAB_API_KEY`),
verified against the memory's key store, gives the namespace and the scope. It is verified
again at every tool call, so a key revoked while the process runs is refused from its next
call, as by every service process.
"""

from __future__ import annotations

from typing import Any

from mcp.server.stdio import stdio_server

from memcollab.server.auth import Principal
from memcollab.server.context import ServerContext
from memcollab.server.keys import InvalidKeyError
from memcollab.server.mcp_tools import PrincipalOf, ToolError, build_server


def key_principal(context: ServerContext, secret: str) -> Principal:
    """The Principal of a live key; InvalidKeyError otherwise."""
    info = context.keys.verify(secret)
    return Principal.of(info)


def stdio_principal(context: ServerContext, secret: str) -> PrincipalOf:
    """Each call's caller: the key, verified again (a revoked key is refused at once)."""

    def principal_of(request: Any) -> Principal:
        try:
            return key_principal(context, secret)
        except InvalidKeyError:
            raise ToolError("invalid or revoked API key") from None

    return principal_of


async def serve_stdio(context: ServerContext, secret: str) -> None:
    """Serve the tools on stdin/stdout until the client closes them."""
    server = build_server(context, stdio_principal(context, secret))
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())
