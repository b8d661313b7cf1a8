"""Feedback on a proxied exchange: its verdict, and what memory learns from it.

A verdict (correct / incorrect) is set once per attempt. Setting it counts, through the
memory's own API (memory/utility.py):

* for every record injected into the exchange, `Memory.record_outcome(record, model,
  helped=verdict is correct)`;
* for a proxied exchange that got no record (memory none, gated, skipped or error),
  `Memory.record_baseline(model, success, bucket)`: the model's success without memory in
  the bucket the task was labelled into (the domain when no labeller is configured).

The same verdict again changes nothing (`counted: false`); another verdict for an attempt
that has one is a conflict (409), because counts cannot be taken back. Attempts submitted
through POST /v1/attempts (not proxied) count outcomes for their injected records too, but
no baseline (nothing says what bucket they were searched in).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from memcollab.memory.guidance import UNLABELLED
from memcollab.memory.store import MemoryNotFoundError
from memcollab.server.attempts import Attempt, AttemptConflictError, Verdict
from memcollab.server.context import ServerContext

log = logging.getLogger("memcollab.server")


@dataclass(frozen=True)
class FeedbackResult:
    attempt: Attempt
    counted: bool
    outcomes: int
    baseline: bool


def apply_feedback(
    ctx: ServerContext, namespace: str, key_id: str, attempt: Attempt, verdict: Verdict
) -> FeedbackResult:
    """Record `verdict` on `attempt` and count its outcomes once (see the module doc)."""
    if attempt.verdict == verdict:
        return FeedbackResult(attempt, False, 0, False)
    if attempt.verdict != "unknown":
        raise _conflict(attempt)
    claimed = ctx.attempts.claim_verdict(namespace, attempt.id, verdict, key_id)
    if claimed is None:  # another feedback call set it meanwhile
        current = ctx.attempts.get(namespace, attempt.id)
        if current.verdict == verdict:
            return FeedbackResult(current, False, 0, False)
        raise _conflict(current)
    helped = verdict == "correct"
    outcomes = 0
    for rid in dict.fromkeys(claimed.injected_ids):
        try:
            ctx.memory.record_outcome(rid, claimed.model, helped)
            outcomes += 1
        except MemoryNotFoundError:
            log.warning("feedback: record %s of attempt %s is gone", rid, claimed.id)
    baseline = False
    meta = claimed.metadata
    if not claimed.injected_ids and meta.get("via") == "proxy" and claimed.domain:
        ctx.memory.record_baseline(
            claimed.model,
            helped,
            domain=claimed.domain,
            category=meta.get("category", UNLABELLED),
            subcategory=meta.get("subcategory", UNLABELLED),
            namespace=namespace,
        )
        baseline = True
    return FeedbackResult(claimed, True, outcomes, baseline)


def _conflict(attempt: Attempt) -> AttemptConflictError:
    return AttemptConflictError(
        f"attempt {attempt.id!r} already has the verdict {attempt.verdict!r}",
        "outcomes are counted once per attempt; a changed verdict cannot be counted again",
    )
