"""The one place every model call goes through: an on-disk cache, usage counters, concurrency.

`CallCache` stores completions in SQLite (WAL, busy timeout) keyed by the model identity,
the full request and the sample index, so a second identical run makes no model call and
several processes can share one cache file. `export_jsonl` / `import_jsonl` move its
rows losslessly between machines (the only state a long run needs to resume elsewhere: its
phases replay every stored call). `Gateway` wraps any `Model` with that cache, counts calls,
tokens and time per model, and bounds how many calls share one resource; with a cache, a
request asked again while the same request is in flight waits for that call's answer
instead of asking the model twice (as a later identical request would find it cached).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import sqlite3
import threading
import time
import zlib
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import ValidationError

from memcollab.atomic import replace_when_done
from memcollab.errors import UserError
from memcollab.llm.base import ChatRequest, Completion, Model
from memcollab.sqlite_local import LocalSQLite
from memcollab.textio import open_text

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model_identity TEXT NOT NULL,
    request_json TEXT NOT NULL,
    completion_json TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class CallTimings:
    """What one model's stored calls took: how many, their tokens, their summed latency."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float


class CallCache:
    """Completions on disk in SQLite, safe for several threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = LocalSQLite(self.path, _SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        return self._db.conn()

    def get(self, key: str) -> Completion | None:
        """The cached completion for `key`, or None."""
        row = (
            self._conn()
            .execute("SELECT completion_json FROM calls WHERE key = ?", (key,))
            .fetchone()
        )
        if row is None:
            return None
        return Completion.model_validate_json(row[0])

    def put(
        self, key: str, model_identity: str, request: ChatRequest, completion: Completion
    ) -> None:
        """Store a completion; the first writer of a key wins."""
        self._conn().execute(
            "INSERT OR IGNORE INTO calls (key, model_identity, request_json, completion_json,"
            " created_at) VALUES (?, ?, ?, ?, ?)",
            (
                key,
                model_identity,
                request.model_dump_json(),
                completion.model_copy(update={"cached": False}).model_dump_json(),
                time.time(),
            ),
        )

    def timings(self) -> dict[str, CallTimings]:
        """Per model identity: calls, tokens and seconds over the stored calls that recorded
        a latency (a scripted answer records none). What dry runs measure speeds from."""
        rows = self._conn().execute(
            "SELECT model_identity, COUNT(*),"
            " SUM(json_extract(completion_json, '$.usage.prompt_tokens')),"
            " SUM(json_extract(completion_json, '$.usage.completion_tokens')),"
            " SUM(json_extract(completion_json, '$.latency_s')) FROM calls"
            " WHERE json_extract(completion_json, '$.latency_s') > 0 GROUP BY model_identity"
        )
        return {
            identity: CallTimings(int(n), int(prompt or 0), int(completion or 0), float(secs))
            for identity, n, prompt, completion, secs in rows
        }

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def export_jsonl(self, path: str | Path, since: float | None = None) -> int:
        """Write the calls stored at or after `since` (all by default) as JSONL; returns count.

        A path ending in `.gz` is gzip-compressed. Rows come in the order they were stored,
        one JSON object per line with the key, the model identity, the request, the
        completion, the time it was stored and `completion_sha256` (a digest of the key and
        the completion, which `import_jsonl` checks); the file is written to a temporary
        name and renamed into place.
        """
        path = Path(path)
        rows = self._conn().execute(
            "SELECT key, model_identity, request_json, completion_json, created_at FROM calls"
            " WHERE created_at >= ? ORDER BY created_at, key",
            (since if since is not None else float("-inf"),),
        )
        count = 0
        with replace_when_done(path) as tmp, open_text(tmp, "w", name=path) as fh:
            for key, identity, request_json, completion_json, created_at in rows:
                completion = json.loads(completion_json)
                row = {
                    "key": key,
                    "model_identity": identity,
                    "request": json.loads(request_json),
                    "completion": completion,
                    "created_at": created_at,
                    _DIGEST: completion_digest(key, completion),
                }
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                count += 1
        return count

    def import_jsonl(self, path: str | Path) -> tuple[int, int]:
        """Add the calls of an `export_jsonl` file in one transaction; returns (added, skipped).

        Every line is checked before anything is added: it must parse, its key must be the
        key of its own request and model identity (so a hand-edited or truncated file
        cannot answer the wrong request), and its answer must match its `completion_sha256`
        digest (so an answer edited after export, or moved to another line, is refused). A
        bad line raises CacheFormatError naming the file and line, and nothing is imported.
        Keys already stored are skipped.

        Lines without a digest (files written by older versions, such as the committed
        experiment's calls) are accepted: they are trusted input, whose answers cannot be
        checked. The digest guards against edits and mix-ups, not against someone who
        recomputes it.
        """
        rows = _read_calls(Path(path))
        conn = self._conn()
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO calls (key, model_identity, request_json,"
                " completion_json, created_at) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        added = conn.total_changes - before
        return added, len(rows) - added

    def close(self) -> None:
        """Close this thread's connection."""
        self._db.close()


class CacheFormatError(UserError):
    """A call-cache export file that cannot be read or whose lines do not check out."""


def _read_calls(path: Path) -> list[tuple[str, str, str, str, float]]:
    """The rows of a calls export, every line checked; CacheFormatError on the first bad one."""
    if not path.is_file():
        raise CacheFormatError(f"calls file {path} does not exist", "check the path")
    rows = []
    try:
        with open_text(path, "r") as fh:
            for lineno, line in enumerate(fh, start=1):
                if line.strip():
                    rows.append(_parse_call(line, f"{path}:{lineno}"))
    except (OSError, EOFError, UnicodeDecodeError, zlib.error) as exc:
        raise CacheFormatError(f"cannot read calls file {path}: {exc}") from None
    return rows


_DIGEST = "completion_sha256"


def completion_digest(key: str, completion: object) -> str:
    """sha256 of a call's key and its completion as JSON (keys sorted, so the layout of
    the line does not matter): what an export writes beside each call."""
    canonical = json.dumps(completion, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{key}\n{canonical}".encode()).hexdigest()


def _parse_call(line: str, where: str) -> tuple[str, str, str, str, float]:
    try:
        row = json.loads(line)
        key, identity = row["key"], row["model_identity"]
        request = ChatRequest.model_validate(row["request"])
        completion = Completion.model_validate(row["completion"])
        created_at = float(row["created_at"])
        digest = row.get(_DIGEST)
    except (
        json.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
        ValidationError,
        RecursionError,  # a line nested deeper than the JSON decoder goes
    ) as exc:
        detail = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CacheFormatError(f"{where}: not a cached call ({detail})") from None
    if not isinstance(identity, str) or key != request.cache_key(identity):
        raise CacheFormatError(f"{where}: the key is not the key of this request and model")
    if digest is not None:
        if not isinstance(digest, str):
            raise CacheFormatError(f"{where}: {_DIGEST} is not a string")
        if digest != completion_digest(key, row["completion"]):
            raise CacheFormatError(
                f"{where}: the answer is not the one exported ({_DIGEST} does not match)",
                "the line was edited after export; export it again from its cache",
            )
    return key, identity, request.model_dump_json(), completion.model_dump_json(), created_at


@dataclass
class ModelStats:
    """Counters of one model's calls in this process."""

    calls: int = 0
    cache_hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class CacheMissError(UserError):
    """A replay-only gateway was asked a call its cache does not hold."""


class Gateway:
    """Routes model calls through the cache, the usage counters and the concurrency limits.

    `replay_only`: every call must be answered by the cache, and a miss raises
    CacheMissError instead of calling the model (to check that a committed run replays).
    """

    def __init__(self, cache: CallCache | None = None, *, replay_only: bool = False) -> None:
        if replay_only and cache is None:
            raise ValueError("a replay-only gateway needs a cache")
        self.cache = cache
        self.replay_only = replay_only
        self._stats: dict[str, ModelStats] = {}
        self._limits: dict[str, threading.BoundedSemaphore] = {}
        # A call in flight per key; identical requests wait on its future.
        self._flights: dict[str, Future[Completion]] = {}
        self._lock = threading.Lock()

    def stats(self) -> dict[str, ModelStats]:
        """A snapshot of the counters, per model name."""
        with self._lock:
            return {name: dataclasses.replace(s) for name, s in self._stats.items()}

    def _limit(self, model: Model) -> threading.BoundedSemaphore:
        key, limit = model.concurrency()
        with self._lock:
            sem = self._limits.get(key)
            if sem is None:
                sem = threading.BoundedSemaphore(max(1, limit))
                self._limits[key] = sem
            return sem

    def complete(self, model: Model, request: ChatRequest) -> Completion:
        """Answer `request` with `model`, from the cache when possible, or from the same
        request's call in flight (then marked cached, as a cache hit would be; if that
        call fails, its waiters get its error, and a later request asks again)."""
        if self.cache is None:
            return self._call(model, request, "", "")
        identity = model.identity()
        key = request.cache_key(identity)
        hit = self._lookup(model, key)
        if hit is not None:
            return hit
        # Written here rather than taken from a library: a few lines over the lock this
        # class already holds (the "single flight" pattern of Go's x/sync, whose waiters
        # also share the call's error); a Future carries the answer or the error.
        with self._lock:
            flight = self._flights.get(key)
            leads = flight is None
            if flight is None:
                flight = self._flights[key] = Future()
        if not leads:
            return self._hit(model, flight.result())
        try:
            completion = self._call(model, request, key, identity)
        except BaseException as err:
            flight.set_exception(err)
            raise
        else:
            flight.set_result(completion)
            return completion
        finally:
            with self._lock:
                del self._flights[key]

    def _call(self, model: Model, request: ChatRequest, key: str, identity: str) -> Completion:
        """Ask the model (within its concurrency limit), count the call and cache it."""
        if self.replay_only:
            raise CacheMissError(
                f"the call cache holds no answer of {model.name} to a request (key {key[:16]})",
                "the replayed run asked something the recorded run did not",
            )
        with self._limit(model):
            # Another thread may have answered the same request while this one waited.
            hit = self._lookup(model, key)
            if hit is not None:
                return hit
            started = time.perf_counter()
            try:
                completion = model.complete(request)
            except Exception:
                with self._lock:
                    self._stats.setdefault(model.name, ModelStats()).errors += 1
                raise
            elapsed = time.perf_counter() - started
        with self._lock:
            stat = self._stats.setdefault(model.name, ModelStats())
            stat.calls += 1
            stat.prompt_tokens += completion.usage.prompt_tokens
            stat.completion_tokens += completion.usage.completion_tokens
            stat.seconds += elapsed
        if self.cache is not None:
            self.cache.put(key, identity, request, completion)
        return completion

    def _lookup(self, model: Model, key: str) -> Completion | None:
        if self.cache is None:
            return None
        cached = self.cache.get(key)
        return None if cached is None else self._hit(model, cached)

    def _hit(self, model: Model, completion: Completion) -> Completion:
        """`completion` answered without a model call: counted as a cache hit, marked cached."""
        with self._lock:
            self._stats.setdefault(model.name, ModelStats()).cache_hits += 1
        return completion.model_copy(update={"cached": True})

    async def acomplete(self, model: Model, request: ChatRequest) -> Completion:
        """`complete` without blocking the event loop (the call runs in a worker thread)."""
        return await asyncio.to_thread(self.complete, model, request)

    def bind(self, model: Model) -> ModelClient:
        """A handle that calls `model` through this gateway."""
        return ModelClient(self, model)


@dataclass(frozen=True)
class ModelClient:
    """A model bound to a gateway: what the rest of memcollab calls."""

    gateway: Gateway
    model: Model

    @property
    def name(self) -> str:
        return self.model.name

    def complete(self, request: ChatRequest) -> Completion:
        return self.gateway.complete(self.model, request)

    async def acomplete(self, request: ChatRequest) -> Completion:
        return await self.gateway.acomplete(self.model, request)
