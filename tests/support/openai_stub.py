"""A tiny OpenAI-compatible HTTP server around any memcollab `Model`, for tests.

Serves POST /v1/chat/completions and GET /v1/models on 127.0.0.1 from a background
thread. It can demand an API key and fail the first N requests with a chosen status,
so tests exercise the real openai SDK's auth errors and retries over real HTTP.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from memcollab.llm.base import ChatRequest, Decoding, Message, Model


class OpenAIStubServer:
    """Context manager: `with OpenAIStubServer(model) as server: server.base_url`."""

    def __init__(
        self,
        model: Model,
        *,
        served_name: str = "stub-model",
        api_key: str | None = None,
        fail_first: int = 0,
        fail_status: int = 500,
    ) -> None:
        self.model = model
        self.served_name = served_name
        self.api_key = api_key
        self.fail_remaining = fail_first
        self.fail_status = fail_status
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_port}/v1"

    def __enter__(self) -> OpenAIStubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _authorised(self) -> bool:
                if server.api_key is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {server.api_key}":
                    return True
                self._send(401, {"error": {"message": "Incorrect API key", "type": "auth"}})
                return False

            def do_GET(self) -> None:
                if not self._authorised():
                    return
                if self.path.rstrip("/") == "/v1/models":
                    self._send(
                        200,
                        {
                            "object": "list",
                            "data": [
                                {"id": server.served_name, "object": "model", "owned_by": "test"}
                            ],
                        },
                    )
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server._lock:
                    server.requests.append(body)
                    failing = server.fail_remaining > 0
                    if failing:
                        server.fail_remaining -= 1
                if not self._authorised():
                    return
                if failing:
                    self._send(server.fail_status, {"error": {"message": "injected failure"}})
                    return
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": "not found"}})
                    return
                if body.get("model") != server.served_name:
                    self._send(
                        404,
                        {
                            "error": {
                                "message": f"model {body.get('model')} not found",
                                "code": "model_not_found",
                            }
                        },
                    )
                    return
                request = ChatRequest(
                    messages=tuple(Message(**m) for m in body["messages"]),
                    decoding=Decoding(
                        temperature=body.get("temperature", 0.0),
                        top_p=body.get("top_p", 1.0),
                        max_tokens=body.get("max_tokens", 512),
                        stop=tuple(body.get("stop") or ()),
                        seed=body.get("seed"),
                    ),
                )
                completion = server.model.complete(request)
                self._send(
                    200,
                    {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": server.served_name,
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": completion.text},
                                "finish_reason": completion.finish_reason,
                            }
                        ],
                        "usage": {
                            "prompt_tokens": completion.usage.prompt_tokens,
                            "completion_tokens": completion.usage.completion_tokens,
                            "total_tokens": completion.usage.total_tokens,
                        },
                    },
                )

        return Handler
