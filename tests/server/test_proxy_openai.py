"""The proxy as agents use it: the official `openai` client (sync, async, streaming, strict
response validation, raw responses for the headers) against the service served by uvicorn
on 127.0.0.1, forwarding to a stub OpenAI-compatible upstream (uvicorn too) and to an
in-process scripted model. Also runs the README's example."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

openai = pytest.importorskip("openai")

from memcollab.llm.fleet import Fleet, ModelSpec  # noqa: E402
from memcollab.server.app import create_app  # noqa: E402
from memcollab.server.context import Settings  # noqa: E402
from tests.server.conftest import Service, Storage  # noqa: E402
from tests.server.proxy_fixtures import MATH, Stub, proxy_service  # noqa: E402
from tests.support.stub_upstream import serve  # noqa: E402

SIMILAR = "A shop sells apples at 2 for $1. How much do 10 apples cost?"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression.",
            "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
        },
    }
]


@dataclass
class Proxy:
    svc: Service
    url: str  # .../v1
    secret: str

    def client(self, **kw: Any) -> Any:
        return openai.OpenAI(
            base_url=self.url, api_key=self.secret, _strict_response_validation=True, **kw
        )

    def aclient(self, **kw: Any) -> Any:
        return openai.AsyncOpenAI(
            base_url=self.url, api_key=self.secret, _strict_response_validation=True, **kw
        )


def _serve(svc: Service) -> Iterator[Proxy]:
    secret = svc.context.keys.create("a", "write")[1]
    with serve(create_app(svc.context)) as base:
        yield Proxy(svc, base + "/v1", secret)


@pytest.fixture
def proxy(storage: Storage, stub: Stub) -> Iterator[Proxy]:
    svc = proxy_service(storage, stub, Settings(upstream_timeout_s=1.0))
    svc.add("a", SIMILAR)
    yield from _serve(svc)


def _user(text: str = MATH) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def test_sync_client_with_strict_validation_and_headers(proxy: Proxy, stub: Stub) -> None:
    client = proxy.client()
    answer = client.chat.completions.create(
        model="stubbed", messages=_user(), temperature=0.2, max_tokens=16
    )
    assert answer.choices[0].message.content == "stub says hi"
    assert stub.state.requests[-1]["messages"][0]["content"].startswith("<memory>")
    raw = client.chat.completions.with_raw_response.create(
        model="stubbed",
        messages=_user(),
        extra_headers={"x-memcollab-task-id": "sdk-task"},
    )
    assert raw.headers["x-memcollab-memory"] == "applied"
    rid = raw.headers["x-memcollab-records"]
    parsed = raw.parse()
    attempt = proxy.svc.context.attempts.get("a", raw.headers["x-memcollab-attempt"])
    assert attempt.response_id == parsed.id and attempt.task_id == "sdk-task"
    assert attempt.injected_ids == (rid,)
    off = client.chat.completions.with_raw_response.create(
        model="stubbed", messages=_user(), metadata={"memcollab": "off"}
    )
    assert off.headers["x-memcollab-memory"] == "skipped"
    assert [m.id for m in client.models.list()] == ["stubbed", "local", "down"]


def test_streaming_passes_the_chunks_through(proxy: Proxy, stub: Stub) -> None:
    client = proxy.client()
    with client.chat.completions.with_streaming_response.create(
        model="stubbed", messages=_user(), stream=True
    ) as response:
        assert response.headers["x-memcollab-memory"] == "applied"
        attempt_id = response.headers["x-memcollab-attempt"]
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line[6:]) for line in lines[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == "stub says hi"
    # The SDK's own stream parsing, typed chunks.
    stream = client.chat.completions.create(model="stubbed", messages=_user(), stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "stub says hi"
    attempt = proxy.svc.context.attempts.get("a", attempt_id)
    assert attempt.answer == "stub says hi" and attempt.response_id == chunks[0]["id"]
    assert attempt.metadata["stream"] == "true"


def test_an_in_process_model_through_the_sdk(proxy: Proxy) -> None:
    client = proxy.client()
    answer = client.chat.completions.create(model="local", messages=_user(), n=2, seed=3)
    assert [c.message.content for c in answer.choices] == ["The answer is 8."] * 2
    assert answer.object == "chat.completion" and answer.usage is not None
    stream = client.chat.completions.create(
        model="local", messages=_user(), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "The answer is 8."
    )
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
    with pytest.raises(openai.BadRequestError, match="cannot call tools"):
        client.chat.completions.create(model="local", messages=_user(), tools=TOOLS)


def test_async_client(proxy: Proxy) -> None:
    async def run() -> tuple[str, str, str]:
        async with proxy.aclient() as client:
            raw = await client.chat.completions.with_raw_response.create(
                model="stubbed", messages=_user()
            )
            answer = raw.parse()
            stream = await client.chat.completions.create(
                model="local", messages=_user(), stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return raw.headers["x-memcollab-memory"], answer.choices[0].message.content, text

    status, content, streamed = asyncio.run(run())
    assert (status, content, streamed) == ("applied", "stub says hi", "The answer is 8.")
    assert proxy.svc.context.attempts.counts("a")["by_model"].keys() == {"stubbed", "local"}


@pytest.mark.parametrize("stream", [False, True])
def test_a_tool_call_conversation_passes_through_unchanged(
    proxy: Proxy, stub: Stub, stream: bool
) -> None:
    client = proxy.client()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Use the calculator."},
        {"role": "user", "content": "What is 2 + 2? Use the tool."},
    ]
    if stream:
        chunks = list(
            client.chat.completions.create(
                model="stubbed", messages=messages, tools=TOOLS, tool_choice="auto", stream=True
            )
        )
        calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices]
        call = next(c for c in calls if c)[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    else:
        first = client.chat.completions.create(
            model="stubbed", messages=messages, tools=TOOLS, tool_choice="auto"
        )
        assert first.choices[0].finish_reason == "tool_calls"
        tool_call = first.choices[0].message.tool_calls[0]
        call_id, name, arguments = (
            tool_call.id,
            tool_call.function.name,
            tool_call.function.arguments,
        )
    sent = stub.state.requests[-1]
    assert sent["tools"] == TOOLS and sent["tool_choice"] == "auto"
    assert name == "calculator"
    conversation = [
        *messages,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": "4"},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="stubbed", messages=conversation, tools=TOOLS
    )
    assert raw.parse().choices[0].message.content == "stub says hi"
    sent = stub.state.requests[-1]
    # The memory message sits after the system message; every other message is as sent.
    assert sent["messages"][0] == conversation[0]
    assert sent["messages"][1]["role"] == "system"
    assert sent["messages"][1]["content"].startswith("<memory>")
    assert sent["messages"][2:] == conversation[1:]
    # The attempt of the tool-call turn keeps the call.
    tool_turn = proxy.svc.context.attempts.list("a")[0][0]
    assert json.loads(tool_turn.metadata["tool_calls"])[0]["function"]["name"] == "calculator"


def test_errors_through_the_sdk(proxy: Proxy, stub: Stub) -> None:
    client = proxy.client(max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9", messages=_user())
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.APIStatusError) as down:
        client.chat.completions.create(model="down", messages=_user())
    assert down.value.status_code == 502
    stub.state.delay_s = 3.0
    with pytest.raises(openai.APIStatusError) as slow:
        client.chat.completions.create(model="stubbed", messages=_user(), stream=True)
    assert slow.value.status_code == 504
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=proxy.url, api_key="wrong", max_retries=0).models.list()
    assert proxy.svc.context.attempts.counts("a")["total"] == 0


def test_feedback_after_an_sdk_call(proxy: Proxy) -> None:
    answer = proxy.client().chat.completions.create(model="stubbed", messages=_user())
    r = httpx.post(
        proxy.url + "/feedback",
        json={"response_id": answer.id, "verdict": "correct"},
        headers={"Authorization": f"Bearer {proxy.secret}"},
    )
    assert r.status_code == 200 and r.json()["outcomes"] == 1
    (rid,) = r.json()["attempt"]["injected_ids"]
    assert proxy.svc.context.memory.usage(rid)["models"]["stubbed"]["helped"] == 1


def _readme_example() -> str:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Serve memory to your agents", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    (block,) = [b for b in blocks if "OpenAI()" in b]
    return block


def test_the_readme_example_runs(
    storage: Storage, stub: Stub, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    svc = proxy_service(storage, stub)
    # The README names a packaged model; here a scripted model answers under its name.
    svc.context.fleet = Fleet(
        [ModelSpec(name="qwen2.5-coder-0.5b", provider="scripted", responses=["$8"])]
    )
    svc.add("a", SIMILAR)
    for proxy in _serve(svc):
        monkeypatch.setenv("OPENAI_BASE_URL", proxy.url)
        monkeypatch.setenv("OPENAI_API_KEY", proxy.secret)
        exec(compile(_readme_example(), "README.md", "exec"), {})  # noqa: S102
    out = capsys.readouterr().out.split()
    assert out[0] == "applied" and out[-1] == "$8"
