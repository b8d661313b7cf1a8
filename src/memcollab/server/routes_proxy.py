"""The OpenAI-compatible proxy: POST /v1/chat/completions, GET /v1/models, POST /v1/feedback.

A chat request (write scope: it records an attempt) is bound to its key's namespace. The
proxy labels the last user turn, retrieves the requested model's constraints, adds them as
one system message (server/proxy.py), forwards the request to the model's upstream
(server/upstream.py) and returns its answer unchanged, streamed or not. Response headers:

* `x-memcollab-memory`: applied | none | gated | skipped | error;
* `x-memcollab-records`: the injected record ids, comma-separated (when any);
* `x-memcollab-attempt`: the id of the attempt that records the exchange;
* `x-memcollab-replayed: true`: the answer of an attempt stored under the client's attempt
  id (`x-memcollab-attempt-id`), sent again without a model call (an idempotent retry);
  that id naming another model's or task's attempt is a 409.

Every successful exchange is stored as an attempt before a JSON answer is returned; a
streamed one when its stream has ended (a stream the client abandons, or that fails
midway, stores nothing). A call that fails stores nothing: malformed JSON or a malformed
request 400, an unknown model 404 (OpenAI's error shape with a `code`), a body over
`Settings.proxy_body_limit` 413, an upstream that cannot be reached 502, one that does not
answer within `Settings.upstream_timeout_s` 504 (but an in-process model's generation,
which cannot be interrupted, is kept when the client gave an attempt id: its late answer
is stored under that id, and a retry with the id waits for it, within the timeout again,
and gets it replayed instead of a second generation queued behind the first); an
upstream's own error answer (4xx/5xx)
is passed through with its status and body, except 401/403 (the service's credentials,
not the client's: 502). A request that comes back to this service from its own upstream
call (a fleet that points at the service) is refused with 508.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator

from memcollab.server.attempts import (
    Attempt,
    AttemptConflictError,
    AttemptNotFoundError,
    NewAttempt,
    derive_task_id,
)
from memcollab.server.auth import Context, Principal, ReadKey, WriteKey
from memcollab.server.context import ServerContext
from memcollab.server.feedback import apply_feedback
from memcollab.server.proxy import (
    ChatCall,
    MemoryUse,
    ProxyInputError,
    Transcript,
    attempt_metadata,
    find_memory,
    forwarded_body,
    parse_call,
    replayed_completion,
    stored_messages,
)
from memcollab.server.schemas import AttemptId, AttemptOut, Name
from memcollab.server.upstream import (
    HOP_HEADER,
    Answer,
    UpstreamError,
    Upstreams,
    chunks_of,
    sse,
)

log = logging.getLogger("memcollab.server.proxy")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    upstreams: Upstreams | None = getattr(app.state, "proxy_upstreams", None)
    if upstreams is not None:
        await upstreams.aclose()


router = APIRouter(prefix="/v1", tags=["proxy"], lifespan=_lifespan)


def _upstreams(request: Request, ctx: ServerContext) -> Upstreams:
    state = request.app.state
    upstreams: Upstreams | None = getattr(state, "proxy_upstreams", None)
    if upstreams is None or upstreams.fleet is not ctx.fleet:
        if upstreams is not None:  # another fleet: the old models' threads end
            upstreams.close_models()
        upstreams = Upstreams(ctx.fleet, ctx.settings.upstream_timeout_s)
        state.proxy_upstreams = upstreams
    return upstreams


def openai_error(
    status: int,
    message: str,
    code: str | None = None,
    kind: str = "invalid_request_error",
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _memory_headers(use: MemoryUse) -> dict[str, str]:
    headers: dict[str, str] = {"x-memcollab-memory": use.status}
    if use.record_ids:
        headers["x-memcollab-records"] = ",".join(use.record_ids)
    return headers


async def _memory(ctx: ServerContext, who: Principal, call: ChatCall) -> MemoryUse:
    """find_memory within the memory timeout; any failure is status `error`, never a
    failed call."""
    if call.opted_out:
        return MemoryUse("skipped")
    try:
        async with asyncio.timeout(ctx.settings.memory_timeout_s):
            return await run_in_threadpool(find_memory, ctx, who.namespace, call)
    except Exception as exc:  # noqa: BLE001 - memory never breaks a call: logged, status error
        log.warning("memory failed for a proxied request (%s: %s)", type(exc).__name__, exc)
        return MemoryUse("error")


def _stored(ctx: ServerContext, who: Principal, call: ChatCall) -> Attempt | None:
    """The attempt already stored under the client's attempt id, if any; another model's
    or task's attempt under that id is an AttemptConflictError."""
    assert call.attempt_id is not None
    try:
        stored = ctx.attempts.get(who.namespace, call.attempt_id)
    except AttemptNotFoundError:
        return None
    task_id = call.task_id or derive_task_id(call.task)
    if (stored.model, stored.task_id) != (call.model, task_id):
        raise AttemptConflictError(
            f"attempt {call.attempt_id!r} is already recorded for model {stored.model!r} on"
            f" task {stored.task_id!r}",
            "a new exchange needs a new attempt id",
        )
    return stored


