"""Distillation: a model reads a task and a contrastive pair and writes reasoning constraints.

The distiller does not solve the task. It writes at most K constraints "When <situation>,
enforce <invariant>; avoid <violation>" (prompts/distill.toml). What it sees: the task text
and, per trajectory, its replies, the code runs' status and output, and the verdict; never
the agent's system prompt (nor any memory given to the agent), the reference answer, hidden
tests, checker details or model names. The prompt is kept under a character budget; long
trajectories keep their end.

Its output is parsed forgivingly (JSON array or object, or "When ..., enforce ...; avoid ..."
lines, numbered or bulleted, inside markdown fences or not). An item in the constraint form
(a "When ..." with an enforce or avoid part, or a JSON object with a when or enforce key) is
a candidate; an item that is there but not in that form (a bare "When ..." line, an
avoid-only object, a list entry that is no constraint, JSON nested past `_MAX_JSON_DEPTH`)
is unusable, and counted as a rejected "incomplete" candidate. An output without one
candidate gets one repair request (an explicit "no constraints", such as `[]` or "NONE", is
an answer: status "empty"); if the repair has none either, the result is "malformed" and
logged. No output, however long or deeply nested, raises. Each candidate is screened; a
rejected one is counted by reason (`REJECT_REASONS`), so candidates = kept + rejected:

* incomplete: a part (when / enforce / avoid) is missing or empty, or the item is unusable;
* too_short: a part under 3 letters, or under 4 words in all; too_long: over 400 characters;
* template: the prompt's format placeholders, or its example copied back whole or in part
  (a "when", "enforce" or "avoid" part word for word the example's);
* code: backticks, a call `name(`, indexing `name[`, code operators (== != += -> :=),
  `def` / `import`, LaTeX commands or $...$;
* quoted: a quoted string ("...", '...', or typographic quotes);
* number: a number other than 0, 1, 2 that has several digits or appears in the task or a
  trajectory;
* identifier: the task's entry point, a function or class defined in the task or the
  trajectories' code, or an identifier from them that cannot be an English word (has an
  underscore, a digit or camelCase);
* name: a capitalised word of the task that is a proper name (capitalised mid-sentence, or
  capitalised at a sentence start and never written in lower case there);
* copied_text: `copy_ngram` (5) or more consecutive words copied from the task text;
* duplicate: the same words as a constraint kept before, or nearly (`_NEAR_DUPLICATE` of
  the distinct words shared, Jaccard);
* over_limit: beyond the K kept constraints.

With `Distiller(screen="v2")` (opt-in; "v1", the default, is the screen above alone) the
semantic rules of memory/semantic.py run on what the v1 rules pass, before duplicates
and the limit are counted: vacuous, vague, self_negation, example_echo, unsupported,
unshown_edge_case (`SEMANTIC_REJECT_REASONS`, also in `REJECT_REASONS`). The prompt and
the parsing are the same in both.

Last, the content screen against poisoning (memory/poison.py; on unless
`Distiller(poison_screen=False)`) refuses a constraint that would be kept but carries
instructions rather than reasoning (a URL, a command, an override, a secret ...), counted
as "poison:<reason code>". It runs after the limit, so it can only turn a kept constraint
into a refused one (making room for the next): on outputs whose kept constraints it
passes (every committed memory's, tests/memory/test_poison.py) nothing changes.
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.resources import files
from typing import Any, Literal

from memcollab.domains import get_domain
from memcollab.llm.base import ChatRequest, Decoding, Message
from memcollab.llm.cache import ModelClient
from memcollab.memory.pairs import Pair
from memcollab.memory.poison import POISON_REASONS, screen_parts
from memcollab.memory.record import Constraint
from memcollab.memory.semantic import (
    JUDGE_REASONS,
    SEMANTIC_REJECT_REASONS,
    SemanticContext,
    SemanticJudge,
    semantic_reason,
)
from memcollab.tasks.task import Task
from memcollab.trajectory import Trajectory

log = logging.getLogger(__name__)

DistillStatus = Literal["ok", "malformed", "all_rejected", "empty"]
REJECT_REASONS = (
    "incomplete",
    "too_short",
    "too_long",
    "template",
    "code",
    "quoted",
    "number",
    "identifier",
    "name",
    "copied_text",
    "duplicate",
    "over_limit",
    # The v2 screen's reasons (memory/semantic.py); the v1 screen never gives them.
    *SEMANTIC_REJECT_REASONS,
    # The optional model judge after those rules (memory/judge.py).
    *JUDGE_REASONS,
    # The content screen against poisoning (memory/poison.py), one per reason code.
    *(f"poison:{reason}" for reason in POISON_REASONS),
)
ScreenVersion = Literal["v1", "v2"]
SCREEN_VERSIONS: tuple[ScreenVersion, ...] = ("v1", "v2")

_REPLY_CHARS = 1500
_TOOL_CHARS = 400
_TASK_SHARE = 0.3
_MIN_TASK_CHARS = 300
_REPAIR_ECHO_CHARS = 300
# Constraints sit at most three levels deep ({"constraints": [{...}]}); deeper JSON is no
# constraint list, and reading it by recursion could overflow the stack.
_MAX_JSON_DEPTH = 8
_MAX_CONSTRAINT_CHARS = 400
_TRIVIAL_NUMBERS = frozenset({"0", "1", "2"})
# Two constraints sharing this share of their distinct words say the same thing: small
# distillers repeat one constraint with a synonym swapped ("computing" / "calculating").
_NEAR_DUPLICATE = 0.8


@lru_cache(maxsize=1)
def prompts() -> dict[str, Any]:
    """The distiller's prompt templates (package data prompts/distill.toml)."""
    raw = files("memcollab").joinpath("prompts/distill.toml").read_text(encoding="utf-8")
    return tomllib.loads(raw)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DistillResult:
    """What one distillation produced: the kept constraints, and why the others went.

    `candidates` counts the items of the last output read (kept or rejected, unusable ones
    included: candidates = kept + the sum of `rejected`); `retries` the repair requests sent;
    `raw_outputs` holds every model output, in order, for the log.
    """

    task_id: str
    pair_type: str
    status: DistillStatus
    constraints: tuple[Constraint, ...] = ()
    rejected: Mapping[str, int] = field(default_factory=dict)
    candidates: int = 0
    retries: int = 0
    raw_outputs: tuple[str, ...] = ()

    @property
    def repaired(self) -> bool:
        """Whether a repair request turned a malformed output into a readable one."""
        return self.retries > 0 and self.status != "malformed"


