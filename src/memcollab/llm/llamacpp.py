"""Embedded llama.cpp on a GGUF file, through llama-cpp-python.

Instruct models are prompted with the chat template stored in the GGUF. Base models (no
template) are prompted as plain completion inside the few-shot frame this package ships
(`frame.py`). Two ways to run a request:

* `engine = "batch"` (the default): the continuous-batching engine (`engine.py`) serves
  every concurrent request for the model, `batch_width` sequences per decode step. Prompts
  are rendered and tokenized exactly as llama-cpp-python's `create_chat_completion` /
  `create_completion` do, so the engine sees the same tokens.
* `engine = "simple"`: llama-cpp-python's high-level API, one request at a time per loaded
  model (the path this project used before the engine; kept for comparison).

A loaded model or engine is shared by every `LlamaCppModel` that names the same file and
settings.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from memcollab.errors import ContextOverflowError, ModelNotFoundError, ModelUnavailableError
from memcollab.llm.amx import guard_amx
from memcollab.llm.base import ChatRequest, Completion, Usage
from memcollab.llm.engine import BatchEngine, SamplingParams, quiet_llama_log
from memcollab.llm.frame import CompletionFrame, default_frame
from memcollab.llm.loading import reporting
from memcollab.llm.packaged import sha256_file

PromptFormat = Literal["auto", "chat", "completion"]

# Defaults of the batching engine. Packaged models carry the width measured for them
# (packaged.py, from benchmarks/engine_throughput.py); any other GGUF gets 8 unless its fleet
# entry sets `batch_width`. The prefix cache paid off on all three packaged models.
DEFAULT_BATCH_WIDTH = 8
DEFAULT_PREFIX_CACHE = True
DEFAULT_REPACK = True
# Map the GGUF file (llama.cpp's default). `mmap = false` reads it instead: the same
# outputs, and less resident memory where llama.cpp repacks weights (see engine.py).
DEFAULT_MMAP = True


@dataclass
class _Loaded:
    llama: Any
    lock: threading.Lock
    has_chat_template: bool


_LOADED: dict[tuple[str, int, int, bool], _Loaded] = {}
_LOADED_LOCK = threading.Lock()
_FILE_SHA: dict[tuple[str, int, int], str] = {}


def _amx_kernels_active() -> bool:
    try:
        return guard_amx().active
    except ImportError:  # no llama-cpp-python: nothing runs here, and nothing uses AMX
        return False


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


def load_llama(
    path: Path, n_ctx: int, n_threads: int, *, mmap: bool = True, name: str | None = None
) -> _Loaded:
    """Load (or reuse) a llama.cpp model; raises a UserError for a missing or bad file.

    A load is reported to `memcollab.llm.loading` listeners under `name` (else the file name).
    """
    key = (str(path.resolve()), n_ctx, n_threads, mmap)
    with _LOADED_LOCK:
        loaded = _LOADED.get(key)
        if loaded is not None:
            return loaded
        _require_file(path)
        try:
            from llama_cpp import Llama
        except ImportError:
            raise ModelUnavailableError(
                "llama-cpp-python is not installed", "pip install 'memcollab[local]'"
            ) from None
        quiet_llama_log()
        guard_amx()  # before any model loads: llama.cpp's AMX kernels crashed on a VM
        try:
            with reporting(name or path.name, path.stat().st_size):
                llama = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    seed=42,
                    use_mmap=mmap,
                    # Every request is prefilled from scratch (see complete), so a
                    # sliding-window model needs no full-size SWA cache; this also keeps
                    # llama.cpp from printing a warning about it on stderr.
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
    """Forget every loaded model and close every engine (requests in flight are cancelled)."""
    with _LOADED_LOCK:
        _LOADED.clear()
        engines = list(_ENGINES.values())
        _ENGINES.clear()
    for engine in engines:
        engine.close()


def file_identity(path: Path) -> str:
    """sha256 of a GGUF file, computed once per process for each (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_SHA:
        _FILE_SHA[key] = sha256_file(path)
    return _FILE_SHA[key]


EngineMode = Literal["batch", "simple"]
EngineKey = tuple[str, int, int, int, int, bool, bool]
_ENGINES: dict[EngineKey, BatchEngine] = {}


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise ModelNotFoundError(
            f"GGUF file not found: {path}",
            "check the path in the fleet file, or use a packaged model (memcollab models list)",
        )


def engine_key(
    path: Path,
    *,
    n_ctx: int,
    n_threads: int,
    width: int,
    prefix_slots: int,
    repack: bool,
    mmap: bool = True,
) -> EngineKey:
    """What identifies one running engine: models with equal keys share it."""
    return (str(path.resolve()), n_ctx, n_threads, width, prefix_slots, repack, mmap)


def get_engine(key: EngineKey, name: str | None = None) -> BatchEngine:
    """The running engine for `key` (started on first use, then shared).

    Starting one is reported to `memcollab.llm.loading` listeners under `name` (else the
    file name).
    """
    path, n_ctx, n_threads, width, prefix_slots, repack, mmap = key
    with _LOADED_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            _require_file(Path(path))
            with reporting(name or Path(path).name, Path(path).stat().st_size):
                engine = BatchEngine(
                    path,
                    width=width,
                    n_ctx=n_ctx,
                    n_threads=n_threads,
                    prefix_slots=prefix_slots,
                    repack=repack,
                    mmap=mmap,
                )
            _ENGINES[key] = engine
        return engine


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
        engine: EngineMode = "batch",
        batch_width: int = DEFAULT_BATCH_WIDTH,
        prefix_cache: bool = DEFAULT_PREFIX_CACHE,
        repack_weights: bool = DEFAULT_REPACK,
        mmap: bool = DEFAULT_MMAP,
    ) -> None:
        self.name = name
        self.path = Path(path).expanduser()
        self.n_ctx = n_ctx
        self.n_threads = n_threads or _default_threads()
        self.prompt_format = prompt_format
        self.frame = frame or default_frame()
        self.engine_mode = engine
        self.batch_width = max(1, batch_width)
        self.prefix_cache = prefix_cache
        self.repack_weights = repack_weights
        self.mmap = mmap
        self._sha256 = sha256
        self._chat_formatter: Any = None
        self._uses_chat: bool | None = None

    def _loaded(self) -> _Loaded:
        return load_llama(self.path, self.n_ctx, self.n_threads, mmap=self.mmap, name=self.name)

    @property
    def llama(self) -> Any:
        """The underlying `llama_cpp.Llama` object (loaded on first use)."""
        return self._loaded().llama

    def _engine_key(self) -> EngineKey:
        return engine_key(
            self.path,
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            width=self.batch_width,
            prefix_slots=self.batch_width if self.prefix_cache else 0,
            repack=self.repack_weights,
            mmap=self.mmap,
        )

    def engine(self) -> BatchEngine:
        """The batching engine serving this model (started on first use)."""
        return get_engine(self._engine_key(), self.name)

    def uses_chat_template(self) -> bool:
        """Whether requests go through the GGUF's chat template (else the completion frame)."""
        if self._uses_chat is None:  # fixed by the file: read once, not on every request
            if self.prompt_format != "auto":
                self._uses_chat = self.prompt_format == "chat"
            elif self.engine_mode == "batch":
                self._uses_chat = bool(self.engine().metadata("tokenizer.chat_template"))
            else:
                self._uses_chat = self._loaded().has_chat_template
        return self._uses_chat

    def identity(self) -> str:
        if self._sha256 is None:
            if not self.path.is_file():
                raise ModelNotFoundError(f"GGUF file not found: {self.path}")
            self._sha256 = file_identity(self.path)
        mode = "chat" if self.uses_chat_template() else f"frame-{self.frame.digest}"
        # Batched decoding uses other matrix kernels than the one-at-a-time path, and an
        # engine narrower than four rows cannot pad to the four-row kernel: outputs of these
        # may differ in a greedy token, so they are distinct identities in the call cache.
        kernels = ":batch" + ("" if self.repack_weights else "-norepack")
        if self.batch_width < 4:
            kernels += f"-w{self.batch_width}"
        kernels = kernels if self.engine_mode == "batch" else ""
        if self.repack_weights and _amx_kernels_active():  # other kernels, other numbers
            kernels += ":amx"
        return f"llamacpp:sha256:{self._sha256}:{mode}" + kernels

    def concurrency(self) -> tuple[str, int]:
        if self.engine_mode == "batch":
            # The engine decodes `batch_width` sequences per step; more would only queue. The
            # limit belongs to the engine, so models sharing an engine share the limit.
            return f"llamacpp:engine:{self._engine_key()}", self.batch_width
        # Every embedded model computes on the same CPU cores with all their threads; two
        # generating at once only thrash. One local generation at a time, machine-wide.
        return "llamacpp:local-cpu", 1

    def complete(self, request: ChatRequest) -> Completion:
        if self.engine_mode == "batch":
            return self._complete_batched(request)
        return self._complete_simple(request)

    def prompt_tokens(self, request: ChatRequest) -> tuple[list[int], tuple[str, ...]]:
        """The prompt's token ids and the stop strings, as llama-cpp-python would build them.

        Chat: the GGUF template through llama-cpp-python's Jinja2 formatter, tokenized with
        special tokens and no added BOS (the template writes it), stopping at the EOS text.
        Completion: BOS when the vocabulary asks for it, then the frame text.
        """
        engine = self.engine()
        stops = tuple(request.decoding.stop)
        if self.uses_chat_template():
            if self._chat_formatter is None:
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                self._chat_formatter = Jinja2ChatFormatter(
                    template=engine.metadata("tokenizer.chat_template") or "",
                    eos_token=engine.token_text(engine.eos_token),
                    bos_token=engine.token_text(engine.bos_token),
                    stop_token_ids=[engine.eos_token],
                )
            rendered = self._chat_formatter(messages=[m.model_dump() for m in request.messages])
            tokens = engine.tokenize(
                rendered.prompt, add_bos=not rendered.added_special, special=True
            )
            extra = rendered.stop if isinstance(rendered.stop, list) else [rendered.stop]
            return tokens, stops + tuple(s for s in extra if s)
        text = self.frame.render(request.messages)
        bos = [engine.bos_token] if engine.add_bos and engine.bos_token >= 0 else []
        tokens = bos + engine.tokenize(text, add_bos=False, special=True)
        return tokens, tuple(self.frame.stop) + stops

    def _complete_batched(self, request: ChatRequest) -> Completion:
        tokens, stops = self.prompt_tokens(request)
        params = request.decoding
        started = time.perf_counter()
        try:
            generation = self.engine().generate(
                tokens,
                SamplingParams(
                    temperature=params.temperature,
                    top_p=params.top_p,
                    max_tokens=params.max_tokens,
                    seed=request.effective_seed(),
                    stop=stops,
                ),
            )
        except ContextOverflowError as exc:
            raise ContextOverflowError(f"{self.name}: {exc.problem}", exc.fix) from None
        text = generation.text if self.uses_chat_template() else generation.text.lstrip(" ")
        return Completion(
            text=text,
            finish_reason=generation.finish_reason,
            usage=Usage(
                prompt_tokens=generation.prompt_tokens,
                completion_tokens=generation.completion_tokens,
            ),
            latency_s=time.perf_counter() - started,
            model=self.name,
        )

    def _complete_simple(self, request: ChatRequest) -> Completion:
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