Orphans = dict[tuple[str, str], "asyncio.Task[bool]"]


def _orphans(request: Request) -> Orphans:
    """(namespace, client attempt id) -> the task storing the late answer of a call that
    timed out (kept on the app, one event loop's tasks)."""
    state = request.app.state
    found: Orphans | None = getattr(state, "proxy_orphans", None)
    if found is None:
        found = state.proxy_orphans = {}
    return found


def _keep_late(
    orphans: Orphans,
    late: Callable[[], Awaitable[Answer]],
    ctx: ServerContext,
    who: Principal,
    call: ChatCall,
    use: MemoryUse,
) -> None:
    """Store the answer of a timed-out generation under the client's attempt id when it
    arrives (as its own call would have), in the background."""
    assert call.attempt_id is not None
    key = (who.namespace, call.attempt_id)

    async def keep() -> bool:
        try:
            answer = await late()
        except Exception as exc:  # noqa: BLE001 - the generation failed: nothing to keep
            log.warning("late answer of attempt %s failed: %s", call.attempt_id, exc)
            return False
        transcript = Transcript()
        transcript.read_json(answer.body)
        stored = await run_in_threadpool(_store, ctx, who, call, use, transcript, key[1])
        log.info("stored the late answer of attempt %s: %s", key[1], stored)
        return stored

    task = asyncio.ensure_future(keep())
    orphans[key] = task
    task.add_done_callback(lambda t: orphans.pop(key) if orphans.get(key) is t else None)


async def _await_orphan(
    request: Request, ctx: ServerContext, who: Principal, call: ChatCall
) -> bool:
    """Wait (within the upstream timeout) for a generation of this attempt id that is still
    running after its call timed out; False when it is still running then."""
    assert call.attempt_id is not None
    orphan = _orphans(request).get((who.namespace, call.attempt_id))
    if orphan is None or orphan.get_loop() is not asyncio.get_running_loop():
        return True
    try:
        async with asyncio.timeout(ctx.settings.upstream_timeout_s):
            await asyncio.shield(orphan)
    except TimeoutError:
        return False
    return True


def _replay(stored: Attempt, call: ChatCall) -> Response:
    """The stored exchange again, JSON or as a stream, with the memory headers it had."""
    headers = {
        "x-memcollab-memory": stored.metadata.get("memory", "none"),
        "x-memcollab-attempt": stored.id,
        "x-memcollab-replayed": "true",
    }
    if stored.injected_ids:
        headers["x-memcollab-records"] = ",".join(stored.injected_ids)
    obj = replayed_completion(stored)
    if not call.stream:
        return JSONResponse(obj, headers=headers)
    options = call.body.get("stream_options")
    usage = isinstance(options, dict) and bool(options.get("include_usage"))
    return StreamingResponse(
        chunks_of(obj, usage),
        headers={**headers, "cache-control": "no-cache"},
        media_type="text/event-stream",
    )


def _store(
    ctx: ServerContext,
    who: Principal,
    call: ChatCall,
    use: MemoryUse,
    transcript: Transcript,
    attempt_id: str,
) -> bool:
    """Record the exchange as an attempt; False (logged) when it cannot be stored."""
    new = NewAttempt(
        id=attempt_id,
        model=call.model,
        task_text=call.task,
        task_id=call.task_id,
        domain=call.domain,
        messages=stored_messages(call),
        answer=transcript.answer,
        injected_ids=use.record_ids,
        response_id=transcript.response_id,
        metadata=attempt_metadata(call, use, transcript),
    )
    try:
        try:
            ctx.attempts.add(who.namespace, who.key_id, new)
        except AttemptConflictError:
            # The upstream reused a response id (some servers send a fixed one): keep the
            # attempt, findable by its own id (x-memcollab-attempt) instead.
            log.warning("response id %r is already recorded; stored without it", new.response_id)
            ctx.attempts.add(
                who.namespace,
                who.key_id,
                NewAttempt(**{**new.__dict__, "response_id": None}),
            )
    except Exception as exc:  # noqa: BLE001 - the answer still goes back; logged
        log.error("could not store attempt %s: %s: %s", attempt_id, type(exc).__name__, exc)
        return False
    return True


