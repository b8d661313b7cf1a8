"""Contrastive pairing: success vs failure per task, the >2-model rule, tie-breaks, baselines."""

from __future__ import annotations

import random

import pytest

from memcollab.llm.base import Message
from memcollab.memory.pairs import Pair, make_pairs, own_pairs, self_contrast_pairs
from memcollab.trajectory import Step, Trajectory

STRENGTHS = {"big": 3, "mid": 2, "small": 1}


def traj(
    task_id: str,
    model: str,
    correct: bool,
    *,
    turns: int = 1,
    sample_index: int = 0,
    condition: str = "vanilla",
) -> Trajectory:
    """A minimal trajectory with `turns` one-line steps."""
    steps = tuple(
        Step(
            turn=i,
            reply=f"reply {i}",
            finish_reason="stop",
            prompt_tokens=1,
            completion_tokens=1,
            latency_s=0.0,
            cached=False,
        )
        for i in range(1, turns + 1)
    )
    return Trajectory(
        task_id=task_id,
        domain="math",
        model=model,
        condition=condition,
        sample_index=sample_index,
        messages=(Message(role="user", content="q"),),
        steps=steps,
        final_answer="x",
        correct=correct,
        check={},
        finish="answer",
        turns=turns,
        prompt_tokens=turns,
        completion_tokens=turns,
        wall_s=0.0,
    )


def outcomes(table: dict[str, dict[str, bool]]) -> list[Trajectory]:
    """Trajectories from {task: {model: correct}}."""
    return [traj(t, m, ok) for t, row in table.items() for m, ok in row.items()]


def test_two_models_counts_and_direction() -> None:
    trajs = outcomes(
        {
            "t1": {"big": True, "small": False},
            "t2": {"big": False, "small": True},  # the weaker model may be tau+
            "t3": {"big": True, "small": True},
            "t4": {"big": False, "small": False},
        }
    )
    result = make_pairs(trajs, STRENGTHS)
    assert (result.tasks, result.mixed, result.all_right, result.all_wrong) == (4, 2, 1, 1)
    assert result.tie_breaks_used == 0
    assert [(p.task_id, p.model_pos, p.model_neg, p.pair_type) for p in result.pairs] == [
        ("t1", "big", "small", "mixed"),
        ("t2", "small", "big", "mixed"),
    ]
    for p in result.pairs:
        assert p.positive is not None and p.positive.correct
        assert p.negative is not None and not p.negative.correct
        assert (p.positive.model, p.negative.model) == (p.model_pos, p.model_neg)
    assert result.summary()["pairs"] == 2
    assert result.by_type == {"mixed": 2}


def test_tie_break_on_is_counted() -> None:
    trajs = outcomes(
        {
            "t1": {"big": True, "small": False},
            "t3": {"big": True, "small": True},
            "t4": {"big": False, "small": False},
        }
    )
    result = make_pairs(trajs, STRENGTHS, tie_break=True)
    assert result.tie_breaks_used == 2
    assert (result.mixed, result.all_right, result.all_wrong) == (1, 1, 1)
    ties = [p for p in result.pairs if p.pair_type == "tie_break"]
    assert [(p.task_id, p.model_pos, p.model_neg) for p in ties] == [
        ("t3", "big", "small"),
        ("t4", "big", "small"),
    ]
    assert result.by_type == {"mixed": 1, "tie_break": 2}


def test_three_models_best_and_worst() -> None:
    trajs = outcomes(
        {
            # two succeed: tau+ is the strongest of them; two fail: tau- the weakest of them
            "a": {"big": True, "mid": True, "small": False},
            "b": {"big": False, "mid": True, "small": True},
            "c": {"big": True, "mid": False, "small": False},
            "d": {"big": False, "mid": False, "small": True},
            "e": {"big": True, "mid": True, "small": True},
        }
    )
    result = make_pairs(trajs, STRENGTHS)
    got = {p.task_id: (p.model_pos, p.model_neg) for p in result.pairs}
    assert got == {
        "a": ("big", "small"),
        "b": ("mid", "big"),
        "c": ("big", "small"),
        "d": ("small", "mid"),
    }
    assert (result.tasks, result.mixed, result.all_right, result.all_wrong) == (5, 4, 1, 0)
    tied = make_pairs(trajs, STRENGTHS, tie_break=True)
    assert [(p.task_id, p.model_pos, p.model_neg) for p in tied.pairs if p.task_id == "e"] == [
        ("e", "big", "small")
    ]


def test_choice_is_deterministic_whatever_the_order() -> None:
    strengths = {"x": 2, "y": 2, "z": 1}
    trajs = [
        traj("t", "x", True, turns=3),
        traj("t", "y", True, turns=1),  # equally strong, fewer turns: preferred
        traj("t", "z", False),
        traj("u", "x", True),
        traj("u", "y", True),  # same strength, same turns: name order
        traj("u", "z", False),
        traj("v", "x", False, turns=1),
        traj("v", "y", False, turns=4),  # equally weak failures: the longer one is tau-
        traj("v", "z", True),
    ]
    expected = make_pairs(trajs, strengths, tie_break=True).pairs
    assert {p.task_id: (p.model_pos, p.model_neg) for p in expected} == {
        "t": ("y", "z"),
        "u": ("x", "z"),
        "v": ("z", "y"),
    }
    rng = random.Random(0)
    for _ in range(5):
        shuffled = trajs[:]
        rng.shuffle(shuffled)
        assert make_pairs(shuffled, strengths, tie_break=True).pairs == expected


