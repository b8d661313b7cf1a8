"""The semantic screen (screen "v2"): rules that reject constraints which say nothing.

The v1 screen (memory/distill.py) rejects constraints by their form: too short, code,
numbers or names of the task, copied text. A read of the committed memory found most of
what it kept vacuous or wrong ("enforce the correct conversion factor"; "enforce that the
order of operations is followed correctly; avoid performing operations in the wrong
order"). These rules run after the v1 rules, on what those pass, and only when asked for
(`Distiller(screen="v2")`). Each is a word rule, and `explain` says in words why one
fired. Word lists and rules were chosen on training material only (the committed
memory's training pairs; docs/SCREEN_GRADING.md has the grading and the numbers).

Words are compared as crude stems (`stem`: lower case; -ing / -ed / -es / -s / -ly, a
final e and a doubled final consonant dropped: "summing" = "sum", "divides" =
"dividing"). A part's *content* is its stems less stop words. In this order:

* vacuous: the enforce or the avoid part has no content but words that only say "be
  right" (`VAGUE`), name an operation, quantity or result in general (`GENERIC`: result,
  value, operation, order, range, conversion, factor, ...), say "check" or "use"
  (`PROCESS`) or name a mistake in general (`NEGATIVE`), and holds no formula ("enforce
  the correct conversion factor", "enforce accuracy", "avoid errors"); or the avoid part
  is "making assumptions about ..." (no assumption named); or the enforce part only
  repeats the when part ("When dividing the cost by the people, enforce the division by
  the people"). "enforce checking each bit individually" passes ("bit" is content).
* vague: the enforce part asks for correctness (correct, proper, accurate, appropriate,
  valid, expected; not "expected value") instead of naming the check ("enforce the
  correct multiplication of the total by the ratio").
* self_negation: the avoid part only negates the enforce part: it says wrong / incorrect
  / error / not / never / forgetting / skipping (`NEGATIVE`, `_DENIAL`) and has no other
  content than the enforce part's ("enforce using the operator correctly; avoid using
  the operator incorrectly").
* example_echo: the enforce or avoid part repeats three consecutive words of the enforce
  or avoid part of the prompt's example constraint ("avoid assuming the smoothies are
  independent without a reason"); v1 rejects only a part copied whole.
* unsupported: no topic word of the constraint (its content less the lists above and
  the format's words) occurs in the contrast it came from: the task text, and the
  replies, code and run output of either trajectory (LaTeX and code spellings count:
  sqrt = square root, len = length). A constraint without topic words passes this rule.
* unshown_edge_case: the enforce or avoid part guards against an edge case
  (`EDGE_CASES`: an empty input, division by zero, negative values, out-of-range
  indices, non-integer values, undefined values) that nothing in the contrast shows
  (no "empty", no IndexError, no zero, ...): boilerplate such as "avoid dividing by zero"
  distilled from a task with no division by zero.

A model judge may follow the rules (`SemanticJudge`, a hook: `Distiller(judge=...)`;
memory/judge.py ships one that asks a model: reasons judged_wrong, judged_vacuous).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Protocol

from memcollab.tasks.task import Task
from memcollab.trajectory import Trajectory

SEMANTIC_REJECT_REASONS = (
    "vacuous",
    "vague",
    "self_negation",
    "example_echo",
    "unsupported",
    "unshown_edge_case",
)
# What the optional model judge after the rules may answer (memory/judge.py).
JUDGE_REASONS = ("judged_wrong", "judged_vacuous")
_ECHO_WORDS = 3

_WORD = re.compile(r"[a-z]+")


def _words_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOP = _words_set(
    """a an the of to in on for by with and or nor is are was were be been being it its
    that this these those as at from into onto than then there their them they each every
    all any some no only both either neither before after when whenever if whether which
    what while so such one same other another more most less very also just would
    should must could might has have had do does did doing done upon within
    whose who whom where how between over under about against through during his her he
    she we you your our us i me my itself themselves"""
)
# Words that say only "be right".
VAGUE = _words_set(
    """correct correctly correctness proper properly right accurate accurately accuracy
    valid validity appropriate appropriately precise precisely expected intended
    necessary relevant applicable suitable reasonable sure careful carefully exact exactly
    true accordingly well good"""
)
# Words that name an operation, a quantity or a result in general, without a property.
GENERIC = _words_set(
    """calculation calculations calculate calculating calculated compute computing
    computed computation result results answer answers value values number numbers
    operation operations step steps logic formula formulas method methods approach order
    comparison compare comparing conversion convert converting factor factors arithmetic
    math mathematical addition add adding subtraction subtract subtracting multiplication
    multiply multiplying division divide dividing sum summing total expression expressions
    equation equations function functions variable variables operator operators data type
    types problem problems solution solutions given information range outcome final
    intermediate rule rules process procedure work manner way output input code
    quantity quantities amount amounts part parts"""
)
# Words that say "do" or "check" without saying what.
PROCESS = _words_set(
    """check checking checked verify verifying verified ensure ensuring make making
    made use using used apply applying applied perform performing performed follow
    following followed consider considering handle handling handled account accounted
    accounting keep keeping get getting identify identified determine
    determining find finding look looking based"""
)
# Words that name a mistake in general.
NEGATIVE = _words_set(
    """wrong wrongly incorrect incorrectly error errors mistake mistakes inaccurate
    inaccuracy invalid improper improperly bad incomplete miscalculation miscalculations
    oversight confusion unnecessary issue issues fail failing failure"""
)
# Words that deny: with them an avoid part can say "not X" where the enforce part said X.
_DENIAL = _words_set("not never no neglect neglecting forget forgetting skip skipping")
# "avoid making assumptions about X" names no assumption: as empty as "avoid errors".
_EMPTY_AVOID = re.compile(
    r"^(?:making\s+|any\s+)?(?:unfounded\s+|incorrect\s+|wrong\s+)?"
    r"(?:assumptions?|errors?|mistakes?)\b(?!\s+that)",
    re.IGNORECASE,
)
# A formula ("a_n = a + (n-1)d") says something checkable whatever its words.
_FORMULA = re.compile(r"=|\\\(|\^|\w_\w|\w\s*[/*+]\s*[\w(]")
# Words of the contrast that name what a constraint says in other words (LaTeX, code).
_SYNONYMS = {
    "sqrt": ("square", "root"),
    "frac": ("fraction",),
    "cdot": ("multiply",),
    "times": ("multiply",),
    "len": ("length",),
    "str": ("string",),
    "dict": ("dictionary",),
    "int": ("integer",),
}
# An enforce part that asks for correctness names a goal, not a check ("enforce the
# correct multiplication of ..."); "expected value" is a quantity, "right" too common.
_VAGUE_ENFORCE = re.compile(
    r"\b(?:correct(?:ly|ness)?|proper(?:ly)?|accurate(?:ly)?|accuracy|appropriate(?:ly)?"
    r"|valid|expected(?!\s+values?\b))\b",
    re.IGNORECASE,
)
# Edge cases a constraint may guard against (its enforce or avoid part), and what in the
# task or the attempts shows the case: a guard the contrast never shows is boilerplate.
EDGE_CASES: dict[str, tuple[re.Pattern[str], re.Pattern[str]]] = {
    "an empty input": (
        re.compile(r"\bempty\b", re.I),
        re.compile(r"\bempty\b|\blen\(\w+\)\s*==\s*0|\(\s*(?:\[\]|\(\)|\"\"|'')\s*[,)]", re.I),
    ),
    "division by zero": (
        re.compile(r"\bzero\b|\bdivisors?\b", re.I),
        re.compile(r"\bzero\b|ZeroDivision|\bdivisors?\b|/\s*0(?![\d.])", re.I),
    ),
    "negative values": (
        re.compile(r"\bnegative\b", re.I),
        re.compile(r"\bnegative\b|(?<![\w)\]])-\s?\d", re.I),
    ),
    "out-of-range indices": (
        re.compile(r"\bbounds?\b|out[- ]of[- ]range|index range", re.I),
        re.compile(r"IndexError|out of range|\bbounds?\b"),
    ),
    "non-integer values": (
        re.compile(r"\b(?:non-?)?integers?\b|\bfloat(?:ing)?\b", re.I),
        re.compile(r"\bintegers?\b|\bint\(|\bfloat|\bdecimal|\d\.\d", re.I),
    ),
    "undefined values": (
        re.compile(r"\bundefined\b|\buninitiali[sz]ed\b|\bnull\b", re.I),
        re.compile(r"\bundefined\b|NameError|UnboundLocal|\bNone\b|\bnull\b"),
    ),
}
# The format's own words: never a constraint's topic.
_FORMAT = _words_set(
    """enforce avoid when ensure reason explicit explicitly always situation case cases
    kind new given"""
)
_QUANTIFIERS = _words_set("one each every all only same before after first last both")
_SUFFIXES = ("ing", "ed", "es", "s", "ly")


def stem(word: str) -> str:
    """A crude stem: lower case, one of -ing / -ed / -es / -s / -ly and a final e removed,
    a doubled final consonant undoubled ("summing" -> "sum", "divides" -> "divid")."""
    w = word.lower()
    for suffix in _SUFFIXES:
        if w.endswith(suffix) and len(w) - len(suffix) >= 3 and not w.endswith("ss"):
            w = w[: -len(suffix)]
            break
    if w.endswith("e") and len(w) > 3:
        w = w[:-1]
    if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
        w = w[:-1]
    return w


def _stems(words: Iterable[str]) -> frozenset[str]:
    return frozenset(stem(w) for w in words)


_STOP_STEMS = _stems(_STOP)
_VAGUE_STEMS = _stems(VAGUE)
_GENERIC_STEMS = _stems(GENERIC)
_PROCESS_STEMS = _stems(PROCESS)
_NEGATIVE_STEMS = _stems(NEGATIVE)
_DENIAL_STEMS = _stems(_DENIAL)
_FORMAT_STEMS = _stems(_FORMAT)
_EMPTY_WORDS = _VAGUE_STEMS | _GENERIC_STEMS | _PROCESS_STEMS | _NEGATIVE_STEMS
_NOT_TOPIC = _EMPTY_WORDS | _FORMAT_STEMS | _STOP_STEMS


def content(text: str) -> list[str]:
    """The stems of a text's words, stop words left out, in order."""
    found = (stem(w) for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1)
    return [s for s in found if s not in _STOP_STEMS]