_CHAT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "messages"],
                    "properties": {
                        "model": {"type": "string", "description": "a fleet model"},
                        "messages": {"type": "array", "items": {"type": "object"}},
                        "stream": {"type": "boolean"},
                        "metadata": {
                            "type": "object",
                            "description": "memcollab: 'off' skips memory; task_id groups "
                            "attempts; domain names the task's domain (removed before "
                            "forwarding)",
                        },
                    },
                    "additionalProperties": True,
                }
            }
        },
        "description": "An OpenAI chat completion request; every field is forwarded.",
    }
}


@router.post(
    "/chat/completions",
    openapi_extra=_CHAT_BODY,
    responses={
        200: {"description": "the upstream's answer, unchanged (JSON or text/event-stream)"},
        400: {"description": "malformed request"},
        404: {"description": "unknown model"},
        413: {"description": "body over the proxy's limit"},
        502: {"description": "upstream unreachable"},
        504: {"description": "upstream timeout"},
    },
)
async def chat_completions(request: Request, who: WriteKey, ctx: Context) -> Response:
    """An OpenAI chat completion through memory: the model's constraints are added as one
    system message, the upstream's answer comes back unchanged, and the exchange is
    recorded as an attempt. Headers: x-memcollab-memory (applied | none | skipped |
    error), x-memcollab-records, x-memcollab-attempt. Opt out per request with the header
    `x-memcollab-memory: off` or `metadata.memcollab = "off"`; group attempts with
    `x-memcollab-task-id` or `metadata.task_id`."""
    if request.headers.get(HOP_HEADER):
        return openai_error(
            508,
            "this request came back from the service's own upstream call: the fleet points "
            "at this service (check base_url and OPENAI_BASE_URL of `memcollab serve`)",
            "loop_detected",
        )
    raw = await request.body()
    try:
        call = parse_call(raw, {k.lower(): v for k, v in request.headers.items()})
    except ProxyInputError as exc:
        return openai_error(400, str(exc))
    if ctx.fleet is None or call.model not in ctx.fleet.specs:
        known = ", ".join(ctx.fleet.names()) if ctx.fleet is not None else "none"
        return openai_error(
            404,
            f"the model {call.model!r} does not exist here (models: {known})",
            "model_not_found",
        )
    if call.attempt_id is not None:
        if not await _await_orphan(request, ctx, who, call):
            return openai_error(
                504,
                f"the generation of attempt {call.attempt_id!r} (model {call.model!r}) is still"
                f" running after {ctx.settings.upstream_timeout_s:g} s; retry to get it",
                "upstream_timeout",
                "upstream_error",
            )
        try:
            stored = await run_in_threadpool(_stored, ctx, who, call)
        except AttemptConflictError as exc:
            return openai_error(409, str(exc), "attempt_conflict")
        if stored is not None:
            return _replay(stored, call)
    use = await _memory(ctx, who, call)
    headers = _memory_headers(use)
    body = forwarded_body(call, use)
    upstream = _upstreams(request, ctx).get(call.model)
    attempt_id = call.attempt_id or f"att_{secrets.token_hex(12)}"
    try:
        answer = await (upstream.stream(body) if call.stream else upstream.complete(body))
    except UpstreamError as exc:
        if exc.late is not None and call.attempt_id is not None:
            _keep_late(_orphans(request), exc.late, ctx, who, call, use)
        kind = "invalid_request_error" if exc.status < 500 else "upstream_error"
        return openai_error(exc.status, exc.message, exc.code, kind, headers)
    if isinstance(answer, Answer):
        if answer.status < 300:
            transcript = Transcript()
            transcript.read_json(answer.body)
            if await run_in_threadpool(_store, ctx, who, call, use, transcript, attempt_id):
                headers["x-memcollab-attempt"] = attempt_id
        return Response(answer.body, answer.status, headers, media_type=answer.media_type)
    stream = answer
    headers["x-memcollab-attempt"] = attempt_id
    headers["cache-control"] = "no-cache"

    async def relay() -> AsyncGenerator[bytes, None]:
        transcript = Transcript()
        try:
            async for chunk in stream.chunks():
                transcript.feed(chunk)
                yield chunk
        except Exception as exc:  # noqa: BLE001 - the status is sent: end with an error event
            log.warning("upstream stream of %s failed: %s: %s", call.model, type(exc).__name__, exc)
            message = f"the upstream of model {call.model!r} failed mid-stream"
            yield sse({"error": {"message": message, "type": "upstream_error", "code": None}})
            return
        finally:
            await stream.aclose()
        await run_in_threadpool(_store, ctx, who, call, use, transcript, attempt_id)

    return StreamingResponse(relay(), stream.status, headers, media_type=stream.media_type)


