"""The online worker files through the guarded write path: dedup on add (a learned
constraint that nearly duplicates one of its bucket merges into it), the change log names
the worker and the attempts, and a pair behind which an untrusted key stands is filed
quarantined. On SQLite and (when the test server answers) PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest

from memcollab.server.context import ServerContext
from memcollab.server.learn_queue import LeaseLostError
from memcollab.server.learner import Outcome
from tests.memory.distill_helpers import MATH
from tests.server.conftest import Storage
from tests.server.test_learning import key_of, submit, worker


def _pair(ctx: ServerContext, task_id: str, **kw: Any) -> tuple[str, str]:
    """A contrasting pair of the task (its own text, the same bucket); (pos, neg) ids."""
    text = f"Shop {task_id}. {MATH.prompt}"
    pos = submit(ctx, "m1", "correct", task_id=task_id, text=text, **kw)
    neg = submit(ctx, "m2", "incorrect", task_id=task_id, text=text, **kw)
    return pos, neg


def _learn(ctx: ServerContext) -> Outcome:
    w, _ = worker(ctx, owner="w7")
    outcome = w.step()
    assert outcome is not None and outcome.status == "done", outcome
    assert outcome.record_id is not None
    return outcome


def test_a_learned_near_duplicate_merges_into_its_bucket(storage: Storage, kind: str) -> None:
    ctx = storage.new(kind)
    pos1, neg1 = _pair(ctx, "t1")
    first = _learn(ctx)
    assert (first.record_status, first.merged) == ("active", 0)
    pos2, neg2 = _pair(ctx, "t2")  # another task of the bucket, the same lesson distilled
    second = _learn(ctx)
    assert (second.record_status, second.merged) == ("active", 1)

    kept = ctx.memory.get(first.record_id or "")
    assert [c.support for c in kept.constraints] == [2]  # support raised, not a second copy
    assert ctx.memory.get(second.record_id or "").constraints == ()
    assert sum(len(r.constraints) for r in ctx.memory.list("a")) == 1
    # Exactly once still: both rows done with their record, both provenance rows.
    assert [(i.task_id, i.state) for i in ctx.learning.items("a")] == [
        ("t1", "done"),
        ("t2", "done"),
    ]
    prov = ctx.provenance.many([first.record_id or "", second.record_id or ""])
    assert prov[second.record_id or ""]["learned"]["pos_attempt"] == pos2
    # The change log names the worker and the attempts.
    (added,) = ctx.memory.changes("a", record_id=second.record_id)
    assert added.actor == "learn:w7" and added.status_after == "active"
    assert pos2 in added.reason and neg2 in added.reason
    (first_add, *_) = ctx.memory.changes("a", record_id=first.record_id)
    assert first_add.actor == "learn:w7" and pos1 in first_add.reason and neg1 in first_add.reason
    # Committing the finished pair again (a worker whose lease was lost) changes nothing.
    again = worker(ctx, owner="w8")[0]
    item = ctx.learning.get("a", "t2")
    with pytest.raises(LeaseLostError):
        again.commit(item, ctx.memory.get(second.record_id or ""), *_attempts(ctx, item))
    assert [c.support for c in ctx.memory.get(first.record_id or "").constraints] == [2]


def _attempts(ctx: ServerContext, item: Any) -> tuple[Any, Any, dict[str, Any]]:
    return (
        ctx.attempts.get(item.namespace, item.pos_attempt),
        ctx.attempts.get(item.namespace, item.neg_attempt),
        {},
    )


def test_the_commit_joins_the_row_and_the_merge_in_one_transaction(
    storage: Storage, kind: str
) -> None:
    """A failure after the merge rolls back the raised support too."""
    ctx = storage.new(kind)
    _pair(ctx, "t1")
    first = _learn(ctx)
    _pair(ctx, "t2")
    w, _ = worker(ctx, owner="w9")
    original = ctx.provenance.record_learned

    def fail(cur: Any, record_id: str, learned: Any) -> None:
        raise RuntimeError("disk full")

    ctx.provenance.record_learned = fail  # type: ignore[method-assign]
    assert w.step() == Outcome("a", "t2", "retry", "RuntimeError")
    assert [c.support for c in ctx.memory.get(first.record_id or "").constraints] == [1]
    assert len(ctx.memory.list("a")) == 1
    ctx.provenance.record_learned = original  # type: ignore[method-assign]
    outcome = w.step()
    assert outcome is not None and (outcome.status, outcome.merged) == ("done", 1)
    assert [c.support for c in ctx.memory.get(first.record_id or "").constraints] == [2]


def test_a_pair_from_an_untrusted_key_is_filed_quarantined(storage: Storage, kind: str) -> None:
    ctx = storage.new(kind)
    _pair(ctx, "t1")
    trusted = _learn(ctx)
    untrusted = key_of(ctx, trusted=False)
    # One attempt of the pair from an untrusted key.
    text = f"Shop t2. {MATH.prompt}"
    submit(ctx, "m1", "correct", task_id="t2", text=text)
    submit(ctx, "m2", "incorrect", task_id="t2", text=text, key_id=untrusted)
    outcome = _learn(ctx)
    assert (outcome.record_status, outcome.merged) == ("quarantined", 0)
    rid = outcome.record_id or ""
    assert ctx.memory.status(rid) == "quarantined"
    assert [c.support for c in ctx.memory.get(rid).constraints] == [1]
    assert rid not in {r.id for r in ctx.memory.list("a")}  # never served
    # It vouched for nothing: the trusted record's support is unchanged.
    assert [c.support for c in ctx.memory.get(trusted.record_id or "").constraints] == [1]
    (added,) = ctx.memory.changes("a", record_id=rid)
    assert added.status_after == "quarantined" and added.actor == "learn:w7"
    assert f"untrusted key {untrusted}" in added.reason
    assert ctx.learning.get("a", "t2").state == "done"
    assert ctx.provenance.many([rid])[rid]["learned"]["task_id"] == "t2"
    # A person releases it; then it is served.
    assert ctx.memory.release(rid, "checked", "admin")
    assert rid in {r.id for r in ctx.memory.list("a")}


def test_a_verdict_from_an_untrusted_key_or_an_unknown_key_quarantines(
    storage: Storage, kind: str
) -> None:
    ctx = storage.new(kind)
    untrusted = key_of(ctx, trusted=False)
    text = f"Shop t1. {MATH.prompt}"
    submit(ctx, "m1", "correct", task_id="t1", text=text)
    later = submit(ctx, "m2", "unknown", task_id="t1", text=text)
    ctx.attempts.set_verdict("a", later, "incorrect", untrusted)  # the judgement is untrusted
    by_verdict = _learn(ctx)
    assert by_verdict.record_status == "quarantined"
    _pair(ctx, "t2", key_id="no-such-key")  # nothing vouches for a key the service lacks
    by_unknown = _learn(ctx)
    assert by_unknown.record_status == "quarantined"
    assert ctx.memory.statuses("a") == {
        by_verdict.record_id: "quarantined",
        by_unknown.record_id: "quarantined",
    }


def test_a_pair_from_a_key_revoked_since_is_filed_quarantined(storage: Storage, kind: str) -> None:
    """Revoking a key often means it leaked: attempts it sent before are no longer vouched
    for, so a pair they stand in is quarantined (a person may release it)."""
    ctx = storage.new(kind)
    leaked = ctx.keys.create("a", "write", "leaked")[0]
    _pair(ctx, "t1", key_id=leaked)
    assert ctx.keys.revoke(leaked)
    outcome = _learn(ctx)
    assert outcome.record_status == "quarantined"
    (added,) = ctx.memory.changes("a", record_id=outcome.record_id)
    assert f"untrusted key {leaked}" in added.reason
