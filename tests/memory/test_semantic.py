"""The semantic screen (v2): each rule fires on its example and spares good constraints."""

from __future__ import annotations

import json

import pytest

from memcollab.memory.distill import REJECT_REASONS, DistillStats, prompts
from memcollab.memory.semantic import (
    RULES,
    SEMANTIC_REJECT_REASONS,
    SemanticContext,
    explain,
    semantic_reason,
    stem,
)
from memcollab.tasks.task import Task
from tests.memory.distill_helpers import distiller, line, traj

MEDIAN = Task(
    id="math/median",
    domain="math",
    prompt="What is the median of the list 7, 1, 4, 9, 3? Then divide the largest by it.",
)
LIST_TASK = Task(
    id="code/remove",
    domain="code",
    prompt="Write a function that removes the given element from a list and returns the list.",
)

# Good abstract constraints (docs/SCREEN_GRADING.md, grade "abstract"): no rule may fire.
GOOD = [
    (
        "computing the median of a list",
        "sorting the list before taking the middle number",
        "reading the middle of the list as given",
    ),
    (
        "a total combines several quantities measured in different units",
        "converting every quantity to one unit before adding",
        "adding minutes to hours",
    ),
    (
        "the answer is the largest of several values",
        "comparing every candidate before choosing",
        "stopping at the first large one",
    ),
]


def median_ctx() -> SemanticContext:
    pos = traj(MEDIAN, "a", True, ("Sorted: 1, 3, 4, 7, 9. The median is 4; 9 / 4. \\boxed{2.25}",))
    neg = traj(MEDIAN, "b", False, ("The middle number is 4 as listed. \\boxed{2.25}",))
    return SemanticContext.build(MEDIAN, [pos, neg], prompts()["example"])


def list_ctx(output: str = "") -> SemanticContext:
    pos = traj(LIST_TASK, "a", True, ("```python\ndef remove(xs, e):\n    xs.remove(e)\n```",))
    neg = traj(
        LIST_TASK, "b", False, (f"```python\ndef remove(xs, e):\n    del xs[e]\n```{output}",)
    )
    return SemanticContext.build(LIST_TASK, [pos, neg], prompts()["example"])


@pytest.mark.parametrize("good", GOOD)
def test_no_rule_fires_on_good_constraints(good: tuple[str, str, str]) -> None:
    ctx = SemanticContext.build(
        Task(
            id="t",
            domain="math",
            prompt="A trip takes 90 minutes and 2 hours; which leg is the largest? "
            "Give the total and the median of the legs in a list.",
        ),
        [],
        prompts()["example"],
    )
    assert explain(*good, ctx) is None


@pytest.mark.parametrize(
    ("when", "enforce", "avoid", "says"),
    [
        ("converting units", "the correct conversion factor", "using a rounded value", "enforce"),
        ("computing a median", "accuracy", "sorting too late", "enforce"),
        ("computing a median", "sorting the list first", "errors", "avoid"),
        ("computing a median", "sorting the list first", "mistakes in the calculation", "avoid"),
        ("computing a median", "sorting the list", "making assumptions about the result", "avoid"),
        (
            "dividing the largest number by the median",
            "the division of the largest number by the median",
            "dividing the other way round",
            "repeats",
        ),
    ],
)
def test_vacuous(when: str, enforce: str, avoid: str, says: str) -> None:
    found = explain(when, enforce, avoid, median_ctx())
    assert found is not None and found[0] == "vacuous"
    assert says in found[1]


def test_a_formula_is_not_vacuous() -> None:
    ctx = median_ctx()
    reason = semantic_reason(
        "finding the n-th term", "the formula a_n = a + (n-1)d", "starting at the second term", ctx
    )
    assert reason != "vacuous"
    assert semantic_reason("finding a median", "the formula m = (n+1)/2", "using n/2", ctx) is None


