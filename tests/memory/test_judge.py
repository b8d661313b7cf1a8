"""The optional model judge of the v2 screen (memory/judge.py): its grade parser, its
verdicts as rejection reasons after the word rules, unparsed replies kept and counted."""

from __future__ import annotations

import pytest

from memcollab.llm.base import ChatRequest
from memcollab.llm.cache import Gateway
from memcollab.llm.scripted import ScriptedModel
from memcollab.memory.judge import ModelJudge, judge_prompt, parse_grade
from memcollab.memory.pairs import Pair
from tests.memory.distill_helpers import distiller, line, traj
from tests.memory.test_semantic import GOOD, MEDIAN, VACUOUS


@pytest.mark.parametrize(
    ("reply", "grade"),
    [
        ("WRONG", "wrong"),
        ("Vacuous.", "vacuous"),
        ("keep", "keep"),
        ("The rule is WRONG: it forbids sorting.", "wrong"),
        ("KEEP\nWRONG", "keep"),  # the first grade named
        ("", None),
        ("It looks fine to me.", None),
        ("wrongly", None),  # a whole word only
    ],
)
def test_a_reply_gives_its_first_grade_word(reply: str, grade: str | None) -> None:
    assert parse_grade(reply) == grade


def _judge(grades: dict[str, str]) -> tuple[ModelJudge, list[ChatRequest]]:
    """A judge whose model answers by the rule's text: the first key found in the prompt's
    RULE line gives the reply; else an unparseable one."""
    asked: list[ChatRequest] = []

    def respond(request: ChatRequest) -> str:
        asked.append(request)
        rule = request.messages[-1].content.split("RULE:")[1].split("\n")[0]
        return next((reply for key, reply in grades.items() if key in rule), "Hmm.")

    return ModelJudge(Gateway(None).bind(ScriptedModel(respond, name="judge"))), asked


def test_the_judge_rejects_what_it_grades_wrong_or_vacuous_after_the_rules() -> None:
    pair = Pair(MEDIAN.id, traj(MEDIAN, "a", True), traj(MEDIAN, "b", False), "a", "b", "mixed")
    reply = "\n".join(line(*c) for c in (GOOD[0], GOOD[2], VACUOUS))
    judge, asked = _judge({"sorting the list": "KEEP", "every candidate": "WRONG"})
    d, _ = distiller([reply], screen="v2", judge=judge)
    result = d.distill(MEDIAN, pair)
    assert [c.enforce for c in result.constraints] == [GOOD[0][1]]
    assert dict(result.rejected) == {"judged_wrong": 1, "vacuous": 1}
    assert len(asked) == 2  # the rules' vacuous one never reached the judge
    prompt = asked[0].messages[-1].content
    assert MEDIAN.prompt in prompt and "WRONG, VACUOUS or KEEP" in prompt
    assert asked[0].decoding.temperature == 0.0
    stats = judge.stats()
    assert {k: stats[k] for k in ("asked", "kept", "wrong", "vacuous", "unparsed")} == {
        "asked": 2,
        "kept": 1,
        "wrong": 1,
        "vacuous": 0,
        "unparsed": 0,
    }
    assert stats["prompt"] == judge_prompt()["version"] and stats["model"] == "judge"

    judge, _ = _judge({"sorting the list": "Vacuous.", "every candidate": "keep"})
    d, _ = distiller([reply], screen="v2", judge=judge)
    result = d.distill(MEDIAN, pair)
    assert [c.enforce for c in result.constraints] == [GOOD[2][1]]
    assert dict(result.rejected) == {"judged_vacuous": 1, "vacuous": 1}


def test_a_reply_without_a_grade_keeps_the_constraint_and_is_counted() -> None:
    judge, _ = _judge({})
    pair = Pair(MEDIAN.id, traj(MEDIAN, "a", True), traj(MEDIAN, "b", False), "a", "b", "mixed")
    d, _ = distiller([line(*GOOD[0])], screen="v2", judge=judge)
    assert len(d.distill(MEDIAN, pair).constraints) == 1
    assert (judge.counts.unparsed, judge.counts.asked) == (1, 1)


def test_the_judge_runs_only_in_the_v2_screen() -> None:
    judge, _ = _judge({})
    with pytest.raises(ValueError, match="only in the v2 screen"):
        distiller(["x"], judge=judge)


def test_distill_judge_option(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from tests.test_cli import assert_one_line_error, run_cli
    from tests.test_pipeline import _setup

    fleet, runs = _setup(tmp_path)
    memory = tmp_path / "mem.sqlite"
    common = ["distill", "--runs", str(runs), "--memory", str(memory), "--fleet", fleet]
    assert_one_line_error(run_cli(*common, "--judge", "right"), "add --screen v2")
    assert_one_line_error(
        run_cli(*common, "--screen", "v2", "--judge", "nobody"), "not a model of the fleet"
    )
    assert not memory.exists()
    built = run_cli(*common, "--screen", "v2", "--judge", "right", "--no-cache")
    assert built.returncode == 0, built.stderr
    judged = json.loads((runs / "distill_summary.json").read_text())["judge"]
    assert judged["model"] == "right" and judged["prompt"] == judge_prompt()["version"]
    assert judged["asked"] >= 1  # the rules kept some: the judge graded them
    assert (
        judged["asked"] == judged["kept"] + judged["wrong"] + judged["vacuous"] + judged["unparsed"]
    )
    assert "judge: asked" in built.stdout
