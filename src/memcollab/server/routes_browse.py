"""The memory browser: a read-only page at /browse and the one JSON call it makes.

The page (`server/browser/`: index.html, browse.js, browse.css; package data, no build
step, nothing from a CDN) needs no key to load, and holds no memory content: its script
asks for a key in a password field, keeps it in `sessionStorage` (this tab only, gone when
the tab closes), and calls `GET /v1/browse` and `GET /v1/stats` with
`Authorization: Bearer KEY`, like any client. So the page sees exactly what the key may
read: its own namespace (auth.py enforces it, as for every /v1 endpoint).

Records hold model-written text. The script builds every element with `textContent` and
never parses data as HTML; the page's Content-Security-Policy (scripts and styles from
this origin only, no inline script, no images) is a second wall, not the first.

`GET /v1/browse` (read scope) is `GET /v1/records?include_flagged=true` (each record with
its status: active, or quarantined when an untrusted key added it) with, per record,
what the page shows beside it and would otherwise cost two calls per record: per-model
usage counts, the flag history, and the utility estimate per model with outcomes
(memory/utility.py, default `UtilityPolicy`).
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from memcollab.memory.utility import Estimate
from memcollab.server.auth import Context, ReadKey
from memcollab.server.routes_memory import record_out
from memcollab.server.schemas import FlagEvent, RecordOut, Usage

router = APIRouter(tags=["browser"])

_ASSETS = {
    "browse.js": "text/javascript; charset=utf-8",
    "browse.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def _asset(name: str) -> bytes:
    return resources.files("memcollab.server").joinpath("browser", name).read_bytes()


@router.get("/browse", include_in_schema=False)
def page() -> Response:
    """The browser page (static HTML; the data come from /v1/browse with the user's key)."""
    return Response(
        _asset("index.html"), media_type="text/html; charset=utf-8", headers=_SECURITY_HEADERS
    )


@router.get("/browse/static/{name}", include_in_schema=False)
def asset(name: str) -> Response:
    """The page's script and style sheet (a fixed list; anything else is 404)."""
    if name not in _ASSETS:
        raise HTTPException(404, f"no asset {name!r}")
    return Response(_asset(name), media_type=_ASSETS[name], headers=_SECURITY_HEADERS)


class UtilityOut(BaseModel):
    """A record's estimate for one model (memory/utility.py): null where undefined."""

    outcomes: int
    utility: float | None = Field(description="P(success with) - P(success without)")
    p_harm: float | None = Field(description="P(p_with < p_without)")
    verdict: str = Field(description="harm (withheld under utility retrieval) | help | unsure")
    baseline_level: str


class BrowseRecord(RecordOut):
    usage: Usage
    history: list[FlagEvent]
    utility: dict[str, UtilityOut] = Field(description="model -> estimate, models with outcomes")


class BrowsePage(BaseModel):
    namespace: str
    key_id: str
    scope: str
    records: list[BrowseRecord]
    total: int
    limit: int
    offset: int
    next_offset: int | None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _utility_out(estimate: Estimate) -> UtilityOut:
    return UtilityOut(
        outcomes=estimate.outcomes,
        utility=_finite(estimate.utility),
        p_harm=_finite(estimate.p_harm),
        verdict=estimate.verdict,
        baseline_level=estimate.baseline_level,
    )


@router.get("/v1/browse", response_model=BrowsePage)
def browse(
    who: ReadKey,
    ctx: Context,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> dict[str, Any]:
    """The key's namespace for the browser page, flagged records included, ordered by
    (created_at, id): each record with its flag state, provenance, per-model usage counts,
    flag history and per-model utility estimate."""
    records = ctx.memory.list(who.namespace, include_flagged=True)
    page = records[offset : offset + limit]
    flags = ctx.memory.flagged(who.namespace)
    statuses = ctx.memory.statuses(who.namespace)
    ids = [r.id for r in page]
    provenance = ctx.provenance.many(ids)
    # Batched reads (a few queries for the page, not a few per record).
    usages = ctx.memory.usages(ids)
    histories = ctx.memory.histories(who.namespace, ids)
    utilities = ctx.memory.utilities(page)
    out = []
    for record in page:
        item = record_out(record, flags, provenance, statuses.get(record.id, "active"))
        item["usage"] = Usage(**usages[record.id])
        item["history"] = histories[record.id]
        item["utility"] = {m: _utility_out(e) for m, e in utilities[record.id].items()}
        out.append(item)
    end = offset + len(page)
    return {
        "namespace": who.namespace,
        "key_id": who.key_id,
        "scope": who.scope,
        "records": out,
        "total": len(records),
        "limit": limit,
        "offset": offset,
        "next_offset": end if end < len(records) else None,
    }
