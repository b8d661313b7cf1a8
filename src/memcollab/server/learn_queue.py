"""The online-learning queue: which task's contrast to distil next (table `server_learn_queue`).

One row per (namespace, task): the pair to distil, chosen by the near-miss rule when the
task first has a success and a failure from different models, and a state

    pending -> claimed (a lease: owner + expiry) -> done | refused (reason) | failed (error)

A worker claims a row with a conditional UPDATE (so two workers never hold one row), and
finishes it in the same transaction as the record and its provenance (`finish(cur, ...)`
inside `ServerDB.write()`), again conditional on still holding the lease: a worker whose
lease was taken over finishes nothing, and a worker killed mid-distillation leaves the row
claimed until its lease expires and another worker claims it again. An error puts the row
back to pending, up to `max_tries` claims; a lease that expires after the last try fails
the row ("lease_expired").

The pair is fixed when the row is made ("the first pair wins"): one record per task and
distiller, whatever attempts arrive later (the record id hashes namespace, task, the two
models and the distiller, memory/record.py). A later, better pair of the same task is not
distilled.

Bounded: at most `max_pending` rows are pending (all namespaces together). An offer made
when the queue is full is not lost: it is counted as "deferred" and the backlog scan
(`refill`, run by the workers) files it later, as it files any task with a contrast that
has no row (for example one whose verdict landed while the process died).
"""

from __future__ import annotations

import json
import logging
import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from memcollab.server.attempts import Attempt, AttemptStore
from memcollab.server.db import Cursor, ServerDB

log = logging.getLogger("memcollab.server")

State = Literal["pending", "claimed", "done", "refused", "failed"]
STATES: tuple[State, ...] = typing.get_args(State)
Offer = Literal["queued", "exists", "no_pair", "deferred"]
_PG_QUEUE_LOCK = 0x6D636C726E71  # pg_advisory_xact_lock key: the pending bound is exact
_COLUMNS = (
    "namespace, task_id, state, pos_attempt, neg_attempt, model_pos, model_neg, tries, "
    "lease_owner, lease_until, enqueued_at, updated_at, record_id, reason, detail"
)


class LeaseLostError(RuntimeError):
    """The row is no longer claimed by this worker (its lease expired and another took it)."""


@dataclass(frozen=True)
class QueueItem:
    """One row of the queue."""

    namespace: str
    task_id: str
    state: State
    pos_attempt: str
    neg_attempt: str
    model_pos: str
    model_neg: str
    tries: int
    lease_owner: str | None
    lease_until: float | None
    enqueued_at: float
    updated_at: float
    record_id: str | None
    reason: str | None
    detail: str | None


def _item(row: Sequence[Any]) -> QueueItem:
    values = list(row)
    values[7] = int(values[7])
    return QueueItem(*values)


def attempt_turns(attempt: Attempt) -> int:
    """The turns of an attempt: its assistant messages (at least one)."""
    messages = attempt.messages or []
    return max(1, sum(1 for m in messages if m.get("role") == "assistant"))


def choose_pair(
    attempts: Iterable[Attempt], strength: Callable[[str], int]
) -> tuple[Attempt, Attempt] | None:
    """The near-miss pair of one task's attempts (memory/pairs.py, `near_miss_pairs`):
    attempts ranked by model strength (descending), turns (ascending), model name, then
    age; tau+ = the first correct one, tau- = the first incorrect one of ANOTHER model (the
    strongest failing model). None when no two different models give a success and a
    failure. (Online there is no training accuracy yet, so the near-miss floor is not
    applied.)"""
    judged = [a for a in attempts if a.verdict in ("correct", "incorrect")]
    ranked = sorted(
        judged, key=lambda a: (-strength(a.model), attempt_turns(a), a.model, a.created_at, a.id)
    )
    pos = next((a for a in ranked if a.verdict == "correct"), None)
    if pos is None:
        return None
    neg = next((a for a in ranked if a.verdict == "incorrect" and a.model != pos.model), None)
    return None if neg is None else (pos, neg)


def strengths_of(table: Mapping[str, int]) -> Callable[[str], int]:
    """A strength lookup from a model -> strength table (unknown models: 0)."""
    return lambda model: int(table.get(model, 0))