# --------------------------------------------------------------------------- models


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


@router.get("/models", response_model=ModelList)
def list_models(who: ReadKey, ctx: Context) -> ModelList:
    """The fleet's models, in OpenAI's list shape (`owned_by`: memcollab:PROVIDER)."""
    fleet = ctx.fleet
    specs = list(fleet.specs.values()) if fleet is not None else []
    return ModelList(
        data=[ModelCard(id=s.name, created=0, owned_by=f"memcollab:{s.provider}") for s in specs]
    )


# --------------------------------------------------------------------------- feedback


class FeedbackIn(BaseModel):
    """Which exchange (exactly one of response_id, attempt_id, or task_id with model) and
    its verdict; without a verdict the service judges the attempt itself when its task id is
    a benchmark task it can load (server/judge.py), else 422."""

    model_config = ConfigDict(extra="forbid")

    response_id: Name | None = Field(None, description="the `id` of the proxied answer")
    attempt_id: AttemptId | None = Field(None, description="the x-memcollab-attempt header")
    task_id: Name | None = Field(None, description="a task id: its latest attempt by `model`")
    model: Name | None = Field(None, description="with task_id: whose attempt")
    verdict: Literal["correct", "incorrect"] | None = Field(
        None, description="omit to have the service judge a benchmark task's attempt"
    )

    @model_validator(mode="after")
    def _one_target(self) -> FeedbackIn:
        given = [x for x in (self.response_id, self.attempt_id, self.task_id) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of response_id, attempt_id or task_id")
        if self.task_id is not None and self.model is None:
            raise ValueError("task_id needs model (whose attempt the verdict is for)")
        return self


class FeedbackOut(BaseModel):
    attempt: AttemptOut
    counted: bool = Field(description="false: this verdict was already recorded")
    outcomes: int = Field(description="injected records whose outcome was counted")
    baseline: bool = Field(description="a no-memory baseline outcome was counted")
    judged: bool = Field(description="the verdict came from the service's own checker")


def _target(ctx: ServerContext, who: Principal, body: FeedbackIn) -> Attempt:
    if body.response_id is not None:
        return ctx.attempts.by_response_id(who.namespace, body.response_id)
    if body.attempt_id is not None:
        return ctx.attempts.get(who.namespace, body.attempt_id)
    assert body.task_id is not None
    mine = [a for a in ctx.attempts.by_task(who.namespace, body.task_id) if a.model == body.model]
    if not mine:
        raise AttemptNotFoundError(f"no attempt of model {body.model!r} on task {body.task_id!r}")
    return mine[-1]


@router.post("/feedback", response_model=FeedbackOut)
def feedback(body: FeedbackIn, who: WriteKey, ctx: Context) -> dict[str, Any]:
    """The verdict on a proxied exchange: sets the attempt's verdict once and counts each
    injected record's outcome for the model (helped = correct), or, when no record was
    injected, the model's no-memory baseline in the task's bucket. The same verdict again
    counts nothing; another verdict is a 409. An unknown id: 404, nothing written. Without a
    verdict, an attempt on a benchmark task (e.g. gsm8k/test/12) is judged by its checker."""
    target = _target(ctx, who, body)
    verdict = body.verdict if body.verdict is not None else ctx.judge.judge(target)
    result = apply_feedback(ctx, who.namespace, who.key_id, target, verdict)
    return {
        "judged": body.verdict is None,
        "attempt": result.attempt.model_dump(),
        "counted": result.counted,
        "outcomes": result.outcomes,
        "baseline": result.baseline,
    }