@dataclass(frozen=True)
class SemanticContext:
    """What the semantic rules compare a constraint with: the contrast's words and the
    prompt's example."""

    contrast: frozenset[str]
    example_grams: frozenset[tuple[str, ...]]
    text: str = ""

    @classmethod
    def build(cls, task: Task, trajectories: Iterable[Trajectory], example: str) -> SemanticContext:
        """The stems of the task text and of the trajectories (replies, code, run output),
        and the word trigrams of the example constraint's enforce and avoid parts."""
        texts = [task.prompt]
        for t in trajectories:
            for step in t.steps:
                texts.append(step.reply)
                if step.tool is not None:
                    texts += [step.tool.code, step.tool.output]
        text = "\n".join(texts)
        words = _WORD.findall(text.lower())
        words += [w for m in _WORD.findall(text.lower()) for w in _SYNONYMS.get(m, ())]
        contrast = frozenset(stem(w) for w in words)
        return cls(contrast=contrast, example_grams=example_grams(example), text=text)


def example_grams(example: str) -> frozenset[tuple[str, ...]]:
    """The word trigrams of the part after "enforce" of an example constraint (its enforce
    and avoid parts: the when part names a situation, which a good constraint may share)."""
    _, _, rest = example.lower().partition("enforce")
    words = _WORD.findall(rest.replace("avoid", " "))
    return frozenset(tuple(words[i : i + _ECHO_WORDS]) for i in range(len(words) - _ECHO_WORDS + 1))


