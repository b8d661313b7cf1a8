"""The attempt endpoints: submit an attempt, set its verdict, read attempts back by id, by
task, and the tasks whose attempts contrast a success with another model's failure."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi import Path as PathParam

from memcollab.server.attempts import (
    ID_PATTERN,
    AttemptConflictError,
    AttemptNotFoundError,
    NewAttempt,
    Verdict,
)
from memcollab.server.auth import Context, ReadKey, WriteKey, other_namespace
from memcollab.server.feedback import apply_feedback
from memcollab.server.routes_memory import own_record
from memcollab.server.schemas import (
    AttemptIn,
    AttemptOut,
    AttemptPage,
    AttemptResult,
    ContrastPage,
    VerdictRequest,
    storable,
)

router = APIRouter(prefix="/v1", tags=["attempts"])
AttemptIdPath = Annotated[str, PathParam(pattern=ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=2**31)]
Filter = Annotated[str | None, Query(min_length=1, max_length=200)]


def _text(value: str | None) -> str | None:
    if value is not None:
        try:
            storable(value)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
    return value


@router.post(
    "/attempts",
    response_model=AttemptResult,
    status_code=201,
    responses={
        200: {"model": AttemptResult, "description": "the same attempt was already recorded"}
    },
)
def submit_attempt(
    body: AttemptIn, response: Response, who: WriteKey, ctx: Context
) -> dict[str, Any]:
    """Record what a model did on a task. Give `id` to make retries safe: the same id with
    the same content is recorded once (200, created false), with other content it is a 409.
    `injected_ids` must be records of the key's namespace."""
    if body.namespace is not None and body.namespace != who.namespace:
        raise other_namespace(who, body.namespace)
    for rid in dict.fromkeys(body.injected_ids):
        try:
            own_record(ctx, who, rid)
        except HTTPException:
            raise HTTPException(422, f"injected_ids: no record with id {rid!r}") from None
    attempt, created = ctx.attempts.add(
        who.namespace,
        who.key_id,
        NewAttempt(
            id=body.id,
            model=body.model,
            task_text=body.task,
            task_id=body.task_id,
            domain=body.domain,
            messages=None
            if body.messages is None
            else [m.model_dump(exclude_none=False) for m in body.messages],
            answer=body.answer,
            injected_ids=tuple(body.injected_ids),
            verdict=body.verdict,
            response_id=body.response_id,
            metadata=dict(body.metadata),
        ),
    )
    if not created:
        response.status_code = 200
    return {"created": created, "attempt": attempt.model_dump()}


@router.post("/attempts/{attempt_id}/verdict", response_model=AttemptOut)
def set_verdict(
    attempt_id: AttemptIdPath, body: VerdictRequest, who: WriteKey, ctx: Context
) -> dict[str, Any]:
    """Set (or change) an attempt's verdict: correct, incorrect or unknown. The first
    correct / incorrect verdict of an attempt counts its outcomes once, as POST
    /v1/feedback does (per injected record and model: helped or harmed); a later change is
    stored but counts nothing again."""
    attempt = ctx.attempts.get(who.namespace, attempt_id)
    if attempt.verdict == "unknown" and body.verdict != "unknown":
        try:
            return apply_feedback(
                ctx, who.namespace, who.key_id, attempt, body.verdict
            ).attempt.model_dump()
        except AttemptConflictError:
            pass  # another caller set a verdict meanwhile: this one changes it, uncounted
    return ctx.attempts.set_verdict(
        who.namespace, attempt_id, body.verdict, who.key_id
    ).model_dump()


@router.get("/attempts/{attempt_id}", response_model=AttemptOut)
def get_attempt(attempt_id: AttemptIdPath, who: ReadKey, ctx: Context) -> dict[str, Any]:
    """One attempt of the key's namespace."""
    return ctx.attempts.get(who.namespace, attempt_id).model_dump()


@router.get("/attempts", response_model=AttemptPage)
def list_attempts(
    who: ReadKey,
    ctx: Context,
    task_id: Filter = None,
    model: Filter = None,
    verdict: Verdict | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Attempts of the key's namespace, oldest first, filtered by task, model, verdict."""
    page, total = ctx.attempts.list(
        who.namespace,
        task_id=_text(task_id),
        model=_text(model),
        verdict=verdict,
        limit=limit,
        offset=offset,
    )
    end = offset + len(page)
    return {
        "attempts": [a.model_dump() for a in page],
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": end if end < total else None,
    }


@router.get("/tasks/contrasting", response_model=ContrastPage)
def contrasting_tasks(
    who: ReadKey,
    ctx: Context,
    since: Annotated[float | None, Query(ge=0, allow_inf_nan=False)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Tasks with a correct attempt of one model and an incorrect attempt of another (what
    online learning pairs), by task id; `since` counts only attempts created since then."""
    tasks = ctx.attempts.tasks_with_contrast(who.namespace, since=since)
    page = tasks[offset : offset + limit]
    end = offset + len(page)
    return {
        "tasks": [
            {
                "task_id": t.task_id,
                "correct_models": list(t.correct_models),
                "incorrect_models": list(t.incorrect_models),
                "attempts": t.attempts,
            }
            for t in page
        ],
        "total": len(tasks),
        "limit": limit,
        "offset": offset,
        "next_offset": end if end < len(tasks) else None,
    }


@router.get("/tasks/{task_id}/attempts", response_model=list[AttemptOut])
def task_attempts(
    task_id: Annotated[str, PathParam(min_length=1, max_length=200)], who: ReadKey, ctx: Context
) -> list[dict[str, Any]]:
    """Every attempt of one task (by any model), oldest first; 404 when there is none."""
    found = ctx.attempts.by_task(who.namespace, _text(task_id) or task_id)
    if not found:
        raise AttemptNotFoundError(f"no attempt of task {task_id!r}")
    return [a.model_dump() for a in found]
