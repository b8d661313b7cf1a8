"""The memory endpoints: search, records (list, get, add, flag, unflag, history), export,
import and stats; all through `memcollab.memory.Memory`, bound to the key's namespace."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from memcollab.memory.record import Constraint, MemoryRecord, record_id, task_hash
from memcollab.memory.store import (
    ON_CONFLICT,
    MemoryConflictError,
    MemoryFormatError,
    MemoryNotFoundError,
    OnConflict,
    read_export_with_history,
)
from memcollab.server import guard
from memcollab.server.attempts import derive_task_id
from memcollab.server.auth import AdminKey, Context, Principal, ReadKey, WriteKey, other_namespace
from memcollab.server.context import ServerContext
from memcollab.server.schemas import (
    AddResult,
    FlagRequest,
    FlagResult,
    History,
    Hit,
    ImportResult,
    Provenance,
    RecordDetail,
    RecordIn,
    RecordPage,
    ReleaseRequest,
    ReleaseResult,
    SearchRequest,
    SearchResponse,
    Stats,
    Usage,
    gate_out,
    record_fields,
    storable,
)
from memcollab.tasks.task import Task

router = APIRouter(prefix="/v1", tags=["memory"])
import_router = APIRouter(prefix="/v1", tags=["memory"])
"""POST /v1/import alone: create_app includes it with the larger import body limit."""
RecordIdPath = Annotated[str, PathParam(min_length=1, max_length=200)]


def not_found(record_id: str) -> HTTPException:
    return HTTPException(404, f"no record with id {record_id!r}")


def own_record(ctx: ServerContext, who: Principal, rid: str) -> MemoryRecord:
    """The record, if it is in the key's namespace; 404 otherwise (as if absent)."""
    try:
        storable(rid)
        record = ctx.memory.get(rid)
    except (MemoryNotFoundError, ValueError):
        raise not_found(rid) from None
    if record.namespace != who.namespace:
        raise not_found(rid)
    return record


def record_out(
    record: MemoryRecord,
    flags: dict[str, str],
    provenance: dict[str, dict[str, Any]],
    status: str = "active",
) -> dict[str, Any]:
    seen = provenance.get(record.id, {})
    return {
        **record_fields(record),
        "flagged": record.id in flags,
        "flag_reason": flags.get(record.id),
        "status": status,
        "provenance": Provenance(
            namespace=record.namespace,
            model_pos=record.model_pos,
            model_neg=record.model_neg,
            distiller=record.distiller,
            created_at=record.created_at,
            key_id=seen.get("key_id"),
            via=seen.get("via"),
            added_at=seen.get("at"),
            learned=seen.get("learned"),
        ),
    }


# --------------------------------------------------------------------------- search


@router.post("/search", response_model=SearchResponse)
def search(body: SearchRequest, who: ReadKey, ctx: Context) -> dict[str, Any]:
    """Constraints for a task as `model` would be given them: task-aware retrieval (the
    task's bucket, backing off to its category, then its domain; TF-IDF top p). The label
    is the request's `category`/`subcategory` if given, else the service's labeller if it
    has one (not asked when the gate withholds memory from `model`), else none (the whole
    domain is searched). Counts no usage."""
    task = Task(id="query", domain=body.domain, prompt=body.task)
    found, source = ctx.search(
        task,
        namespace=who.namespace,
        model=body.model,
        category=body.category,
        subcategory=body.subcategory,
        p=body.p,
        strategy=body.strategy,
        count_usage=False,
    )
    hits = [
        Hit(
            **{
                k: v
                for k, v in record_fields(hit.record).items()
                if k in ("domain", "category", "subcategory", "constraints")
            },
            record_id=hit.record.id,
            score=float(hit.score),
            level=hit.level,
            model_pos=hit.record.model_pos,
            model_neg=hit.record.model_neg,
        )
        for hit in found.hits
    ]
    return {
        "hits": hits,
        "level": found.level,
        "strategy": found.mode,
        "category": found.category,
        "subcategory": found.subcategory,
        "label_source": source,
        "gate": gate_out(found.gate),
    }


# --------------------------------------------------------------------------- records


