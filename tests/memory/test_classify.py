"""The classifier on the scripted model: choosing, parsing, retry, fallback, caching."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from memcollab.llm.base import ChatRequest
from memcollab.llm.cache import CallCache, Gateway
from memcollab.llm.scripted import ScriptedModel
from memcollab.memory.classify import Classifier, Label, parse_choice
from memcollab.memory.taxonomy import builtin_taxonomy, load_taxonomy
from memcollab.tasks.task import Task

MOD_TASK = "What is the remainder when $2^{100}$ is divided by $7$?"
MATH_NAMES = list(builtin_taxonomy("math").categories())


def _prompt(request: ChatRequest) -> str:
    return request.messages[-1].content


def _is_category_step(request: ChatRequest) -> bool:
    return "\nCategories:\n" in _prompt(request)


def responder(category: str, subcategory: str) -> Callable[[ChatRequest], str]:
    """Answers `category` at the category step and `subcategory` at the subcategory step."""
    return lambda r: category if _is_category_step(r) else subcategory


def classifier(
    respond: Callable[[ChatRequest], str], taxonomy: str = "math", **kwargs: object
) -> tuple[Classifier, ScriptedModel]:
    model = ScriptedModel(respond, name="m")
    return Classifier(Gateway().bind(model), taxonomy, **kwargs), model  # type: ignore[arg-type]


def test_choice_by_number() -> None:
    clf, model = classifier(responder("5", "4"))  # Number Theory, modular arithmetic
    label = clf.classify(MOD_TASK)
    assert label == Label(
        category="Number Theory", subcategory="modular arithmetic", source="model", raw="5 | 4"
    )
    assert len(model.requests) == 2
    assert clf.stats.model_calls == 2 and clf.stats.retries == 0 and clf.stats.fallbacks == 0


def test_choice_by_name_in_any_spelling() -> None:
    clf, _ = classifier(responder("counting and probability", "Expected Value."))
    label = clf.classify("A fair die is rolled. What is the expected value of the roll?")
    assert (label.category, label.subcategory, label.source) == (
        "Counting & Probability",
        "expected value",
        "model",
    )


def test_prompts_are_listed_choices_with_descriptions_and_small_greedy_calls() -> None:
    clf, model = classifier(responder("5", "4"))
    clf.classify(MOD_TASK)
    first, second = model.requests
    for request in (first, second):
        assert request.decoding.temperature == 0.0
        assert request.decoding.max_tokens <= 16
        assert len(request.messages) == 1 and request.messages[0].role == "user"
        assert _prompt(request).endswith("Answer with the exact name only.")
        assert MOD_TASK in _prompt(request)
    tax = builtin_taxonomy("math")
    assert "- Algebra: " + tax.category("Algebra").description in _prompt(first)
    assert "- Precalculus: " in _prompt(first)
    # The second call lists only the chosen category's subcategories.
    listed = re.findall(r"^- ([^:]+):", _prompt(second), flags=re.MULTILINE)
    assert listed == list(tax.subcategories("Number Theory"))
    assert '"Number Theory"' in _prompt(second)


def test_invalid_reply_gets_one_stricter_retry() -> None:
    def respond(request: ChatRequest) -> str:
        if not _is_category_step(request):
            return "1"
        return "2" if "Reply with one name from the list" in _prompt(request) else "Hmm."

    clf, model = classifier(respond)
    label = clf.classify(MOD_TASK)
    assert (label.category, label.source) == ("Counting & Probability", "model")
    assert label.raw == "Hmm. | 2 | 1"
    assert len(model.requests) == 3
    assert clf.stats.retries == 1 and clf.stats.fallbacks == 0


def test_out_of_range_number_is_invalid() -> None:
    clf, _ = classifier(responder("12", "1"))
    assert clf.classify(MOD_TASK).source == "fallback"
    assert clf.stats.retries == 1


def test_two_invalid_replies_fall_back_to_the_nearest_description_and_count() -> None:
    clf, model = classifier(lambda r: "banana")
    label = clf.classify(MOD_TASK + " Use modular arithmetic and remainders.")
    assert label.source == "fallback"
    assert label.fallback_steps == ("category", "subcategory")
    assert (label.category, label.subcategory) == ("Number Theory", "modular arithmetic")
    assert len(model.requests) == 4  # two steps, each asked twice
    stats = clf.stats
    assert (stats.retries, stats.fallbacks) == (2, 1)
    assert (stats.category_fallbacks, stats.subcategory_fallbacks) == (1, 1)


def test_fallback_without_shared_words_takes_the_first_option() -> None:
    clf, _ = classifier(lambda r: "?")
    label = clf.classify("zzzq qqqz")
    assert (label.category, label.subcategory) == ("Algebra", "linear equations and expressions")


def test_only_the_subcategory_falls_back() -> None:
    clf, _ = classifier(responder("Geometry", "no idea"))
    label = clf.classify("Find the volume of a cone with radius 3 and height 4.")
    assert (label.category, label.subcategory) == ("Geometry", "solid geometry")
    assert label.source == "fallback" and label.fallback_steps == ("subcategory",)
    assert (clf.stats.category_fallbacks, clf.stats.subcategory_fallbacks) == (0, 1)


def test_without_retry_an_invalid_reply_falls_back_at_once() -> None:
    clf, model = classifier(lambda r: "banana", retry=False)
    assert clf.classify(MOD_TASK).source == "fallback"
    assert len(model.requests) == 2 and clf.stats.retries == 0


def test_repeated_task_text_is_answered_from_memory() -> None:
    clf, model = classifier(responder("5", "4"))
    first = clf.classify(MOD_TASK)
    second = clf.classify("  " + MOD_TASK.replace(" ", "\n  ") + " ")
    assert second == first
    assert len(model.requests) == 2
    assert (clf.stats.classifications, clf.stats.memo_hits, clf.stats.model_calls) == (2, 1, 2)


def test_model_calls_are_cached_on_disk_through_the_gateway(tmp_path: Path) -> None:
    model = ScriptedModel(responder("5", "4"), name="m")
    gateway = Gateway(CallCache(tmp_path / "calls.sqlite"))
    Classifier(gateway.bind(model), "math").classify(MOD_TASK)
    again = Classifier(gateway.bind(model), "math")
    label = again.classify(MOD_TASK)
    assert label.category == "Number Theory"
    assert len(model.requests) == 2  # the second classifier made no model call
    assert again.stats.model_calls == 2 and again.stats.cached_calls == 2


def test_a_task_record_is_classified_by_its_prompt() -> None:
    clf, model = classifier(responder("1", "1"), taxonomy="code")
    task = Task(id="t1", domain="code", prompt="Write a function to reverse a string.")
    label = clf.classify(task)
    assert (label.category, label.subcategory) == ("String processing", "reversal and palindromes")
    assert "programming task" in _prompt(model.requests[0])


def test_user_taxonomy_file_and_single_subcategory_needs_no_second_call(tmp_path: Path) -> None:
    path = tmp_path / "tiny.toml"
    path.write_text(
        'domain = "code"\n'
        '[[categories]]\nname = "Strings"\ndescription = "text"\nsubcategories = ["reverse"]\n'
        '[[categories]]\nname = "Numbers"\ndescription = "ints"\nsubcategories = ["primes"]\n'
    )
    clf, model = classifier(lambda r: "2", taxonomy=str(path))
    label = clf.classify("Check whether n is prime.")
    assert (label.category, label.subcategory, label.source) == ("Numbers", "primes", "model")
    assert len(model.requests) == 1
    assert clf.taxonomy == load_taxonomy(path)
    assert "- Numbers: ints" in _prompt(model.requests[0])


def test_long_task_text_is_cut_in_the_prompt() -> None:
    clf, model = classifier(responder("1", "1"), max_task_chars=50)
    clf.classify("x" * 200)
    assert "x" * 50 + " ..." in _prompt(model.requests[0])
    assert "x" * 51 not in _prompt(model.requests[0])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("3", 2),
        ("  3\n", 2),
        ("3. Geometry", 2),
        ("(5)", 4),
        ("\\boxed{2}", 1),
        ("Answer: 4", 3),
        ("The answer is 6.", 5),
        ("Category 3", 2),
        ("**Number Theory**", 4),
        ("counting & probability", 1),
        ("It is Intermediate Algebra.", 3),  # not also Algebra
        ("The best category is:\n\n5. Number Theory", 4),
        ("I pick 7", 6),
        ("3 is my answer", 2),
        ("3. Geom", 2),  # cut off by max_tokens
        ("3. Number Theory", 4),  # number and name disagree: the name wins
        ("1 box holds 4 * 6 = 24 eggs. Three", None),  # an echoed few-shot example
        ("1. 2. 3. 4. 5.", None),
        ("1.4444444444444", None),
        ("Intermediate Algebra or Algebra", None),
        ("Algebra and Geometry", None),
        ("9", None),
        ("0", None),
        ("3.5", None),
        ("x = 12", None),
        ("", None),
        ("I am not sure.", None),
    ],
)
def test_parse_choice(reply: str, expected: int | None) -> None:
    assert parse_choice(reply, MATH_NAMES) == expected
