"""Online learning: the contrast queue (server/learn_queue.py) and its worker
(server/learner.py), on SQLite and (when the test server answers) PostgreSQL."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from memcollab.llm.cache import CallCache, Gateway
from memcollab.llm.fleet import Fleet, ModelSpec
from memcollab.llm.scripted import ScriptedModel
from memcollab.memory.distill import Distiller
from memcollab.server.attempts import NewAttempt
from memcollab.server.context import ServerContext, Settings
from memcollab.server.learn_queue import LearnQueue
from memcollab.server.learner import LearningWorker, Outcome
from tests.memory.distill_helpers import GOOD, MATH, line
from tests.server.conftest import Storage, service_for

GOOD_OUTPUT = f"1. {line(*GOOD[0])}"  # passes the v2 screen on these attempts
REPLIES = {
    "correct": "April: 48 clips. May is half of April, 48 / 2 = 24. Compute each period"
    " separately, then sum all the parts: 48 + 24 = 72. The answer is 72.",
    "incorrect": "Half of 48 is 24, adding the fraction itself gives the answer 24.",
}


@dataclass(frozen=True)
class Label:
    category: str = "arithmetic"
    subcategory: str = "fractions"


class StubLabeller:
    def classify(self, task: Any) -> Label:
        return Label()


def key_of(ctx: ServerContext, namespace: str = "a", *, trusted: bool = True) -> str:
    """The id of a (trusted, or untrusted) write key of the namespace, made once."""
    label = "learning-test" if trusted else "learning-test-untrusted"
    for info in ctx.keys.list(namespace):
        if info.label == label:
            return info.key_id
    return ctx.keys.create(namespace, "write", label, trusted=trusted)[0]


def submit(
    ctx: ServerContext,
    model: str,
    verdict: str,
    task_id: str = "t1",
    namespace: str = "a",
    text: str = MATH.prompt,
    key_id: str | None = None,
) -> str:
    """An attempt with its verdict, sent by `key_id` (else a trusted key); returns its id."""
    answer = "72" if verdict == "correct" else "24"
    attempt, _ = ctx.attempts.add(
        namespace,
        key_id or key_of(ctx, namespace),
        NewAttempt(
            model=model,
            task_text=text,
            task_id=task_id,
            domain="math",
            messages=[
                {"role": "user", "content": text},
                {"role": "assistant", "content": REPLIES.get(verdict, "")},
            ],
            answer=answer,
            verdict=verdict,  # type: ignore[arg-type]
        ),
    )
    return attempt.id


def worker(
    ctx: ServerContext,
    output: str = GOOD_OUTPUT,
    *,
    owner: str = "w1",
    cache: CallCache | None = None,
    queue: LearnQueue | None = None,
) -> tuple[LearningWorker, ScriptedModel]:
    model = ScriptedModel(lambda request: output, name="distiller")
    distiller = Distiller(Gateway(cache).bind(model), screen="v2")
    return LearningWorker(ctx, queue or ctx.learning, distiller, StubLabeller(), owner=owner), model


def with_fleet(ctx: ServerContext, **strengths: int) -> ServerContext:
    ctx.fleet = Fleet(
        [
            ModelSpec(name=m, provider="scripted", responses=["x"], strength=s)
            for m, s in strengths.items()
        ]
    )
    return ctx


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def clocked(ctx: ServerContext, clock: Clock, **kw: Any) -> LearnQueue:
    """A queue on the context's database with a test clock (a second "process" view)."""
    return LearnQueue(ctx.db, ctx.attempts, ctx.model_strength, clock=clock, **kw)


# --------------------------------------------------------------------------- enqueue rule


def test_same_model_success_and_failure_is_no_pair(storage: Storage, kind: str) -> None:
    ctx = storage.new(kind)
    submit(ctx, "m1", "correct")
    submit(ctx, "m1", "incorrect")
    submit(ctx, "m2", "unknown")
    assert ctx.learning.items() == []
    assert ctx.learning.refill() == {}  # an unjudged attempt is no contrast
    submit(ctx, "m2", "correct")  # two models, a success and a failure: of one model
    assert ctx.learning.refill() == {"no_pair": 1}
    assert ctx.learning.items() == []


