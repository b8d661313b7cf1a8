"""The proxy's logic, apart from HTTP: what a chat request asks, the memory it gets, the one
system message that carries it, and what is recorded of the exchange.

For each request: the task is the text of the last user turn; its domain is the client's
(`x-memcollab-domain` header or `metadata.domain`) or guessed from the text (`guess_domain`:
code markers -> "code", else "math"); it is labelled by the service's labeller if one is
configured (never a model call unless the operator configured one), else searched over its
domain (task-aware retrieval backs off to the domain); `Memory.search` retrieves the
requested model's constraints with usage counting. They go into ONE system message (the
agent's `<memory>` block) placed after the leading system/developer messages; no other
message is touched, and every field but `model` and the proxy's own `metadata` keys
(`memcollab`, `task_id`, `domain`, `attempt_id`) passes through.

A client-given attempt id (`x-memcollab-attempt-id` or `metadata.attempt_id`) makes a call
idempotent: the exchange is stored under that id, and a retry with the same id (after a
lost answer, a crash of either side) gets the stored answer back without a model call
(`replayed_completion`), so a retried call never doubles its attempt.

Memory status (the `x-memcollab-memory` response header): `applied` (records injected),
`none` (nothing found, or no user turn to search with), `gated` (the namespace's stored
utility gate withholds memory from this model in this domain), `skipped` (the client opted out:
`x-memcollab-memory: off` or `metadata.memcollab = "off"`), `error` (labelling or
retrieval failed or took longer than the memory timeout: the request goes on without
memory).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from memcollab.agent import memory_block
from memcollab.memory.guidance import UNLABELLED, Guidance
from memcollab.server.attempts import ID_PATTERN, Attempt
from memcollab.server.schemas import storable
from memcollab.tasks.task import Task, known_domain

log = logging.getLogger("memcollab.server.proxy")

MemoryStatus = Literal["applied", "none", "gated", "skipped", "error"]
OWN_METADATA = ("memcollab", "task_id", "domain", "attempt_id")
"""`metadata` keys the proxy reads and removes before forwarding."""
_CODE = re.compile(
    r"```|\bdef \w+\(|\bclass \w+[:(]|\bimport \w+|\bpython\b|\bfunction\b|\breturns?\b.*\blist\b"
    r"|\bimplement\b|\bwrite a (?:program|script|function)",
    re.IGNORECASE,
)
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$")
_ATTEMPT_ID = re.compile(ID_PATTERN)


class ProxyInputError(ValueError):
    """A request the proxy refuses with 400 (the message says why)."""


def guess_domain(text: str) -> str:
    """The domain of a task the client did not name: "code" if it looks like programming
    (code fences, def/class/import, "write a function", ...), else "math". A heuristic:
    clients that know the domain should send it."""
    return "code" if _CODE.search(text) else "math"


def message_text(content: Any) -> str:
    """The text of a message's content (a string, or the text parts of a list)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


@dataclass(frozen=True)
class ChatCall:
    """A validated chat request: the body, and what the proxy reads from it."""

    body: dict[str, Any]
    model: str
    stream: bool
    task: str
    task_id: str | None
    domain: str
    opted_out: bool
    attempt_id: str | None = None
    """The client's id for the exchange (idempotent retries); None: the service names it."""


def _switch(value: Any, where: str) -> bool:
    """True for "off"; "on" or absent is False; anything else is refused."""
    if value is None or value == "on":
        return False
    if value == "off":
        return True
    raise ProxyInputError(f"{where} must be 'on' or 'off', not {value!r}")