@router.get("/records", response_model=RecordPage)
def list_records(
    who: ReadKey,
    ctx: Context,
    domain: Annotated[str | None, Query(max_length=64)] = None,
    category: Annotated[str | None, Query(max_length=200)] = None,
    subcategory: Annotated[str | None, Query(max_length=200)] = None,
    include_flagged: bool = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> dict[str, Any]:
    """Records of the key's namespace, ordered by (created_at, id), a page at a time."""
    for value in (domain, category, subcategory):
        if value is not None:
            _storable_query(value)
    page, total = ctx.memory.page(
        who.namespace,
        domain=domain,
        category=category,
        subcategory=subcategory,
        include_flagged=include_flagged,
        limit=limit,
        offset=offset,
    )
    flags = ctx.memory.flagged(who.namespace)
    statuses = ctx.memory.statuses(who.namespace)
    provenance = ctx.provenance.many([r.id for r in page])
    end = offset + len(page)
    return {
        "records": [record_out(r, flags, provenance, statuses.get(r.id, "active")) for r in page],
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": end if end < total else None,
    }


def _storable_query(value: str) -> None:
    try:
        storable(value)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/records/{record_id}", response_model=RecordDetail)
def get_record(record_id: RecordIdPath, who: ReadKey, ctx: Context) -> dict[str, Any]:
    """One record with its flag state, provenance and per-model usage counts."""
    record = own_record(ctx, who, record_id)
    flags = ctx.memory.flagged(who.namespace)
    out = record_out(record, flags, ctx.provenance.many([record.id]), ctx.memory.status(record.id))
    out["usage"] = Usage(**ctx.memory.usage(record.id))
    return out


@router.post(
    "/records",
    response_model=AddResult,
    status_code=201,
    responses={200: {"model": AddResult, "description": "the same record was already stored"}},
)
def add_record(body: RecordIn, response: Response, who: WriteKey, ctx: Context) -> dict[str, Any]:
    """Add a record (validated as a MemoryRecord), through the content screen (a refusal is
    a 422 naming its reason, counted in GET /v1/stats). With `dedup` (the default) each
    constraint that nearly duplicates a stored one of the bucket merges into it (listed in
    `merged`); the rest are stored as the record. A key created untrusted stores it
    quarantined: never served until released. Its id is deterministic, so a retry adds
    nothing (200, created false); the same id with other content is a 409."""
    if body.namespace is not None and body.namespace != who.namespace:
        raise other_namespace(who, body.namespace)
    source_task_id = body.source_task_id or derive_task_id(body.task_text)
    rid = record_id(
        who.namespace,
        source_task_id,
        body.pair_type,
        body.model_pos,
        body.model_neg,
        body.distiller,
    )
    record = MemoryRecord(
        id=rid,
        namespace=who.namespace,
        domain=body.domain,
        category=body.category,
        subcategory=body.subcategory,
        task_text=body.task_text,
        task_hash=task_hash(body.task_text),
        source_task_id=source_task_id,
        constraints=tuple(Constraint(**c.model_dump()) for c in body.constraints),
        model_pos=body.model_pos,
        model_neg=body.model_neg,
        pair_type=body.pair_type,
        distiller=body.distiller,
        created_at=time.time(),
    )
    # One transaction: the record, the merges and its provenance, or none of them.
    try:
        result = guard.submit(ctx, guard.Submitter.of(who, "add"), record, dedup=body.dedup)
    except guard.SubmissionConflict as exc:
        raise HTTPException(409, str(exc)) from None
    stored = ctx.memory.get(rid)
    if not result.created:
        response.status_code = 200
    flags = ctx.memory.flagged(who.namespace)
    return {
        "created": result.created,
        "status": result.status,
        "added": result.added,
        "merged": [m.__dict__ for m in result.merged],
        "released": list(result.released),
        "record": record_out(stored, flags, ctx.provenance.many([rid]), result.status),
    }


@router.post("/records/{record_id}/release", response_model=ReleaseResult)
def release_record(
    record_id: RecordIdPath, body: ReleaseRequest, who: AdminKey, ctx: Context
) -> ReleaseResult:
    """Serve a quarantined record (one an untrusted key added or imported), with a reason
    kept in its history. Needs a trusted admin key: an untrusted key releases nothing."""
    own_record(ctx, who, record_id)
    if not who.trusted:
        raise HTTPException(403, "this key is untrusted: it cannot release records")
    changed = guard.release(ctx, who, record_id, body.reason)
    return ReleaseResult(record_id=record_id, status=ctx.memory.status(record_id), changed=changed)


def _flag(
    ctx: ServerContext, who: Principal, rid: str, body: FlagRequest, flag: bool
) -> FlagResult:
    own_record(ctx, who, rid)
    if flag:
        changed = ctx.memory.flag(rid, body.reason, actor=who.actor)
    else:
        changed = ctx.memory.unflag(rid, body.reason, actor=who.actor)
    return FlagResult(record_id=rid, flagged=flag, changed=changed)


@router.post("/records/{record_id}/flag", response_model=FlagResult)
def flag_record(
    record_id: RecordIdPath, body: FlagRequest, who: AdminKey, ctx: Context
) -> FlagResult:
    """Withhold a record from retrieval, with a reason (kept in its history). Nothing is
    ever deleted: there is no delete endpoint."""
    return _flag(ctx, who, record_id, body, True)


@router.post("/records/{record_id}/unflag", response_model=FlagResult)
def unflag_record(
    record_id: RecordIdPath, body: FlagRequest, who: AdminKey, ctx: Context
) -> FlagResult:
    """Serve a flagged record again, with a reason (kept in its history)."""
    return _flag(ctx, who, record_id, body, False)


@router.get("/records/{record_id}/history", response_model=History)
def record_history(record_id: RecordIdPath, who: ReadKey, ctx: Context) -> dict[str, Any]:
    """Every flag and unflag of a record, oldest first (action, reason, actor, time)."""
    own_record(ctx, who, record_id)
    return {"record_id": record_id, "events": ctx.memory.history(record_id)}


# --------------------------------------------------------------------------- moving


def _unlink(path: str) -> None:
    Path(path).unlink(missing_ok=True)


@router.get(
    "/export",
    response_class=FileResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSONL records"}},
)
def export_records(who: ReadKey, ctx: Context) -> FileResponse:
    """The key's namespace as JSONL (one record per line, flagged records included; the
    format `memcollab memory import` and POST /v1/import read)."""
    fd, name = tempfile.mkstemp(prefix="memcollab-export-", suffix=".jsonl")
    os.close(fd)
    try:
        ctx.memory.export(name, who.namespace)
    except BaseException:
        _unlink(name)
        raise
    return FileResponse(
        name,
        media_type="application/x-ndjson",
        filename=f"{who.namespace}.jsonl",
        background=BackgroundTask(_unlink, name),
    )


_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
        "description": "A JSONL export: one MemoryRecord per line, all of the key's "
        "namespace, then its notes and its change history (one line each).",
    }
}


