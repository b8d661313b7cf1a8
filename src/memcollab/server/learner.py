"""The online-learning worker: claims a queued pair, distils it, files the record.

For each claimed row of the queue (server/learn_queue.py) the worker reads the two stored
attempts, turns them into what the distiller reads (a Task from the task text and domain;
a Trajectory per attempt: each assistant message a turn, the final answer, the verdict),
distils the pair (memory/distill.py, the v2 screen by default), labels the task (the
trained labeller, or the LLM one), makes the record exactly as a batch build does
(memory/build.py `pair_record`) and screens it whole (memory/poison.py: the task text too).
Then, in ONE transaction: the queue row becomes "done" (only while this worker still holds
its lease), the record is filed under the attempts' namespace through `Memory.add_or_merge`
(memory/dedup.py: a learned constraint that nearly duplicates one of its bucket merges
into it, raising its support), and its provenance (attempts, models, distiller, prompt
version, worker, time) is written. A crash before the commit leaves the row claimed; after
its lease another worker does it again, and the distiller's calls come from the call cache
when they had finished. The change log names the worker (actor "learn:WORKER") and the
attempts (the reason).

A learned record is active: the worker distils judged attempts only. But when an attempt
of the pair, or its verdict, came from an untrusted key (server/guard.py; or a key id the
service does not know, or a key revoked since: revoking a key often means it leaked, so
what it sent is no longer vouched for), the record is filed quarantined, as that key's
own adds are: never served, never merged into others, until released.

Outcomes that make no record are refusals with a reason: the v2 / form screen or the
content screen rejected every constraint ("poison:override", "vague", ...: the most
telling reason of the rejected candidates, all of them in the row's detail), the whole
record failed the content screen ("record:poison:<code>"), the distiller found nothing
("empty") or wrote nothing readable ("malformed"), or the attempts cannot be read
("unknown_domain"). An exception (a model error) is a failure, retried up to the queue's
`max_tries`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Literal

from memcollab.llm.base import Message
from memcollab.memory.build import pair_record
from memcollab.memory.dedup import AddResult
from memcollab.memory.distill import Distiller, DistillResult, prompts
from memcollab.memory.guidance import Labeller
from memcollab.memory.pairs import Pair
from memcollab.memory.poison import POISON_REASONS, screen_record
from memcollab.memory.record import MemoryRecord
from memcollab.memory.semantic import JUDGE_REASONS, SEMANTIC_REJECT_REASONS
from memcollab.server.attempts import Attempt
from memcollab.server.context import ServerContext
from memcollab.server.keys import ApiKeyError
from memcollab.server.learn_queue import LearnQueue, LeaseLostError, QueueItem, attempt_turns
from memcollab.server.proxy import guess_domain, message_text
from memcollab.tasks.task import Task, known_domain
from memcollab.trajectory import Step, Trajectory

log = logging.getLogger("memcollab.server")

Status = Literal["done", "exists", "refused", "failed", "retry", "lost"]
_POISON = tuple(f"poison:{r}" for r in POISON_REASONS)


def prompt_version(screen: str) -> str:
    """The distillation prompt's version: its file's `version`, a digest of the file, and
    the screen (what decides which constraints a record keeps)."""
    raw = files("memcollab").joinpath("prompts/distill.toml").read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:12]
    return f"distill v{prompts()['version']} sha256:{digest} screen {screen}"


def refusal_reason(result: DistillResult) -> str:
    """Why a distillation gave no constraint: "empty", "malformed", or (all rejected) the
    most telling rejection: a content-screen reason first, then a v2-screen one, then the
    most frequent other; ties by name."""
    if result.status in ("empty", "malformed"):
        return result.status
    rejected = {k: v for k, v in result.rejected.items() if v > 0}
    for group in (_POISON, (*SEMANTIC_REJECT_REASONS, *JUDGE_REASONS)):
        found = sorted((-rejected[r], r) for r in rejected if r in group)
        if found:
            return found[0][1]
    found = sorted((-n, r) for r, n in rejected.items())
    return found[0][1] if found else result.status


def attempt_domain(pos: Attempt, neg: Attempt) -> str:
    """The task's domain: the attempts' (tau+ first), else guessed from the text as the
    proxy does; ValueError when it names no registered domain."""
    return known_domain(pos.domain or neg.domain or guess_domain(pos.task_text))


def attempt_trajectory(attempt: Attempt, domain: str) -> Trajectory:
    """What the distiller reads of an attempt: each assistant message is a turn (its
    reply); without messages the final answer is the one turn; the verdict."""
    messages = attempt.messages or []
    replies = [message_text(m.get("content")) for m in messages if m.get("role") == "assistant"]
    if not replies and attempt.answer:
        replies = [attempt.answer]
    prompt = [
        Message(role=m["role"], content=message_text(m.get("content")))
        for m in messages
        if m.get("role") in ("system", "user")
    ] or [Message(role="user", content=attempt.task_text)]
    steps = tuple(
        Step(
            turn=i,
            reply=reply,
            finish_reason="stop",
            prompt_tokens=0,
            completion_tokens=0,
            latency_s=0.0,
            cached=False,
        )
        for i, reply in enumerate(replies, start=1)
    )
    return Trajectory(
        task_id=attempt.task_id,
        domain=domain,
        model=attempt.model,
        memory_ids=tuple(attempt.injected_ids),
        messages=tuple(prompt),
        steps=steps,
        final_answer=attempt.answer if attempt.answer is not None else (replies or [""])[-1],
        correct=attempt.verdict == "correct",
        check={},
        finish="answer",
        turns=attempt_turns(attempt) if steps else 0,
        prompt_tokens=0,
        completion_tokens=0,
        wall_s=0.0,
    )


@dataclass(frozen=True)
class Outcome:
    """What the worker did with one row."""

    namespace: str
    task_id: str
    status: Status
    reason: str | None = None
    record_id: str | None = None
    record_status: str | None = None
    """The filed record's status (active, or quarantined: an untrusted source)."""
    merged: int = 0
    """Constraints of the record that merged into near-duplicates of its bucket."""


