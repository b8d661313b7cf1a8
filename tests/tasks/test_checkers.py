from memcollab.tasks.checkers import check
from memcollab.tasks.task import Task

GSM = Task(id="g", domain="math", prompt="p", answer="1234", metadata={"answer_style": "gsm8k"})
MATH = Task(id="m", domain="math", prompt="p", answer="\\frac{1}{2}")
CODE = Task(
    id="c",
    domain="code",
    prompt="p",
    tests=("assert sq(3) == 9", "assert sq(-2) == 4"),
    entry_point="sq",
    setup_code="import math",
)


def test_math_styles() -> None:
    assert check(GSM, "So she pays $1,234 in total. The answer is 1,234.").correct
    assert not check(GSM, "The answer is 1235.").correct
    assert check(MATH, "Thus \\boxed{0.5}.").correct
    assert check(MATH, "The answer is 1/2").details["reason"] == "no_answer"  # MATH needs a box


def test_code_hidden_tests_and_details() -> None:
    right = check(CODE, "def sq(x):\n    return int(math.pow(x, 2))")
    assert right.correct and right.details["passed_tests"] == 2
    wrong = check(CODE, "def sq(x):\n    return x * 3")
    assert not wrong.correct
    assert (
        wrong.details["status"] == "failed" and wrong.details["failed_test"] == "assert sq(-2) == 4"
    )


def test_no_final_answer() -> None:
    assert check(CODE, None).details == {"reason": "no_answer"}
    assert not check(MATH, None).correct