def test_vague() -> None:
    found = explain(
        "computing a median",
        "the correct ordering of the list before taking the middle",
        "taking the middle of the unsorted list",
        median_ctx(),
    )
    assert found is not None and found[0] == "vague" and "'correct'" in found[1]
    # "expected value" is a quantity, not a request for correctness
    assert (
        semantic_reason(
            "computing a median",
            "the expected value of the middle position after sorting the list",
            "reading the middle of the unsorted list",
            median_ctx(),
        )
        is None
    )


def test_self_negation() -> None:
    reason = semantic_reason(
        "computing a median",
        "sorting the list before taking the middle",
        "sorting the list incorrectly",
        median_ctx(),
    )
    assert reason == "self_negation"
    assert (
        semantic_reason(
            "computing a median",
            "sorting the list before taking the middle",
            "not sorting the list",
            median_ctx(),
        )
        == "self_negation"
    )


def test_example_echo() -> None:
    example = prompts()["example"]
    assert "without a reason" in example  # the echo this rule is about
    found = explain(
        "computing a median",
        "sorting the list before taking the middle",
        "assuming the list is sorted without a reason",
        median_ctx(),
    )
    assert found is not None and found[0] == "example_echo" and "avoid part" in found[1]
    # the example's situation words are not an echo: a probability constraint may share them
    assert (
        semantic_reason(
            "computing the probability that several draws are all red",
            "multiplying the conditional chances of the draws in turn",
            "multiplying the unconditional chances",
            SemanticContext.build(
                Task(
                    id="p",
                    domain="math",
                    prompt="Two red draws without replacement, "
                    "what is the probability? Multiply the conditional chances.",
                ),
                [],
                example,
            ),
        )
        is None
    )


def test_unsupported() -> None:
    found = explain(
        "converting a decimal number to hexadecimal",
        "repeated modulo sixteen",
        "reversing the digits",
        median_ctx(),
    )
    assert found is not None and found[0] == "unsupported"
    assert "hexadecimal" in found[1]
    # one shared topic word is enough: the rule is "shares nothing"
    assert (
        semantic_reason(
            "converting a median to hexadecimal",
            "repeated modulo sixteen",
            "reversing the digits",
            median_ctx(),
        )
        is None
    )


def test_unsupported_reads_latex_and_code_spellings() -> None:
    task = Task(id="r", domain="math", prompt="Compute $\\sqrt{49}$.")
    ctx = SemanticContext.build(task, [], prompts()["example"])
    assert (
        semantic_reason(
            "taking a square root",
            "keeping the principal root only",
            "reporting both signs",
            ctx,
        )
        is None
    )


@pytest.mark.parametrize(
    ("enforce", "avoid", "case"),
    [
        ("checking the list is not empty first", "removing from an empty list", "empty"),
        ("checking the divisor first", "dividing by zero", "zero"),
        ("checking every index is within bounds", "reading past the end", "out-of-range"),
    ],
)
def test_unshown_edge_case(enforce: str, avoid: str, case: str) -> None:
    found = explain("removing an element from a list", enforce, avoid, list_ctx())
    assert found is not None and found[0] == "unshown_edge_case" and case in found[1]


def test_an_edge_case_the_contrast_shows_passes() -> None:
    shown = list_ctx("\nIndexError: list index out of range")
    assert (
        semantic_reason(
            "removing an element from a list",
            "checking every index is within bounds",
            "deleting by position",
            shown,
        )
        is None
    )
    empty_test = Task(id="e", domain="code", prompt="Remove an element.\nassert rm([], 1) == []")
    ctx = SemanticContext.build(empty_test, [], prompts()["example"])
    assert (
        semantic_reason(
            "removing an element from a list",
            "checking the list is not empty first",
            "removing from an empty list",
            ctx,
        )
        is None
    )


def test_stem() -> None:
    assert stem("summing") == stem("sum")
    assert stem("divides") == stem("dividing")
    assert stem("operations") == stem("operation")
    assert stem("class") == "class"