def parse_call(raw: bytes, headers: dict[str, str]) -> ChatCall:
    """Parse a chat request body; ProxyInputError(400) for anything malformed."""
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProxyInputError(f"the request body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ProxyInputError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ProxyInputError("'model' is required: the name of a fleet model (GET /v1/models)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ProxyInputError("'messages' is required: a non-empty list of messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ProxyInputError(f"messages[{i}] must be an object with a 'role'")
    stream = body.get("stream", False)
    if not isinstance(stream, bool | None):
        raise ProxyInputError("'stream' must be true or false")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise ProxyInputError("'metadata' must be an object")
    metadata = metadata or {}
    opted_out = _switch(headers.get("x-memcollab-memory"), "the header x-memcollab-memory")
    opted_out = _switch(metadata.get("memcollab"), "metadata.memcollab") or opted_out
    task_id = headers.get("x-memcollab-task-id") or metadata.get("task_id")
    if task_id is not None and (not isinstance(task_id, str) or not _TASK_ID.match(task_id)):
        raise ProxyInputError(
            "the task id (x-memcollab-task-id or metadata.task_id) must be 1-200 letters, "
            "digits, '.', '_', ':', '/' or '-'"
        )
    attempt_id = headers.get("x-memcollab-attempt-id") or metadata.get("attempt_id")
    if attempt_id is not None and (
        not isinstance(attempt_id, str) or not _ATTEMPT_ID.match(attempt_id)
    ):
        raise ProxyInputError(
            "the attempt id (x-memcollab-attempt-id or metadata.attempt_id) must be 1-128 "
            "letters, digits, '.', '_', ':' or '-'"
        )
    users = [m for m in messages if m.get("role") == "user"]
    task = message_text(users[-1].get("content")) if users else ""
    try:
        storable(task)
    except ValueError as exc:
        raise ProxyInputError(f"the last user message: {exc}") from None
    domain = headers.get("x-memcollab-domain") or metadata.get("domain")
    if domain is not None:
        try:
            known_domain(str(domain))
        except ValueError as exc:
            raise ProxyInputError(str(exc)) from None
    return ChatCall(
        body=body,
        model=model,
        stream=bool(stream),
        task=task,
        task_id=task_id,
        domain=str(domain) if domain is not None else guess_domain(task),
        opted_out=opted_out,
        attempt_id=attempt_id,
    )


def replayed_completion(attempt: Attempt) -> dict[str, Any]:
    """The stored answer of an attempt as a `chat.completion` object: what a retry with the
    attempt's id gets instead of a second model call (usage zero: nothing was generated)."""
    message: dict[str, Any] = {"role": "assistant", "content": attempt.answer or ""}
    tool_calls = attempt.metadata.get("tool_calls")
    if tool_calls:
        # Stored clipped at 2000 characters: a clipped list is left out.
        with contextlib.suppress(json.JSONDecodeError):
            message["tool_calls"] = json.loads(tool_calls)
    return {
        "id": attempt.response_id or f"chatcmpl-{attempt.id}",
        "object": "chat.completion",
        "created": int(attempt.created_at),
        "model": attempt.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": attempt.metadata.get("finish_reason", "stop"),
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


@dataclass(frozen=True)
class MemoryUse:
    """What memory did for one request."""

    status: MemoryStatus
    record_ids: tuple[str, ...] = ()
    guidance: tuple[Guidance, ...] = ()
    category: str = UNLABELLED
    subcategory: str = UNLABELLED
    label_source: str = "none"


def find_memory(ctx: Any, namespace: str, call: ChatCall) -> MemoryUse:
    """Retrieve the model's constraints (counting usage), the task labelled by the service's
    labeller unless the gate withholds memory from the model. Raises on a labeller or store
    failure; the caller turns that into status `error`."""
    if call.opted_out:
        return MemoryUse("skipped")
    if not call.task.strip():
        return MemoryUse("none")
    task = Task(id="proxy", domain=call.domain, prompt=call.task)
    found, source = ctx.search(
        task,
        namespace=namespace,
        model=call.model,
        p=ctx.settings.proxy_p,
        count_usage=True,
        utility=ctx.settings.proxy_utility,
    )
    category = found.category or UNLABELLED
    subcategory = found.subcategory or UNLABELLED
    if not found.guidance:
        gated = found.gate is not None and found.gate.verdict == "withheld"
        return MemoryUse(
            "gated" if gated else "none",
            category=category,
            subcategory=subcategory,
            label_source=source,
        )
    return MemoryUse(
        "applied",
        record_ids=tuple(dict.fromkeys(found.record_ids)),
        guidance=tuple(found.guidance),
        category=category,
        subcategory=subcategory,
        label_source=source,
    )


def forwarded_body(call: ChatCall, use: MemoryUse) -> dict[str, Any]:
    """The body sent upstream: the client's, with the memory system message inserted after
    the leading system/developer messages and the proxy's own metadata keys removed."""
    body = dict(call.body)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and any(k in metadata for k in OWN_METADATA):
        rest = {k: v for k, v in metadata.items() if k not in OWN_METADATA}
        if rest:
            body["metadata"] = rest
        else:
            del body["metadata"]
    if use.status == "applied":
        messages = list(body["messages"])
        at = 0
        while at < len(messages) and messages[at].get("role") in ("system", "developer"):
            at += 1
        messages.insert(at, {"role": "system", "content": memory_block(use.guidance)})
        body["messages"] = messages
    return body


@dataclass
class Transcript:
    """What came back: the response id, the first choice's text and tool calls. Fed whole
    (a JSON answer) or chunk by chunk (an SSE stream)."""

    response_id: str | None = None
    text: list[str] = field(default_factory=list)
    tool_calls: list[Any] = field(default_factory=list)
    finish_reason: str | None = None
    done: bool = False
    _pending: bytes = b""

    def read_json(self, raw: bytes) -> None:
        try:
            obj = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return
        if not isinstance(obj, dict):
            return
        self.response_id = _str_or_none(obj.get("id"))
        choice = _first_choice(obj)
        message = _dict(choice.get("message"))
        self.text = [message_text(message.get("content"))]
        self.tool_calls = list(message.get("tool_calls") or [])
        self.finish_reason = _str_or_none(choice.get("finish_reason"))
        self.done = True

    def feed(self, chunk: bytes) -> None:
        """Read the complete SSE lines of a chunk (the rest waits for the next one)."""
        data = self._pending + chunk
        lines = data.split(b"\n")
        self._pending = lines.pop()
        for line in lines:
            line = line.strip()
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                obj = json.loads(payload)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict):
                self._chunk(obj)

    def _chunk(self, obj: dict[str, Any]) -> None:
        if self.response_id is None:
            self.response_id = _str_or_none(obj.get("id"))
        choice = _first_choice(obj)
        delta = _dict(choice.get("delta"))
        content = delta.get("content")
        if isinstance(content, str):
            self.text.append(content)
        for call in delta.get("tool_calls") or []:
            self._merge_tool_call(call)
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])

    def _merge_tool_call(self, call: Any) -> None:
        if not isinstance(call, dict):
            return
        index = call.get("index", len(self.tool_calls))
        while len(self.tool_calls) <= index:
            self.tool_calls.append({"function": {"name": "", "arguments": ""}})
        slot = self.tool_calls[index]
        for key in ("id", "type"):
            if call.get(key):
                slot[key] = call[key]
        fn = call.get("function") or {}
        for key in ("name", "arguments"):
            if isinstance(fn.get(key), str):
                slot["function"][key] += fn[key]

    @property
    def answer(self) -> str:
        return "".join(self.text)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _first_choice(obj: dict[str, Any]) -> dict[str, Any]:
    choices = obj.get("choices")
    if isinstance(choices, list):
        for choice in choices:
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                return choice
    return {}


def attempt_metadata(call: ChatCall, use: MemoryUse, transcript: Transcript) -> dict[str, str]:
    """What the attempt keeps beside its answer: the memory status and label (feedback
    needs the bucket for baselines), the stream flag, the finish reason, tool calls."""
    meta = {
        "via": "proxy",
        "memory": use.status,
        "category": use.category,
        "subcategory": use.subcategory,
        "label_source": use.label_source,
        "stream": "true" if call.stream else "false",
    }
    if transcript.finish_reason:
        meta["finish_reason"] = transcript.finish_reason[:100]
    if transcript.tool_calls:
        meta["tool_calls"] = json.dumps(transcript.tool_calls, ensure_ascii=False)[:2000]
    return meta


def stored_messages(call: ChatCall) -> list[dict[str, Any]]:
    """The client's messages as sent (not the memory message), for the attempt."""
    return copy.deepcopy(call.body["messages"])
