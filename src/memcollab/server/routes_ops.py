"""Operations: liveness, readiness (the database answers), Prometheus metrics, whoami."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from memcollab import __version__
from memcollab.server.auth import Context, ReadKey
from memcollab.server.schemas import Health, Ready, WhoAmI

router = APIRouter(tags=["operations"])
log = logging.getLogger("memcollab.server")


@router.get("/v1/health", response_model=Health)
def health() -> dict[str, Any]:
    """Liveness: the process answers (no key needed; touches no database)."""
    return {"status": "ok", "version": __version__}


@router.get(
    "/v1/ready",
    response_model=Ready,
    responses={503: {"model": Ready, "description": "the database does not answer"}},
)
async def ready(ctx: Context) -> Any:
    """Readiness: the memory's database answers a query (no key needed)."""
    try:
        await run_in_threadpool(ctx.check_ready)
    except Exception as exc:  # noqa: BLE001 - any failure means not ready; logged, not shown
        log.warning("readiness check failed: %s", exc)
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return {"status": "ready"}


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics of this process: requests by route and status, latencies."""
    registry = request.app.state.metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/whoami", response_model=WhoAmI)
def whoami(who: ReadKey) -> dict[str, Any]:
    """The calling key's id, namespace and scope."""
    return {"key_id": who.key_id, "namespace": who.namespace, "scope": who.scope}
