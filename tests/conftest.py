"""Shared fixtures. Tests never touch the user's call cache; live tests use real weights."""

from __future__ import annotations

import importlib.util
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from memcollab.paths import models_dir

# Resolve the real models directory before any test redirects the cache root, so live
# tests reuse the assembled weights instead of assembling them again per run.
os.environ.setdefault("MEMCOLLAB_MODELS_DIR", str(models_dir()))


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    monkeypatch.setenv("MEMCOLLAB_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    yield


def live_requirement(reason: str) -> None:
    """Skip a live test when the local stack is missing, or fail if MEMCOLLAB_REQUIRE_LIVE=1."""
    if os.environ.get("MEMCOLLAB_REQUIRE_LIVE") == "1":
        pytest.fail(f"live test required but unavailable: {reason}")
    pytest.skip(reason)


def packaged_path(name: str) -> Path:
    """The verified GGUF of a packaged model (assembled on first use), or skip / fail the
    live test that needs it when the local stack is missing."""
    from memcollab.errors import ModelUnavailableError
    from memcollab.llm import packaged

    if importlib.util.find_spec("llama_cpp") is None:
        live_requirement("llama-cpp-python is not installed (pip install 'memcollab[local]')")
    try:
        return packaged.ensure_ready(packaged.get(name))
    except ModelUnavailableError as exc:
        live_requirement(str(exc))
        raise


@pytest.fixture(scope="session")
def gemma_path() -> Path:
    """The verified Gemma 3 270M GGUF (assembled on first use)."""
    return packaged_path("gemma3-270m")


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM to pytest (e.g. `timeout 600 pytest ...`) stops it as Ctrl-C does, so tests
    that started processes can end them (tests/test_readme_use_path.py kills its session);
    the default action would end pytest at once and leave them running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
