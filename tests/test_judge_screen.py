"""benchmarks/judge_screen.py: the judge's verdicts on blind-graded constraints against
their grades, per memory and pooled, with every call cached."""

from __future__ import annotations

import json
from pathlib import Path

from memcollab.llm.base import ChatRequest, Model
from memcollab.llm.fleet import ModelSpec
from memcollab.llm.scripted import ScriptedModel
from tests.support.benchmarks import load_benchmark


def build_judge(spec: ModelSpec) -> Model:
    """A judge that calls a rule WRONG when it says "never", VACUOUS when it says
    "correct", and says nothing gradeable when it says "maybe"; else KEEP."""

    def respond(request: ChatRequest) -> str:
        rule = request.messages[-1].content.split("RULE:")[1].split("\n")[0]
        for word, reply in (("never", "WRONG"), ("correct", "VACUOUS"), ("maybe", "Hmm.")):
            if word in rule:
                return reply
        return "KEEP"

    return ScriptedModel(respond, name=spec.name)


ITEMS = [  # (item, constraint, its blind grade, its memory)
    ("c1", "When sorting, never compare.", "wrong", "old"),
    ("c2", "When adding, be correct.", "vacuous", "old"),
    ("c3", "When finding a median, sort first.", "abstract", "new"),
    ("c4", "When adding units, maybe convert.", "wrong", "new"),
    ("c5", "When counting pairs, never count twice.", "task_specific", "new"),
]


def _blind(folder: Path) -> Path:
    folder.mkdir()
    lines = [{"item": i, "task": f"task of {i}", "constraint": c} for i, c, _, _ in ITEMS]
    (folder / "listing.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    grades = [{"item": i, "grade": g, "reason": "r"} for i, _, g, _ in ITEMS]
    (folder / "grades.jsonl").write_text("".join(json.dumps(x) + "\n" for x in grades))
    key = {i: {"source": m} for i, _, _, m in ITEMS}
    (folder / "key.json").write_text(json.dumps(key))
    return folder


def test_judge_screen_counts_verdicts_against_grades(tmp_path: Path) -> None:
    bench = load_benchmark("judge_screen")
    fleet = tmp_path / "fleet.toml"
    fleet.write_text('[models.j]\nprovider = "tests.test_judge_screen:build_judge"\n')
    out, cache = tmp_path / "out.json", tmp_path / "calls.sqlite"
    args = ["--dir", str(_blind(tmp_path / "blind")), "--judge", "j", "--fleet", str(fleet)]
    assert bench.main([*args, "--cache", str(cache), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["verdicts"] == {
        "c1": "judged_wrong",
        "c2": "judged_vacuous",
        "c3": None,
        "c4": None,  # no grade in the reply: kept (counted as unparsed)
        "c5": "judged_wrong",
    }
    assert result["judge"]["unparsed"] == 1 and result["judge"]["asked"] == 5
    pooled = result["summary"]["pooled"]
    assert (pooled["bad_rejected"], pooled["bad"], pooled["good_kept"], pooled["good"]) == (
        2,
        3,
        1,
        2,
    )
    assert pooled["wrong_plus_vacuous_before"] == 0.6
    assert pooled["wrong_plus_vacuous_among_kept"] == 0.5  # kept: c3 (abstract), c4 (wrong)
    assert result["summary"]["old"]["bad_rejected"] == 2 and result["summary"]["new"]["n"] == 3
    assert pooled["confusion"]["task_specific -> judged_wrong"] == 1
    # A second run replays every call from the cache.
    assert bench.main([*args, "--cache", str(cache), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["verdicts"] == result["verdicts"]