def test_semantic_reasons_are_listed() -> None:
    assert set(SEMANTIC_REJECT_REASONS) <= set(REJECT_REASONS)
    assert len(set(REJECT_REASONS)) == len(REJECT_REASONS)


# --------------------------------------------------------------------------- the distiller

VACUOUS = ("converting units", "the correct conversion factor", "using approximate values")
ECHO = (
    "computing the median of a list",
    "sorting the list first",
    "assuming the list is sorted without a reason",
)


def test_v1_keeps_what_v2_rejects_and_counts_add_up() -> None:
    reply = "\n".join(line(*c) for c in (GOOD[0], VACUOUS, ECHO))
    pos = traj(MEDIAN, "a", True)
    neg = traj(MEDIAN, "b", False)
    from memcollab.memory.pairs import Pair

    pair = Pair(MEDIAN.id, pos, neg, "a", "b", "mixed")
    v1, _ = distiller([reply])
    v2, _ = distiller([reply], screen="v2")
    r1, r2 = v1.distill(MEDIAN, pair), v2.distill(MEDIAN, pair)
    assert len(r1.constraints) == 3 and dict(r1.rejected) == {}
    assert [c.when for c in r2.constraints] == [GOOD[0][0]]
    assert dict(r2.rejected) == {"vacuous": 1, "example_echo": 1}
    for r in (r1, r2):
        assert r.candidates == len(r.constraints) + sum(r.rejected.values())
    stats = DistillStats()
    stats.add(r1)
    stats.add(r2)
    counts = stats.as_dict()
    assert counts["candidates"] == counts["constraints"] + sum(counts["rejected"].values())
    assert counts["rejected"] == {"example_echo": 1, "vacuous": 1}
    json.dumps(counts)


def test_v2_all_rejected_status() -> None:
    from memcollab.memory.pairs import Pair

    pair = Pair(MEDIAN.id, traj(MEDIAN, "a", True), traj(MEDIAN, "b", False), "a", "b", "mixed")
    d, _ = distiller([line(*VACUOUS)], screen="v2")
    result = d.distill(MEDIAN, pair)
    assert result.status == "all_rejected" and dict(result.rejected) == {"vacuous": 1}


def test_screen_choice_is_checked() -> None:
    with pytest.raises(ValueError, match="screen must be one of"):
        distiller(["x"], screen="v3")
    with pytest.raises(ValueError, match="only in the v2 screen"):
        distiller(["x"], judge=lambda text, task: None)


def test_judge_hook_runs_after_the_rules() -> None:
    from memcollab.memory.pairs import Pair

    seen: list[str] = []

    def judge(text: str, task: Task) -> str | None:
        seen.append(text)
        return "unsupported" if "largest" in text else None

    pair = Pair(MEDIAN.id, traj(MEDIAN, "a", True), traj(MEDIAN, "b", False), "a", "b", "mixed")
    reply = "\n".join(line(*c) for c in (GOOD[0], GOOD[2], VACUOUS))
    d, _ = distiller([reply], screen="v2", judge=judge)
    result = d.distill(MEDIAN, pair)
    assert [c.when for c in result.constraints] == [GOOD[0][0]]
    assert dict(result.rejected) == {"unsupported": 1, "vacuous": 1}
    assert len(seen) == 2  # the vacuous one never reached the judge

    bad, _ = distiller([reply], screen="v2", judge=lambda text, task: "nonsense")
    with pytest.raises(ValueError, match="unknown reason 'nonsense'"):
        bad.distill(MEDIAN, pair)


def test_rules_can_be_left_out_by_reason() -> None:
    ctx = median_ctx()
    echo = ECHO
    assert explain(*echo, ctx) is not None and explain(*echo, ctx)[0] == "example_echo"  # type: ignore[index]
    assert explain(*echo, ctx, skip={"example_echo"}) is None
    assert list(SEMANTIC_REJECT_REASONS) == [reason for reason, _ in RULES]
