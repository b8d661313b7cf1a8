"""Model-loading events: listeners, failures, and the llama.cpp layer's reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from memcollab.llm import llamacpp, loading
from memcollab.llm.loading import LoadEvent


def test_a_load_is_reported_when_it_starts_and_when_it_ends() -> None:
    seen: list[LoadEvent] = []
    with loading.listening(seen.append), loading.reporting("m", 123):
        assert [e.done for e in seen] == [False]  # the start is heard before the work
    assert [(e.name, e.size, e.done, e.error) for e in seen] == [
        ("m", 123, False, None),
        ("m", 123, True, None),
    ]
    assert seen[1].seconds is not None and seen[1].seconds >= 0


def test_a_failed_load_is_reported_and_still_raises() -> None:
    seen: list[LoadEvent] = []
    with (
        loading.listening(seen.append),
        pytest.raises(ValueError, match="bad file"),
        loading.reporting("m", 1),
    ):
        raise ValueError("bad file")
    assert seen[-1].done and seen[-1].error == "bad file"


def test_a_listener_that_fails_does_not_fail_the_load() -> None:
    def broken(event: LoadEvent) -> None:
        raise RuntimeError("display gone")

    seen: list[LoadEvent] = []
    with loading.listening(broken), loading.listening(seen.append), loading.reporting("m", 1):
        pass
    assert len(seen) == 2


def test_a_listener_hears_nothing_after_its_block() -> None:
    seen: list[LoadEvent] = []
    with loading.listening(seen.append):
        pass
    loading.emit(LoadEvent("m", 1))
    assert seen == []


class _FakeEngine:
    def __init__(self, path: str, **kwargs: Any) -> None:
        self.path, self.kwargs = path, kwargs

    def close(self) -> None:
        pass


def test_starting_an_engine_is_reported_under_the_model_name_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / "w.gguf"
    gguf.write_bytes(b"x" * 1000)
    monkeypatch.setattr(llamacpp, "BatchEngine", _FakeEngine)
    model = llamacpp.LlamaCppModel("my-model", gguf, n_threads=1, batch_width=4, mmap=False)
    seen: list[LoadEvent] = []
    try:
        with loading.listening(seen.append):
            engine = model.engine()
            assert model.engine() is engine  # shared: loaded once, reported once
    finally:
        llamacpp.unload_all()
    assert [(e.name, e.size, e.done) for e in seen] == [
        ("my-model", 1000, False),
        ("my-model", 1000, True),
    ]
    assert isinstance(engine, _FakeEngine)
    assert engine.kwargs["mmap"] is False
    assert engine.kwargs["width"] == 4


def test_the_mmap_setting_separates_engines_but_not_identities(tmp_path: Path) -> None:
    gguf = tmp_path / "w.gguf"
    gguf.write_bytes(b"x")
    mapped = llamacpp.LlamaCppModel("a", gguf, sha256="0" * 64, prompt_format="chat")
    read = llamacpp.LlamaCppModel("a", gguf, sha256="0" * 64, prompt_format="chat", mmap=False)
    assert mapped._engine_key() != read._engine_key()
    # Same tensors and kernels, so the same answers: one call cache serves both.
    assert mapped.identity() == read.identity()
