"""Attempts: what one model did on one task, recorded by the service (table `server_attempts`).

An attempt keeps its provenance (namespace, key id, model, time), the task (text and task
id), what the model produced (the messages of the exchange and/or a final answer), the
memory record ids it was given, and a verdict (unknown / correct / incorrect) that a
later feedback call may set. Attempts of one task from different models group under one
task id: the client's, or one derived from the whitespace-normalised task text, so the
same question asked of two models lands in one group without the client naming it.

Writes are idempotent where the client gives the id: the same id with the same content
is the same attempt (nothing is added); the same id with other content is a conflict.
The OpenAI-compatible proxy writes through this store too (its response id as
`response_id`), and online learning reads `tasks_with_contrast`: tasks with a correct
attempt of one model and an incorrect attempt of another.
"""

from __future__ import annotations

import builtins
import json
import secrets
import time
import typing
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from memcollab.errors import UserError
from memcollab.memory.record import task_hash
from memcollab.server.db import ServerDB

Verdict = Literal["unknown", "correct", "incorrect"]
VERDICTS: tuple[Verdict, ...] = typing.get_args(Verdict)
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""A client-given attempt id: 1-128 letters, digits, `.`, `_`, `:` or `-`."""


class AttemptNotFoundError(UserError):
    """An attempt id (or response id) that the namespace does not hold."""


class AttemptConflictError(UserError):
    """An attempt id or response id already recorded with other content."""


def derive_task_id(task_text: str) -> str:
    """The task id of a task the client did not name: a hash of its normalised text."""
    return "text:" + task_hash(task_text)[:32]


@dataclass(frozen=True)
class NewAttempt:
    """An attempt as a client submits it (the store adds namespace, key id and times)."""

    model: str
    task_text: str
    task_id: str | None = None
    id: str | None = None
    domain: str | None = None
    messages: list[dict[str, Any]] | None = None
    answer: str | None = None
    injected_ids: tuple[str, ...] = ()
    verdict: Verdict = "unknown"
    response_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class Attempt(BaseModel):
    """One recorded attempt."""

    model_config = ConfigDict(frozen=True)

    id: str
    namespace: str
    key_id: str
    model: str
    task_id: str
    task_text: str
    domain: str | None = None
    messages: list[dict[str, Any]] | None = None
    answer: str | None = None
    injected_ids: tuple[str, ...] = ()
    verdict: Verdict = "unknown"
    response_id: str | None = None
    metadata: dict[str, str] = {}
    created_at: float
    verdict_at: float | None = None
    verdict_key_id: str | None = None

    def content(self) -> dict[str, Any]:
        """What makes two submissions the same attempt (not who sent it, when, or the
        verdict, which feedback may change later)."""
        return self.model_dump(
            include={
                "model",
                "task_id",
                "task_text",
                "domain",
                "messages",
                "answer",
                "injected_ids",
                "response_id",
                "metadata",
            }
        )


@dataclass(frozen=True)
class TaskContrast:
    """A task with a correct attempt of one model and an incorrect attempt of another."""

    task_id: str
    correct_models: tuple[str, ...]
    incorrect_models: tuple[str, ...]
    attempts: int


_COLUMNS = (
    "namespace, id, key_id, model, task_id, task_hash, domain, verdict, response_id, "
    "created_at, verdict_at, verdict_key_id, json"
)
_BODY = ("task_text", "messages", "answer", "injected_ids", "metadata")


def _attempt(row: tuple[Any, ...]) -> Attempt:
    (namespace, id_, key_id, model, task_id, _hash, domain, verdict, response_id) = row[:9]
    created_at, verdict_at, verdict_key_id, blob = row[9:]
    body = json.loads(blob)
    return Attempt(
        id=id_,
        namespace=namespace,
        key_id=key_id,
        model=model,
        task_id=task_id,
        domain=domain,
        verdict=verdict,
        response_id=response_id,
        created_at=float(created_at),
        verdict_at=None if verdict_at is None else float(verdict_at),
        verdict_key_id=verdict_key_id,
        **body,
    )


class AttemptStore:
    """Record attempts, set their verdicts, and read them back by task."""

    def __init__(self, db: ServerDB) -> None:
        self.db = db
        self.listeners: builtins.list[Callable[[Attempt], None]] = []
        """Called with an attempt after a verdict of it is stored (online learning's
        enqueue); a listener must not raise."""

    def _verdict_landed(self, attempt: Attempt) -> None:
        for listener in self.listeners:
            listener(attempt)

    def add(self, namespace: str, key_id: str, new: NewAttempt) -> tuple[Attempt, bool]:
        """Record an attempt; returns (attempt, created). With a client-given `id` (or
        `response_id`) a retry of the same content returns the stored attempt and
        created=False; other content under a recorded id raises AttemptConflictError."""
        if new.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
        now = time.time()
        attempt = Attempt(
            id=new.id or f"att_{secrets.token_hex(12)}",
            namespace=namespace,
            key_id=key_id,
            model=new.model,
            task_id=new.task_id or derive_task_id(new.task_text),
            task_text=new.task_text,
            domain=new.domain,
            messages=new.messages,
            answer=new.answer,
            injected_ids=tuple(new.injected_ids),
            verdict=new.verdict,
            response_id=new.response_id,
            metadata=dict(new.metadata),
            created_at=now,
            verdict_at=None if new.verdict == "unknown" else now,
            verdict_key_id=None if new.verdict == "unknown" else key_id,
        )
        body = json.dumps(attempt.model_dump(include=set(_BODY)), sort_keys=True)
        with self.db.write() as cur:
            cur.execute(
                f"INSERT INTO server_attempts ({_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    namespace,
                    attempt.id,
                    key_id,
                    attempt.model,
                    attempt.task_id,
                    task_hash(attempt.task_text),
                    attempt.domain,
                    attempt.verdict,
                    attempt.response_id,
                    attempt.created_at,
                    attempt.verdict_at,
                    attempt.verdict_key_id,
                    body,
                ),
            )
            created = cur.rowcount == 1
        if created:
            if attempt.verdict != "unknown":
                self._verdict_landed(attempt)
            return attempt, True
        # Not inserted: the id (or the response id) is already recorded.
        stored = self._find(namespace, attempt.id)
        if stored is None and attempt.response_id is not None:
            other = self.by_response_id(namespace, attempt.response_id)
            raise AttemptConflictError(
                f"response id {attempt.response_id!r} is already recorded for attempt {other.id!r}",
                "give each exchange its own response id",
            )
        if stored is not None and stored.content() == attempt.content():
            return stored, False
        raise AttemptConflictError(
            f"attempt {attempt.id!r} is already recorded with other content",
            "a retry must send the same attempt; a new attempt needs a new id",
        )

    def _find(self, namespace: str, attempt_id: str) -> Attempt | None:
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM server_attempts WHERE namespace = ? AND id = ?",
            (namespace, attempt_id),
        )
        return _attempt(rows[0]) if rows else None

    def get(self, namespace: str, attempt_id: str) -> Attempt:
        """One attempt of the namespace; AttemptNotFoundError when there is none."""
        found = self._find(namespace, attempt_id)
        if found is None:
            raise AttemptNotFoundError(f"no attempt with id {attempt_id!r}")
        return found

    def by_response_id(self, namespace: str, response_id: str) -> Attempt:
        """The attempt a response id belongs to (for feedback calls)."""
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM server_attempts WHERE namespace = ? AND response_id = ?",
            (namespace, response_id),
        )
        if not rows:
            raise AttemptNotFoundError(f"no attempt with response id {response_id!r}")
        return _attempt(rows[0])

    def set_verdict(
        self, namespace: str, attempt_id: str, verdict: Verdict, key_id: str
    ) -> Attempt:
        """Set (or change) an attempt's verdict; returns the updated attempt."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {', '.join(VERDICTS)}")
        with self.db.write() as cur:
            cur.execute(
                "UPDATE server_attempts SET verdict = ?, verdict_at = ?, verdict_key_id = ? "
                "WHERE namespace = ? AND id = ?",
                (verdict, time.time(), key_id, namespace, attempt_id),
            )
            if cur.rowcount != 1:
                raise AttemptNotFoundError(f"no attempt with id {attempt_id!r}")
        updated = self.get(namespace, attempt_id)
        self._verdict_landed(updated)
        return updated

    def settle(
        self, namespace: str, attempt_id: str, verdict: Verdict, key_id: str
    ) -> tuple[Attempt, bool]:
        """Give an attempt whose verdict is still unknown its verdict; returns (attempt,
        settled). One conditional UPDATE, so of two concurrent callers only one settles
        (and counts the outcome); settled is False when a verdict was already set."""
        if verdict not in VERDICTS or verdict == "unknown":
            raise ValueError("verdict must be correct or incorrect")
        with self.db.write() as cur:
            cur.execute(
                "UPDATE server_attempts SET verdict = ?, verdict_at = ?, verdict_key_id = ? "
                "WHERE namespace = ? AND id = ? AND verdict = 'unknown'",
                (verdict, time.time(), key_id, namespace, attempt_id),
            )
            settled = cur.rowcount == 1
        attempt = self.get(namespace, attempt_id)
        if settled:
            self._verdict_landed(attempt)
        return attempt, settled

    def claim_verdict(
        self, namespace: str, attempt_id: str, verdict: Verdict, key_id: str
    ) -> Attempt | None:
        """`settle` for the proxy's feedback: the attempt when this call set its verdict,
        None when it already had one (outcomes are counted once per attempt)."""
        attempt, settled = self.settle(namespace, attempt_id, verdict, key_id)
        return attempt if settled else None

    def list(
        self,
        namespace: str,
        *,
        task_id: str | None = None,
        model: str | None = None,
        verdict: Verdict | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[builtins.list[Attempt], int]:
        """Attempts of a namespace, oldest first, filtered; returns (page, total)."""
        clauses, params = ["namespace = ?"], [namespace]
        for column, value in (("task_id", task_id), ("model", model), ("verdict", verdict)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = " AND ".join(clauses)
        total = int(
            self.db.query(f"SELECT COUNT(*) FROM server_attempts WHERE {where}", params)[0][0]
        )
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM server_attempts WHERE {where} "
            "ORDER BY created_at, id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_attempt(row) for row in rows], total

    def by_task(self, namespace: str, task_id: str) -> builtins.list[Attempt]:
        """Every attempt of one task, oldest first."""
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM server_attempts WHERE namespace = ? AND task_id = ? "
            "ORDER BY created_at, id",
            (namespace, task_id),
        )
        return [_attempt(row) for row in rows]

    def tasks_with_contrast(
        self, namespace: str, since: float | None = None
    ) -> builtins.list[TaskContrast]:
        """Tasks with a correct attempt of one model and an incorrect attempt of another
        model (what cross-model contrastive distillation pairs), by task id. `since`: only
        attempts created at or after this time count."""
        where = "namespace = ? AND verdict IN ('correct', 'incorrect')"
        params: builtins.list[object] = [namespace]
        if since is not None:
            where += " AND created_at >= ?"
            params.append(since)
        rows = self.db.query(
            f"SELECT task_id, model, verdict, COUNT(*) FROM server_attempts WHERE {where} "
            "GROUP BY task_id, model, verdict",
            params,
        )
        correct: dict[str, set[str]] = defaultdict(set)
        incorrect: dict[str, set[str]] = defaultdict(set)
        counts: dict[str, int] = defaultdict(int)
        for task_id, model, verdict, n in rows:
            (correct if verdict == "correct" else incorrect)[task_id].add(model)
            counts[task_id] += int(n)
        out = []
        for task_id in sorted(counts):
            good, bad = correct[task_id], incorrect[task_id]
            if any(g != b for g in good for b in bad):
                out.append(
                    TaskContrast(task_id, tuple(sorted(good)), tuple(sorted(bad)), counts[task_id])
                )
        return out

    def counts(self, namespace: str) -> dict[str, Any]:
        """Attempts of a namespace: in total, per verdict and per model."""
        rows = self.db.query(
            "SELECT model, verdict, COUNT(*) FROM server_attempts WHERE namespace = ? "
            "GROUP BY model, verdict",
            (namespace,),
        )
        by_verdict: dict[str, int] = dict.fromkeys(VERDICTS, 0)
        by_model: dict[str, dict[str, int]] = {}
        for model, verdict, n in sorted(rows):
            by_verdict[verdict] = by_verdict.get(verdict, 0) + int(n)
            by_model.setdefault(model, dict.fromkeys(VERDICTS, 0))[verdict] = int(n)
        return {"total": sum(by_verdict.values()), "by_verdict": by_verdict, "by_model": by_model}