def _empty(part: str, avoid: bool = False) -> bool:
    """A part with no content but vague, generic, process and mistake words (no formula),
    or an avoid part that names a mistake in general ("making assumptions about ...")."""
    if _FORMULA.search(part):
        return False
    if avoid and _EMPTY_AVOID.match(part.strip()):
        return True
    return not (set(content(part)) - _EMPTY_WORDS - _FORMAT_STEMS)


def _negates(enforce: str, avoid: str) -> bool:
    words = content(avoid)
    raw = set(_WORD.findall(avoid.lower()))
    if not ((set(words) & (_NEGATIVE_STEMS | _DENIAL_STEMS)) or raw & _DENIAL):
        return False
    rest = set(words) - _EMPTY_WORDS - _DENIAL_STEMS - _FORMAT_STEMS
    return rest <= set(content(enforce)) | _VAGUE_STEMS


def _echoes(part: str, grams: frozenset[tuple[str, ...]]) -> bool:
    words = _WORD.findall(part.lower())
    return any(
        tuple(words[i : i + _ECHO_WORDS]) in grams for i in range(len(words) - _ECHO_WORDS + 1)
    )


def topic(when: str, enforce: str, avoid: str) -> frozenset[str]:
    """The constraint's topic stems: its content less vague, generic, process, mistake,
    format and stop words."""
    return frozenset(content(f"{when} {enforce} {avoid}")) - _NOT_TOPIC


