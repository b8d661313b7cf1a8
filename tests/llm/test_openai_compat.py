"""The openai provider against a real HTTP server on 127.0.0.1, through the official SDK."""

import socket
from typing import Any

import pytest

from memcollab.errors import ConfigError, EndpointError
from memcollab.llm.base import ChatRequest, Decoding, system, user
from memcollab.llm.cache import CallCache, Gateway
from memcollab.llm.openai_compat import OpenAIModel
from memcollab.llm.scripted import ScriptedModel
from tests.support.openai_stub import OpenAIStubServer


def _echo() -> ScriptedModel:
    return ScriptedModel(lambda r: f"echo: {r.messages[-1].content}", name="backend")


def _ask(text: str = "ping", **decoding: Any) -> ChatRequest:
    return ChatRequest(messages=(system("s"), user(text)), decoding=Decoding(**decoding))


def test_completion_text_usage_and_parameters_cross_http() -> None:
    with OpenAIStubServer(_echo()) as server:
        model = OpenAIModel("remote", "stub-model", base_url=server.base_url, api_key="k")
        completion = model.complete(_ask("hello there", max_tokens=5, stop=("X",), seed=7))
        sent = server.requests[0]
    assert completion.text == "echo: hello there"
    assert completion.finish_reason == "stop"
    assert completion.usage.prompt_tokens == 3
    assert completion.usage.completion_tokens == 3
    assert completion.model == "remote"
    assert completion.latency_s > 0
    assert (sent["max_tokens"], sent["stop"], sent["seed"]) == (5, ["X"], 7)
    assert sent["messages"][0] == {"role": "system", "content": "s"}


def test_env_variables_are_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIStubServer(_echo(), api_key="secret") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "secret")
        model = OpenAIModel("remote", "stub-model")
        assert model.complete(_ask()).text == "echo: ping"
        assert model.base_url == server.base_url


def test_server_errors_are_retried_then_succeed() -> None:
    with OpenAIStubServer(_echo(), fail_first=2, fail_status=503) as server:
        model = OpenAIModel(
            "remote", "stub-model", base_url=server.base_url, api_key="k", max_retries=3
        )
        assert model.complete(_ask()).text == "echo: ping"
        assert len(server.requests) == 3


def test_rate_limit_exhausting_retries_is_a_clear_error() -> None:
    with OpenAIStubServer(_echo(), fail_first=10, fail_status=429) as server:
        model = OpenAIModel(
            "remote", "stub-model", base_url=server.base_url, api_key="k", max_retries=1
        )
        with pytest.raises(EndpointError, match="HTTP 429 after 1 retries"):
            model.complete(_ask())
        assert len(server.requests) == 2


def test_bad_api_key() -> None:
    with OpenAIStubServer(_echo(), api_key="right") as server:
        model = OpenAIModel("remote", "stub-model", base_url=server.base_url, api_key="wrong")
        with pytest.raises(EndpointError, match="refused the API key"):
            model.complete(_ask())


def test_unknown_model_on_server() -> None:
    with OpenAIStubServer(_echo()) as server:
        model = OpenAIModel("remote", "no-such-model", base_url=server.base_url, api_key="k")
        with pytest.raises(EndpointError, match="does not serve a model called 'no-such-model'"):
            model.complete(_ask())


def test_unreachable_endpoint() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        model = OpenAIModel(
            "remote",
            "m",
            base_url=f"http://127.0.0.1:{port}/v1",
            api_key="k",
            max_retries=0,
            timeout_s=5,
        )
        with pytest.raises(EndpointError, match="cannot reach"):
            model.complete(_ask())


def test_named_key_variable_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MY_KEY", raising=False)
    with pytest.raises(ConfigError, match="MY_KEY is not set"):
        OpenAIModel("remote", "m", base_url="http://127.0.0.1:1/v1", api_key_env="MY_KEY")


def test_hosted_api_without_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="no API key"):
        OpenAIModel("remote", "gpt-4o-mini")


def test_gateway_cache_avoids_second_http_call(tmp_path) -> None:
    with OpenAIStubServer(_echo()) as server:
        model = OpenAIModel("remote", "stub-model", base_url=server.base_url, api_key="k")
        gateway = Gateway(CallCache(tmp_path / "c.sqlite"))
        first = gateway.complete(model, _ask())
        second = Gateway(CallCache(tmp_path / "c.sqlite")).complete(model, _ask())
        assert len(server.requests) == 1
    assert second.cached and second.text == first.text
