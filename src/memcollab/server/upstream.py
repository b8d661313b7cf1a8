"""Where the proxy sends a chat request: an OpenAI-compatible HTTP endpoint, or a model served
in this process through memcollab's model layer.

* `HTTPUpstream` (fleet provider "openai"): the request body goes to `base_url` +
  `/chat/completions` with httpx, the fleet model's key as the Bearer token, and the answer
  (JSON, or SSE chunks as they arrive) comes back unchanged.
* `LocalUpstream` (every other provider: llamacpp, scripted, registered ones): the request is
  turned into a `ChatRequest` and answered by `Gateway.complete` in a thread of the model's
  own pool, as wide as the model serves at once (a batching engine's `batch_width`; no call
  cache: a service generates); the `Completion` becomes an OpenAI `chat.completion` object,
  or, for `stream: true`, well-formed `chat.completion.chunk` SSE events ending in
  `data: [DONE]`. memcollab's `Message` has no tool calls, so an in-process model refuses
  `tools`, `tool_choice`, `functions`, tool messages and assistant tool calls with a 400 that
  says so (choice: a clear refusal rather than a tool-call format the small models do not
  follow); other fields that would change the answer's form (`response_format` other than
  text, `logprobs`, audio) are refused the same way, and fields with no meaning here
  (penalties, `user`, `store`, ...) are ignored.

Failures are `UpstreamError`s carrying the status the client gets: 502 when the upstream
cannot be reached or refuses the service's credentials, 504 when it does not answer within
the configured timeout, 400 for a request an in-process model cannot serve. An in-process
model's call cannot be interrupted: on its 504 the generation goes on in its thread, and
the error's `late` hands over its answer when it ends (the proxy stores it under the
client's attempt id, so a retry gets it instead of generating again behind it).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from memcollab.errors import ContextOverflowError, ModelUnavailableError
from memcollab.llm.base import ChatRequest, Completion, Decoding, Message, Model
from memcollab.llm.cache import Gateway
from memcollab.llm.fleet import Fleet, ModelSpec
from memcollab.llm.openai_compat import DEFAULT_BASE_URL

HOP_HEADER = "x-memcollab-hop"
"""Set on every forwarded request; a request that arrives with it is a loop (the fleet
points back at this service, e.g. through OPENAI_BASE_URL) and is refused."""


class UpstreamError(Exception):
    """A call that produced no answer: `status` and an OpenAI error `type`/`code`. `late`
    (an in-process model's timeout only): awaits the answer of the generation still
    running, which a caller may keep."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str = "upstream_error",
        late: Callable[[], Awaitable[Answer]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.late = late


@dataclass(frozen=True)
class Answer:
    """A complete (non-streamed) answer: the status and body to send back unchanged."""

    status: int
    body: bytes
    media_type: str


class Stream:
    """An answer being streamed: `status`, `media_type` and `chunks()` (raw bytes as they
    arrive); `aclose()` releases the upstream connection."""

    def __init__(
        self, status: int, media_type: str, chunks: AsyncIterator[bytes], closer: Any = None
    ) -> None:
        self.status = status
        self.media_type = media_type
        self._chunks = chunks
        self._closer = closer

    def chunks(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        if self._closer is not None:
            await self._closer()


# --------------------------------------------------------------------------- HTTP


class HTTPUpstream:
    """An OpenAI-compatible endpoint of the fleet (provider "openai")."""

    def __init__(self, spec: ModelSpec, client: httpx.AsyncClient, timeout_s: float) -> None:
        base = spec.base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        self.url = base.rstrip("/") + "/chat/completions"
        self.served_name = spec.model or spec.name
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        key = key or os.environ.get("OPENAI_API_KEY") or "no-key"
        self._headers = {"Authorization": f"Bearer {key}", HOP_HEADER: "1"}
        self._client = client
        self._timeout_s = timeout_s
        self.name = spec.name

    def _request(self, body: dict[str, Any]) -> httpx.Request:
        payload = {**body, "model": self.served_name}
        return self._client.build_request(
            "POST",
            self.url,
            content=json.dumps(payload, ensure_ascii=False).encode("utf-8"),
            headers={**self._headers, "Content-Type": "application/json"},
        )

    def _failed(self, exc: Exception) -> UpstreamError:
        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            return UpstreamError(
                504,
                f"the upstream of model {self.name!r} did not answer within {self._timeout_s:g} s",
                "upstream_timeout",
            )
        return UpstreamError(
            502,
            f"the upstream of model {self.name!r} cannot be reached ({type(exc).__name__})",
            "upstream_unreachable",
        )

    def _refused(self, status: int) -> UpstreamError | None:
        # The client's key is the service's, not the upstream's: an upstream 401/403 is the
        # service's misconfiguration, never "your key is wrong".
        if status in (401, 403):
            return UpstreamError(
                502,
                f"the upstream of model {self.name!r} refused the service's credentials "
                f"(HTTP {status}); check the fleet file's api_key_env",
                "upstream_auth",
            )
        return None

    async def complete(self, body: dict[str, Any]) -> Answer:
        """Send a non-streaming request; the upstream's status and body, unchanged."""
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.send(self._request(body))
        except (httpx.HTTPError, TimeoutError) as exc:
            raise self._failed(exc) from None
        refused = self._refused(response.status_code)
        if refused is not None:
            raise refused
        media = response.headers.get("content-type", "application/json")
        return Answer(response.status_code, response.content, media)

    async def stream(self, body: dict[str, Any]) -> Stream | Answer:
        """Send a streaming request. A 2xx answer comes back as a `Stream` of raw chunks;
        an error answer (read in full) as an `Answer`."""
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.send(self._request(body), stream=True)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise self._failed(exc) from None
        media = response.headers.get("content-type", "text/event-stream")
        if response.status_code >= 300:
            try:
                content = await response.aread()
            finally:
                await response.aclose()
            refused = self._refused(response.status_code)
            if refused is not None:
                raise refused
            return Answer(response.status_code, content, media)
        return Stream(response.status_code, media, response.aiter_raw(), response.aclose)


# --------------------------------------------------------------------------- in process

_TOOL_FIELDS = ("tools", "tool_choice", "functions", "function_call")
_REFUSED_FIELDS = ("audio", "prediction", "top_logprobs")


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise UpstreamError(
                    400, f"{where}: content parts of type {kind!r} are not supported here"
                )
            parts.append(str(part.get("text", "")))
        return "\n".join(parts)
    raise UpstreamError(400, f"{where}: content must be a string or a list of text parts")


def local_request(body: dict[str, Any], spec: ModelSpec, n: int) -> list[ChatRequest]:
    """The ChatRequests (one per sample of `n`) an in-process model answers `body` with;
    UpstreamError(400) names what it cannot serve."""
    name = spec.name
    for key in _TOOL_FIELDS:
        if body.get(key) not in (None, [], "none"):
            raise UpstreamError(
                400,
                f"model {name!r} runs in process and cannot call tools ({key!r} given); "
                "use a fleet model with provider 'openai' for tool calls",
                "tools_unsupported",
            )
    for key in _REFUSED_FIELDS:
        if body.get(key) not in (None, False, 0):
            raise UpstreamError(400, f"model {name!r} runs in process and does not support {key!r}")
    if body.get("logprobs"):
        raise UpstreamError(400, f"model {name!r} runs in process and does not support 'logprobs'")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise UpstreamError(
            400, f"model {name!r} runs in process and supports only response_format text"
        )
    messages = []
    for i, m in enumerate(body["messages"]):
        where = f"messages[{i}]"
        role = m.get("role")
        if role == "tool" or role == "function" or m.get("tool_calls") or m.get("function_call"):
            raise UpstreamError(
                400,
                f"{where}: model {name!r} runs in process and cannot take tool calls or tool "
                "results; use a fleet model with provider 'openai' for tool calls",
                "tools_unsupported",
            )
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise UpstreamError(400, f"{where}: unknown role {role!r}")
        messages.append(Message(role=role, content=_text(m.get("content"), where)))
    stop = body.get("stop")
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    given = {
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens"),
        "seed": body.get("seed"),
    }
    decoding = spec.decoding.model_dump()
    decoding.update({k: v for k, v in given.items() if v is not None})
    if stops:
        decoding["stop"] = stops
    try:
        params = Decoding(**decoding)
        return [
            ChatRequest(messages=tuple(messages), decoding=params, sample_index=i) for i in range(n)
        ]
    except ValueError as exc:  # pydantic: a decoding value out of range
        raise UpstreamError(400, f"invalid decoding parameters: {exc}".splitlines()[0]) from None


def _finish(reason: str) -> str:
    return reason if reason in ("stop", "length", "tool_calls", "content_filter") else "stop"


def completion_object(name: str, completions: list[Completion]) -> dict[str, Any]:
    """An OpenAI `chat.completion` object of one or more in-process completions."""
    return {
        "id": f"chatcmpl-{secrets.token_hex(12)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": name,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": c.text},
                "logprobs": None,
                "finish_reason": _finish(c.finish_reason),
            }
            for i, c in enumerate(completions)
        ],
        "usage": {
            "prompt_tokens": sum(c.usage.prompt_tokens for c in completions),
            "completion_tokens": sum(c.usage.completion_tokens for c in completions),
            "total_tokens": sum(c.usage.total_tokens for c in completions),
        },
    }


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event (`data: ...` and a blank line)."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


async def chunks_of(obj: dict[str, Any], include_usage: bool) -> AsyncIterator[bytes]:
    """A `chat.completion` object as `chat.completion.chunk` events: per choice a role
    delta, its content, and its finish reason; the usage chunk if asked; `[DONE]`."""
    head = {"id": obj["id"], "object": "chat.completion.chunk", "created": obj["created"]}
    head["model"] = obj["model"]
    for choice in obj["choices"]:
        i = choice["index"]
        for delta, finish in (
            ({"role": "assistant", "content": ""}, None),
            ({"content": choice["message"]["content"]}, None),
            ({}, choice["finish_reason"]),
        ):
            yield sse(
                {
                    **head,
                    "choices": [
                        {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
                    ],
                }
            )
    if include_usage:
        yield sse({**head, "choices": [], "usage": obj["usage"]})
    yield sse("[DONE]")


class LocalUpstream:
    """A fleet model answered in this process through the Gateway (llamacpp, scripted, ...)."""

    def __init__(self, spec: ModelSpec, fleet: Fleet, gateway: Gateway, timeout_s: float) -> None:
        self.spec = spec
        self.name = spec.name
        self._fleet = fleet
        self._gateway = gateway
        self._timeout_s = timeout_s
        self._model: Model | None = None
        self._pool: ThreadPoolExecutor | None = None

    async def _threads(self) -> ThreadPoolExecutor:
        """The threads this model's calls run on: as many as the model serves at once.

        Not asyncio.to_thread: the loop's default executor has min(32, cores + 4) threads
        for all models together (6 on a 2-core machine), far below what a batching engine
        decodes at once (`batch_width`, 16 for the packaged models). The Gateway's limit
        of the model still bounds the calls in flight.
        """
        if self._pool is None:
            model = await asyncio.to_thread(self._build)  # may read the weights' metadata
            if self._pool is None:  # not made meanwhile by another request
                width = max(1, model.concurrency()[1])
                self._pool = ThreadPoolExecutor(width, thread_name_prefix=f"model-{self.name}")
        return self._pool

    def _build(self) -> Model:
        if self._model is None:
            self._model = self._fleet.model(self.name)
        return self._model

    def _complete_all(self, requests: list[ChatRequest]) -> list[Completion]:
        model = self._build()
        return [self._gateway.complete(model, r) for r in requests]

    async def _answer(self, body: dict[str, Any]) -> dict[str, Any]:
        n = body.get("n") or 1
        if not isinstance(n, int) or not 1 <= n <= 8:
            raise UpstreamError(400, "n must be an integer from 1 to 8 for an in-process model")
        requests = local_request(body, self.spec, n)
        running: asyncio.Future[list[Completion]] | None = None
        try:
            async with asyncio.timeout(self._timeout_s):
                threads = await self._threads()
                context = contextvars.copy_context()  # as asyncio.to_thread does
                running = asyncio.get_running_loop().run_in_executor(
                    threads, lambda: context.run(self._complete_all, requests)
                )
                # shielded: a timeout leaves the generation's result to `late`
                completions = await asyncio.shield(running)
        except TimeoutError:
            raise UpstreamError(
                504,
                f"model {self.name!r} did not answer within {self._timeout_s:g} s",
                "upstream_timeout",
                late=None if running is None else self._late(running),
            ) from None
        except ContextOverflowError as exc:
            raise UpstreamError(400, str(exc), "context_length_exceeded") from None
        except ModelUnavailableError as exc:
            raise UpstreamError(502, f"model {self.name!r} is unavailable: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any model failure is the upstream's: one 502
            raise UpstreamError(
                502, f"model {self.name!r} failed: {type(exc).__name__}: {exc}"
            ) from None
        return completion_object(self.name, completions)

    def _late(self, running: asyncio.Future[list[Completion]]) -> Callable[[], Awaitable[Answer]]:
        """What hands over the answer of a generation whose call timed out (its failure is
        retrieved here too, so an answer nobody keeps logs nothing)."""
        running.add_done_callback(lambda f: f.cancelled() or f.exception())

        async def answer() -> Answer:
            obj = completion_object(self.name, await running)
            return Answer(
                200, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json"
            )

        return answer

    def close(self) -> None:
        """Stop this model's threads (at shutdown): queued calls are cancelled, a call
        already running finishes on its thread (a model call cannot be interrupted)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def complete(self, body: dict[str, Any]) -> Answer:
        obj = await self._answer(body)
        return Answer(200, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json")

    async def stream(self, body: dict[str, Any]) -> Stream | Answer:
        obj = await self._answer(body)
        options = body.get("stream_options") or {}
        usage = bool(isinstance(options, dict) and options.get("include_usage"))
        return Stream(200, "text/event-stream", chunks_of(obj, usage))


Upstream = HTTPUpstream | LocalUpstream


class Upstreams:
    """The upstream of each fleet model, made on first use; one httpx client per event loop
    (a TestClient runs each request on its own loop; uvicorn has one)."""

    def __init__(self, fleet: Fleet | None, timeout_s: float) -> None:
        self.fleet = fleet
        self.timeout_s = timeout_s
        self.gateway = Gateway(None)
        self._local: dict[str, LocalUpstream] = {}
        self._client: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None

    def _http_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client[0] is not loop:
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s, connect=min(10.0, self.timeout_s)),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
            )
            self._client = (loop, client)
        return self._client[1]

    def get(self, name: str) -> Upstream:
        """The upstream of fleet model `name` (the caller checked that it exists)."""
        assert self.fleet is not None
        spec = self.fleet.spec(name)
        if spec.provider == "openai":
            return HTTPUpstream(spec, self._http_client(), self.timeout_s)
        if name not in self._local:
            self._local[name] = LocalUpstream(spec, self.fleet, self.gateway, self.timeout_s)
        return self._local[name]

    def close_models(self) -> None:
        """Stop the in-process models' threads (a later call makes them again)."""
        for local in self._local.values():
            local.close()
        self._local.clear()

    async def aclose(self) -> None:
        """Close the HTTP client and stop the in-process models' threads (at shutdown)."""
        self.close_models()
        if self._client is not None:
            await self._client[1].aclose()
            self._client = None