def _repeats_situation(when: str, enforce: str) -> bool:
    """The enforce part adds nothing to the when part ("When X, enforce X"); quantifiers
    ("each", "one", "before") count as content here: "to one unit" says something."""

    def words(part: str) -> set[str]:
        return set(content(part)) | (set(_WORD.findall(part.lower())) & _QUANTIFIERS)

    rest = words(enforce) - _EMPTY_WORDS - _FORMAT_STEMS
    return not _FORMULA.search(enforce) and rest <= words(when)


def _vague(enforce: str) -> str | None:
    """The word by which the enforce part asks for correctness instead of naming a check."""
    m = _VAGUE_ENFORCE.search(enforce)
    return m.group(0) if m else None


def _unshown_edge_case(enforce: str, avoid: str, ctx: SemanticContext) -> str | None:
    """The edge case the constraint guards against that the contrast never shows."""
    text = f"{enforce} {avoid}"
    for name, (in_constraint, in_contrast) in EDGE_CASES.items():
        if in_constraint.search(text) and not in_contrast.search(ctx.text):
            return name
    return None


def _vacuous_rule(when: str, enforce: str, avoid: str, ctx: SemanticContext) -> str | None:
    for name, part in (("enforce", enforce), ("avoid", avoid)):
        if _empty(part, avoid=name == "avoid"):
            return f"the {name} part says nothing checkable: {part!r}"
    if _repeats_situation(when, enforce):
        return f"the enforce part only repeats the situation: {enforce!r}"
    return None


def _vague_rule(when: str, enforce: str, avoid: str, ctx: SemanticContext) -> str | None:
    word = _vague(enforce)
    return None if word is None else f"the enforce part asks for {word!r} instead of naming a check"


def _negation_rule(when: str, enforce: str, avoid: str, ctx: SemanticContext) -> str | None:
    if _negates(enforce, avoid):
        return f"the avoid part only negates the enforce part: {avoid!r}"
    return None


def _echo_rule(when: str, enforce: str, avoid: str, ctx: SemanticContext) -> str | None:
    for name, part in (("enforce", enforce), ("avoid", avoid)):
        if _echoes(part, ctx.example_grams):
            return f"the {name} part repeats the prompt's example: {part!r}"
    return None


def _unsupported_rule(when: str, enforce: str, avoid: str, ctx: SemanticContext) -> str | None:
    words = topic(when, enforce, avoid)
    if words and not (words & ctx.contrast):
        return f"no topic word ({', '.join(sorted(words))}) occurs in the task or the attempts"
    return None


def _edge_case_rule(when: str, enforce: str, avoid: str, ctx: SemanticContext) -> str | None:
    case = _unshown_edge_case(enforce, avoid, ctx)
    if case is None:
        return None
    return f"it guards against {case}, which neither the task nor the attempts show"


_Rule = Callable[[str, str, str, SemanticContext], "str | None"]
RULES: tuple[tuple[str, _Rule], ...] = (
    ("vacuous", _vacuous_rule),
    ("vague", _vague_rule),
    ("self_negation", _negation_rule),
    ("example_echo", _echo_rule),
    ("unsupported", _unsupported_rule),
    ("unshown_edge_case", _edge_case_rule),
)
"""The rules in the order they are checked (reason, check)."""


def explain(
    when: str,
    enforce: str,
    avoid: str,
    ctx: SemanticContext,
    *,
    skip: Collection[str] = (),
) -> tuple[str, str] | None:
    """The first semantic rule a constraint breaks, and why in words; None if none.
    `skip` leaves rules out by reason (to measure what one rule adds)."""
    for reason, rule in RULES:
        if reason not in skip:
            why = rule(when, enforce, avoid, ctx)
            if why is not None:
                return reason, why
    return None


def semantic_reason(when: str, enforce: str, avoid: str, ctx: SemanticContext) -> str | None:
    """The reason (of `SEMANTIC_REJECT_REASONS`) a constraint is rejected, or None."""
    found = explain(when, enforce, avoid, ctx)
    return None if found is None else found[0]


class SemanticJudge(Protocol):
    """A model judge after the rules (memory/judge.py: ModelJudge asks a model): given a
    constraint's text and the task, a reason of `JUDGE_REASONS` (or of
    `SEMANTIC_REJECT_REASONS`) or None."""

    def __call__(self, constraint: str, task: Task) -> str | None: ...
