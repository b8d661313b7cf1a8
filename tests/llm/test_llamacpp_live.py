"""Live tests: Gemma 3 270M really loaded through llama.cpp (run in CI)."""

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from memcollab.errors import ContextOverflowError, ModelNotFoundError, ModelUnavailableError
from memcollab.llm.base import ChatRequest, Completion, Decoding, user
from memcollab.llm.cache import CallCache, Gateway
from memcollab.llm.llamacpp import LlamaCppModel
from memcollab.llm.openai_compat import OpenAIModel
from tests.conftest import live_requirement
from tests.support.openai_stub import OpenAIStubServer

pytestmark = pytest.mark.live

GEMMA_SHA = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


@pytest.fixture(scope="module")
def gemma(gemma_path: Path) -> LlamaCppModel:
    return LlamaCppModel("gemma3-270m", gemma_path, sha256=GEMMA_SHA, n_ctx=1024)


def _ask(text: str, max_tokens: int = 12, **decoding: Any) -> ChatRequest:
    return ChatRequest(messages=(user(text),), decoding=Decoding(max_tokens=max_tokens, **decoding))


def _complete_from_scratch(
    gemma: LlamaCppModel, request: ChatRequest, via: OpenAIModel | None = None
) -> Completion:
    """A completion from an empty prefix cache (why: `_generate_from_scratch` in
    test_engine_live.py), directly or through `via`."""
    gemma.engine().clear_prefix_cache()
    return (via or gemma).complete(request)


def test_generates_tokens_in_the_completion_frame(gemma: LlamaCppModel) -> None:
    assert not gemma.uses_chat_template()  # a base model: no template in the GGUF
    completion = gemma.complete(_ask("What is 3 + 4?"))
    assert completion.usage.completion_tokens > 0
    assert completion.usage.prompt_tokens > 50  # preamble and examples of the frame
    assert completion.finish_reason in {"stop", "length"}
    assert completion.text.strip()
    assert "User:" not in completion.text  # the frame's stop strings end the turn


def test_greedy_is_deterministic_and_max_tokens_holds(gemma: LlamaCppModel) -> None:
    first = _complete_from_scratch(gemma, _ask("Name a colour.", max_tokens=5))
    second = _complete_from_scratch(gemma, _ask("Name a colour.", max_tokens=5))
    assert first.text == second.text
    assert first.usage.completion_tokens <= 5


def test_identity_is_the_weights_sha_and_the_frame(gemma: LlamaCppModel) -> None:
    assert gemma.identity().startswith(f"llamacpp:sha256:{GEMMA_SHA}:frame-")
    # Without a given sha256 the file is hashed: the same identity.
    unhashed = LlamaCppModel("g", gemma.path, n_ctx=1024)
    assert unhashed.identity() == gemma.identity()
    assert unhashed.llama is gemma.llama  # the loaded model is reused, not reloaded


def test_gateway_caches_real_generations(gemma: LlamaCppModel, tmp_path: Path) -> None:
    gateway = Gateway(CallCache(tmp_path / "c.sqlite"))
    live = gateway.complete(gemma, _ask("Say hello."))
    again = Gateway(CallCache(tmp_path / "c.sqlite")).complete(gemma, _ask("Say hello."))
    assert again.cached and again.text == live.text
    assert gateway.stats()["gemma3-270m"].completion_tokens == live.usage.completion_tokens


def test_prompt_longer_than_context_is_a_clear_error(gemma: LlamaCppModel) -> None:
    with pytest.raises(ContextOverflowError, match="raise n_ctx"):
        gemma.complete(_ask("word " * 2000))
    assert gemma.complete(_ask("Still alive?", max_tokens=3)).usage.completion_tokens > 0


def test_served_over_http_and_queried_with_the_openai_provider(gemma: LlamaCppModel) -> None:
    direct = _complete_from_scratch(gemma, _ask("What is 2 + 2?"))
    with OpenAIStubServer(gemma, served_name="gemma") as server:
        remote = OpenAIModel("remote-gemma", "gemma", base_url=server.base_url, api_key="k")
        over_http = _complete_from_scratch(gemma, _ask("What is 2 + 2?"), via=remote)
    assert over_http.text == direct.text
    assert over_http.usage == direct.usage


def test_missing_and_invalid_gguf(tmp_path: Path) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        live_requirement("llama-cpp-python is not installed (pip install 'memcollab[local]')")
    with pytest.raises(ModelNotFoundError, match="GGUF file not found"):
        LlamaCppModel("x", tmp_path / "nope.gguf").complete(_ask("hi"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelUnavailableError, match="could not load"):
        LlamaCppModel("x", junk).complete(_ask("hi"))


def test_registry_prompt_mode_matches_the_gguf_and_needs_no_load(gemma: LlamaCppModel) -> None:
    from memcollab.llm import llamacpp, packaged
    from memcollab.llm.fleet import Fleet

    assert packaged.get("gemma3-270m").chat is gemma.uses_chat_template()
    fleet_model = Fleet.default().model("gemma3-270m")
    assert isinstance(fleet_model, LlamaCppModel)
    loaded_before = set(llamacpp._LOADED)
    assert fleet_model.identity() == gemma.identity()  # same weights, same frame
    assert set(llamacpp._LOADED) == loaded_before  # identity did not load the weights
