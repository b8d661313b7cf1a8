"""Continuous batching for one GGUF model, on llama.cpp's low-level API.

Why our own loop: llama-cpp-python's `create_chat_completion` decodes one sequence at a
time and spends much of each step in Python (it re-detokenizes the whole output per token).
Decoding several sequences in one `llama_decode` call shares each read of the weights, which
on a CPU is what bounds generation. llama-cpp-python ships the bindings but no batching
server we could call in-process, so this module drives the bindings directly (no C++ of our
own).

How it works:
* One context per model with `n_seq_max = width + prefix_slots` sequences, each in its own
  KV stream (`kv_unified = false`), so every sequence's cells start at cell 0 of its stream
  exactly as in the unbatched path.
* Requests join and leave the running batch as they arrive and finish. A step prefills at
  most one chunk of one new prompt (alone, in the chunk shapes llama-cpp-python uses) and
  then decodes one token for every running sequence in one batch.
* Each request has its own sampler chain (greedy, or llama-cpp-python's default chain:
  top-k 40, top-p, min-p 0.05, temperature, seeded draw), stop strings, max_tokens.
* Prefix cache (optional): a finished sequence's KV stays in its stream, keyed by the tokens
  it holds; a new prompt that shares a long enough token prefix copies that stream
  (`llama_memory_seq_cp`) and prefills only the rest. Entries are evicted least recently
  used. Models with sliding-window attention get a full-size SWA cache when it is on, since
  a trimmed SWA cache cannot serve an arbitrary prefix.
* Every `llama_decode` of every engine in the process runs on one scheduler thread, round
  robin, so two models never fight over the CPU cores.
"""

from __future__ import annotations

import ctypes
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, InvalidStateError
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from memcollab.errors import ContextOverflowError, ModelNotFoundError, ModelUnavailableError
from memcollab.llm.amx import guard_amx

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamplingParams:
    """Decoding parameters of one request (defaults follow llama-cpp-python's)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = 42
    stop: tuple[str, ...] = ()
    top_k: int = 40
    min_p: float = 0.05


@dataclass(frozen=True)
class Generation:
    """What the engine produced for one request."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    token_ids: tuple[int, ...]
    reused_prefix: int = 0
    queued_s: float = 0.0
    latency_s: float = 0.0


@dataclass(frozen=True)
class KVUsage:
    """KV cells held per sequence role, as llama.cpp reports the sequences' positions."""

    active_cells: int
    cached_cells: int
    active_sequences: int
    cached_sequences: int
    queued_requests: int


@dataclass
class EngineStats:
    """Where an engine's time went (seconds inside llama_decode, by kind of step)."""

    steps: int = 0
    prefill_tokens: int = 0
    prefill_s: float = 0.0
    decode_steps: int = 0
    decode_rows: int = 0
    decode_s: float = 0.0
    sample_s: float = 0.0
    reused_prefix_tokens: int = 0


class GenerationHandle:
    """A submitted request: wait for its result, or cancel it (its KV cells are freed)."""

    def __init__(self, engine: BatchEngine) -> None:
        self._engine = engine
        self.future: Future[Generation] = Future()

    def result(self, timeout: float | None = None) -> Generation:
        """The generation; raises CancelledError if cancelled, or the request's error."""
        return self.future.result(timeout)

    def cancel(self) -> bool:
        """Stop the request; the engine frees its sequence at its next step."""
        cancelled = self.future.cancel()
        self._engine._scheduler.wake()
        return cancelled

    def done(self) -> bool:
        return self.future.done()


