"""Where memcollab keeps things on disk. Every location can be overridden by an env variable."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir


def cache_root() -> Path:
    """The root of memcollab's caches: MEMCOLLAB_CACHE_DIR, else the XDG user cache dir."""
    env = os.environ.get("MEMCOLLAB_CACHE_DIR")
    return Path(env).expanduser() if env else Path(user_cache_dir("memcollab"))


def models_dir() -> Path:
    """Where packaged GGUF files are assembled: MEMCOLLAB_MODELS_DIR, else <cache root>/models."""
    env = os.environ.get("MEMCOLLAB_MODELS_DIR")
    return Path(env).expanduser() if env else cache_root() / "models"


def default_data_dir() -> Path:
    """Where `memcollab data get` puts the benchmark files when no folder is named, and where
    the loaders look last: <XDG user data dir>/memcollab/data (~/.local/share/memcollab/data).
    """
    return Path(user_data_dir("memcollab")) / "data"


def call_cache_path() -> Path:
    """The default SQLite file of the model-call cache."""
    return cache_root() / "calls.sqlite"


def default_memory() -> str:
    """The memory `serve` and `keys` use without --memory: MEMCOLLAB_MEMORY (a path or URL),
    else memory.sqlite in the user data dir (e.g. ~/.local/share/memcollab)."""
    env = os.environ.get("MEMCOLLAB_MEMORY")
    return env if env else str(Path(user_data_dir("memcollab")) / "memory.sqlite")