@dataclass
class DistillStats:
    """Counters over many distillations (add each result with `add`)."""

    pairs: int = 0
    calls: int = 0
    ok: int = 0
    empty: int = 0
    all_rejected: int = 0
    malformed: int = 0
    repaired: int = 0
    retries: int = 0
    candidates: int = 0
    constraints: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def add(self, result: DistillResult) -> None:
        """Count one result."""
        self.pairs += 1
        self.calls += len(result.raw_outputs)
        self.retries += result.retries
        self.repaired += int(result.repaired)
        self.candidates += result.candidates
        self.constraints += len(result.constraints)
        self.rejected.update(result.rejected)
        if result.status == "ok":
            self.ok += 1
        elif result.status == "empty":
            self.empty += 1
        elif result.status == "all_rejected":
            self.all_rejected += 1
        else:
            self.malformed += 1

    def as_dict(self) -> dict[str, Any]:
        """The counters as JSON-native values."""
        counts: dict[str, Any] = {
            k: getattr(self, k)
            for k in (
                "pairs",
                "calls",
                "ok",
                "empty",
                "all_rejected",
                "malformed",
                "repaired",
                "retries",
                "candidates",
                "constraints",
            )
        }
        counts["rejected"] = dict(sorted(self.rejected.items()))
        return counts


# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Candidate:
    """A constraint as parsed, before screening (parts may be empty)."""

    when: str
    enforce: str
    avoid: str

    def text(self) -> str:
        return f"When {self.when}, enforce {self.enforce}; avoid {self.avoid}."


@dataclass(frozen=True)
class Parsed:
    """What the parser read: the candidates, whether the output said "no constraints", and
    the items that were there but not in the constraint form (`unusable`, their text)."""

    candidates: tuple[Candidate, ...]
    explicit_empty: bool = False
    unusable: tuple[str, ...] = ()

    @property
    def readable(self) -> bool:
        """Whether the output answered: at least one candidate, or an explicit "none"."""
        return bool(self.candidates) or self.explicit_empty