class _Scheduler:
    """The one thread that runs every engine's steps, round robin."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._engines: list[BatchEngine] = []
        self._thread: threading.Thread | None = None

    def register(self, engine: BatchEngine) -> None:
        with self._cond:
            self._engines.append(engine)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="memcollab-llama-engine", daemon=True
                )
                self._thread.start()

    def unregister(self, engine: BatchEngine) -> None:
        with self._cond:
            if engine in self._engines:
                self._engines.remove(engine)

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not (busy := [e for e in self._engines if e._has_work()]):
                    self._cond.wait()
            for engine in busy:
                try:
                    engine._step()
                except Exception as exc:  # noqa: BLE001 - one engine's fault fails its requests only
                    log.exception("engine for %s failed a step", engine.path.name)
                    engine._fail_all(exc)


_SCHEDULER = _Scheduler()


@dataclass
class _Request:
    tokens: list[int]
    params: SamplingParams
    handle: GenerationHandle
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class _Sequence:
    slot: int
    request: _Request
    sampler: Any
    max_new: int
    pending_prefill: list[int]
    stops: tuple[bytes, ...]
    reused_prefix: int
    started: float
    kv_tokens: list[int] = field(default_factory=list)
    out: list[int] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    next_token: int | None = None
    matched: bool = False


@dataclass
class _CachedPrefix:
    slot: int
    tokens: list[int]
    last_used: float


def _read_weights(llama_cpp: Any, mparams: Any) -> None:
    """Load the weights by reading the file instead of mapping it.

    With a mapped file, every page llama.cpp reads stays in the process's resident memory,
    including the pages of tensors it repacks into a buffer of their own: the 1.5B model
    then holds 1.09 GB of file pages plus 0.6 GB of repacked copies (peak RSS 1.77 GB against
    1.18 GB read; benchmarks/demo_memory.py). Same tensors, same kernels, same outputs.
    """
    fields = {name for name, *_ in type(mparams)._fields_}
    if "load_mode" in fields:  # llama.cpp's enum since mid-2025
        mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_NONE
    else:  # older llama-cpp-python: a flag
        mparams.use_mmap = False


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class BatchEngine:
    """Serves many concurrent generation requests for one loaded GGUF model."""

    def __init__(
        self,
        path: str | Path,
        *,
        width: int = 4,
        n_ctx: int = 4096,
        n_threads: int = 1,
        n_batch: int = 512,
        prefix_slots: int = 0,
        min_prefix: int = 32,
        repack: bool = True,
        pad_to: int | None = None,
        mmap: bool = True,
    ) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise ModelUnavailableError(
                "llama-cpp-python is not installed", "pip install 'memcollab[local]'"
            ) from None
        self._ll = llama_cpp
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelNotFoundError(f"GGUF file not found: {self.path}")
        if width < 1 or prefix_slots < 0:
            raise ValueError("width must be >= 1 and prefix_slots >= 0")
        self.width = width
        self.prefix_slots = prefix_slots
        self.min_prefix = max(1, min_prefix)
        self.pad_to = max(1, pad_to if pad_to is not None else (4 if repack else 1))
        quiet_llama_log()
        guard_amx()  # before any model loads: llama.cpp's AMX kernels crashed on a VM
        mparams = llama_cpp.llama_model_default_params()
        mparams.use_extra_bufts = repack
        if not mmap:
            _read_weights(llama_cpp, mparams)
        with _quiet_load():
            model = llama_cpp.llama_model_load_from_file(str(self.path).encode("utf-8"), mparams)
        if not model:
            raise ModelUnavailableError(
                f"llama.cpp could not load {self.path}", "is it a valid GGUF file?"
            )
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._pad_token = max(0, self.bos_token)  # what padding rows of a decode batch hold
        staging = max(1, prefix_slots)
        n_seq = width + staging
        self._n_seq = n_seq
        self.has_swa = llama_cpp.llama_model_n_swa(model) > 0
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = n_ctx * n_seq
        cparams.n_batch = min(n_ctx, n_batch)
        cparams.n_ubatch = min(n_ctx, n_batch)
        cparams.n_seq_max = n_seq
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.kv_unified = False
        # The same attention kernels as llama-cpp-python's default (no flash attention), so
        # greedy outputs can match the unbatched path.
        cparams.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
        cparams.swa_full = bool(prefix_slots and self.has_swa)
        cparams.no_perf = True
        with _quiet_load():
            ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise ModelUnavailableError(
                f"llama.cpp could not create a context for {self.path}",
                "lower n_ctx or batch_width (not enough memory?)",
            )
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self.n_ctx_seq = int(llama_cpp.llama_n_ctx_seq(ctx))
        self.n_batch = int(cparams.n_batch)
        self._batch = llama_cpp.llama_batch_init(max(self.n_batch, n_seq), 0, 1)
        self._pieces: dict[int, bytes] = {}
        self._lock = threading.Lock()  # guards the inbox and the closed flag
        self._compute = threading.RLock()  # held for a whole step; guards llama.cpp state
        self._inbox: deque[_Request] = deque()
        self._decoding: list[_Sequence] = []  # index == slot
        self._staged: dict[int, _Sequence] = {}  # prompts waiting for or in prefill
        self._prefilling: deque[_Sequence] = deque()
        self._cached: dict[int, _CachedPrefix] = {}
        self._free_staging: list[int] = list(range(n_seq - 1, width - 1, -1))
        self._closed = False
        self._scheduler = _SCHEDULER
        self.stats = EngineStats()
        self._scheduler.register(self)

    # ---- model facts ------------------------------------------------------------------

    def metadata(self, key: str) -> str | None:
        """A GGUF metadata value as a string, or None."""
        size = 1 << 16
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._ll.llama_model_meta_val_str(self._model, key.encode("utf-8"), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", errors="replace")
            size = n + 1

    def token_text(self, token: int) -> str:
        """The vocabulary text of a token (as llama-cpp-python's chat formatter sees it)."""
        raw = self._ll.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", errors="ignore") if raw else ""

    @property
    def eos_token(self) -> int:
        return int(self._ll.llama_vocab_eos(self._vocab))

    @property
    def bos_token(self) -> int:
        return int(self._ll.llama_vocab_bos(self._vocab))

    @property
    def add_bos(self) -> bool:
        """Whether the vocabulary asks for a BOS token in front of a prompt."""
        return bool(self._ll.llama_vocab_get_add_bos(self._vocab))

    def tokenize(self, text: str, *, add_bos: bool, special: bool) -> list[int]:
        """Token ids of `text` (thread-safe: the vocabulary is read-only)."""
        raw = text.encode("utf-8")
        size = len(raw) + 8
        while True:
            buf = (self._ll.llama_token * size)()
            n = self._ll.llama_tokenize(self._vocab, raw, len(raw), buf, size, add_bos, special)
            if n >= 0:
                return list(buf[:n])
            size = -n

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = self._ll.llama_token_to_piece(self._vocab, token, buf, size, 0, False)
                if n >= 0:
                    piece = buf.raw[:n]
                    break
                size = -n
            self._pieces[token] = piece
        return piece

    # ---- requests ---------------------------------------------------------------------

    def submit(self, tokens: Sequence[int], params: SamplingParams) -> GenerationHandle:
        """Queue a request; returns at once with a handle."""
        handle = GenerationHandle(self)
        with self._lock:
            if self._closed:
                raise ModelUnavailableError(f"the engine for {self.path.name} is closed")
            self._inbox.append(_Request(list(tokens), params, handle))
        self._scheduler.wake()
        return handle

    def generate(self, tokens: Sequence[int], params: SamplingParams) -> Generation:
        """Submit and wait; the request is cancelled if the waiting thread is interrupted."""
        handle = self.submit(tokens, params)
        try:
            return handle.result()
        except BaseException:
            handle.cancel()
            raise

    def kv_usage(self) -> KVUsage:
        """How many KV cells running and cached sequences hold (from llama.cpp)."""
        with self._compute:
            active = self._active()
            with self._lock:
                queued = len(self._inbox)
            return KVUsage(
                active_cells=sum(self._cells(s.slot) for s in active),
                cached_cells=sum(self._cells(slot) for slot in self._cached),
                active_sequences=len(active),
                cached_sequences=len(self._cached),
                queued_requests=queued,
            )

    def cells_in_use(self) -> int:
        """KV cells held by any sequence slot, whatever its role (0 when all is free)."""
        with self._compute:
            return sum(self._cells(slot) for slot in range(self._n_seq))

    def clear_prefix_cache(self) -> None:
        """Drop every cached prefix (frees their KV cells)."""
        with self._compute:
            while self._evict_oldest() is not None:
                pass

    def close(self) -> None:
        """Cancel what is queued or running and free the model (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            pending = list(self._inbox)
            self._inbox.clear()
        self._scheduler.unregister(self)
        with self._compute:
            for request in pending:
                request.handle.future.cancel()
            for seq in self._active():
                seq.request.handle.future.cancel()
                self._release(seq, keep=False)
            self.clear_prefix_cache()
            self._ll.llama_batch_free(self._batch)
            self._ll.llama_free(self._ctx)
            self._ll.llama_model_free(self._model)

    # ---- the scheduler's side ---------------------------------------------------------
    #
    # KV streams: slots [0, width) hold the decoding sequences, always packed at
    # [0, n_decoding): llama.cpp puts only consecutive sequence ids into one micro-batch
    # when every sequence has its own stream, and scattered ids would cost one pass over
    # the weights per run of ids. Slots [width, width + staging) hold prompts being
    # prefilled and cached prefixes. A prefilled prompt moves to the next decoding slot;
    # a finished sequence leaves a hole that the last decoding sequence moves into. A move
    # is a whole-stream copy (`llama_memory_seq_cp` across streams), done by llama.cpp at
    # the next decode before it computes.

    def _active(self) -> list[_Sequence]:
        return [*self._decoding, *self._staged.values()]

    def _has_work(self) -> bool:
        with self._lock:
            return not self._closed and bool(self._inbox or self._decoding or self._staged)

    def _cells(self, slot: int) -> int:
        pos_max = self._ll.llama_memory_seq_pos_max(self._mem, slot)
        if pos_max < 0:
            return 0
        return int(pos_max - self._ll.llama_memory_seq_pos_min(self._mem, slot) + 1)

    def _step(self) -> None:
        with self._compute:
            if self._closed:
                return
            self.stats.steps += 1
            self._reap_cancelled()
            self._admit()
            self._prefill_chunk()
            self._decode_running()

    def _fail_all(self, exc: BaseException) -> None:
        with self._compute:
            with self._lock:
                pending = list(self._inbox)
                self._inbox.clear()
            for request in pending:
                _settle(request.handle.future, exc=exc)
            for seq in self._active():
                _settle(seq.request.handle.future, exc=exc)
                self._release(seq, keep=False)

    def _reap_cancelled(self) -> None:
        for seq in self._active():
            if seq.request.handle.future.cancelled():
                self._release(seq, keep=False)

    def _admit(self) -> None:
        while len(self._decoding) + len(self._staged) < self.width:
            if not self._free_staging and not self._cached:
                return  # every staging stream holds a prompt still to prefill
            with self._lock:
                if not self._inbox:
                    return
                request = self._inbox.popleft()
            if request.handle.future.cancelled():
                continue
            n = len(request.tokens)
            if n == 0 or n >= self.n_ctx_seq:
                problem = (
                    f"a prompt of {n} tokens does not fit the context window of"
                    f" {self.n_ctx_seq} tokens"
                    if n
                    else "an empty prompt"
                )
                _settle(
                    request.handle.future,
                    exc=ContextOverflowError(
                        problem, f"shorten the prompt or raise n_ctx (now {self.n_ctx_seq})"
                    ),
                )
                continue
            self._start(request)

    def _start(self, request: _Request) -> None:
        tokens = request.tokens
        params = request.params
        seq = _Sequence(
            slot=-1,
            request=request,
            sampler=self._sampler(params),
            max_new=min(params.max_tokens, self.n_ctx_seq - len(tokens)),
            pending_prefill=list(tokens),
            stops=tuple(s.encode("utf-8") for s in params.stop if s),
            reused_prefix=0,
            started=time.perf_counter(),
        )
        best = self._best_prefix(tokens, self._cached.values())
        if best is not None:  # continue in the cached stream itself: no copy
            entry, length = best
            del self._cached[entry.slot]
            self._ll.llama_memory_seq_rm(self._mem, entry.slot, length, -1)
            seq.slot = entry.slot
            self._reuse(seq, length)
        else:
            if not self._free_staging:
                self._evict_oldest()  # _admit checked that there is one to evict
            seq.slot = self._free_staging.pop()
        self._staged[seq.slot] = seq
        self._prefilling.append(seq)

    def _best_prefix(
        self, tokens: list[int], sources: Iterable[_CachedPrefix | _Sequence]
    ) -> tuple[Any, int] | None:
        """The source whose KV shares the longest usable prefix with `tokens`, if any."""
        best, length = None, 0
        for source in sources:
            held = source.tokens if isinstance(source, _CachedPrefix) else source.kv_tokens
            common = _common_prefix(held, tokens)
            if common > length:
                best, length = source, common
        length = min(length, len(tokens) - 1)  # at least one token left to compute logits
        if best is None or length < self.min_prefix:
            return None
        return best, length

    def _share_prefix(self, seq: _Sequence) -> None:
        """Before a prompt's first chunk: copy the KV of the longest prefix already computed,
        by a running sequence or a cached one, so only the rest is prefilled. Matching here
        rather than at admission lets prompts that arrive together share their prefix."""
        seq.matched = True
        if not self.prefix_slots:
            return
        sources = [s for s in self._active() if s is not seq and s.kv_tokens]
        best = self._best_prefix(seq.request.tokens, [*sources, *self._cached.values()])
        if best is None:
            return
        source, length = best
        if isinstance(source, _CachedPrefix):
            source.last_used = time.perf_counter()
        self._ll.llama_memory_seq_cp(self._mem, source.slot, seq.slot, -1, -1)
        self._ll.llama_memory_seq_rm(self._mem, seq.slot, length, -1)
        self._reuse(seq, length)

    def _reuse(self, seq: _Sequence, length: int) -> None:
        seq.matched = True
        seq.kv_tokens = seq.request.tokens[:length]
        seq.pending_prefill = seq.request.tokens[length:]
        seq.reused_prefix = length
        self.stats.reused_prefix_tokens += length

    def _evict_oldest(self) -> int | None:
        """Drop the least recently used cached prefix; returns its (now free) slot."""
        if not self._cached:
            return None
        oldest = min(self._cached.values(), key=lambda e: e.last_used)
        del self._cached[oldest.slot]
        self._ll.llama_memory_seq_rm(self._mem, oldest.slot, -1, -1)
        self._free_staging.append(oldest.slot)
        return oldest.slot

    def _move(self, src: int, dst: int) -> None:
        self._ll.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        self._ll.llama_memory_seq_rm(self._mem, src, -1, -1)

    def _sampler(self, params: SamplingParams) -> Any:
        """A llama.cpp sampler chain, or None for greedy (argmax over the logits in numpy:
        the same token as llama.cpp's greedy sampler, without building a candidate array of
        the whole vocabulary per token)."""
        ll = self._ll
        if params.temperature <= 0.0:
            return None
        chain = ll.llama_sampler_chain_init(ll.llama_sampler_chain_default_params())
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_k(params.top_k))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_top_p(params.top_p, 1))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_min_p(params.min_p, 1))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_temp(params.temperature))
        ll.llama_sampler_chain_add(chain, ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _fill(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        batch = self._batch
        for i, (token, pos, slot, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = slot
            batch.logits[i] = logits
        batch.n_tokens = len(entries)

    def _decode(self, seqs: Sequence[_Sequence], *, prefill: bool) -> bool:
        started = time.perf_counter()
        rc = self._ll.llama_decode(self._ctx, self._batch)
        elapsed = time.perf_counter() - started
        if prefill:
            self.stats.prefill_tokens += self._batch.n_tokens
            self.stats.prefill_s += elapsed
        else:
            self.stats.decode_steps += 1
            self.stats.decode_rows += self._batch.n_tokens
            self.stats.decode_s += elapsed
        if rc == 0:
            return True
        error = ModelUnavailableError(
            f"llama_decode failed for {self.path.name} (code {rc})",
            "lower batch_width or n_ctx" if rc == 1 else "see llama.cpp's log",
        )
        for seq in seqs:
            _settle(seq.request.handle.future, exc=error)
            self._release(seq, keep=False)
        return False

    def _is_staged(self, seq: _Sequence) -> bool:
        return self._staged.get(seq.slot) is seq

    def _prefill_chunk(self) -> None:
        while self._prefilling and not self._is_staged(self._prefilling[0]):
            self._prefilling.popleft()  # cancelled or failed meanwhile
        if not self._prefilling:
            return
        seq = self._prefilling[0]
        if not seq.matched:
            self._share_prefix(seq)
        chunk = seq.pending_prefill[: self.n_batch]
        last = len(chunk) == len(seq.pending_prefill)
        start = len(seq.kv_tokens)
        self._fill(
            [
                (tok, start + i, seq.slot, last and i == len(chunk) - 1)
                for i, tok in enumerate(chunk)
            ]
        )
        if not self._decode([seq], prefill=True):
            return
        seq.kv_tokens.extend(chunk)
        seq.pending_prefill = seq.pending_prefill[len(chunk) :]
        if not last:
            return
        self._prefilling.popleft()
        self._accept(seq, self._sample(seq, len(chunk) - 1))
        if self._is_staged(seq):  # not finished by its first token
            del self._staged[seq.slot]
            self._free_staging.append(seq.slot)
            target = len(self._decoding)
            self._move(seq.slot, target)
            seq.slot = target
            self._decoding.append(seq)

    def _decode_running(self) -> None:
        seqs = list(self._decoding)
        if not seqs:
            return
        rows = [(s.next_token, len(s.kv_tokens), s.slot, True) for s in seqs]
        # llama.cpp multiplies repacked weights by rows in groups of four and the rows left
        # over by another kernel, whose rounding differs: pad with one-token rows of empty
        # decoding slots to a multiple of four, so a sequence does not switch kernels as
        # others join and leave. (Other kernels still depend on the batch shape, so batched
        # greedy outputs can differ run to run in a token; the benchmark measures how often.)
        padding = min((-len(rows)) % self.pad_to, self.width - len(rows))
        rows += [(self._pad_token, 0, len(seqs) + i, True) for i in range(padding)]
        self._fill(rows)  # type: ignore[arg-type]
        decoded = self._decode(seqs, prefill=False)
        for i in range(padding):
            self._ll.llama_memory_seq_rm(self._mem, len(seqs) + i, -1, -1)
        if not decoded:
            return
        for i, seq in enumerate(seqs):
            seq.kv_tokens.append(seq.next_token)  # type: ignore[arg-type]
            seq.next_token = None
            if seq.request.handle.future.cancelled():
                self._release(seq, keep=False)
                continue
            self._accept(seq, self._sample(seq, i))

    def _sample(self, seq: _Sequence, index: int) -> int:
        started = time.perf_counter()
        if seq.sampler is not None:
            token = int(self._ll.llama_sampler_sample(seq.sampler, self._ctx, index))
        else:
            logits = self._ll.llama_get_logits_ith(self._ctx, index)
            # np.argmax returns the first maximum, as llama.cpp's greedy sampler does.
            token = int(np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).argmax())
        self.stats.sample_s += time.perf_counter() - started
        return token

    def _accept(self, seq: _Sequence, token: int) -> None:
        if self._ll.llama_vocab_is_eog(self._vocab, token):
            self._finish(seq, "stop", bytes(seq.text))
            return
        seq.out.append(token)
        before = len(seq.text)
        seq.text += self._piece(token)
        for stop in seq.stops:
            at = seq.text.find(stop, max(0, before - len(stop) + 1))
            if at >= 0:
                self._finish(seq, "stop", bytes(seq.text[:at]))
                return
        if len(seq.out) >= seq.max_new:
            self._finish(seq, "length", bytes(seq.text))
            return
        seq.next_token = token

    def _finish(self, seq: _Sequence, reason: str, text: bytes) -> None:
        now = time.perf_counter()
        request = seq.request
        _settle(
            request.handle.future,
            result=Generation(
                text=text.decode("utf-8", errors="ignore"),
                finish_reason=reason,
                prompt_tokens=len(request.tokens),
                completion_tokens=len(seq.out),
                token_ids=tuple(seq.out),
                reused_prefix=seq.reused_prefix,
                queued_s=seq.started - request.submitted,
                latency_s=now - request.submitted,
            ),
        )
        self._release(seq, keep=True)

    def _release(self, seq: _Sequence, *, keep: bool) -> None:
        """Free a sequence's stream, keeping its KV as a cached prefix when asked."""
        if seq.sampler is not None:
            self._ll.llama_sampler_free(seq.sampler)
            seq.sampler = None
        keep = keep and self.prefix_slots > 0 and len(seq.kv_tokens) >= self.min_prefix
        slot = seq.slot
        if self._is_staged(seq):
            del self._staged[slot]
            if keep:  # already in the staging area: cache it where it is
                self._cached[slot] = _CachedPrefix(slot, seq.kv_tokens, time.perf_counter())
            else:
                self._ll.llama_memory_seq_rm(self._mem, slot, -1, -1)
                self._free_staging.append(slot)
            return
        if slot >= len(self._decoding) or self._decoding[slot] is not seq:
            return  # released already
        if keep:
            if not self._free_staging:
                self._evict_oldest()
            if self._free_staging:
                home = self._free_staging.pop()
                self._ll.llama_memory_seq_cp(self._mem, slot, home, -1, -1)
                self._cached[home] = _CachedPrefix(home, seq.kv_tokens, time.perf_counter())
        self._ll.llama_memory_seq_rm(self._mem, slot, -1, -1)
        last = self._decoding.pop()
        if last is not seq:  # close the hole: the last decoding sequence moves into it
            self._move(last.slot, slot)
            last.slot = slot
            self._decoding[slot] = last


def _settle(
    future: Future[Generation],
    *,
    result: Generation | None = None,
    exc: BaseException | None = None,
) -> None:
    """Resolve a future unless its caller already cancelled it."""
    try:
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)  # type: ignore[arg-type]
    except InvalidStateError:
        pass  # cancelled by the caller in the meantime: nobody waits for it


@contextmanager
def _quiet_load() -> Iterator[None]:
    """Silence llama.cpp while it loads weights and sets up a context (llama-cpp-python
    shows its warnings, such as vocabulary quirks, at error level), unless the user turned
    its logger up to info or debug."""
    llama_logger = logging.getLogger("llama-cpp-python")
    before = llama_logger.level
    if before == logging.NOTSET or before >= logging.ERROR:
        llama_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        llama_logger.setLevel(before)


def quiet_llama_log() -> None:
    """Keep llama.cpp's log off stderr unless the user configured the logger.

    llama-cpp-python prints llama.cpp's log to stderr when its logger allows it; the
    library never prints, so the default is errors only.
    """
    llama_logger = logging.getLogger("llama-cpp-python")
    if llama_logger.level == logging.NOTSET:
        llama_logger.setLevel(logging.ERROR)


__all__ = [
    "BatchEngine",
    "CancelledError",
    "Generation",
    "GenerationHandle",
    "KVUsage",
    "SamplingParams",
]
