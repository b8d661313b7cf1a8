"""Answer extraction and math-verify equivalence on real GSM8K / MATH rows.

The benchmark files are read by path (never copied here): MEMCOLLAB_DATA_DIR, else
``../shared/data`` next to the repository. Every table row below names a dataset row index;
the model outputs are written here, the references come from the data. Known math-verify
limitations are kept in the tables as strict xfails, with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from math_verify.errors import TimeoutException

from memcollab.tasks.math_check import (
    MathVerdict,
    Style,
    _run_with_deadline,  # the deadline alone
    check_math,
    extract_answer,
    last_boxed,
    reference_answer_gsm8k,
    reference_answer_math,
)


def _data_dir() -> Path:
    env = os.environ.get("MEMCOLLAB_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


DATA_DIR = _data_dir()
GSM8K_TEST = DATA_DIR / "gsm8k" / "test.jsonl"
MATH500 = DATA_DIR / "math" / "math500_test.jsonl"
MATH_TRAIN = DATA_DIR / "math" / "train.jsonl"


@cache
def _rows(path: Path) -> list[dict[str, Any]] | None:
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _missing(path: Path) -> Any:
    return pytest.param(
        None,
        None,
        None,
        marks=pytest.mark.skip(reason=f"benchmark data not found: {path} (set MEMCOLLAB_DATA_DIR)"),
        id="data-missing",
    )


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


XFAIL_SET_RELATION = pytest.mark.xfail(
    reason="math-verify (allow_set_relation_comp=False) rejects an inequality for an interval "
    "gold; only a set-valued prediction may be compared with a relation",
    strict=True,
)
XFAIL_VECTOR_TUPLE = pytest.mark.xfail(
    reason="math-verify does not equate a column matrix (pmatrix) with a tuple",
    strict=True,
)
XFAIL_BASE_SUBSCRIPT = pytest.mark.xfail(
    reason="math-verify drops base subscripts: 52_{10} is read as 52 and matches 52_8",
    strict=True,
)
XFAIL_TUPLE_SET = pytest.mark.xfail(
    reason="math-verify equates the point/interval (2,4) with the set {2,4}",
    strict=True,
)
XFAIL_INFINITE_BRACKET = pytest.mark.xfail(
    reason="math-verify ignores the bracket at infinity: (2,\\infty] matches (2,\\infty)",
    strict=True,
)

# ---------------------------------------------------------------------------------------------
# MATH-500: row index -> (gold `answer` as in the file, equivalent rewrites, wrong answers).
# A rewrite or wrong answer may be a (text, xfail mark) pair for a known math-verify limitation.
# ---------------------------------------------------------------------------------------------

Answer = str | tuple[str, Any]

MATH500_TABLE: dict[int, tuple[str, list[Answer], list[Answer]]] = {
    # Precalculus
    0: (
        r"\left( 3, \frac{\pi}{2} \right)",
        [r"(3,\frac{\pi}{2})", r"\left(3, \pi/2\right)"],
        [r"(3, \pi)", r"\left( \frac{\pi}{2}, 3 \right)"],
    ),
    7: ("90^\\circ", ["90", r"90^{\circ}", "90°", r"90\text{ degrees}"], [r"45^\circ"]),
    15: ("6 - 5i", ["6-5i", "-5i+6"], ["6+5i", "5-6i"]),
    53: (r"-\frac{\pi}{6}", [r"-\pi/6", r"-\frac{1}{6}\pi"], [r"\frac{\pi}{6}"]),
    99: (
        r"\begin{pmatrix} -1/3 \\ 2/3 \\ 5/3 \end{pmatrix}",
        [
            r"\begin{pmatrix} -\frac13 \\ \frac23 \\ \frac53 \end{pmatrix}",
            r"\begin{bmatrix} -1/3 \\ 2/3 \\ 5/3 \end{bmatrix}",
            (r"\left(-\frac13, \frac23, \frac53\right)", XFAIL_VECTOR_TUPLE),
        ],
        [r"\begin{pmatrix} 1/3 \\ 2/3 \\ 5/3 \end{pmatrix}"],
    ),
    179: (
        "5x - 7y + 11z + 4 = 0",
        ["5x-7y+11z=-4", "-5x+7y-11z-4=0"],
        ["5x - 7y + 11z - 4 = 0"],
    ),
    227: (r"\text{(C)}", ["C", "(C)", r"\textbf{(C)}"], [r"\text{(D)}"]),
    248: (
        r"\begin{pmatrix} -1 & 0 \\ 0 & -1 \end{pmatrix}",
        [r"\begin{bmatrix} -1 & 0 \\ 0 & -1 \end{bmatrix}"],
        [r"\begin{pmatrix} 1 & 0 \\ 0 & -1 \end{pmatrix}"],
    ),
    431: (
        r"\left[ \frac{\pi^2}{8}, \frac{5 \pi^2}{4} \right]",
        [r"[\pi^2/8, 5\pi^2/4]"],
        [r"\left( \frac{\pi^2}{8}, \frac{5 \pi^2}{4} \right)"],
    ),
    454: ("y = 2x + 3", ["y=2x+3", "2x + 3"], ["y = 3x + 2"]),
    # Intermediate Algebra
    1: ("p - q", ["-q+p"], ["q - p", "p + q"]),
    25: ("1,-2", ["-2, 1", r"\{1,-2\}", r"1 \text{ and } -2"], ["1, 2", "1"]),
    36: ("3, 5, 7", ["7, 5, 3", "3,5,7"], ["3, 5"]),
    60: ("(6,31,-1)", ["(6, 31, -1)", "6,31,-1"], ["(6,31,1)", "(-1,31,6)"]),
    103: ("(3,4]", ["(3, 4]"], ["(3,4)", "[3,4]"]),
    184: (
        r"(2,\infty)",
        [r"(2, \infty)", ("x > 2", XFAIL_SET_RELATION)],
        [r"[2,\infty)", (r"(2,\infty]", XFAIL_INFINITE_BRACKET)],
    ),
    380: (r"(0,9) \cup (9,36)", [r"(0, 9)\cup(9, 36)"], ["(0,36)"]),
    422: (
        r"\{1\pm\sqrt{5},-2\}",
        [r"-2, 1+\sqrt5, 1-\sqrt5"],
        [r"1+\sqrt5, 1-\sqrt5"],
    ),
    439: (
        "x^8 + x^7 + x^6 + x^5 + x^4 + x^3 + x^2 + x + 1",
        [r"\frac{x^9-1}{x-1}", "1+x+x^2+x^3+x^4+x^5+x^6+x^7+x^8"],
        ["x^8 + x^7 + x^6 + x^5 + x^4 + x^3 + x^2 + x - 1"],
    ),
    # Algebra
    2: (r"\frac{14}{3}", [r"\dfrac{14}{3}", "14/3", r"4\frac{2}{3}"], [r"\frac{3}{14}", "4.67"]),
    4: (r"\text{Evelyn}", ["Evelyn", r"\textbf{Evelyn}", r"\text{Evelyn.}"], [r"\text{Brian}"]),
    8: (r"3\sqrt{13}", [r"\sqrt{117}", r"3 \sqrt{13}"], [r"\sqrt{39}", r"13\sqrt{3}"]),
    23: ("x=5", ["5", "x = 5"], ["x=-5", "6"]),
    73: (
        r"\frac{3\sqrt{3}}{4}",
        [r"\frac{3}{4}\sqrt{3}", r"0.75\sqrt3", r"\frac{\sqrt{27}}{4}"],
        [r"\frac{3\sqrt{3}}{2}"],
    ),
    242: (r"\$32,\!348", ["32348", r"\$32,348", "32,348 dollars"], ["32,384"]),
    293: (
        r"\left(\frac{3}{5},\frac{8}{3}\right]",
        [r"\left(\frac35, \frac83\right]", "(0.6, 8/3]"],
        [r"\left[\frac{3}{5},\frac{8}{3}\right]"],
    ),
    318: (
        r"\frac{11+9a}{20}",
        [r"\frac{11}{20}+\frac{9a}{20}", "0.55+0.45a"],
        [r"\frac{11-9a}{20}"],
    ),
    383: (
        r"x \in [-2,7]",
        ["[-2, 7]", (r"-2 \le x \le 7", XFAIL_SET_RELATION)],
        ["[-2,7)"],
    ),
    459: (r"\$18.90", ["18.90", r"\$18.9", "18.90 dollars"], ["18.09"]),
    472: (r"137 \frac{1}{2}", ["137.5", r"\frac{275}{2}", r"137\tfrac12"], ["137"]),
    # Number Theory
    10: ("2220", ["2,220", "2220.0"], ["2221"]),
    30: ("52_8", ["52", "52_{8}"], ["42", "53_8", ("52_{10}", XFAIL_BASE_SUBSCRIPT)]),
    176: (".0000672", ["0.0000672", r"6.72 \times 10^{-5}"], ["0.000672"]),
    217: (r"11,\! 111,\! 111,\! 100", ["11111111100", "11,111,111,100"], ["1111111100"]),
    # Prealgebra
    44: ("1.25", [r"\frac{5}{4}", "1.250", r"1\frac14"], ["1.2"]),
    54: ("0.15", [r"15\%", r"\frac{3}{20}"], ["0.015"]),
    162: (r"\dfrac{17}{50}", ["0.34", "17/50"], ["0.35"]),
    166: (
        r"\frac{270}7\text{ degrees}",
        [r"\frac{270}{7}", r"\frac{270}{7}^\circ"],
        [r"\frac{270}{9}"],
    ),
    301: (r"5.4 \text{ cents}", ["5.4", r"5.4\text{ cents}"], ["5.5"]),
    488: (r"\$36", ["36", "36 dollars"], ["63"]),
    # Geometry
    18: ("28", ["28.0"], ["27"]),
    257: (r"864 \mbox{ inches}^2", ["864", r"864 \text{ in}^2", "864 square inches"], ["846"]),
    264: (r"1\frac{4}{5}", [r"\frac{9}{5}", "1.8"], [r"1\frac{5}{4}"]),
    274: (r"18+2\pi", [r"2\pi + 18"], [r"18+\pi"]),
    314: ("(2,4)", ["(2, 4)"], ["(4,2)", (r"\{2,4\}", XFAIL_TUPLE_SET)]),
    # Counting & Probability
    26: ("144", ["144"], ["145"]),
    75: (r"\frac{11}{36}", ["11/36"], [r"\frac{11}{35}"]),
    92: (r"\frac{448}{15625}", ["0.028672"], [r"\frac{448}{1562}"]),
    198: (r"10,\!080", ["10080", "10,080"], ["10,800"]),
    343: ("58,500", ["58500"], ["5850"]),
}

# MATH train rows (no `answer` field: the reference is the last \boxed of the solution).
MATH_TRAIN_TABLE: dict[int, tuple[str, list[Answer], list[Answer]]] = {
    518: (r"(-\infty,-8]\cup [8,\infty)", [r"(-\infty, -8] \cup [8, \infty)"], [r"(-8,8)"]),
    600: ("[0,3)", ["[0, 3)"], ["[0,3]"]),
    1500: (r"10p^3 \sqrt{3p}", [r"10p^3\sqrt{3p}", r"10\sqrt{3}p^{7/2}"], [r"10p^2 \sqrt{3p}"]),
    1950: (r"240\text{ ways.}", ["240", "240 ways"], ["120"]),
    3108: (r"10 + \frac{15}{2}\pi", [r"10+7.5\pi"], [r"10 + \frac{15}{4}\pi"]),
    3600: ("(5,-5,-6)", ["(5, -5, -6)"], ["(5,5,-6)"]),
    4200: (r"\text{E}", ["E", "(E)"], [r"\text{A}"]),
    5400: ("001", ["1"], ["100"]),
    5700: (r"25\%", ["0.25", "25", r"\frac14"], ["0.025"]),
    6882: (
        r"\begin{pmatrix} 4 \\ -10 \end{pmatrix}",
        [r"\begin{bmatrix} 4\\-10 \end{bmatrix}"],
        [r"\begin{pmatrix} -10 \\ 4 \end{pmatrix}"],
    ),
    7200: (r"-\frac{8 \sqrt{5}}{81}", [r"-\frac{8}{81}\sqrt{5}"], [r"\frac{8 \sqrt{5}}{81}"]),
}


def _boxed_output(answer: str) -> str:
    return f"Putting it together, the final answer is $\\boxed{{{answer}}}$."


def _math_cases(
    path: Path, table: dict[int, tuple[str, list[Answer], list[Answer]]], name: str
) -> list[Any]:
    rows = _rows(path)
    if rows is None:
        return [_missing(path)]
    cases = []
    for index, (_, rights, wrongs) in table.items():
        row = rows[index]
        reference = row["answer"] if "answer" in row else reference_answer_math(row["solution"])
        for expected, answers in ((True, rights), (False, wrongs)):
            for answer in answers:
                text, marks = answer if isinstance(answer, tuple) else (answer, ())
                kind = "equivalent" if expected else "wrong"
                cases.append(
                    pytest.param(
                        _boxed_output(text),
                        reference,
                        expected,
                        marks=marks,
                        id=f"{name}[{index}]-{kind}:{_short(text)}",
                    )
                )
    return cases


@pytest.mark.parametrize("index", sorted(MATH500_TABLE))
def test_math500_gold_answer_matches_solution_box(index: int) -> None:
    """(a) The `answer` field is the last \\boxed of the solution, up to math-verify."""
    rows = _rows(MATH500)
    if rows is None:
        pytest.skip(f"benchmark data not found: {MATH500} (set MEMCOLLAB_DATA_DIR)")
    row = rows[index]
    assert row["answer"] == MATH500_TABLE[index][0], "table out of date with the data file"
    verdict = check_math(row["solution"], row["answer"])
    assert verdict == MathVerdict(
        True, reference_answer_math(row["solution"]), row["answer"], "match"
    )


@pytest.mark.parametrize("index", sorted(MATH_TRAIN_TABLE))
def test_math_train_reference_is_last_box(index: int) -> None:
    rows = _rows(MATH_TRAIN)
    if rows is None:
        pytest.skip(f"benchmark data not found: {MATH_TRAIN} (set MEMCOLLAB_DATA_DIR)")
    assert reference_answer_math(rows[index]["solution"]) == MATH_TRAIN_TABLE[index][0]


def test_math_train_subjects_and_empty_boxes() -> None:
    rows = _rows(MATH_TRAIN)
    if rows is None:
        pytest.skip(f"benchmark data not found: {MATH_TRAIN} (set MEMCOLLAB_DATA_DIR)")
    # Two real solutions end in an empty \boxed{}: no reference answer.
    for index in (5529, 5531):
        with pytest.raises(ValueError):
            reference_answer_math(rows[index]["solution"])


def test_math500_table_covers_all_subjects() -> None:
    rows = _rows(MATH500)
    if rows is None:
        pytest.skip(f"benchmark data not found: {MATH500} (set MEMCOLLAB_DATA_DIR)")
    subjects = {rows[index]["subject"] for index in MATH500_TABLE}
    assert subjects == {row["subject"] for row in rows}
    assert len(MATH500_TABLE) >= 30


@pytest.mark.parametrize(
    ("output", "reference", "expected"),
    _math_cases(MATH500, MATH500_TABLE, "math500")
    + _math_cases(MATH_TRAIN, MATH_TRAIN_TABLE, "math-train"),
)
def test_math_rewrites(output: str, reference: str, expected: bool) -> None:
    """(b) equivalent rewrites are accepted, (c) wrong answers are rejected."""
    verdict = check_math(output, reference)
    assert verdict.correct is expected, verdict
    assert verdict.reason == ("match" if expected else "mismatch"), verdict


# ---------------------------------------------------------------------------------------------
# GSM8K test rows: the reference is the `#### N` line; outputs are the row's own worked
# solution (without its #### line) followed by a final-answer sentence in several styles.
# ---------------------------------------------------------------------------------------------

# 0-24, plus rows whose answers have thousands separators (146, 201, 230, 611, 1206) or are
# negative (489, 1113).
GSM8K_ROWS = (*range(25), 146, 201, 230, 489, 611, 1113, 1206)


def _gsm8k_outputs(n: int) -> list[tuple[str, str, bool]]:
    """(kind, final line, expected) for reference answer `n`."""
    return [
        ("answer-is", f"The answer is {n}.", True),
        ("boxed", f"So she makes \\boxed{{{n}}} in total.", True),
        ("hashes", f"#### {n}", True),
        ("dollar-commas", f"The answer is ${n:,}.", True),
        ("latex-dollar", f"The final answer is \\${n:,}.", True),
        ("dollars-word", f"Answer: {n} dollars", True),
        ("decimals", f"The answer is {n}.00", True),
        ("percent", f"answer: {n}%", True),
        ("off-by-one", f"The answer is {n + 1}.", False),
        ("boxed-wrong", f"\\boxed{{{n - 1}}}", False),
        ("tenfold", f"#### {n * 10}", False),
    ]


def _gsm8k_cases() -> list[Any]:
    rows = _rows(GSM8K_TEST)
    if rows is None:
        return [_missing(GSM8K_TEST)]
    cases = []
    for index in GSM8K_ROWS:
        field = rows[index]["answer"]
        reference = reference_answer_gsm8k(field)
        body = field.rpartition("####")[0]
        for kind, last_line, expected in _gsm8k_outputs(int(reference)):
            cases.append(
                pytest.param(body + last_line, reference, expected, id=f"gsm8k[{index}]-{kind}")
            )
    return cases


@pytest.mark.parametrize(("output", "reference", "expected"), _gsm8k_cases())
def test_gsm8k(output: str, reference: str, expected: bool) -> None:
    verdict = check_math(output, reference, style="gsm8k")
    assert verdict.correct is expected, verdict
    assert verdict.reason == ("match" if expected else "mismatch"), verdict


def test_gsm8k_reference_field_checks_against_itself() -> None:
    rows = _rows(GSM8K_TEST)
    if rows is None:
        pytest.skip(f"benchmark data not found: {GSM8K_TEST} (set MEMCOLLAB_DATA_DIR)")
    assert reference_answer_gsm8k(rows[611]["answer"]) == "1450000"
    assert reference_answer_gsm8k(rows[489]["answer"]) == "-10"
    for index in GSM8K_ROWS:
        field = rows[index]["answer"]
        assert check_math(field, reference_answer_gsm8k(field), style="gsm8k").correct


# ---------------------------------------------------------------------------------------------
# Extraction edge cases (no data needed)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}", id="nested"),
        pytest.param(r"\boxed{\frac{\sqrt{3}}{\pi^{2}}}", r"\frac{\sqrt{3}}{\pi^{2}}", id="deep"),
        pytest.param(r"\boxed{1} then \boxed{2}", "2", id="last-wins"),
        pytest.param(r"\boxed{1} and \fbox{3}", "3", id="fbox"),
        pytest.param(r"\boxed{\{1,2\}}", r"\{1,2\}", id="escaped-braces"),
        pytest.param(r"\boxed {7}", "7", id="space-before-brace"),
        pytest.param(r"so the answer is $\boxed 5$.", "5", id="braceless"),
        pytest.param(r"\boxed{\frac{1}{2}", None, id="unbalanced"),
        pytest.param(r"\boxed{1} then \boxed{2", None, id="last-unbalanced"),
        pytest.param("no box here", None, id="none"),
        pytest.param(r"\boxed{}", "", id="empty"),
        pytest.param(r"\boxedx{3}", None, id="not-a-box"),
    ],
)
def test_last_boxed(text: str, expected: str | None) -> None:
    assert last_boxed(text) == expected


@pytest.mark.parametrize(
    ("text", "style", "expected"),
    [
        pytest.param("The answer is 18.", "math", None, id="math-needs-box"),
        pytest.param(r"The answer is $\boxed{18}$.", "math", "18", id="math-box"),
        pytest.param(r"\boxed{}", "math", None, id="math-empty-box"),
        pytest.param("#### 18\nThe answer is 19.", "gsm8k", "19", id="last-occurrence-wins"),
        pytest.param("The answer is 19.\n#### 18", "gsm8k", "18", id="hashes-last"),
        pytest.param(r"\boxed{18} but the answer is 19", "gsm8k", "18", id="prefer-box"),
        pytest.param(r"\boxed{18", "gsm8k", None, id="unbalanced-no-fallback"),
        pytest.param("The answer is $1,234.", "gsm8k", "1,234", id="dollar-commas"),
        pytest.param("The answer is: **18**", "gsm8k", "18", id="bold"),
        pytest.param(r"The final answer is \(18\).", "gsm8k", "18", id="inline-math"),
        pytest.param("Answer: -3", "gsm8k", "-3", id="negative"),
        pytest.param("answer: 18 dollars", "gsm8k", "18", id="unit-word"),
        pytest.param("So the answer is 18%.", "gsm8k", "18%", id="percent"),
        pytest.param("I answered 5 questions.", "gsm8k", None, id="not-an-anchor"),
        pytest.param("The answer is unclear.", "gsm8k", None, id="no-number"),
    ],
)
def test_extract_answer(text: str, style: Style, expected: str | None) -> None:
    assert extract_answer(text, style) == expected


def test_reference_helpers() -> None:
    assert reference_answer_gsm8k("Some work.\n#### 1,234 ") == "1234"
    with pytest.raises(ValueError):
        reference_answer_gsm8k("no final line")
    assert reference_answer_math(r"so $\boxed{\frac{1}{2}}$ and done") == r"\frac{1}{2}"
    with pytest.raises(ValueError):
        reference_answer_math("no box")


def test_no_answer_and_unparsable_reasons() -> None:
    assert check_math("I think it is 5.", "5") == MathVerdict(False, None, "5", "no_answer")
    assert check_math("The answer is unclear.", "5", "gsm8k").reason == "no_answer"
    assert check_math(r"\boxed{@@}", "5") == MathVerdict(False, "@@", "5", "unparsable")


def test_string_answers_compare_exactly() -> None:
    assert check_math(r"\boxed{Evelyn}", r"\text{Evelyn}").correct
    assert not check_math(r"\boxed{Nevely}", r"\text{Evelyn}").correct  # not a product of letters


# ---------------------------------------------------------------------------------------------
# Time limits and threads
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [r"10^{10^{10}}", r"9^{9^{9^{9}}}", "1000000!", r"\binom{10^{9}}{10^{5}}", r"10^{-10^{10}}"],
)
def test_huge_integers_are_refused_quickly(answer: str) -> None:
    started = time.monotonic()
    verdict = check_math(rf"\boxed{{{answer}}}", "5")
    assert verdict.reason == "unparsable"
    assert time.monotonic() - started < 2


def _burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


@pytest.mark.parametrize(
    ("signum", "timer"),
    [(signal.SIGALRM, signal.ITIMER_REAL), (signal.SIGVTALRM, signal.ITIMER_VIRTUAL)],
)
def test_slow_comparison_times_out_and_restores_outer_timer(signum: int, timer: int) -> None:
    fired: list[int] = []
    saved_handler = signal.signal(signum, lambda signum, frame: fired.append(signum))
    saved_delay, saved_interval = signal.setitimer(timer, 100.0)
    try:
        started = time.process_time()
        verdict = check_math(r"\boxed{(x+1)^{100000}}", "5", timeout_s=0.3)
        assert verdict.reason == "timeout" and not verdict.correct
        assert time.process_time() - started < 3  # CPU time: wall time depends on the load
        remaining, _ = signal.getitimer(timer)
        assert 90 < remaining <= 100  # the outer timer is armed again, not cancelled
        signal.setitimer(timer, 0.01)
        _burn_cpu(0.1)  # a CPU-time timer only runs while the process computes
        time.sleep(0.1)
        assert fired == [signum]  # and the outer handler is back
    finally:
        signal.setitimer(timer, 0)
        signal.signal(signum, saved_handler)
        if saved_delay > 0:
            signal.setitimer(timer, saved_delay, saved_interval)


@pytest.mark.parametrize("where", ["main thread", "worker thread"])
def test_the_deadline_counts_cpu_time_not_waiting(where: str) -> None:
    # A check starved by a busy machine waits without computing: that must not time it out.
    outcome: list[object] = []

    def run() -> None:
        def wait_then_answer() -> str:
            time.sleep(0.6)
            return "done"

        outcome.append(_run_with_deadline(wait_then_answer, 0.2))
        with pytest.raises(TimeoutException):
            _run_with_deadline(lambda: _burn_cpu(1.0), 0.2)
        outcome.append("timed out")

    # Another thread of the process computes meanwhile (as a model does): its CPU time is
    # not the check's, though the process's CPU timer counts it.
    busy = threading.Thread(target=_burn_cpu, args=(1.0,), daemon=True)
    busy.start()
    if where == "main thread":
        run()
    else:
        thread = threading.Thread(target=run)
        thread.start()
        thread.join(10)
    busy.join(10)
    assert outcome == ["done", "timed out"]


def test_a_timeout_inside_a_finalizer_is_not_handed_to_the_unraisable_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CI failed once when a tick landed inside a finalizer the check set off: Python handed
    # the TimeoutException to sys.unraisablehook (pytest's), a second tick landed inside
    # that hook, and pytest failed the test. Here a finalizer computes past the deadline.
    handed_on: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", handed_on.append)

    class SlowToFinalize:
        def __del__(self) -> None:
            _burn_cpu(0.6)

    def finalize_then_compute() -> None:
        SlowToFinalize()  # finalized at once, in this frame
        _burn_cpu(5.0)

    with pytest.raises(TimeoutException):
        _run_with_deadline(finalize_then_compute, 0.2)
    assert handed_on == []
    assert sys.unraisablehook == handed_on.append  # the replaced hook is back


def test_another_unraisable_during_a_check_reaches_the_previous_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handed_on: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", handed_on.append)

    class FailsToFinalize:
        def __del__(self) -> None:
            raise ValueError("not ours")

    def finalize() -> str:
        FailsToFinalize()
        return "done"

    assert _run_with_deadline(finalize, 5.0) == "done"
    assert [type(u.exc_value) for u in handed_on] == [ValueError]


def test_worker_threads() -> None:
    pairs = [
        (r"\boxed{\frac{1}{2}}", "0.5", True),
        (r"\boxed{2\sqrt{3}}", r"\sqrt{12}", True),
        (r"\boxed{(1,2)}", "(1, 2)", True),
        (r"\boxed{3}", "4", False),
    ] * 4
    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = list(pool.map(lambda p: check_math(p[0], p[1]), pairs))
    assert [v.correct for v in verdicts] == [p[2] for p in pairs]


def test_worker_thread_deadline() -> None:
    results: list[tuple[MathVerdict, float]] = []

    def work() -> None:
        for answer in (r"10^{10^{10}}", r"(x+1)^{500}"):
            started = time.monotonic()
            verdict = check_math(rf"\boxed{{{answer}}}", "5", timeout_s=0.1)
            results.append((verdict, time.monotonic() - started))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert [v.reason for v, _ in results] == ["unparsable", "timeout"]  # too large; too slow
    assert all(seconds < 2 for _, seconds in results)


def test_an_answer_equal_to_the_reference_matches_however_short_the_deadline() -> None:
    # A verdict must not depend on machine load: equal answers never reach math-verify, so
    # even a deadline no comparison could meet leaves them correct.
    assert check_math(r"\boxed{4}", "4", timeout_s=1e-9) == MathVerdict(True, "4", "4", "match")
    assert check_math("#### 1,000", "1000", "gsm8k", timeout_s=1e-9).correct
    assert check_math(r"\boxed{\frac{1}{2}}", r"\frac{1}{2}", timeout_s=1e-9).correct


def test_a_timeout_has_its_own_reason_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="memcollab.tasks.math_check"):
        verdict = check_math(r"\boxed{(x+1)^{100000}}", "5", timeout_s=0.3)
    assert verdict == MathVerdict(False, "(x+1)^{100000}", "5", "timeout")
    assert "math check timed out" in caplog.text


def test_a_fresh_process_checks_without_printing_anything() -> None:
    # The first check warms math-verify up; its "Timeout is disabled" warnings stay quiet.
    code = "from memcollab.tasks.math_check import check_math; check_math(r'\\boxed{0.5}', '1/2')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""


def test_many_quick_checks_in_parallel_do_not_crash_the_process() -> None:
    # Each check outside the main thread runs in a watchdog thread; a quick one ends at
    # once. Asking for an ended thread's CPU clock read freed memory: run 2's replays of
    # stored math trajectories died of SIGSEGV within a minute. A subprocess, so a crash
    # fails this test instead of ending the test session.
    code = """
from concurrent.futures import ThreadPoolExecutor
from memcollab.tasks.math_check import check_math

def one(i):
    return check_math(f"\\\\boxed{{\\\\frac{{{i}}}{{2}}}}", str(i / 2)).correct

with ThreadPoolExecutor(8) as pool:
    print(sum(pool.map(one, range(1500))))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "1500"