def test_tie_break_with_equal_strengths_uses_two_models() -> None:
    trajs = [traj("t", "p", True), traj("t", "q", True)]
    (pair,) = make_pairs(trajs, {"p": 1, "q": 1}, tie_break=True).pairs
    assert (pair.model_pos, pair.model_neg) == ("p", "q")


def test_single_model_tasks_and_other_samples() -> None:
    trajs = [
        traj("t1", "big", True),
        traj("t2", "big", True),
        traj("t2", "small", False),
        traj("t2", "small", True, sample_index=1),
    ]
    result = make_pairs(trajs, STRENGTHS, tie_break=True)
    assert (result.tasks, result.single_model, result.ignored, len(result.pairs)) == (2, 1, 1, 1)
    assert result.tie_breaks_used == 0


def test_input_errors() -> None:
    with pytest.raises(ValueError, match="strength"):
        make_pairs([traj("t", "unknown", True)], STRENGTHS)
    with pytest.raises(ValueError, match="one condition"):
        make_pairs([traj("t", "big", True), traj("t", "small", False, condition="x")], STRENGTHS)
    with pytest.raises(ValueError, match="several"):
        make_pairs([traj("t", "big", True), traj("t", "big", False)], STRENGTHS)
    with pytest.raises(ValueError, match="no trajectory"):
        Pair("t", None, None, None, None, "mixed")
    with pytest.raises(ValueError, match="holds a trajectory"):
        Pair("t", traj("u", "big", True), None, "big", None, "own_success")


def test_own_pairs() -> None:
    trajs = outcomes({"t1": {"big": True, "small": False}, "t2": {"big": False, "small": True}})
    result = own_pairs(trajs, "big")
    assert [(p.task_id, p.pair_type) for p in result.pairs] == [
        ("t1", "own_success"),
        ("t2", "own_failure"),
    ]
    success, failure = result.pairs
    assert success.negative is None and success.positive is not None
    assert (success.model_pos, success.model_neg) == ("big", None)
    assert failure.positive is None and failure.negative is not None
    assert (failure.model_pos, failure.model_neg) == (None, "big")
    assert (result.tasks, result.all_right, result.all_wrong, result.ignored) == (2, 1, 1, 2)
    assert result.by_type == {"own_success": 1, "own_failure": 1}


def test_self_contrast_pairs() -> None:
    trajs = [
        traj("t1", "mid", False, sample_index=0),
        traj("t1", "mid", True, sample_index=2),
        traj("t1", "mid", True, sample_index=1),
        traj("t1", "mid", False, sample_index=3),
        traj("t2", "mid", True, sample_index=0),
        traj("t2", "mid", True, sample_index=1),
        traj("t3", "mid", False, sample_index=0),
        traj("t1", "big", True),
    ]
    result = self_contrast_pairs(trajs, "mid")
    (pair,) = result.pairs
    assert pair.pair_type == "self_contrast"
    assert pair.positive is not None and pair.negative is not None
    assert (pair.positive.sample_index, pair.negative.sample_index) == (1, 0)
    assert (pair.model_pos, pair.model_neg) == ("mid", "mid")
    assert (result.tasks, result.mixed, result.all_right, result.all_wrong) == (3, 1, 1, 1)
    assert (result.single_model, result.ignored) == (1, 1)
    with pytest.raises(ValueError, match="repeated"):
        self_contrast_pairs([traj("t", "mid", True), traj("t", "mid", False)], "mid")


def test_near_miss_pairs_the_best_success_with_the_strongest_failure() -> None:
    from memcollab.memory.pairs import PairingRule, near_miss_pairs, pair_by_rule

    # small answers 1 of 25 tasks right (4% < the 5% floor); mid and big do better
    trajectories = []
    for i in range(25):
        trajectories += [
            traj(f"t{i}", "big", i < 20),
            traj(f"t{i}", "mid", i < 5),
            traj(f"t{i}", "small", i == 0),
        ]
    result = near_miss_pairs(trajectories, STRENGTHS)
    by_task = {p.task_id: p for p in result.pairs}
    # t5..t19: big right, mid and small wrong -> tau- is mid (the strongest failure)
    assert all(
        (by_task[f"t{i}"].model_pos, by_task[f"t{i}"].model_neg) == ("big", "mid")
        for i in range(5, 20)
    )
    # t1..t4: big and mid right, only small wrong: small is under the floor -> no pair
    assert result.below_floor == 4 and not any(f"t{i}" in by_task for i in range(1, 5))
    assert result.excluded == ("math:small",)
    assert result.mixed == 19 and len(result.pairs) == 15
    assert result.by_type == {"near_miss": 15}
    assert result.summary()["below_floor"] == 4
    # the paper's rule pairs against the weakest failure instead
    paper = make_pairs(trajectories, STRENGTHS)
    assert {p.model_neg for p in paper.pairs} == {"small"}
    # floor 0 keeps the weak model as a possible tau-
    none_excluded = pair_by_rule(trajectories, PairingRule("near_miss", floor=0.0), STRENGTHS)
    assert none_excluded.below_floor == 0 and len(none_excluded.pairs) == 19