def test_different_models_give_one_pair_near_miss(storage: Storage, kind: str) -> None:
    ctx = with_fleet(storage.new(kind), strong=3, mid=2, weak=1)
    submit(ctx, "weak", "incorrect")
    good = submit(ctx, "mid", "correct")
    near = submit(ctx, "strong", "incorrect")  # the strongest failing model: tau-
    submit(ctx, "mid", "incorrect")  # the same model as tau+: never tau-
    items = ctx.learning.items("a")
    assert len(items) == 1
    # The first pair wins: mid's success against weak's failure was queued when it formed.
    assert (items[0].model_pos, items[0].model_neg, items[0].pos_attempt) == ("mid", "weak", good)
    assert items[0].state == "pending"
    assert near  # a later, nearer miss does not change the queued pair (documented)


def test_the_pair_is_chosen_by_the_near_miss_rule(storage: Storage, kind: str) -> None:
    ctx = with_fleet(storage.new(kind), strong=3, mid=2, weak=1)
    ctx.attempts.listeners.clear()  # attempts land first; the backlog scan pairs them
    submit(ctx, "weak", "incorrect")
    good = submit(ctx, "mid", "correct")
    near = submit(ctx, "strong", "incorrect")
    submit(ctx, "mid", "incorrect")
    assert ctx.learning.refill() == {"queued": 1}
    (item,) = ctx.learning.items()
    assert (item.pos_attempt, item.neg_attempt) == (good, near)
    assert (item.model_pos, item.model_neg) == ("mid", "strong")


def test_verdict_set_later_enqueues(storage: Storage, kind: str) -> None:
    ctx = storage.new(kind)
    submit(ctx, "m1", "correct")
    later = submit(ctx, "m2", "unknown")
    assert ctx.learning.items() == []
    ctx.attempts.set_verdict("a", later, "incorrect", key_of(ctx))
    assert len(ctx.learning.items()) == 1


def test_verdicts_through_the_api_enqueue_per_namespace(storage: Storage, kind: str) -> None:
    svc = service_for(storage.new(kind))
    h = svc.key("a", "write")
    for model, verdict in (("m1", "correct"), ("m2", None)):
        body = {
            "id": f"x-{model}",
            "model": model,
            "task": MATH.prompt,
            "task_id": "t",
            "answer": "7",
        }
        if verdict:
            body["verdict"] = verdict
        assert svc.client.post("/v1/attempts", json=body, headers=h).status_code == 201
    r = svc.client.post("/v1/attempts/x-m2/verdict", json={"verdict": "incorrect"}, headers=h)
    assert r.status_code == 200
    learning = svc.client.get("/v1/learning", headers=svc.key("a", "read")).json()
    assert learning["queue"]["pending"] == 1 and learning["namespace"] == "a"
    other = svc.client.get("/v1/learning", headers=svc.key("b", "read")).json()
    assert other["queue"]["pending"] == 0


# --------------------------------------------------------------------------- bounded queue


def test_full_queue_defers_and_the_backlog_scan_refills(storage: Storage, kind: str) -> None:
    ctx = storage.new(kind, Settings(learn_max_pending=2))
    for i in range(5):
        submit(ctx, "m1", "correct", task_id=f"t{i}")
        submit(ctx, "m2", "incorrect", task_id=f"t{i}")
    counts = ctx.learning.counts("a")
    assert counts["queue"]["pending"] == 2 and counts["deferred"] == 3
    assert ctx.learning.waiting("a") == 3  # nothing lost: the attempts still show them
    w, _ = worker(ctx)
    done: list[Outcome] = []
    w.run(threading.Event(), once=True, on_outcome=done.append)
    assert sorted(o.task_id for o in done) == [f"t{i}" for i in range(5)]
    assert {o.status for o in done} == {"done"}
    counts = ctx.learning.counts("a")
    assert counts["distilled"] == 5 and counts["queue"]["pending"] == 0
    assert ctx.learning.waiting("a") == 0
    assert ctx.memory.stats("a")["records"] == 5


