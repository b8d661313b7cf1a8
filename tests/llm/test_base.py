from typing import Any

from memcollab.llm.base import ChatRequest, Completion, Decoding, Usage, system, user


def _request(**kwargs: Any) -> ChatRequest:
    return ChatRequest(messages=(system("be brief"), user("2+2?")), **kwargs)


def test_cache_key_is_stable_and_depends_on_everything() -> None:
    base = _request()
    assert base.cache_key("m") == _request().cache_key("m")
    others = {
        base.cache_key("other-model"),
        _request(sample_index=1).cache_key("m"),
        _request(decoding=Decoding(temperature=0.7)).cache_key("m"),
        _request(decoding=Decoding(stop=("\n",))).cache_key("m"),
        _request(decoding=Decoding(seed=None)).cache_key("m"),
        ChatRequest(messages=(user("2+2?"),)).cache_key("m"),
    }
    assert base.cache_key("m") not in others
    assert len(others) == 6


def test_effective_seed_offsets_by_sample_index() -> None:
    assert _request(sample_index=3).effective_seed() == 45
    assert _request(decoding=Decoding(seed=None), sample_index=3).effective_seed() is None


def test_records_round_trip_through_json() -> None:
    request = _request(decoding=Decoding(stop=("END",), max_tokens=7), sample_index=2)
    assert ChatRequest.model_validate_json(request.model_dump_json()) == request
    completion = Completion(
        text="4",
        finish_reason="stop",
        usage=Usage(prompt_tokens=3, completion_tokens=1),
        latency_s=0.5,
        model="m",
    )
    assert Completion.model_validate_json(completion.model_dump_json()) == completion
    assert completion.usage.total_tokens == 4
