"""A tiny OpenAI-compatible upstream (FastAPI) that records what it received, and a helper
that serves any ASGI app with uvicorn on 127.0.0.1 from a background thread.

The stub answers POST /v1/chat/completions: with a tool call when the request offers tools
and the conversation has no tool result yet, else with `reply` (default: "stub says hi"),
as JSON or as SSE chunks (two content pieces) when `stream` is true. Each answer has its
own id (unless `fixed_id`). `delay_s` delays every answer (timeouts); `status` makes it
answer that error.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


@dataclass
class StubState:
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    reply: str = "stub says hi"
    delay_s: float = 0.0
    status: int = 200
    fixed_id: str | None = None


def stub_app(state: StubState) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "t"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await request.json()
        state.requests.append(body)
        state.headers.append(dict(request.headers))
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        if state.status != 200:
            return JSONResponse(
                {"error": {"message": "stub failure", "type": "server_error", "code": None}},
                status_code=state.status,
            )
        rid = state.fixed_id or f"chatcmpl-{uuid.uuid4().hex[:16]}"
        created = int(time.time())
        has_result = any(m.get("role") == "tool" for m in body["messages"])
        if body.get("tools") and not has_result:
            fn = body["tools"][0]["function"]["name"]
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": fn, "arguments": json.dumps({"x": 2})},
                    }
                ],
            }
            finish = "tool_calls"
        else:
            message, finish = {"role": "assistant", "content": state.reply}, "stop"
        usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
        if not body.get("stream"):
            return {
                "id": rid,
                "object": "chat.completion",
                "created": created,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                ],
                "usage": usage,
            }

        async def events() -> AsyncIterator[bytes]:
            head = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": body["model"],
            }
            content = message["content"] or ""
            pieces: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
            if message.get("tool_calls"):
                call = message["tool_calls"][0]
                pieces.append({"tool_calls": [{"index": 0, **call}]})
            else:
                half = len(content) // 2
                pieces += [{"content": content[:half]}, {"content": content[half:]}]
            for delta in pieces:
                chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            last = {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
            yield f"data: {json.dumps(last)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base
    URL (http://127.0.0.1:PORT)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
