"""The proxy with real models, through the official openai client: the packaged Gemma 3 270M
served in the service's process, and the same weights behind llama-cpp-python's own
OpenAI-compatible server (`python -m llama_cpp.server`, a server nobody here wrote; started
through memcollab.llm.llama_server, which only removes llama.cpp's AMX kernels first, as
memcollab does for its own models) as a provider "openai" upstream, with a tool-call
conversation. Tiny generations (max_tokens 8)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from memcollab.llm.fleet import Fleet, ModelSpec
from memcollab.server.app import create_app
from memcollab.server.context import Settings
from tests.conftest import live_requirement
from tests.server.conftest import Storage, service_for
from tests.support.stub_upstream import serve

openai = pytest.importorskip("openai")
pytestmark = pytest.mark.live

SIMILAR = "A shop sells apples at 2 for $1. How much do 10 apples cost?"
MATH = "A shop sells pens at 3 for $2. How much do 12 pens cost?"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(gemma_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's OpenAI-compatible server on Gemma 3 270M (chatml template)."""
    if importlib.util.find_spec("starlette_context") is None:
        live_requirement("llama_cpp.server needs starlette-context (pip install 'memcollab[dev]')")
    port = _free_port()
    # A file, not a pipe: llama.cpp logs a lot, and a full pipe would stall the server.
    log = tmp_path_factory.mktemp("llama-server") / "stderr.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memcollab.llm.llama_server",  # llama_cpp.server, AMX guarded
            "--model",
            str(gemma_path),
            "--model_alias",
            "gemma-remote",
            "--chat_format",
            "chatml",
            "--n_ctx",
            "1024",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                err = log.read_text(errors="replace")[-2000:]
                pytest.fail(f"llama_cpp.server did not start: {err}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def proxy(storage: Storage, gemma_path: Path, llama_server: str) -> Iterator[tuple[Any, Any]]:
    svc = service_for(storage.new("sqlite", Settings(memory_timeout_s=30.0)))
    svc.context.fleet = Fleet(
        [
            ModelSpec(name="gemma3-270m", provider="llamacpp", packaged="gemma3-270m"),
            ModelSpec(
                name="gemma-remote", provider="openai", model="gemma-remote", base_url=llama_server
            ),
        ]
    )
    svc.add("a", SIMILAR)
    secret = svc.context.keys.create("a", "write")[1]
    with serve(create_app(svc.context)) as base:
        client = openai.OpenAI(
            base_url=base + "/v1", api_key=secret, _strict_response_validation=True
        )
        yield svc, client


@pytest.mark.parametrize("model", ["gemma3-270m", "gemma-remote"])
def test_real_models_answer_through_memory(proxy: tuple[Any, Any], model: str) -> None:
    svc, client = proxy
    messages = [{"role": "user", "content": MATH}]
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=8, temperature=0
    )
    answer = raw.parse()
    assert raw.headers["x-memcollab-memory"] == "applied"
    assert isinstance(answer.choices[0].message.content, str)
    assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 8
    attempt = svc.context.attempts.get("a", raw.headers["x-memcollab-attempt"])
    assert attempt.answer == answer.choices[0].message.content and attempt.model == model
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=8, temperature=0, stream=True
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == answer.choices[0].message.content  # greedy: the same text


def test_a_tool_call_conversation_with_a_real_server(proxy: tuple[Any, Any]) -> None:
    svc, client = proxy
    tools = [
        {
            "type": "function",
            "function": {"name": "calculator", "parameters": {"type": "object"}},
        }
    ]
    messages = [
        {"role": "system", "content": "Use the calculator."},
        {"role": "user", "content": MATH},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"e": "12 / 3 * 2"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "8"},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="gemma-remote", messages=messages, tools=tools, max_tokens=8
    )
    assert raw.status_code == 200 and raw.headers["x-memcollab-memory"] == "applied"
    assert isinstance(raw.parse().choices[0].message.content, str)
    with pytest.raises(openai.BadRequestError, match="cannot call tools"):
        client.chat.completions.create(
            model="gemma3-270m", messages=messages[:2], tools=tools, max_tokens=8
        )
    stored = svc.context.attempts.get("a", raw.headers["x-memcollab-attempt"])
    assert stored.messages == messages