@import_router.post("/import", response_model=ImportResult, openapi_extra=_IMPORT_BODY)
async def import_records(
    request: Request,
    who: AdminKey,
    ctx: Context,
    on_conflict: Annotated[str, Query(description=" | ".join(ON_CONFLICT))] = "error",
) -> ImportResult:
    """Import a JSONL export, all or nothing. Every record must be of the key's namespace
    (else 403, nothing written); an id stored with other content is refused (409), kept
    (`on_conflict=skip`) or overwritten (`replace`). A file holding one record the content
    screen refuses is refused whole (422, every refusal counted by reason). An untrusted
    key's records are stored quarantined (it may not replace records or import notes).
    The body limit here is the import limit, not the general one."""
    if on_conflict not in ON_CONFLICT:
        raise HTTPException(422, f"on_conflict must be one of {', '.join(ON_CONFLICT)}")
    fd, name = tempfile.mkstemp(prefix="memcollab-import-", suffix=".jsonl")
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in request.stream():
                fh.write(chunk)
        return await run_in_threadpool(_import, ctx, who, Path(name), on_conflict)  # type: ignore[arg-type]
    finally:
        _unlink(name)


def _import(
    ctx: ServerContext, who: Principal, path: Path, on_conflict: OnConflict
) -> ImportResult:
    scrub = str(path)
    try:
        records, notes, changes = read_export_with_history(path)
    except MemoryFormatError as exc:
        raise HTTPException(422, str(exc).replace(scrub, "line")) from None
    mine = {r.id for r in ctx.memory.list(who.namespace, include_flagged=True)}
    # A note or a change of another namespace is refused as a record of it is.
    named = [r.namespace for r in records] + [n.namespace for n in notes]
    for namespace in named + [c.namespace for c in changes]:
        if namespace != who.namespace:
            raise other_namespace(who, namespace)
    for record in records:
        if record.id not in mine:
            try:
                ctx.memory.get(record.id)
            except MemoryNotFoundError:
                continue
            # Stored in another namespace: never overwritten, never merged into.
            raise HTTPException(409, f"record id {record.id!r} is taken; nothing was imported")
    new = [r.id for r in records if r.id not in mine]
    if not who.trusted:
        if on_conflict == "replace" or notes:
            what = "replace records" if on_conflict == "replace" else "import namespace notes"
            raise HTTPException(403, f"this key is untrusted: it cannot {what}")
        # The file's history is not reproduced: each record is quarantined as a new change
        # of this memory (the response's `changes` stays 0).
        try:
            found = guard.import_records(
                ctx, guard.Submitter.of(who, "import"), records, on_conflict, "the import"
            )
        except MemoryConflictError as exc:
            raise HTTPException(409, str(exc).replace("the import: ", "")) from None
        return ImportResult(**found)
    # Screened whole first (refusals counted per reason), then imported as it is.
    guard.screen(ctx.counters, ctx.memory.poison, records, who.namespace, "the import")
    try:
        with ctx.db.write():  # one transaction: the records and their provenance
            counts = ctx.memory.import_(path, on_conflict=on_conflict, screen=False)
            ctx.provenance.record(new, who.namespace, who.key_id, "import")
            ctx.counters.bump(who.namespace, {"stored": counts.added})
    except MemoryConflictError as exc:
        raise HTTPException(409, str(exc).replace(scrub + ": ", "")) from None
    return ImportResult(
        added=counts.added,
        present=counts.present,
        conflicts_skipped=counts.conflicts_skipped,
        replaced=counts.replaced,
        changes=counts.changes,
    )


# --------------------------------------------------------------------------- stats


@router.get("/stats", response_model=Stats)
def stats(who: ReadKey, ctx: Context) -> dict[str, Any]:
    """Records and constraints of the key's namespace per bucket, model pair, pair type and
    distiller; flagged records; attempts per verdict and per model; the write path's
    counters (`guard`: screen refusals per reason, dedup merges, quarantines, releases)."""
    return {
        "namespace": who.namespace,
        "memory": ctx.memory.stats(who.namespace),
        "flagged": len(ctx.memory.flagged(who.namespace)),
        "attempts": ctx.attempts.counts(who.namespace),
        "guard": guard.guard_summary(ctx.counters.of(who.namespace)),
    }
