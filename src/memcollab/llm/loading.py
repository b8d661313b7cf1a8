"""Model-loading events: the library reports when a model starts and ends loading.

Loading a local model (reading its weights, allocating its KV cache) takes seconds, and
it happens lazily, at the model's first call. Whoever shows progress (the CLI) listens:

    with loading.listening(show):   # show(event) is called from the loading thread
        gateway.complete(model, request)

A listener that raises is logged and otherwise ignored: showing progress never fails a load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadEvent:
    """A model started loading (`seconds` is None) or ended (`seconds` it took)."""

    name: str
    size: int  # bytes of the weights file
    seconds: float | None = None
    error: str | None = None  # why it failed, when it did

    @property
    def done(self) -> bool:
        return self.seconds is not None


LoadListener = Callable[[LoadEvent], None]

_listeners: list[LoadListener] = []
_lock = threading.Lock()


def add_listener(listener: LoadListener) -> None:
    """Call `listener` for every load event from now on (any thread)."""
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: LoadListener) -> None:
    """Stop calling `listener` (a no-op when it was not added)."""
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


@contextmanager
def listening(listener: LoadListener) -> Iterator[None]:
    """`listener` hears load events inside the block."""
    add_listener(listener)
    try:
        yield
    finally:
        remove_listener(listener)


def emit(event: LoadEvent) -> None:
    """Tell every listener about `event`."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # noqa: BLE001 - a display fault must not fail the load
            log.exception("a model-loading listener failed")


@contextmanager
def reporting(name: str, size: int) -> Iterator[None]:
    """Emit a start event, run the load, then a done event with its duration (or error)."""
    emit(LoadEvent(name, size))
    started = time.perf_counter()
    try:
        yield
    except BaseException as exc:
        emit(LoadEvent(name, size, time.perf_counter() - started, error=str(exc) or repr(exc)))
        raise
    emit(LoadEvent(name, size, time.perf_counter() - started))
