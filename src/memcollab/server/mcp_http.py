"""The MCP tools on the service: streamable HTTP at /mcp, behind the same Bearer keys.

`mcp_router(context)` is included by `create_app`. Every request to /mcp must carry
`Authorization: Bearer KEY` (no key, a wrong or revoked one: 401 with the service's error
shape, before the MCP layer sees the request); the key's Principal travels in the ASGI
scope to the tools (server/mcp_tools.py), which act on its namespace only and check its
scope per tool.

Stateless and JSON responses: every POST is answered on its own (no MCP session, no SSE
stream), so any service process behind a load balancer can answer any request, and a
request is authenticated by its own key, never by a session another key opened. The SDK's
DNS-rebinding check stays off: it guards unauthenticated local servers, and a page that
rebinds a name to this service still cannot send the Bearer key.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
from fastapi import APIRouter
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from memcollab.server.auth import Principal
from memcollab.server.context import ServerContext
from memcollab.server.keys import InvalidKeyError
from memcollab.server.mcp_tools import ToolError, build_server

PATH = "/mcp"
_PRINCIPAL = "memcollab.principal"


def _principal_of(request: Any) -> Principal:
    principal = None if request is None else request.scope.get(_PRINCIPAL)
    if not isinstance(principal, Principal):
        raise ToolError("no API key: send the header Authorization: Bearer KEY")
    return principal


async def _json_error(send: Send, status: int, kind: str, message: str) -> None:
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class McpEndpoint:
    """The ASGI app at /mcp: authenticate, then hand the request to the SDK's session
    manager (one per run of the application's lifespan: the SDK's cannot be restarted)."""

    def __init__(self, context: ServerContext) -> None:
        self.context = context
        self.server = build_server(context, _principal_of)
        self.manager: StreamableHTTPSessionManager | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any) -> AsyncIterator[None]:
        """Run a session manager while the application runs."""
        manager = StreamableHTTPSessionManager(
            self.server,
            json_response=True,
            stateless=True,
            max_request_body_size=self.context.settings.body_limit,
        )
        async with manager.run():
            self.manager = manager
            try:
                yield
            finally:
                self.manager = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        header = Request(scope).headers.get("authorization", "")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            await _json_error(
                send,
                401,
                "unauthorized",
                "missing API key: send the header Authorization: Bearer KEY",
            )
            return
        try:
            info = await anyio.to_thread.run_sync(self.context.keys.verify, secret)
        except InvalidKeyError:
            await _json_error(send, 401, "unauthorized", "invalid or revoked API key")
            return
        if self.manager is None:
            await _json_error(
                send, 503, "unavailable", "the MCP endpoint is not running (no app lifespan)"
            )
            return
        scope[_PRINCIPAL] = Principal.of(info)
        await self.manager.handle_request(scope, receive, send)


def mcp_router(context: ServerContext) -> APIRouter:
    """A router with /mcp and the lifespan that runs it (FastAPI merges router lifespans
    into the application's)."""
    endpoint = McpEndpoint(context)
    router = APIRouter(lifespan=endpoint.lifespan)
    router.routes.append(Route(PATH, endpoint=endpoint, methods=["GET", "POST", "DELETE"]))
    return router