class LearnQueue:
    """The persistent, bounded queue of pairs to distil (see the module doc)."""

    def __init__(
        self,
        db: ServerDB,
        attempts: AttemptStore,
        strength: Callable[[str], int] | None = None,
        *,
        max_pending: int = 1000,
        lease_s: float = 300.0,
        max_tries: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_pending < 1 or max_tries < 1 or lease_s <= 0:
            raise ValueError("max_pending and max_tries must be >= 1, lease_s > 0")
        self.db = db
        self.attempts = attempts
        self.strength = strength or (lambda model: 0)
        self.max_pending = max_pending
        self.lease_s = lease_s
        self.max_tries = max_tries
        self.clock = clock
        self.listener_errors = 0  # offers from verdicts that raised (the scan recovers them)

    # -- filling
    def on_verdict(self, attempt: Attempt) -> None:
        """The AttemptStore's listener: offer the attempt's task once it has a verdict.
        Never raises: the verdict is stored already, and the backlog scan finds the task
        again if this offer failed (counted in `listener_errors` and logged)."""
        if attempt.verdict == "unknown":
            return
        try:
            self.offer(attempt.namespace, attempt.task_id)
        except Exception:  # noqa: BLE001 - see the docstring
            self.listener_errors += 1
            log.exception("learning: offering task %s failed", attempt.task_id)

    def offer(self, namespace: str, task_id: str, *, count_deferred: bool = True) -> Offer:
        """Queue the task's pair if it has one and no row yet; "deferred" (counted) when
        the pending rows are at `max_pending`."""
        if self._has_row(namespace, task_id):
            return "exists"
        pair = choose_pair(self.attempts.by_task(namespace, task_id), self.strength)
        if pair is None:
            return "no_pair"
        pos, neg = pair
        now = self.clock()
        with self.db.write() as cur:
            if self.db.postgres:
                cur.execute("SELECT pg_advisory_xact_lock(?)", (_PG_QUEUE_LOCK,))
            pending = cur.execute(
                "SELECT COUNT(*) FROM server_learn_queue WHERE state = 'pending'"
            ).fetchone()
            if pending is not None and int(pending[0]) >= self.max_pending:
                if count_deferred:
                    self._bump(cur, namespace, "deferred")
                return "deferred"
            cur.execute(
                f"INSERT INTO server_learn_queue ({_COLUMNS}) VALUES "
                "(?, ?, 'pending', ?, ?, ?, ?, 0, NULL, NULL, ?, ?, NULL, NULL, NULL) "
                "ON CONFLICT (namespace, task_id) DO NOTHING",
                (namespace, task_id, pos.id, neg.id, pos.model, neg.model, now, now),
            )
            return "queued" if cur.rowcount == 1 else "exists"

    def refill(self) -> dict[str, int]:
        """The backlog scan: offer every task with a cross-model contrast that has no row,
        oldest first, until the queue is full; returns what the offers said."""
        said: dict[str, int] = {}
        for namespace, task_id in self._backlog():
            outcome = self.offer(namespace, task_id, count_deferred=False)
            said[outcome] = said.get(outcome, 0) + 1
            if outcome == "deferred":
                break
        return said

    def _backlog(self, namespace: str | None = None) -> list[tuple[str, str]]:
        """(namespace, task) of tasks with judged attempts of two or more models, a success
        and a failure, and no queue row, oldest first (choose_pair decides the rest)."""
        where, params = "", []
        if namespace is not None:
            where, params = "AND a.namespace = ? ", [namespace]
        rows = self.db.query(
            "SELECT a.namespace, a.task_id FROM server_attempts a "
            f"WHERE a.verdict IN ('correct', 'incorrect') {where}"
            "AND NOT EXISTS (SELECT 1 FROM server_learn_queue q "
            "WHERE q.namespace = a.namespace AND q.task_id = a.task_id) "
            "GROUP BY a.namespace, a.task_id "
            "HAVING COUNT(DISTINCT a.model) >= 2 "
            "AND SUM(CASE WHEN a.verdict = 'correct' THEN 1 ELSE 0 END) > 0 "
            "AND SUM(CASE WHEN a.verdict = 'incorrect' THEN 1 ELSE 0 END) > 0 "
            "ORDER BY MIN(a.created_at), a.namespace, a.task_id",
            params,
        )
        return [(str(ns), str(task)) for ns, task in rows]

    def waiting(self, namespace: str) -> int:
        """Tasks of the namespace with a contrast and no row yet (what a refill would offer;
        a few may turn out to have no pair of two different models)."""
        return len(self._backlog(namespace))

    # -- working
    def claim(self, owner: str) -> QueueItem | None:
        """Claim the oldest pending row (or one whose lease expired) for `owner`, with a
        lease of `lease_s`; None when there is none. Expired leases past the last try fail."""
        now = self.clock()
        with self.db.write() as cur:
            cur.execute(
                "UPDATE server_learn_queue SET state = 'failed', reason = 'lease_expired', "
                "detail = ?, lease_owner = NULL, lease_until = NULL, updated_at = ? "
                "WHERE state = 'claimed' AND lease_until < ? AND tries >= ?",
                (
                    f"the lease expired {self.max_tries} times (the worker died or hung)",
                    now,
                    now,
                    self.max_tries,
                ),
            )
        for _ in range(5):  # another worker may take the row between the read and the update
            with self.db.write() as cur:
                lock = " FOR UPDATE SKIP LOCKED" if self.db.postgres else ""
                row = cur.execute(
                    "SELECT namespace, task_id FROM server_learn_queue WHERE state = 'pending' "
                    "OR (state = 'claimed' AND lease_until < ?) "
                    f"ORDER BY enqueued_at, namespace, task_id LIMIT 1{lock}",
                    (now,),
                ).fetchone()
                if row is None:
                    return None
                cur.execute(
                    "UPDATE server_learn_queue SET state = 'claimed', lease_owner = ?, "
                    "lease_until = ?, tries = tries + 1, updated_at = ? "
                    "WHERE namespace = ? AND task_id = ? AND (state = 'pending' "
                    "OR (state = 'claimed' AND lease_until < ?))",
                    (owner, now + self.lease_s, now, row[0], row[1], now),
                )
                if cur.rowcount == 1:
                    return self.get(str(row[0]), str(row[1]))
        return None

    def finish(
        self,
        cur: Cursor,
        item: QueueItem,
        owner: str,
        *,
        state: Literal["done", "refused"],
        record_id: str | None = None,
        reason: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Inside the caller's `ServerDB.write()`: mark the row done (with its record) or
        refused (with the reason); LeaseLostError, so the caller's transaction rolls back,
        when `owner` no longer holds the row."""
        cur.execute(
            "UPDATE server_learn_queue SET state = ?, record_id = ?, reason = ?, detail = ?, "
            "lease_owner = NULL, lease_until = NULL, updated_at = ? "
            "WHERE namespace = ? AND task_id = ? AND state = 'claimed' AND lease_owner = ?",
            (
                state,
                record_id,
                reason,
                None if detail is None else json.dumps(dict(detail), sort_keys=True),
                self.clock(),
                item.namespace,
                item.task_id,
                owner,
            ),
        )
        if cur.rowcount != 1:
            raise LeaseLostError(f"task {item.task_id!r} of {item.namespace!r}: lease lost")

    def refuse(
        self, item: QueueItem, owner: str, reason: str, detail: Mapping[str, Any] | None = None
    ) -> None:
        """Mark the row refused with `reason` (LeaseLostError when no longer held)."""
        with self.db.write() as cur:
            self.finish(cur, item, owner, state="refused", reason=reason, detail=detail)

    def fail(self, item: QueueItem, owner: str, error: str) -> State:
        """An error while working the row: back to pending while tries are left, else
        failed; returns the new state (LeaseLostError when no longer held)."""
        with self.db.write() as cur:
            row = cur.execute(
                "SELECT tries FROM server_learn_queue WHERE namespace = ? AND task_id = ? "
                "AND state = 'claimed' AND lease_owner = ?",
                (item.namespace, item.task_id, owner),
            ).fetchone()
            if row is None:
                raise LeaseLostError(f"task {item.task_id!r} of {item.namespace!r}: lease lost")
            state: State = "failed" if int(row[0]) >= self.max_tries else "pending"
            cur.execute(
                "UPDATE server_learn_queue SET state = ?, reason = ?, detail = ?, "
                "lease_owner = NULL, lease_until = NULL, updated_at = ? "
                "WHERE namespace = ? AND task_id = ?",
                (
                    state,
                    "error" if state == "failed" else None,
                    error[:2000],
                    self.clock(),
                    item.namespace,
                    item.task_id,
                ),
            )
        return state

    def release(self, owner: str) -> int:
        """Give back every row `owner` holds (a clean stop): pending again, the try not
        counted; returns how many."""
        with self.db.write() as cur:
            cur.execute(
                "UPDATE server_learn_queue SET state = 'pending', lease_owner = NULL, "
                "lease_until = NULL, tries = tries - 1, updated_at = ? "
                "WHERE state = 'claimed' AND lease_owner = ?",
                (self.clock(), owner),
            )
            return cur.rowcount

    # -- reading
    def get(self, namespace: str, task_id: str) -> QueueItem:
        """One row; KeyError when there is none."""
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM server_learn_queue WHERE namespace = ? AND task_id = ?",
            (namespace, task_id),
        )
        if not rows:
            raise KeyError(f"no queue row for task {task_id!r} of {namespace!r}")
        return _item(rows[0])

    def items(self, namespace: str | None = None) -> list[QueueItem]:
        """Every row (of one namespace), oldest first."""
        where, params = ("WHERE namespace = ? ", [namespace]) if namespace is not None else ("", [])
        rows = self.db.query(
            f"SELECT {_COLUMNS} FROM server_learn_queue {where}"
            "ORDER BY enqueued_at, namespace, task_id",
            params,
        )
        return [_item(r) for r in rows]

    def counts(self, namespace: str | None = None) -> dict[str, Any]:
        """Queue depth by state, distilled (done), refused by reason, failed by reason,
        deferred offers and distiller runs: of one namespace, or of all together (None)."""
        where, params = ("WHERE namespace = ? ", [namespace]) if namespace is not None else ("", [])
        by_state = dict.fromkeys(STATES, 0)
        refused: dict[str, int] = {}
        failed: dict[str, int] = {}
        for state, reason, n in self.db.query(
            f"SELECT state, reason, COUNT(*) FROM server_learn_queue {where}GROUP BY state, reason",
            params,
        ):
            by_state[state] = by_state.get(state, 0) + int(n)
            if state == "refused":
                refused[str(reason)] = refused.get(str(reason), 0) + int(n)
            elif state == "failed":
                failed[str(reason)] = failed.get(str(reason), 0) + int(n)
        counters: dict[str, int] = {}
        for name, value in self.db.query(
            f"SELECT name, SUM(value) FROM server_learn_counts {where}GROUP BY name", params
        ):
            counters[str(name)] = int(value)
        return {
            "queue": by_state,
            "distilled": by_state["done"],
            "refused": dict(sorted(refused.items())),
            "failed": dict(sorted(failed.items())),
            "deferred": counters.get("deferred", 0),
            "distillations": counters.get("distillations", 0),
        }

    def count(self, namespace: str, name: str, by: int = 1) -> None:
        """Add `by` to a counter of the namespace, in a transaction of its own (kept when
        the work it counts is lost to a crash: e.g. "distillations", each distiller run)."""
        with self.db.write() as cur:
            self._bump(cur, namespace, name, by)

    # -- internals
    def _has_row(self, namespace: str, task_id: str) -> bool:
        return bool(
            self.db.query(
                "SELECT 1 FROM server_learn_queue WHERE namespace = ? AND task_id = ?",
                (namespace, task_id),
            )
        )

    @staticmethod
    def _bump(cur: Cursor, namespace: str, name: str, by: int = 1) -> None:
        cur.execute(
            "INSERT INTO server_learn_counts (namespace, name, value) VALUES (?, ?, ?) "
            "ON CONFLICT (namespace, name) DO UPDATE SET value = "
            "server_learn_counts.value + excluded.value",
            (namespace, name, by),
        )
