"""A small memory for the browser tests: two namespaces, a flagged record with a history,
usage and baselines, attempts, a record added through the API (so it has a key id), and a
record whose constraint is an XSS payload."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi.testclient import TestClient

from memcollab.memory.record import Constraint, MemoryRecord, record_id, task_hash
from memcollab.server.app import create_app
from memcollab.server.context import ServerContext

NS = "team-a"
OTHER = "team-b"
BIG, SMALL, TINY = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "gemma3-270m"
XSS_WHEN = "the input holds markup such as <script>alert('xss')</script>"
XSS_ENFORCE = 'treating <img src=x onerror="window.__pwned=1;alert(1)"> as plain text'
XSS_AVOID = "closing tags like </li></ol><b id=injected>bold</b>"
OTHER_MARK = "TEAM-B-SECRET"
FLAG_REASON = "repeats the task's numbers instead of abstracting them"


def _record(
    namespace: str,
    text: str,
    domain: str,
    category: str,
    subcategory: str,
    constraints: list[Constraint],
    at: float,
) -> MemoryRecord:
    source = "t-" + task_hash(text)[:8]
    return MemoryRecord(
        id=record_id(namespace, source, "mixed", BIG, TINY, BIG),
        namespace=namespace,
        domain=domain,
        category=category,
        subcategory=subcategory,
        task_text=text,
        task_hash=task_hash(text),
        source_task_id=source,
        constraints=tuple(constraints),
        model_pos=BIG,
        model_neg=TINY,
        pair_type="mixed",
        distiller=BIG,
        created_at=at,
    )


@dataclass
class Seeded:
    """What the tests look for: the namespaces' record ids and keys."""

    linear: str  # added through the API, with usage
    divisible: str  # flagged, with a history of three events
    xss: str  # the XSS payload
    other: list[str]  # team-b's record ids
    key: str  # team-a, read scope
    other_key: str  # team-b, read scope
    writer_id: str  # the key id that added `linear`


def seed(ctx: ServerContext) -> Seeded:
    """Fill `ctx`'s memory; returns the ids and keys (secrets)."""
    client = TestClient(create_app(ctx))
    writer_id, writer = ctx.keys.create(NS, "write")
    auth = {"Authorization": f"Bearer {writer}"}
    added = client.post(
        "/v1/records",
        headers=auth,
        json={
            "domain": "math",
            "category": "algebra",
            "subcategory": "linear equations",
            "task_text": "Solve 3x + 5 = 20 for x.",
            "constraints": [
                {
                    "when": "an equation is linear in one unknown",
                    "enforce": "undoing the operations in reverse order and checking the "
                    "value in the original equation",
                    "avoid": "moving a term across the equals sign without changing its sign",
                }
            ],
            "model_pos": BIG,
            "model_neg": SMALL,
            "distiller": BIG,
        },
    )
    assert added.status_code == 201, added.text
    linear = added.json()["record"]["id"]
    divisible = _record(
        NS,
        "How many of the integers 1..100 are divisible by 6 but not by 4?",
        "math",
        "number theory",
        "divisibility",
        [
            Constraint(
                when="counting multiples in a range",
                enforce="inclusion-exclusion with the least common multiple",
                avoid="counting the overlap twice",
                support=3,
            ),
            Constraint(
                when="a count has a 'but not' condition",
                enforce="subtracting the multiples of the least common multiple",
                avoid="subtracting the multiples of the product",
            ),
        ],
        1_767_000_000.0,
    )
    xss = _record(
        NS,
        "Write a function that strips HTML tags from a string.",
        "code",
        "strings",
        "parsing",
        [Constraint(when=XSS_WHEN, enforce=XSS_ENFORCE, avoid=XSS_AVOID)],
        1_767_000_100.0,
    )
    # Offline builds and old imports are not screened; the page must show any text safely.
    ctx.memory.add(divisible, screen=False)
    ctx.memory.add(xss, screen=False)
    ctx.memory.flag(divisible.id, "vague: 'the multiples' of what?", actor="cli")
    ctx.memory.unflag(divisible.id, "reviewed: clear enough in context", actor="cli")
    ctx.memory.flag(divisible.id, FLAG_REASON, actor=f"key:{writer_id}")
    ctx.memory.store.count_retrieved([linear] * 12 + [divisible.id] * 4)
    for model, helped, harmed in ((BIG, 5, 1), (SMALL, 2, 3)):
        for _ in range(helped):
            ctx.memory.record_outcome(linear, model, True)
        for _ in range(harmed):
            ctx.memory.record_outcome(linear, model, False)
    for model, successes, failures in ((BIG, 14, 10), (SMALL, 6, 18)):
        for k in range(successes + failures):
            ctx.memory.record_baseline(
                model,
                k < successes,
                domain="math",
                category="algebra",
                subcategory="linear equations",
                namespace=NS,
            )
    for model, answer, verdict in ((BIG, "5", "correct"), (SMALL, "8.3", "incorrect")):
        body = {"model": model, "task": "Solve 3x + 5 = 20 for x.", "answer": answer}
        r = client.post("/v1/attempts", headers=auth, json={**body, "verdict": verdict})
        assert r.status_code == 201, r.text
    other = [
        _record(
            OTHER,
            f"Find the area of a triangle with sides {a}, {a + 1}, {a + 2}.",
            "math",
            "geometry",
            "triangles",
            [
                Constraint(
                    when=f"{OTHER_MARK} a triangle's three sides are given",
                    enforce=f"{OTHER_MARK} Heron's formula",
                    avoid=f"{OTHER_MARK} assuming a right angle",
                )
            ],
            1_767_000_200.0 + a,
        )
        for a in (3, 5)
    ]
    for record in other:
        ctx.memory.add(record)
    ctx.memory.flag(other[1].id, f"{OTHER_MARK} flag reason", actor="cli")
    return Seeded(
        linear=linear,
        divisible=divisible.id,
        xss=xss.id,
        other=[r.id for r in other],
        key=ctx.keys.create(NS, "read")[1],
        other_key=ctx.keys.create(OTHER, "read")[1],
        writer_id=writer_id,
    )
