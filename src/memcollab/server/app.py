"""`create_app(context)`: the FastAPI application of `memcollab serve`.

Routers per concern (routes_memory, routes_attempts, routes_ops), versioned under /v1;
OpenAPI at /openapi.json, docs at /docs. Every error is `{"error": {"type", "message"}}`
with a fitting status; an unexpected error is a 500 with a generic message (the traceback
goes to the service log, never to the client).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from anyio import to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from memcollab import __version__
from memcollab.errors import UserError
from memcollab.memory.store import (
    MemoryConflictError,
    MemoryConnectionError,
    MemoryNotFoundError,
)
from memcollab.server import routes_attempts, routes_learn, routes_memory, routes_ops, routes_proxy
from memcollab.server.attempts import AttemptConflictError, AttemptNotFoundError
from memcollab.server.context import ServerContext, Settings
from memcollab.server.metrics import GuardCollector, Metrics, MetricsMiddleware
from memcollab.server.routes_browse import router as browse_router

log = logging.getLogger("memcollab.server")

_TYPES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "unavailable",
}


def _error(
    status: int, message: str, details: list[dict[str, Any]] | None = None, **kw: Any
) -> JSONResponse:
    body: dict[str, Any] = {"type": _TYPES.get(status, "error"), "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, **kw)


def _description(context: ServerContext) -> str:
    s = context.settings
    return (
        "The shared memory of memcollab over HTTP.\n\n"
        "**Keys.** Send `Authorization: Bearer KEY` (from `memcollab keys create`). A key is "
        "bound to one namespace and one scope (read < write < admin). No key, or a wrong or "
        "revoked one: 401. A scope too low: 403. A request naming another namespace (the "
        "`namespace` parameter, or a `namespace` field of a body or import line): 403, "
        "nothing read or written. A record or attempt of another namespace: 404, as if "
        "absent.\n\n"
        f"**Limits.** Request bodies up to {s.body_limit} bytes ({s.import_limit} for "
        "POST /v1/import); a larger body is refused with 413 before it is parsed. "
        "Malformed JSON: 400; a body that does not fit the schema: 422."
    )


def create_app(context: ServerContext, *, owns_context: bool = False) -> FastAPI:
    """The service over `context` (which the caller opens and closes, unless
    `owns_context`: then the app closes it when it shuts down). Endpoints run on a thread
    pool of `context.settings.threads` threads."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Bounds the threads (and so the database connections) of this process.
        to_thread.current_default_thread_limiter().total_tokens = context.settings.threads
        try:
            yield
        finally:
            if owns_context:
                context.close()

    app = FastAPI(
        lifespan=lifespan,
        title="memcollab",
        version=__version__,
        description=_description(context),
        docs_url="/docs",
        openapi_url="/openapi.json",
        redoc_url=None,
        max_body_size=context.settings.body_limit,
    )
    app.state.context = context
    app.state.metrics = Metrics()
    app.state.metrics.registry.register(routes_learn.LearningCollector(context.learning))
    app.state.metrics.registry.register(GuardCollector(context.counters))
    app.include_router(routes_ops.router)
    app.include_router(routes_memory.router)
    app.include_router(routes_attempts.router)
    app.include_router(routes_learn.router)
    app.include_router(browse_router)  # the memory browser page at /browse
    # POST /v1/import takes a larger body: FastAPI's per-router limit overrides the app's.
    app.include_router(routes_memory.import_router, max_body_size=context.settings.import_limit)
    _mount_mcp(app, context)
    app.include_router(routes_proxy.router, max_body_size=context.settings.proxy_body_limit)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    _add_error_handlers(app, context)
    return app


def _mount_mcp(app: FastAPI, context: ServerContext) -> None:
    """The MCP tools at /mcp (server/mcp_http.py), if the MCP SDK is installed."""
    try:
        from memcollab.server.mcp_http import mcp_router
    except ImportError as exc:
        if (exc.name or "").split(".")[0] != "mcp":
            raise
        log.warning(
            "MCP not served at /mcp: mcp is not installed (pip install 'memcollab[server]')"
        )
        return
    app.include_router(mcp_router(context))


SERVE_CONFIG_ENV = "MEMCOLLAB_SERVE_CONFIG"
"""What `memcollab serve --workers N` hands its worker processes (JSON: memory, fleet,
labeller, data_dir, settings)."""


def app_from_environment() -> FastAPI:
    """The app of one worker process of `memcollab serve --workers N` (uvicorn's factory):
    it opens its own ServerContext from MEMCOLLAB_SERVE_CONFIG and closes it on shutdown.
    Workers share nothing but the database: keys, attempts, records and the memory's
    version counter (which invalidates each worker's retrieval indexes) live there."""
    config = json.loads(os.environ[SERVE_CONFIG_ENV])
    labeller = None
    if config.get("labeller") == "trained":
        from memcollab.memory.labeller import make_labeller

        labeller = make_labeller("trained", data_dir=config.get("data_dir"))
    context = ServerContext.open(
        config["memory"],
        fleet=config.get("fleet"),
        settings=Settings(**config.get("settings", {})),
        labeller=labeller,
    )
    return create_app(context, owns_context=True)


def _add_error_handlers(app: FastAPI, context: ServerContext) -> None:
    location = context.location

    def scrub(message: str) -> str:
        return message.replace(location, "the memory") if location else message

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 413:
            limit = request.scope.get("starlette.max_body_size")
            message = f"request body too large (the limit here is {limit} bytes)"
        return _error(exc.status_code, message, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        details = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "")),
            }
            for e in errors
        ]
        first = errors[0] if errors else {}
        if first.get("type") == "json_invalid":
            reason = (first.get("ctx") or {}).get("error", "")
            return _error(400, f"the request body is not valid JSON ({reason})".replace(" ()", ""))
        if first.get("type") == "model_attributes_type" and tuple(first.get("loc", ())) == (
            "body",
        ):
            return _error(
                422,
                "the request body must be a JSON object, sent with Content-Type: application/json",
                details,
            )
        where = ".".join(str(p) for p in first.get("loc", ())) or "request"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return _error(422, f"{where}: {first.get('msg', 'invalid')}{more}", details)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        if isinstance(exc, MemoryNotFoundError | AttemptNotFoundError):
            status = 404
        elif isinstance(exc, MemoryConflictError | AttemptConflictError):
            status = 409
        elif isinstance(exc, MemoryConnectionError):
            log.warning("memory unavailable: %s", exc)
            return _error(503, "the memory's database is unavailable; try again")
        else:
            status = 422
        return _error(status, scrub(str(exc)))

    @app.exception_handler(sqlite3.OperationalError)
    async def db_busy(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        log.warning("database error: %s", exc)
        return _error(503, "the memory's database is busy or unavailable; try again")

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.error(
            "internal error %s on %s %s", incident, request.method, request.url.path, exc_info=exc
        )
        return _error(
            500, f"internal server error (incident {incident}; details in the service log)"
        )

    try:
        import psycopg
    except ImportError:
        return

    @app.exception_handler(psycopg.OperationalError)
    async def pg_unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database error: %s", exc)
        return _error(503, "the memory's database is busy or unavailable; try again")