_FENCE_LINE = re.compile(r"^\s*```[\w+-]*\s*$", re.MULTILINE)
_BULLET = re.compile(
    r"^\s*(?:(?:#{1,6}|[-*+\u2022>]|\d{1,2}\s*[.):]|\(\d{1,2}\)|\[\d{1,2}\])\s*)+"
    r"(?:(?:\*\*)?(?:constraints?|rules?)\b\s*#?\d*\s*(?:\*\*)?\s*[:.)-]?\s*(?:\*\*)?\s*)?"
    r"|^\s*(?:\*\*)?(?:constraints?|rules?)\b\s*#?\d*\s*(?:\*\*)?\s*[:.)-]?\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
_ITEM_START = re.compile(
    r"^\s*(?:#{1,6}|[-*+\u2022]|\d{1,2}\s*[.):]|\(\d{1,2}\)|\[\d{1,2}\]"
    r"|(?:\*\*)?(?:constraints?|rules?)\b)",
    re.IGNORECASE,
)
_WHEN_START = re.compile(r"^\W*(?:when|whenever|if)\b", re.IGNORECASE)
_SEP = r"(?:\s*[,;:.\u2013\u2014-]+\s*|\s+)"
# Small distillers often write "ensure" or "make sure" where the format says "enforce"
# (measured: about a third of the 1.5B model's constraints on GSM8K train); same meaning.
_ENFORCE_VERB = r"(?:enforc(?:e|ing)|ensur(?:e|ing)|make\s+sure(?:\s+that)?)"
_SENTENCE = re.compile(
    r"^\W*(?:when|whenever|if)\b\s*:?\s*(?P<when>.+?)"
    rf"(?:{_SEP}(?:then\s+|always\s+|you\s+(?:must|should)\s+)?{_ENFORCE_VERB}\b\s*:?\s*"
    r"(?P<enforce>.*?))?"
    rf"(?:(?:{_SEP}(?:and\s+|but\s+|while\s+)?)(?:never\s+)?avoid(?:ing)?\b\s*:?\s*(?P<avoid>.*?))?"
    r"\s*[.;]?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_SPLIT_SENTENCES = re.compile(r"(?<=[.;])\s+(?=(?:when|whenever)\b)", re.IGNORECASE)
_EMPTY_REPLY = re.compile(r"^\W*(?:none|no constraints?|nothing)\W*$", re.IGNORECASE)
_KEYS = {
    "when": ("when", "situation", "condition", "context", "trigger"),
    "enforce": ("enforce", "invariant", "do", "rule", "action", "keep"),
    "avoid": ("avoid", "violation", "dont", "don't", "pitfall", "mistake", "error"),
}
_LOOSE_JSON = re.compile(
    r'"when"\s*:\s*"(?P<when>(?:[^"\\]|\\.)*)"\s*,\s*'
    r'"enforce"\s*:\s*"(?P<enforce>(?:[^"\\]|\\.)*)"\s*,\s*'
    r'"avoid"\s*:\s*"(?P<avoid>(?:[^"\\]|\\.)*)"',
    re.IGNORECASE,
)


def _clean_part(text: str) -> str:
    text = text.replace("**", "")
    text = " ".join(text.split())
    text = re.sub(r"^(?:when|enforce|avoid)\b\s*:?\s*", "", text, flags=re.IGNORECASE)
    return text.strip(" \t,;:.").strip()


def _candidate(when: Any, enforce: Any, avoid: Any) -> Candidate:
    def norm(v: Any) -> str:
        if isinstance(v, list | tuple):
            v = " ".join(str(x) for x in v)
        return _clean_part("" if v is None else str(v))

    return Candidate(norm(when), norm(enforce), norm(avoid))


def _parse_sentence(block: str) -> Candidate | None:
    block = block.replace("**", "")
    m = _SENTENCE.match(" ".join(block.split()))
    if m is None:
        return None
    if m.group("enforce") is None and m.group("avoid") is None:
        return None
    return _candidate(m.group("when"), m.group("enforce"), m.group("avoid"))


def _clip_item(text: str) -> str:
    return _clip_head(" ".join(text.split()), 200)


@dataclass
class _Items:
    """Candidates and unusable items, as one reading collects them."""

    found: list[Candidate] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)

    def add_text(self, text: str, *, whole_is_item: bool) -> None:
        """The items of free text: constraints, and "When ..." blocks that are not one (or,
        with `whole_is_item`, the whole text when nothing in it is a constraint)."""
        before = (len(self.found), len(self.unusable))
        for block in _blocks(text):
            c = _parse_sentence(block)
            if c is not None:
                self.found.append(c)
            elif re.match(r"^\W*(?:when|whenever)\b", block, re.IGNORECASE):
                self.unusable.append(_clip_item(block))
        if whole_is_item and (len(self.found), len(self.unusable)) == before:
            self.unusable.append(_clip_item(text))


def _blocks(text: str) -> list[str]:
    """Split free text into items: one per bullet / number / "When" line; other lines
    continue the item before them."""
    blocks: list[list[str]] = []
    for line in text.splitlines():
        if not line.strip():
            if blocks and blocks[-1]:
                blocks.append([])
            continue
        starts = _ITEM_START.match(line) is not None
        body = _BULLET.sub("", line, count=1).strip()
        if starts or _WHEN_START.match(body) or not blocks:
            blocks.append([])
        if body:
            blocks[-1].append(body)
    items: list[str] = []
    for b in blocks:
        if b:
            items.extend(_SPLIT_SENTENCES.split(" ".join(b)))
    return items


def _from_json_value(value: Any, items: _Items, depth: int = 0) -> bool:
    """Collect the items of decoded JSON into `items`; False (nothing collected) when the
    value has no recognisable shape. Never recurses past `_MAX_JSON_DEPTH`."""
    if depth > _MAX_JSON_DEPTH:
        return False
    if isinstance(value, dict):
        lower = {str(k).lower(): v for k, v in value.items()}
        if any(k in lower for k in _KEYS["when"]) or any(k in lower for k in _KEYS["enforce"]):
            parts = {
                part: next((lower[k] for k in keys if k in lower), "")
                for part, keys in _KEYS.items()
            }
            items.found.append(_candidate(parts["when"], parts["enforce"], parts["avoid"]))
            return True
        for k in ("constraint", "text", "rule"):
            if isinstance(lower.get(k), str):
                found = _parse_sentence(lower[k])
                if found is not None:
                    items.found.append(found)
                else:
                    items.unusable.append(_clip_item(lower[k]))
                return True
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return _from_json_value(lists[0], items, depth + 1)
        return False
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                items.add_text(item, whole_is_item=True)
            elif not _from_json_value(item, items, depth + 1):
                items.unusable.append(_clip_item(_json_text(item)))
        return True
    return False


def _json_text(value: Any) -> str:
    """Decoded JSON as text again, for the log (an over-deep value as a short marker)."""
    try:
        return json.dumps(value, ensure_ascii=False)[:200]
    except (ValueError, RecursionError):
        return "(deeply nested JSON)"


def _loads(text: str) -> Any:
    """`json.loads`, raising ValueError for input it cannot read, over-deep nesting included
    (the decoder recurses once per level)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _try_json(text: str) -> Parsed | None:
    spans = [text]
    for open_, close in (("[", "]"), ("{", "}")):
        start, end = text.find(open_), text.rfind(close)
        if 0 <= start < end:
            spans.append(text[start : end + 1])
    for span in spans:
        for attempt in (span, re.sub(r",\s*([\]}])", r"\1", span)):
            try:
                value = _loads(attempt)
            except ValueError:
                continue
            items = _Items()
            if not _from_json_value(value, items):
                continue
            empty = not items.found and not items.unusable
            empty = empty and (value == [] or isinstance(value, dict))
            return Parsed(tuple(items.found), explicit_empty=empty, unusable=tuple(items.unusable))
    loose = [_candidate(*m.group("when", "enforce", "avoid")) for m in _LOOSE_JSON.finditer(text)]
    return Parsed(tuple(loose)) if loose else None


def parse_constraints(text: str) -> Parsed:
    """Read constraints from a model's output: JSON, or "When ..., enforce ...; avoid ..."
    lines (numbered, bulleted, or "When: / Enforce: / Avoid:" labelled), fences or not.

    Any text is read without raising; items that are there but not constraints are
    returned as `unusable`."""
    body = _FENCE_LINE.sub("", text).strip()
    if not body:
        return Parsed(())
    if _EMPTY_REPLY.match(body):
        return Parsed((), explicit_empty=True)
    first = _try_json(body) if body[0] in "[{" else None
    if first is not None and first.readable:
        return first
    lines = _Items()
    lines.add_text(body, whole_is_item=False)
    if lines.found:
        return Parsed(tuple(lines.found), unusable=tuple(lines.unusable))
    parsed = first if body[0] in "[{" else _try_json(body)
    if parsed is not None and parsed.readable:
        return parsed
    # Nothing readable: report the unusable items of whichever reading saw some.
    unusable = parsed.unusable if parsed is not None and parsed.unusable else lines.unusable
    return Parsed((), unusable=tuple(unusable))


# --------------------------------------------------------------------------- screening

_WORD = re.compile(r"[a-z0-9]+")
_NUMBER = re.compile(r"(?<![A-Za-z_\d.])\d+(?:\.\d+)?(?![A-Za-z_\d])")
_IDENT = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")
_DEFINED = re.compile(r"\b(?:def|class)\s+([A-Za-z_]\w*)")
_CODE = re.compile(
    r"`|\b[A-Za-z_]\w*\(|\b[A-Za-z_]\w*\[|==|!=|\+=|-=|\*=|/=|->|:=|\bdef\s+\w|\bimport\s+\w"
    r"|\\[A-Za-z]{2,}|\$[^$]+\$"
)
_QUOTED = re.compile(
    r"\"[^\"]+\"|\u201c[^\u201d]+\u201d|\u2018[^\u2019]+\u2019|(?<!\w)'[^'\n]+'(?!\w)"
)
_PLACEHOLDER = re.compile(r"<[^<>]{2,}>|\.\.\.|\u2026")
_CODE_FENCE = re.compile(r"```[\w+-]*[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CAP_WORD = re.compile(r"\b[A-Z][a-z]+\b")
_SENTENCE_START = re.compile(r"(?:^|[.!?:]\s+|\n\s*)([A-Z][a-z]+)\b")
_CAPITALISED_WORDS = (  # capitalised in tasks, but not names
    "I True False None Python Return Returns Given Find Write Let If In On At For What "
    "How Which When Where Why Who The A An Each Every Compute Calculate Determine "
    "Evaluate Simplify Express Solve Show Suppose Consider Note Example Examples Input "
    "Output This That These There Then It Its Is Are Assume Check Create Implement "
    "Function You Your We Our Answer"
)
_COMMON_CAPS = frozenset(_CAPITALISED_WORDS.split())


def _distinctive(word: str) -> bool:
    """An identifier that cannot be an ordinary English word."""
    core = word.strip("_")
    camel = any(ch.isupper() for ch in core[1:]) and any(ch.islower() for ch in core)
    return len(word) >= 3 and ("_" in core or any(ch.isdigit() for ch in word) or camel)


@dataclass(frozen=True)
class ScreenContext:
    """What a constraint must not copy: the task's and the trajectories' specifics."""

    numbers: frozenset[str]
    identifiers: frozenset[str]
    strong_names: frozenset[str]
    weak_names: frozenset[str]
    ngrams: frozenset[tuple[str, ...]]
    n: int

    @classmethod
    def build(
        cls, task: Task, trajectories: Iterable[Trajectory], copy_ngram: int = 5
    ) -> ScreenContext:
        """Collect the numbers, identifiers, names and n-grams of a task and trajectories."""
        texts = [task.prompt]
        code = [task.prompt] if get_domain(task.domain).prompt_is_code else []
        for t in trajectories:
            for step in t.steps:
                texts.append(step.reply)
                code.extend(_CODE_FENCE.findall(step.reply))
                if step.tool is not None:
                    texts += [step.tool.code, step.tool.output]
                    code.append(step.tool.code)
        numbers = {m.group(0) for text in texts for m in _NUMBER.finditer(text)}
        # The task's own names count whatever they look like; names the models made up
        # ("solve", "count") only when they cannot be ordinary words.
        idents: set[str] = {task.entry_point} if task.entry_point else set()
        idents.update(_DEFINED.findall(task.prompt))
        for src in code + [task.prompt]:
            idents.update(w for w in _IDENT.findall(src) if _distinctive(w))
        idents = {w for w in idents if len(w) >= 3}
        strong, weak = _names(task.prompt)
        words = _WORD.findall(task.prompt.lower())
        grams = {tuple(words[i : i + copy_ngram]) for i in range(len(words) - copy_ngram + 1)}
        return cls(
            numbers=frozenset(numbers),
            identifiers=frozenset(idents),
            strong_names=frozenset(strong),
            weak_names=frozenset(weak),
            ngrams=frozenset(grams),
            n=copy_ngram,
        )


def _words(text: str) -> str:
    """A text's words, lower-cased and single-spaced (how constraints are compared)."""
    return " ".join(_WORD.findall(text.lower()))


@lru_cache(maxsize=1)
def _example_parts() -> frozenset[str]:
    """The when / enforce / avoid parts of the prompt's example constraint."""
    parsed = parse_constraints(prompts()["example"])
    return frozenset(
        _words(part) for c in parsed.candidates for part in (c.when, c.enforce, c.avoid)
    )


def _names(text: str) -> tuple[set[str], set[str]]:
    """Proper names of a text: capitalised mid-sentence (strong), or capitalised only at
    sentence starts and never in lower case (weak)."""
    starts = {m.start(1) for m in _SENTENCE_START.finditer(text)}
    lower_words = set(re.findall(r"\b[a-z]+\b", text))
    strong: set[str] = set()
    weak: set[str] = set()
    for m in _CAP_WORD.finditer(text):
        word = m.group(0)
        if word in _COMMON_CAPS:
            continue
        if m.start() in starts or m.start() == 0:
            if word.lower() not in lower_words:
                weak.add(word)
        else:
            strong.add(word)
    return strong, weak - strong


def rejection_reason(c: Candidate, ctx: ScreenContext) -> str | None:
    """Why a parsed constraint cannot be kept (a reason of `REJECT_REASONS`), or None."""
    parts = (c.when, c.enforce, c.avoid)
    if not all(parts):
        return "incomplete"
    text = " ".join(parts)
    words = _WORD.findall(text.lower())
    if any(len(re.sub(r"[^A-Za-z]", "", p)) < 3 for p in parts) or len(words) < 4:
        return "too_short"
    if len(text) > _MAX_CONSTRAINT_CHARS:
        return "too_long"
    # A whole copy of the example copies each of its parts, so the parts check covers it.
    if _PLACEHOLDER.search(text) or any(_words(p) in _example_parts() for p in parts):
        return "template"
    if _CODE.search(text):
        return "code"
    if _QUOTED.search(text):
        return "quoted"
    for m in _NUMBER.finditer(text):
        num = m.group(0)
        if num not in _TRIVIAL_NUMBERS and (
            sum(ch.isdigit() for ch in num) > 1 or num in ctx.numbers
        ):
            return "number"
    tokens = set(_IDENT.findall(text))
    if tokens & ctx.identifiers:
        return "identifier"
    for part in parts:
        for i, m in enumerate(_CAP_WORD.finditer(part)):
            word = m.group(0)
            first = m.start() == 0
            if word in ctx.strong_names or (word in ctx.weak_names and not (first and i == 0)):
                return "name"
    for i in range(len(words) - ctx.n + 1):
        if tuple(words[i : i + ctx.n]) in ctx.ngrams:
            return "copied_text"
    return None


def _tidy(part: str) -> str:
    """Lower-case the first letter of a part unless it starts an acronym."""
    if len(part) > 1 and part[0].isupper() and not part[1].isupper():
        return part[0].lower() + part[1:]
    return part


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def screen_each(
    candidates: Iterable[Candidate],
    ctx: ScreenContext,
    max_constraints: int,
    extra: Callable[[Candidate], str | None] | None = None,
    poison: bool = False,
) -> list[tuple[Candidate, str | None]]:
    """Every candidate with the reason it is rejected (None: kept), in order: the v1
    rules, then `extra` (the v2 screen's rules) on what they pass, then duplicates of a
    kept constraint, then those beyond `max_constraints`, then (with `poison`) the
    content screen of memory/poison.py on what would be kept."""
    verdicts: list[tuple[Candidate, str | None]] = []
    seen: list[frozenset[str]] = []
    kept = 0
    for c in candidates:
        reason = rejection_reason(c, ctx)
        if reason is None and extra is not None:
            reason = extra(c)
        key = frozenset(_WORD.findall(f"{c.when} {c.enforce} {c.avoid}".lower()))
        if reason is None and any(_jaccard(key, k) >= _NEAR_DUPLICATE for k in seen):
            reason = "duplicate"
        if reason is None and kept >= max_constraints:
            reason = "over_limit"
        if reason is None and poison:
            verdict = screen_parts(c.when, c.enforce, c.avoid)
            reason = None if verdict.reason is None else f"poison:{verdict.reason}"
        if reason is None:
            seen.append(key)
            kept += 1
        verdicts.append((c, reason))
    return verdicts


def screen(
    candidates: Iterable[Candidate],
    ctx: ScreenContext,
    max_constraints: int,
    extra: Callable[[Candidate], str | None] | None = None,
    poison: bool = False,
) -> tuple[tuple[Constraint, ...], dict[str, int]]:
    """Keep at most `max_constraints` acceptable constraints; count the others by reason
    (`extra`: further rules, run after the v1 rules; `poison`: the content screen; see
    `screen_each`)."""
    kept: list[Constraint] = []
    rejected: Counter[str] = Counter()
    for c, reason in screen_each(candidates, ctx, max_constraints, extra, poison):
        if reason is not None:
            rejected[reason] += 1
            log.debug("rejected constraint (%s): %s", reason, c.text())
            continue
        kept.append(Constraint(when=_tidy(c.when), enforce=_tidy(c.enforce), avoid=_tidy(c.avoid)))
    return tuple(kept), dict(rejected)


# --------------------------------------------------------------------------- prompt


def _clip_tail(text: str, limit: int, marker: str = "...") -> str:
    """The end of `text` in at most `limit` characters, cut at a line start when possible."""
    if len(text) <= limit:
        return text
    if limit <= len(marker) + 1:
        return text[len(text) - max(limit, 0) :] if limit > 0 else ""
    tail = text[len(text) - (limit - len(marker) - 1) :]
    newline = tail.find("\n")
    if 0 <= newline < min(len(tail) // 10, 200):
        tail = tail[newline + 1 :]
    return f"{marker}\n{tail}"


def _clip_head(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: max(limit - 4, 0)] + " ..."


def _squeeze(text: str) -> str:
    text = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return re.sub(r"\n{3,}", "\n\n", text)


def render_trajectory(t: Trajectory, label: str, budget: int) -> str:
    """One trajectory, compactly: a verdict header, then each turn's reply and code run
    (output clipped), the whole body clipped to `budget` characters keeping its end."""
    p = prompts()
    header = p["attempt_header"].format(
        label=label,
        verdict="correct" if t.correct else "incorrect",
        finish=p["finish"].get(t.finish, t.finish),
        turns=t.turns,
    )
    lines: list[str] = []
    for step in t.steps:
        lines.append(f"[turn {step.turn}]")
        lines.append(_clip_tail(_squeeze(step.reply), _REPLY_CHARS))
        if step.tool is not None:
            what = "example tests" if step.tool.kind == "visible_tests" else "code run"
            lines.append(f"[{what}: {step.tool.status}]")
            if step.tool.output.strip():
                lines.append(_clip_tail(_squeeze(step.tool.output), _TOOL_CHARS))
    if not t.steps:
        lines.append("[no reply]")
    body = _clip_tail("\n".join(lines), max(budget - len(header) - 1, 0), p["omitted"])
    return f"{header}\n{body}"


# --------------------------------------------------------------------------- distiller


class Distiller:
    """Turns a pair into at most `max_constraints` screened constraints with one model.

    `max_prompt_chars` bounds the characters of every request (all messages together, the
    repair request included); the default suits a 4096-token context with room to answer.
    """

    def __init__(
        self,
        client: ModelClient,
        max_constraints: int = 3,
        *,
        max_prompt_chars: int = 9000,
        copy_ngram: int = 5,
        decoding: Decoding | None = None,
        screen: ScreenVersion = "v1",
        judge: SemanticJudge | None = None,
        poison_screen: bool = True,
    ) -> None:
        if max_constraints < 1:
            raise ValueError("max_constraints must be at least 1")
        if screen not in SCREEN_VERSIONS:
            raise ValueError(f"screen must be one of {', '.join(SCREEN_VERSIONS)}, not {screen!r}")
        if judge is not None and screen == "v1":
            raise ValueError("a semantic judge runs only in the v2 screen (screen='v2')")
        self.screen_version: ScreenVersion = screen
        self.poison_screen = poison_screen
        self.judge = judge
        self.client = client
        self.max_constraints = max_constraints
        self.max_prompt_chars = max_prompt_chars
        self.copy_ngram = copy_ngram
        self.decoding = decoding or Decoding(temperature=0.0, max_tokens=400)

    @property
    def name(self) -> str:
        """The distiller model's name (recorded in memory records)."""
        return self.client.name

    def messages(self, task: Task, pair: Pair, budget: int | None = None) -> list[Message]:
        """The request: a short system message and one user message within `budget`."""
        p = prompts()
        budget = self.max_prompt_chars if budget is None else budget
        attempts = [("A", t) for t in (pair.positive,) if t is not None]
        if pair.negative is not None:
            attempts.append(("B" if pair.positive is not None else "A", pair.negative))
        fields = {
            "domain": task.domain,
            "attempts_desc": p["attempts_desc"]["two" if len(attempts) == 2 else "one"],
            "instruction": self._instruction(pair),
            "k": self.max_constraints,
            "example": p["example"],
        }
        system = p["system"]
        overhead = len(system) + len(p["user"].format(task="", attempts="", **fields))
        free = max(budget - overhead, 0)
        separator = 2 * (len(attempts) - 1)
        task_text = _squeeze(task.prompt)
        task_budget = min(len(task_text), max(int(free * _TASK_SHARE), _MIN_TASK_CHARS))
        task_text = _clip_head(task_text, min(task_budget, free))
        left = max(free - len(task_text) - separator, 0)
        rendered: list[str] = []
        for i, (label, traj) in enumerate(attempts):
            share = left // (len(attempts) - i)
            text = render_trajectory(traj, label, share)
            rendered.append(text)
            left -= len(text)
        user_text = p["user"].format(task=task_text, attempts="\n\n".join(rendered), **fields)
        return [Message(role="system", content=system), Message(role="user", content=user_text)]

    def _instruction(self, pair: Pair) -> str:
        table = prompts()["instruction"]
        if pair.pair_type == "tie_break":
            right = pair.positive is not None and pair.positive.correct
            return table["tie_break_right" if right else "tie_break_wrong"]
        return table[pair.pair_type]

    def _call(self, messages: list[Message]) -> str:
        request = ChatRequest(messages=tuple(messages), decoding=self.decoding)
        return self.client.complete(request).text

    def distill(self, task: Task, pair: Pair) -> DistillResult:
        """Distil one pair of `task` into constraints (see the module doc for the rules)."""
        if task.id != pair.task_id:
            raise ValueError(f"pair of task {pair.task_id!r} given with task {task.id!r}")
        first = self.messages(task, pair)
        raws = [self._call(first)]
        parsed = parse_constraints(raws[0])
        retries = 0
        if not parsed.readable:
            retries = 1
            raws.append(self._call(self._repair_messages(task, pair, raws[0])))
            parsed = parse_constraints(raws[1])
        kept: tuple[Constraint, ...] = ()
        rejected: dict[str, int] = {}
        if parsed.unusable:
            # Items that are there but not constraints: counted, never dropped unseen.
            rejected["incomplete"] = len(parsed.unusable)
            for item in parsed.unusable:
                log.debug("unusable item (incomplete): %s", item)
        status: DistillStatus
        if not parsed.readable:
            status = "malformed"
            log.warning(
                "distiller %s: malformed output for task %s (%s pair) after %d repair: %s",
                self.name,
                task.id,
                pair.pair_type,
                retries,
                [_clip_head(r, 500) for r in raws],
            )
        elif not parsed.candidates:
            status = "empty"
            log.info("distiller %s: no constraints for task %s", self.name, task.id)
        else:
            ctx = ScreenContext.build(task, pair.trajectories(), self.copy_ngram)
            extra = self._semantic_rules(task, pair) if self.screen_version == "v2" else None
            kept, screened = screen(
                parsed.candidates, ctx, self.max_constraints, extra, self.poison_screen
            )
            rejected = dict(Counter(rejected) + Counter(screened))
            status = "ok" if kept else "all_rejected"
            if rejected:
                log.info(
                    "distiller %s: task %s kept %d, rejected %s",
                    self.name,
                    task.id,
                    len(kept),
                    rejected,
                )
        return DistillResult(
            task_id=task.id,
            pair_type=pair.pair_type,
            status=status,
            constraints=kept,
            rejected=rejected,
            candidates=len(parsed.candidates) + len(parsed.unusable),
            retries=retries,
            raw_outputs=tuple(raws),
        )

    def _semantic_rules(self, task: Task, pair: Pair) -> Callable[[Candidate], str | None]:
        """The v2 screen's rules for one pair (memory/semantic.py), then the judge if any."""
        ctx = SemanticContext.build(task, pair.trajectories(), prompts()["example"])
        judge = self.judge

        def rules(c: Candidate) -> str | None:
            reason = semantic_reason(c.when, c.enforce, c.avoid, ctx)
            if reason is None and judge is not None:
                reason = judge(c.text(), task)
                if reason is not None and reason not in (*SEMANTIC_REJECT_REASONS, *JUDGE_REASONS):
                    raise ValueError(f"the semantic judge gave an unknown reason {reason!r}")
            return reason

        return rules

    def _repair_messages(self, task: Task, pair: Pair, bad: str) -> list[Message]:
        repair = prompts()["repair"].format(k=self.max_constraints)
        echo = _clip_tail(bad.strip(), _REPAIR_ECHO_CHARS) or "(empty reply)"
        first = self.messages(task, pair, self.max_prompt_chars - len(repair) - len(echo))
        return [
            *first,
            Message(role="assistant", content=echo),
            Message(role="user", content=repair),
        ]