# --------------------------------------------------------------------------- leases


def test_lease_expiry_and_reclaim(storage: Storage, kind: str) -> None:
    ctx = storage.new(kind)
    submit(ctx, "m1", "correct")
    submit(ctx, "m2", "incorrect")
    clock = Clock()
    queue = clocked(ctx, clock, lease_s=10)
    first = queue.claim("dead-worker")
    assert first is not None and first.tries == 1
    assert queue.claim("w2") is None  # held
    clock.now += 11
    again = queue.claim("w2")
    assert again is not None and again.lease_owner == "w2" and again.tries == 2
    # The first worker comes back and tries to finish: it finishes nothing.
    late, _ = worker(ctx, owner="dead-worker", queue=queue)
    assert late.process(first).status == "lost"
    live, _ = worker(ctx, owner="w2", queue=queue)
    assert live.process(again).status == "done"
    assert ctx.memory.stats("a")["records"] == 1


def test_expired_past_the_last_try_fails(storage: Storage, kind: str) -> None:
    ctx = storage.new(kind)
    submit(ctx, "m1", "correct")
    submit(ctx, "m2", "incorrect")
    clock = Clock()
    queue = clocked(ctx, clock, lease_s=1, max_tries=2)
    for _ in range(2):
        assert queue.claim("dies") is not None
        clock.now += 2
    assert queue.claim("w") is None
    assert queue.counts("a")["failed"] == {"lease_expired": 1}


def test_errors_retry_then_fail(storage: Storage, kind: str) -> None:
    ctx = storage.new(kind, Settings(learn_max_tries=2))
    submit(ctx, "m1", "correct")
    submit(ctx, "m2", "incorrect")
    w, model = worker(ctx)

    def broken(request: Any) -> str:
        raise RuntimeError("the model server is down")

    model._responses = broken  # type: ignore[assignment]
    assert w.step() == Outcome("a", "t1", "retry", "RuntimeError")
    assert w.step() == Outcome("a", "t1", "failed", "RuntimeError")
    (item,) = ctx.learning.items()
    assert item.state == "failed" and "the model server is down" in (item.detail or "")
    assert ctx.learning.counts("a")["failed"] == {"error": 1}


