"""Distillation on the scripted model: parsing, repair, screening, the prompt and its budget."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import pytest

from memcollab.llm.base import ChatRequest
from memcollab.memory.distill import (
    REJECT_REASONS,
    DistillStats,
    parse_constraints,
    prompts,
)
from memcollab.memory.pairs import Pair
from memcollab.memory.record import Constraint
from memcollab.tasks.task import Task
from memcollab.trajectory import ToolRun
from tests.memory.distill_helpers import CODE, GOOD, MATH, distiller, line, math_pair, traj


def request_chars(request: ChatRequest) -> int:
    return sum(len(m.content) for m in request.messages)


# --------------------------------------------------------------------------- output formats


def test_json_output() -> None:
    payload = [{"when": w, "enforce": e, "avoid": a} for w, e, a in GOOD[:2]]
    d, _ = distiller([json.dumps(payload)])
    result = d.distill(MATH, math_pair())
    assert result.status == "ok"
    assert result.constraints == tuple(
        Constraint(when=w, enforce=e, avoid=a) for w, e, a in GOOD[:2]
    )
    assert (result.retries, result.candidates, dict(result.rejected)) == (0, 2, {})
    assert result.raw_outputs == (json.dumps(payload),)


def test_json_object_forms() -> None:
    w, e, a = GOOD[0]
    wrapped = json.dumps({"constraints": [{"When": w, "Enforce": e, "Avoid": a}]})
    single = json.dumps({"situation": w, "invariant": e, "violation": a})
    strings = json.dumps([line(w, e, a)])
    trailing_comma = f'[{{"when": "{w}", "enforce": "{e}", "avoid": "{a}",}},]'
    for text in (wrapped, single, strings, trailing_comma):
        assert parse_constraints(text).candidates[0].when == w, text


def test_line_output() -> None:
    d, _ = distiller(["\n".join(line(*g) for g in GOOD[:3])])
    result = d.distill(MATH, math_pair())
    assert result.status == "ok"
    assert [c.text() for c in result.constraints] == [line(*g) for g in GOOD[:3]]


def test_fenced_output() -> None:
    payload = json.dumps([{"when": w, "enforce": e, "avoid": a} for w, e, a in GOOD[:1]])
    for text in (f"```json\n{payload}\n```", f"Here you go:\n```\n{line(*GOOD[1])}\n```\n"):
        d, _ = distiller([text])
        result = d.distill(MATH, math_pair())
        assert result.status == "ok" and len(result.constraints) == 1, text


@pytest.mark.parametrize(
    "text",
    [
        "1. {0}\n2. {1}",
        "1) {0}\n2) {1}",
        "- {0}\n* {1}",
        "Here are the constraints:\n\n**1.** {0}\n\n**2.** {1}\n\nHope this helps.",
        "Constraint 1: {0}\nConstraint 2: {1}",
        "{0} {1}",
    ],
)
def test_numbered_and_bulleted_lists(text: str) -> None:
    parsed = parse_constraints(text.format(line(*GOOD[0]), line(*GOOD[1])))
    assert [(c.when, c.enforce, c.avoid) for c in parsed.candidates] == GOOD[:2]


def test_labelled_and_loose_sentences() -> None:
    labelled = "### Constraint 1\nWhen: units change\nEnforce: one unit\nAvoid: mixing units\n"
    assert parse_constraints(labelled).candidates[0].avoid == "mixing units"
    bold = "- **When** units change, **enforce** one unit; **avoid** mixing units."
    assert parse_constraints(bold).candidates[0].enforce == "one unit"
    loose = "When units change, always enforce one unit while avoiding mixed units"
    c = parse_constraints(loose).candidates[0]
    assert (c.when, c.enforce, c.avoid) == ("units change", "one unit", "mixed units")


# --------------------------------------------------------------------------- repair, malformed


def test_malformed_then_repaired() -> None:
    d, model = distiller(["I think the answer is 72.", line(*GOOD[0])])
    result = d.distill(MATH, math_pair())
    assert result.status == "ok" and result.repaired
    assert (result.retries, len(result.raw_outputs), len(model.requests)) == (1, 2, 2)
    repair = model.requests[1].messages
    assert [m.role for m in repair] == ["system", "user", "assistant", "user"]
    assert repair[2].content == "I think the answer is 72."
    assert "When <kind of situation>, enforce" in repair[3].content
    stats = DistillStats()
    stats.add(result)
    assert (stats.repaired, stats.retries, stats.calls, stats.malformed) == (1, 1, 2, 0)


def test_malformed_twice_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    d, model = distiller(["blah", "still not the format"])
    with caplog.at_level(logging.WARNING, logger="memcollab.memory.distill"):
        result = d.distill(MATH, math_pair())
    assert result.status == "malformed" and not result.repaired
    assert result.constraints == () and result.raw_outputs == ("blah", "still not the format")
    assert len(model.requests) == 2
    assert any("malformed" in r.getMessage() and MATH.id in r.getMessage() for r in caplog.records)
    stats = DistillStats()
    stats.add(result)
    assert (stats.pairs, stats.malformed, stats.repaired, stats.retries) == (1, 1, 0, 1)


def test_blank_output_is_malformed_but_explicit_none_is_empty() -> None:
    d, _ = distiller(["", ""])
    assert d.distill(MATH, math_pair()).status == "malformed"
    for text in ("[]", "NONE", '{"constraints": []}'):
        d, model = distiller([text])
        result = d.distill(MATH, math_pair())
        assert (result.status, result.retries, len(model.requests)) == ("empty", 0, 1), text


# --------------------------------------------------------------------------- screening


def rejected_for(task: Task, pair: Pair, lines: Sequence[str], k: int = 20) -> dict[str, int]:
    d, _ = distiller(
        ["\n".join(f"{i}. {s}" for i, s in enumerate(lines, start=1))], max_constraints=k
    )
    return dict(d.distill(task, pair).rejected)


def test_rejects_the_tasks_numbers() -> None:
    got = rejected_for(
        MATH,
        math_pair(),
        [
            line("a count of 48 items is halved", "halving first", "skipping a step"),
            line("a value like 24 appears", "checking the half", "doubling instead"),
            line("there are 15 parts", "listing every part", "forgetting a part"),  # multi-digit
            line("a rate is 3.5 per hour", "converting units", "mixing units"),
        ],
    )
    assert got == {"number": 4}
    kept = rejected_for(
        MATH, math_pair(), [line("a quantity is split into 2 parts", "checking both", "a gap")]
    )
    assert kept == {}


def test_rejects_identifiers_code_and_quotes() -> None:
    pos = traj(
        CODE,
        "model-alpha",
        True,
        ("```python\ndef sum_of_digits(n):\n    total_sum = 0\n    return total_sum\n```",),
    )
    neg = traj(CODE, "model-beta", False, ("```python\ndef helper(n):\n    digitCount = n\n```",))
    pair = Pair(CODE.id, pos, neg, "model-alpha", "model-beta", "mixed")
    got = rejected_for(
        CODE,
        pair,
        [
            line("writing sum_of_digits", "a loop over digits", "string tricks"),  # entry point
            line("keeping a running total_sum", "starting from zero", "an unset value"),
            line("a digitCount is tracked", "updating it per digit", "stale counts"),
            line("looping over digits", "use `n % 10` each time", "string conversion"),
            line("parsing input", "calling int(x) on each piece", "implicit conversion"),
            line("comparing results", "checking a == b explicitly", "truthiness tests"),
            line("reading the examples", "matching 'abc' exactly", "ignoring case"),
            line("naming things", 'using the word "digit"', "vague names"),
            line("the answer is a fraction", "writing \\frac forms", "decimals"),
        ],
    )
    assert got == {"identifier": 3, "code": 4, "quoted": 2}
    # names the models made up that are ordinary words are fine: "helper" is not rejected
    assert rejected_for(CODE, pair, [line("a helper is needed", "one clear job", "clutter")]) == {}


def test_rejects_names_and_copied_text() -> None:
    got = rejected_for(
        MATH,
        math_pair(),
        [
            line("a seller like Natalia has friends", "counting each", "missing some"),
            line("sales happen in April and later", "adding months", "dropping one"),
            line("then she sold half as many clips", "halving the first", "doubling"),
        ],
    )
    assert got == {"name": 2, "copied_text": 1}


def test_rejects_short_incomplete_duplicate_and_template() -> None:
    got = rejected_for(
        MATH,
        math_pair(),
        [
            "When units change, enforce one unit.",  # no avoid part
            line("x", "y", "z"),
            line(*GOOD[0]),
            line(*GOOD[0])
            .upper()
            .replace("WHEN", "When")
            .replace("ENFORCE", "enforce")
            .replace("AVOID", "avoid"),
            prompts()["example"],
            line("<kind of situation>", "<the reasoning step>", "<the mistake>"),
            line("a long " + "very " * 100 + "case", "care", "haste in general"),
        ],
    )
    assert got == {
        "incomplete": 1,
        "too_short": 1,
        "duplicate": 1,
        "template": 2,
        "too_long": 1,
    }
    assert set(got) <= set(REJECT_REASONS)


def test_rejects_the_examples_parts_and_near_duplicates() -> None:
    """Seen in the committed run: a 1.5B distiller kept the example's enforce and avoid
    parts under a new "when", and repeated a constraint with one word swapped."""
    got = rejected_for(
        MATH,
        math_pair(),
        [
            line(
                "calculating the total amount spent",
                "explicit enumeration of the cases",
                "assuming the events are independent without a reason",
            ),
            line(
                "adding up the sales",
                "a sum over each period",
                "Assuming the events are independent without a reason",
            ),
            line(
                "computing the total number of items in an arrangement",
                "multiplying the count of each kind by the number of groups",
                "assuming the number of groups is fixed",
            ),
            line(
                "calculating the total number of items in an arrangement",
                "multiplying the count of each kind by the number of groups",
                "assuming the number of groups is fixed",
            ),
            line(*GOOD[0]),
        ],
    )
    assert got == {"template": 2, "duplicate": 1}


def test_all_rejected_status() -> None:
    d, _ = distiller([line("the 48 clips", "halving", "doubling the amount")])
    result = d.distill(MATH, math_pair())
    assert (result.status, result.constraints, dict(result.rejected)) == (
        "all_rejected",
        (),
        {"number": 1},
    )


def test_k_cap() -> None:
    d, _ = distiller(["\n".join(line(*g) for g in GOOD)])  # five good constraints
    result = d.distill(MATH, math_pair())
    assert [c.when for c in result.constraints] == [g[0] for g in GOOD[:3]]
    assert dict(result.rejected) == {"over_limit": 2}
    d, _ = distiller(["\n".join(line(*g) for g in GOOD)], max_constraints=1)
    assert len(d.distill(MATH, math_pair()).constraints) == 1


def test_parts_are_tidied() -> None:
    d, _ = distiller(["When Units change, enforce One unit; avoid Mixing units."])
    (c,) = d.distill(MATH, math_pair()).constraints
    assert c.text() == "When units change, enforce one unit; avoid mixing units."


# --------------------------------------------------------------------------- what it sees


def test_prompt_stays_under_budget_keeping_the_end() -> None:
    replies = [f"TURN-{i}-START " + "reasoning words " * 300 + f"TURN-{i}-END" for i in range(40)]
    tool = ToolRun(kind="python", code="print(1)", status="ok", output="out " * 2000, duration_s=0)
    long_pos = traj(MATH, "model-alpha", True, replies, tool=tool)
    long_neg = traj(MATH, "model-beta", False, replies[:5])
    long_task = MATH.model_copy(update={"prompt": MATH.prompt + " filler" * 5000})
    pair = Pair(MATH.id, long_pos, long_neg, "model-alpha", "model-beta", "mixed")
    d, model = distiller(["garbage", line(*GOOD[0])])
    d.distill(long_task, pair)
    assert len(model.requests) == 2
    for request in model.requests:
        assert request_chars(request) <= 9000
    first = model.requests[0].messages[1].content
    assert "TURN-39-END" in first and "TURN-0-START" not in first
    assert "TURN-4-END" in first  # the shorter attempt keeps its end too
    assert prompts()["omitted"] in first
    assert "Natalia sold clips" in first
    small, model = distiller([line(*GOOD[0])], max_prompt_chars=4000)
    small.distill(long_task, pair)
    assert request_chars(model.requests[0]) <= 4000


def test_short_inputs_are_shown_whole() -> None:
    d, model = distiller([line(*GOOD[0])])
    d.distill(MATH, math_pair())
    text = model.requests[0].messages[1].content
    assert MATH.prompt in text
    assert "48 / 2 = 24, 48 + 24 = 72. \\boxed{72}" in text
    assert "48 / 2 = 24. \\boxed{24}" in text
    assert prompts()["omitted"] not in text
    assert "ATTEMPT A: verdict correct" in text and "ATTEMPT B: verdict incorrect" in text


def test_distiller_sees_only_what_it_should() -> None:
    tool = ToolRun(
        kind="visible_tests", code="x", status="failed", output="AssertionError", duration_s=0
    )
    pos = traj(CODE, "model-alpha", True, ("```python\ndef sum_of_digits(n): ...\n```",))
    neg = traj(CODE, "model-beta", False, ("NEG-REPLY",), tool=tool)
    other = traj(CODE, "model-gamma", False, ("OTHER-REPLY",))
    assert other.steps  # a trajectory outside the pair is never passed in
    forbidden = [
        "SECRET-MEMORY-BLOCK",  # the agent's system prompt and its memory
        "mem-1",  # memory ids
        "REF-ANSWER",  # the reference answer / checker details
        "HIDDEN_TEST_MARKER",  # hidden tests
        "model-alpha",
        "model-beta",
        "OTHER-REPLY",
    ]
    d, model = distiller(["nonsense", "more nonsense"])
    d.distill(CODE, Pair(CODE.id, pos, neg, "model-alpha", "model-beta", "mixed"))
    for request in model.requests:
        blob = "\n".join(m.content for m in request.messages)
        for secret in forbidden:
            assert secret not in blob, secret
        assert "NEG-REPLY" in blob and "[example tests: failed]" in blob
    assert model.requests[0].decoding.temperature == 0.0

    d, model = distiller([line(*GOOD[3])])
    d.distill(CODE, Pair(CODE.id, pos, None, "model-alpha", None, "own_success"))
    blob = model.requests[0].messages[1].content
    assert "ATTEMPT A: verdict correct" in blob and "ATTEMPT B" not in blob
    assert "NEG-REPLY" not in blob
    assert prompts()["instruction"]["own_success"] in blob

    d, model = distiller([line(*GOOD[3])])
    d.distill(CODE, Pair(CODE.id, None, neg, None, "model-beta", "own_failure"))
    blob = model.requests[0].messages[1].content
    assert "ATTEMPT A: verdict incorrect" in blob and "ATTEMPT B" not in blob
    assert prompts()["instruction"]["own_failure"] in blob


def test_tie_break_instructions() -> None:
    right = Pair(
        MATH.id,
        traj(MATH, "a", True),
        traj(MATH, "b", True),
        "a",
        "b",
        "tie_break",
    )
    wrong = Pair(MATH.id, traj(MATH, "a", False), traj(MATH, "b", False), "a", "b", "tie_break")
    for pair, key in ((right, "tie_break_right"), (wrong, "tie_break_wrong")):
        d, model = distiller([line(*GOOD[0])])
        d.distill(MATH, pair)
        assert prompts()["instruction"][key] in model.requests[0].messages[1].content


def test_wrong_task_and_bad_k() -> None:
    d, _ = distiller([line(*GOOD[0])])
    with pytest.raises(ValueError, match="given with task"):
        d.distill(CODE, math_pair())
    with pytest.raises(ValueError, match="max_constraints"):
        distiller([], max_constraints=0)


def test_stats_aggregate() -> None:
    stats = DistillStats()
    outputs = {
        "ok": "\n".join(line(*g) for g in GOOD),
        "rejected": line("the 48 clips", "halving", "doubling the amount"),
        "empty": "[]",
    }
    for text in outputs.values():
        d, _ = distiller([text])
        stats.add(d.distill(MATH, math_pair()))
    d, _ = distiller(["x", "y"])
    stats.add(d.distill(MATH, math_pair()))
    assert stats.as_dict() == {
        "pairs": 4,
        "calls": 5,
        "ok": 1,
        "empty": 1,
        "all_rejected": 1,
        "malformed": 1,
        "repaired": 0,
        "retries": 1,
        "candidates": 6,
        "constraints": 3,
        "rejected": {"number": 1, "over_limit": 2},
    }


def test_ensure_reads_as_enforce() -> None:
    from memcollab.memory.distill import parse_constraints

    parsed = parse_constraints(
        "1. When adding several amounts, ensure each amount is counted once; avoid double"
        " counting.\n2. When converting units, make sure that both sides use one unit;"
        " avoid mixing units."
    )
    assert [(c.when, c.enforce) for c in parsed.candidates] == [
        ("adding several amounts", "each amount is counted once"),
        ("converting units", "both sides use one unit"),
    ]


# --------------------------------------------------------------------------- hostile output


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000,
        '{"constraints": ' + "[" * 3000,
        "{" * 5000,
        '{"a": ' * 3000,
        "[" * 900 + "]" * 900,  # valid JSON, nested deeper than any constraint list
        "[" * 5000 + "]" * 5000,
    ],
)
def test_deeply_nested_output_is_malformed_not_a_crash(text: str) -> None:
    d, model = distiller([text, text])
    result = d.distill(MATH, math_pair())
    assert (result.status, result.retries, len(model.requests)) == ("malformed", 1, 2)
    stats = DistillStats()
    stats.add(result)
    assert stats.malformed == 1


def test_deep_nesting_beside_a_good_constraint_keeps_the_good_one() -> None:
    good = {"when": GOOD[0][0], "enforce": GOOD[0][1], "avoid": GOOD[0][2]}
    text = "[" + json.dumps(good) + ", " + "[" * 500 + "]" * 500 + "]"
    parsed = parse_constraints(text)
    assert [c.when for c in parsed.candidates] == [GOOD[0][0]]
    assert len(parsed.unusable) == 1


# --------------------------------------------------------------------------- every item counted


def test_unusable_items_only_is_malformed_and_repaired() -> None:
    w, e, a = GOOD[0]
    for text in (
        json.dumps({"constraints": [{"avoid": a}]}),
        json.dumps([{"avoid": a}, {"note": "x"}]),
        json.dumps({"constraint": "no format at all here"}),
        f"1. When {w}.\n2. When {GOOD[1][0]}.",
    ):
        d, model = distiller([text, line(w, e, a)])
        result = d.distill(MATH, math_pair())
        assert (result.status, result.retries, len(model.requests)) == ("ok", 1, 2), text
        assert result.repaired

        d, _ = distiller([text, text])
        result = d.distill(MATH, math_pair())
        n = len(parse_constraints(text).unusable)
        assert n >= 1, text
        assert (result.status, result.candidates, dict(result.rejected)) == (
            "malformed",
            n,
            {"incomplete": n},
        ), text


def test_unusable_items_beside_good_ones_are_counted() -> None:
    w, e, a = GOOD[0]
    good = {"when": w, "enforce": e, "avoid": a}
    for text, unusable in (
        (json.dumps({"constraints": [good, {"avoid": "skipping checks"}]}), 1),
        (json.dumps([good, "no constraint in this text", {"note": "x"}]), 2),
        (f"1. {line(w, e, a)}\n2. When the numbers are large.", 1),
    ):
        d, _ = distiller([text])
        result = d.distill(MATH, math_pair())
        assert result.status == "ok" and len(result.constraints) == 1, text
        assert result.candidates == 1 + unusable, text
        assert dict(result.rejected) == {"incomplete": unusable}, text


def test_counts_add_up() -> None:
    stats = DistillStats()
    w, e, a = GOOD[0]
    replies = [
        [f"1. {line(*GOOD[0])}\n2. When the numbers are large.\n3. {line(*GOOD[0])}"],
        [json.dumps({"constraints": [{"avoid": a}]}), "still nothing"],
        [json.dumps([{"when": w, "enforce": e}, {"avoid": a}])],
        ["\n".join(line(*g) for g in GOOD)],
        [line("the 48 clips", "halving", "doubling the amount")],
        ["[]"],
        ["x", "y"],
    ]
    for outputs in replies:
        d, _ = distiller(outputs)
        result = d.distill(MATH, math_pair())
        assert result.candidates == len(result.constraints) + sum(result.rejected.values())
        stats.add(result)
    assert stats.candidates == stats.constraints + sum(stats.rejected.values())
    assert stats.pairs == stats.ok + stats.empty + stats.all_rejected + stats.malformed


def test_explicit_decline_stays_empty() -> None:
    for text in ("[]", "NONE", '{"constraints": []}', '{"constraints": [], "note": "none"}'):
        d, model = distiller([text])
        result = d.distill(MATH, math_pair())
        assert (result.status, result.retries, result.candidates) == ("empty", 0, 0), text