def untrusted_keys(ctx: ServerContext, attempts: Sequence[Attempt]) -> list[str]:
    """The ids of the keys behind `attempts` (each one's sender and verdict giver) that
    are not trusted: marked untrusted, revoked, or unknown to the service (sorted, unique)."""
    found: set[str] = set()
    for key_id in {k for a in attempts for k in (a.key_id, a.verdict_key_id) if k}:
        try:
            info = ctx.keys.get(key_id)
            trusted = info.trusted and not info.revoked
        except ApiKeyError:  # not a key of this service: nothing vouches for it
            trusted = False
        if not trusted:
            found.add(key_id)
    return sorted(found)


class LearningWorker:
    """Works the queue: claim, distil, label, file (see the module doc)."""

    def __init__(
        self,
        ctx: ServerContext,
        queue: LearnQueue,
        distiller: Distiller,
        labeller: Labeller,
        *,
        owner: str | None = None,
    ) -> None:
        self.ctx = ctx
        self.queue = queue
        self.distiller = distiller
        self.labeller = labeller
        self.owner = owner or f"worker-{os.getpid()}-{secrets.token_hex(4)}"
        self.prompt_version = prompt_version(distiller.screen_version)

    def step(self) -> Outcome | None:
        """Claim one row and work it; None when nothing is claimable."""
        item = self.queue.claim(self.owner)
        return None if item is None else self.process(item)

    def process(self, item: QueueItem) -> Outcome:
        """Work one claimed row to its outcome (a lost lease is an outcome, not an error)."""
        try:
            return self._process(item)
        except LeaseLostError:
            log.info("learning: lease of task %s lost to another worker", item.task_id)
            return Outcome(item.namespace, item.task_id, "lost")
        except Exception as exc:  # noqa: BLE001 - a model or store error: the row is retried
            log.warning("learning: task %s failed: %s", item.task_id, exc)
            try:
                state = self.queue.fail(item, self.owner, f"{type(exc).__name__}: {exc}")
            except LeaseLostError:
                return Outcome(item.namespace, item.task_id, "lost")
            status: Status = "failed" if state == "failed" else "retry"
            return Outcome(item.namespace, item.task_id, status, type(exc).__name__)

    def _refuse(
        self, item: QueueItem, reason: str, detail: Mapping[str, Any] | None = None
    ) -> Outcome:
        self.queue.refuse(item, self.owner, reason, detail)
        log.info("learning: task %s refused (%s)", item.task_id, reason)
        return Outcome(item.namespace, item.task_id, "refused", reason)

    def _process(self, item: QueueItem) -> Outcome:
        pos = self.ctx.attempts.get(item.namespace, item.pos_attempt)
        neg = self.ctx.attempts.get(item.namespace, item.neg_attempt)
        try:
            domain = attempt_domain(pos, neg)
        except ValueError as exc:
            return self._refuse(item, "unknown_domain", {"error": str(exc)})
        task = Task(id=item.task_id, domain=domain, prompt=pos.task_text)
        pair = Pair(
            item.task_id,
            attempt_trajectory(pos, domain),
            attempt_trajectory(neg, domain),
            pos.model,
            neg.model,
            "near_miss",
        )
        result = self.distiller.distill(task, pair)
        # Counted as soon as the distiller returns, before the record's transaction: a
        # crash in between leaves the run counted and the row to do again, so runs beyond
        # the rows distilled measure the pairs distilled twice.
        self.queue.count(item.namespace, "distillations")
        detail: dict[str, Any] = {"status": result.status, "rejected": dict(result.rejected)}
        if not result.constraints:
            return self._refuse(item, refusal_reason(result), detail)
        label = self.labeller.classify(task)
        record = pair_record(item.namespace, task, pair, result, label, self.distiller.name)
        verdict = screen_record(record)
        if verdict.refused:
            detail["where"] = verdict.where
            return self._refuse(item, f"record:poison:{verdict.reason}", detail)
        filed = self.commit(item, record, pos, neg, detail)
        status: Status = "done" if filed.created else "exists"
        return Outcome(
            item.namespace,
            item.task_id,
            status,
            record_id=record.id,
            record_status=filed.status,
            merged=len(filed.merged),
        )

    def commit(
        self,
        item: QueueItem,
        record: MemoryRecord,
        pos: Attempt,
        neg: Attempt,
        detail: Mapping[str, Any],
    ) -> AddResult:
        """In one transaction: the row done, the record filed (dedup on add; quarantined
        when an untrusted key stands behind the pair), its provenance. Returns what the
        add did (`created` False: a record of that id was stored already)."""
        untrusted = untrusted_keys(self.ctx, (pos, neg))
        reason = f"learned from attempts {pos.id} (correct) and {neg.id} (incorrect)"
        if untrusted:
            reason += f"; untrusted key {', '.join(untrusted)}"
        with self.ctx.db.write() as cur:
            self.queue.finish(
                cur, item, self.owner, state="done", record_id=record.id, detail=detail
            )
            result = self.ctx.memory.add_or_merge(
                record,
                status="quarantined" if untrusted else "active",
                reason=reason,
                actor=f"learn:{self.owner}",
            )
            self.ctx.provenance.record_learned(
                cur,
                record.id,
                {
                    "namespace": item.namespace,
                    "task_id": item.task_id,
                    "pos_attempt": pos.id,
                    "neg_attempt": neg.id,
                    "model_pos": pos.model,
                    "model_neg": neg.model,
                    "distiller": self.distiller.name,
                    "prompt_version": self.prompt_version,
                    "worker": self.owner,
                    "at": time.time(),
                },
            )
        return result

    def run(
        self,
        stop: threading.Event,
        *,
        once: bool = False,
        idle_s: float = 1.0,
        refill_every_s: float = 30.0,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> None:
        """Work until `stop` is set (or, with `once`, until nothing is claimable after a
        backlog scan). The backlog scan runs first and every `refill_every_s`; the rows
        this worker holds when it stops go back to pending."""
        last_refill = float("-inf")
        try:
            while not stop.is_set():
                if time.monotonic() - last_refill >= refill_every_s:
                    self.queue.refill()
                    last_refill = time.monotonic()
                outcome = self.step()
                if outcome is not None:
                    if on_outcome is not None:
                        on_outcome(outcome)
                    continue
                if once:
                    self.queue.refill()
                    if self.queue.counts()["queue"]["pending"] == 0:
                        return
                    continue
                stop.wait(idle_s)
        finally:
            try:
                self.queue.release(self.owner)
            except Exception as exc:  # noqa: BLE001 - stopping anyway; the lease expires
                log.warning("learning: could not release the claims of %s: %s", self.owner, exc)
