"""Embedded llama.cpp on a GGUF file, through llama-cpp-python.

Instruct models are prompted with the chat template stored in the GGUF. Base models (no
template) are prompted as plain completion inside the few-shot frame this package ships
(`frame.py`). A loaded model is kept and reused by every `LlamaCppModel` that names the same
file and settings; calls into one loaded model are serialised, since a llama.cpp context
serves one sequence at a time through this API.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from memcollab.errors import ContextOverflowError, ModelNotFoundError, ModelUnavailableError
from memcollab.llm.base import ChatRequest, Completion, Usage
from memcollab.llm.frame import CompletionFrame, default_frame
from memcollab.llm.packaged import sha256_file

PromptFormat = Literal["auto", "chat", "completion"]


@dataclass
class _Loaded:
    llama: Any
    lock: threading.Lock
    has_chat_template: bool


_LOADED: dict[tuple[str, int, int], _Loaded] = {}
_LOADED_LOCK = threading.Lock()
_FILE_SHA: dict[tuple[str, int, int], str] = {}


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


def load_llama(path: Path, n_ctx: int, n_threads: int) -> _Loaded:
    """Load (or reuse) a llama.cpp model; raises a UserError for a missing or bad file."""
    key = (str(path.resolve()), n_ctx, n_threads)
    with _LOADED_LOCK:
        loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        if not path.is_file():
            raise ModelNotFoundError(
                f"GGUF file not found: {path}",
                "check the path in the fleet file, or use a packaged model (memcollab models list)",
            )
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ModelUnavailableError(
                "llama-cpp-python is not installed", "pip install 'memcollab[local]'"
            ) from None
        # llama-cpp-python prints llama.cpp's log to stderr unless its logger is quietened;
        # the library never prints, so keep it to errors unless the user configured it.
        llama_logger = logging.getLogger("llama-cpp-python")
        if llama_logger.level == logging.NOTSET:
            llama_logger.setLevel(logging.ERROR)
        try:
            llama = Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                seed=42,
                # Every request is prefilled from scratch (see complete), so a sliding-window
                # model needs no full-size SWA cache; this also keeps llama.cpp from printing
                # a warning about it on stderr.
                swa_full=False,
                verbose=False,
            )
        except ValueError as exc:
            raise ModelUnavailableError(
                f"llama.cpp could not load {path}: {exc}", "is it a valid GGUF file?"
            ) from None
        template = llama.metadata.get("tokenizer.chat_template")
        loaded = _Loaded(llama=llama, lock=threading.Lock(), has_chat_template=bool(template))
        _LOADED[key] = loaded
        return loaded


def unload_all() -> None:
    """Forget every loaded model (they are freed once nothing else holds them)."""
    with _LOADED_LOCK:
        _LOADED.clear()


def file_identity(path: Path) -> str:
    """sha256 of a GGUF file, computed once per process for each (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA:
        _FILE_SHA[key] = sha256_file(path)
    return _FILE_SHA[key]


class LlamaCppModel:
    """A GGUF model run in-process by llama.cpp."""

    def __init__(
        self,
        name: str,
        path: str | Path,
        *,
        sha256: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        prompt_format: PromptFormat = "auto",
        frame: CompletionFrame | None = None,
    ) -> None:
        self.name = name
        self.path = Path(path).expanduser()
        self.n_ctx = n_ctx
        self.n_threads = n_threads or _default_threads()
        self.prompt_format = prompt_format
        self.frame = frame or default_frame()
        self._sha256 = sha256

    def _loaded(self) -> _Loaded:
        return load_llama(self.path, self.n_ctx, self.n_threads)

    @property
    def llama(self) -> Any:
        """The underlying `llama_cpp.Llama` object (loaded on first use)."""
        return self._loaded().llama

    def uses_chat_template(self) -> bool:
        """Whether requests go through the GGUF's chat template (else the completion frame)."""
        if self.prompt_format == "auto":
            return self._loaded().has_chat_template
        return self.prompt_format == "chat"

    def identity(self) -> str:
        if self._sha256 is None:
            if not self.path.is_file():
                raise ModelNotFoundError(f"GGUF file not found: {self.path}")
            self._sha256 = file_identity(self.path)
        mode = "chat" if self.uses_chat_template() else f"frame-{self.frame.digest}"
        return f"llamacpp:sha256:{self._sha256}:{mode}"

    def concurrency(self) -> tuple[str, int]:
        # Every embedded model computes on the same CPU cores with all their threads; two
        # generating at once only thrash. One local generation at a time, machine-wide in
        # this process (the batching engine of a later issue serves many sequences at once).
        return "llamacpp:local-cpu", 1

    def complete(self, request: ChatRequest) -> Completion:
        loaded = self._loaded()
        params = request.decoding
        kwargs: dict[str, Any] = {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "seed": request.effective_seed(),
        }
        started = time.perf_counter()
        with loaded.lock:
            # llama-cpp-python reuses the KV cache of the longest prefix shared with the
            # previous call; the suffix is then evaluated in other batch shapes, which can
            # change a greedy token. Prefill every request from scratch so an output depends
            # on the request alone (what the call cache assumes).
            loaded.llama.reset()
            try:
                if self.uses_chat_template():
                    response = loaded.llama.create_chat_completion(
                        messages=[m.model_dump() for m in request.messages],
                        stop=list(params.stop) or None,
                        **kwargs,
                    )
                    choice = response["choices"][0]
                    text = choice["message"]["content"] or ""
                else:
                    response = loaded.llama.create_completion(
                        prompt=self.frame.render(request.messages),
                        stop=list(self.frame.stop) + list(params.stop),
                        **kwargs,
                    )
                    choice = response["choices"][0]
                    text = choice["text"].lstrip(" ")
            except ValueError as exc:
                if "context window" in str(exc):
                    raise ContextOverflowError(
                        f"{self.name}: {exc}",
                        f"shorten the prompt or raise n_ctx (now {self.n_ctx})",
                    ) from None
                raise
        usage = response.get("usage") or {}
        return Completion(
            text=text,
            finish_reason=choice.get("finish_reason") or "stop",
            usage=Usage(
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
            ),
            latency_s=time.perf_counter() - started,
            model=self.name,
        )