def test_two_workers_racing_never_double_a_record(storage: Storage, kind: str) -> None:
    ctx = storage.new(kind)
    for i in range(12):
        submit(ctx, "m1", "correct", task_id=f"t{i}")
        submit(ctx, "m2", "incorrect", task_id=f"t{i}")
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def keep(o: Outcome) -> None:
        with lock:
            outcomes.append(o)

    workers = [worker(storage.again(ctx), owner=f"w{i}")[0] for i in range(2)]
    threads = [
        threading.Thread(
            target=w.run, args=(threading.Event(),), kwargs={"once": True, "on_outcome": keep}
        )
        for w in workers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(o.task_id for o in outcomes if o.status == "done") == sorted(
        f"t{i}" for i in range(12)
    )
    assert all(o.status == "done" for o in outcomes)
    assert ctx.memory.stats("a")["records"] == 12


# --------------------------------------------------------------------------- exactly once


class Crash(BaseException):
    """Stands in for the process dying between distillation and commit."""


def test_a_crash_between_distillation_and_commit_is_redone_once(
    storage: Storage, kind: str, tmp_path: Path
) -> None:
    ctx = storage.new(kind)
    submit(ctx, "m1", "correct")
    submit(ctx, "m2", "incorrect")
    cache = CallCache(tmp_path / "calls.sqlite")
    clock = Clock()
    queue = clocked(ctx, clock, lease_s=5)
    dying, first_model = worker(ctx, owner="dying", cache=cache, queue=queue)

    def crash(*args: Any, **kw: Any) -> NoReturn:
        raise Crash

    dying.commit = crash  # type: ignore[method-assign]
    item = queue.claim("dying")
    assert item is not None
    with pytest.raises(Crash):
        dying.process(item)
    assert len(first_model.requests) == 1  # distilled ...
    assert ctx.memory.stats("a")["records"] == 0  # ... but nothing committed
    assert queue.get("a", "t1").state == "claimed"
    clock.now += 6
    heir, second_model = worker(ctx, owner="heir", cache=cache, queue=queue)
    outcome = heir.step()
    assert outcome is not None and outcome.status == "done"
    assert second_model.requests == []  # the distillation came from the call cache
    assert ctx.memory.stats("a")["records"] == 1
    assert heir.step() is None
    # The redone pair shows: two distiller runs for one row done, its row tried twice.
    assert queue.counts("a")["distillations"] == 2 and queue.counts("a")["distilled"] == 1
    assert queue.get("a", "t1").tries == 2
    prov = ctx.provenance.many([outcome.record_id or ""])[outcome.record_id or ""]
    assert prov["via"] == "learn" and prov["learned"]["worker"] == "heir"


def test_a_failing_commit_rolls_back_record_and_row(storage: Storage, kind: str) -> None:
    """The record, its provenance and the row's "done" are one transaction."""
    ctx = storage.new(kind)
    submit(ctx, "m1", "correct")
    submit(ctx, "m2", "incorrect")
    w, _ = worker(ctx)
    original = ctx.provenance.record_learned

    def fail_after_add(cur: Any, record_id: str, learned: Any) -> None:
        original(cur, record_id, learned)
        raise RuntimeError("disk full")

    ctx.provenance.record_learned = fail_after_add  # type: ignore[method-assign]
    assert w.step() == Outcome("a", "t1", "retry", "RuntimeError")
    assert ctx.memory.stats("a")["records"] == 0
    assert ctx.provenance.many(["x"]) == {}
    ctx.provenance.record_learned = original  # type: ignore[method-assign]
    outcome = w.step()
    assert outcome is not None and outcome.status == "done"
    assert ctx.memory.stats("a")["records"] == 1


# --------------------------------------------------------------------------- provenance


def test_provenance_through_the_record_endpoint(storage: Storage, kind: str) -> None:
    svc = service_for(storage.new(kind))
    ctx = svc.context
    pos = submit(ctx, "m1", "correct")
    neg = submit(ctx, "m2", "incorrect")
    w, _ = worker(ctx)
    outcome = w.step()
    assert outcome is not None and outcome.status == "done"
    r = svc.client.get(f"/v1/records/{outcome.record_id}", headers=svc.key("a", "read"))
    assert r.status_code == 200, r.text
    prov = r.json()["provenance"]
    assert prov["via"] == "learn" and prov["key_id"] is None
    learned = prov["learned"]
    assert (learned["pos_attempt"], learned["neg_attempt"]) == (pos, neg)
    assert (learned["model_pos"], learned["model_neg"]) == ("m1", "m2")
    assert learned["distiller"] == "distiller" and learned["namespace"] == "a"
    assert learned["prompt_version"].startswith("distill v1 sha256:")
    assert learned["prompt_version"].endswith("screen v2")
    assert r.json()["constraints"]
    metrics = svc.client.get("/metrics").text
    assert 'memcollab_learn_queue{state="done"} 1.0' in metrics
    assert "memcollab_learn_distilled 1.0" in metrics


# --------------------------------------------------------------------------- the commands


def test_learn_and_serve_learn_refuse_bad_settings_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from memcollab.cli import main

    memory = str(tmp_path / "m.sqlite")
    assert main(["learn", "--memory", memory]) == 2
    assert "learn needs a distiller" in capsys.readouterr().err
    assert main(["serve", "--memory", memory, "--learn", "--distiller", "d", "--workers", "2"]) == 2
    assert "--learn needs --distiller MODEL and one worker process" in capsys.readouterr().err
