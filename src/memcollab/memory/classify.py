"""Classify a task into its taxonomy's (category, subcategory) with the agent's own model.

Protocol (prompts in package data prompts/classify.toml):
1. The model sees the task and the numbered categories with their descriptions and is asked
   for the number only; then, in a second call, the numbered subcategories of the chosen
   category. Both calls are greedy (temperature 0) and short (`max_tokens`, default 16).
   A category with a single subcategory needs no second call.
2. `parse_choice` reads a reply: a leading number standing alone or followed by that
   option's name ("3", "(3)", "3. Geometry", "\\boxed{3}", "Answer: 3"), else an option's
   name (any spelling `normalize_name` equates, also inside a sentence when exactly one
   option is named), else the reply's only number. A number outside the list, no name,
   several names, or a reply with several numbers ("1 box holds 24 eggs") is invalid.
3. An invalid reply gets one retry: the same question with a stricter last line.
4. A second invalid reply falls back, and is counted: the option whose text (name,
   description and, for a category, its subcategories) is nearest to the task text in
   TF-IDF cosine similarity (scikit-learn; a crude plural-stripping tokenizer); when no
   word is shared, the first option. The label then says `source="fallback"`.

Every model call goes through the `ModelClient`, so its Gateway caches it on disk; a task
text seen before by this classifier (whitespace-normalised) is answered from memory with no
call at all. Works with chat and base models alike: the client renders the prompt frame.
"""

from __future__ import annotations

import re
import threading
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib.resources import files
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from memcollab.llm.base import ChatRequest, Completion, Decoding, user
from memcollab.llm.cache import ModelClient
from memcollab.memory.taxonomy import Taxonomy, load_taxonomy, normalize_name
from memcollab.tasks.task import Task

Step = Literal["category", "subcategory"]
_LEADING_NUMBER = re.compile(r"^[(\[#]?\s*(\d+)(?!\d|[.,]\d)")
_NUMBER = re.compile(r"(?<![\w.])(\d+)(?![\w]|[.,]\d)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
# "Answer: 3", "The category is 3", "Topic #3": a label word before a number (not a name).
_LABEL_PREFIX = re.compile(
    r"^(?:(?:the\s+)?(?:final\s+|best\s+)?"
    r"(?:answer|category|topic|option|choice|number|selection)(?:\s+is)?\s*[:#=\-]?\s*)+"
    r"(?=[(\[]?\d)",
    re.IGNORECASE,
)
_WRAPPERS = " \t*`'\"\u201c\u201d\u2018\u2019:"


@lru_cache(maxsize=1)
def classify_prompts() -> dict[str, Any]:
    """The classifier's prompt templates (package data prompts/classify.toml)."""
    raw = files("memcollab").joinpath("prompts/classify.toml").read_text(encoding="utf-8")
    return tomllib.loads(raw)


class Label(BaseModel):
    """Where a task is filed: a (category, subcategory) of the taxonomy, and how it was found.

    `source` is "model" when the model chose both levels, "fallback" when either level fell
    back (`fallback_steps` says which); `raw` holds the model's replies in call order,
    joined by " | ".
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    category: str
    subcategory: str
    source: Literal["model", "fallback"]
    raw: str = ""
    fallback_steps: tuple[Step, ...] = ()


@dataclass
class ClassifierStats:
    """Counters of one classifier.

    `model_calls` counts requests sent to the client (its gateway may answer some from its
    disk cache: `cached_calls`); `model_seconds` sums the latency the model took for them,
    as first measured, so it is meaningful on a rerun from the cache too.
    """

    classifications: int = 0
    memo_hits: int = 0
    model_calls: int = 0
    cached_calls: int = 0
    retries: int = 0
    fallbacks: int = 0
    category_fallbacks: int = 0
    subcategory_fallbacks: int = 0
    model_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _option_number(digits: str) -> int:
    """The number a run of digits spells, or 0 (no option) when it is too long to be one:
    int() refuses strings over 4300 digits, and a reply may hold any."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 9 else 0


def parse_choice(reply: str, names: Sequence[str]) -> int | None:
    """The 0-based index of the option a reply chooses among `names`, or None if invalid."""
    text = reply.strip()
    if not text or not names:
        return None
    boxed = _BOXED.search(text)
    line = boxed.group(1) if boxed else _first_line(text)
    line = _LABEL_PREFIX.sub("", line.strip(_WRAPPERS), count=1)
    count = len(names)
    normalized = [normalize_name(n) for n in names]
    leading = _LEADING_NUMBER.match(line)
    if leading:
        number = _option_number(leading.group(1))
        # The number alone, or followed by (the start of) that option's name: "3", "(3)",
        # "3. Geometry", "3. Geom" (cut off). Not "1 box holds 24 eggs" (an echoed example).
        rest = normalize_name(line[leading.end() :])
        if 1 <= number <= count:
            name = normalized[number - 1]
            if not rest or name.startswith(rest) or rest.startswith(name):
                return number - 1
    exact = normalize_name(line)
    if exact in normalized:
        return normalized.index(exact)
    # Names mentioned anywhere in the reply; a name inside a longer mentioned name (Algebra
    # in Intermediate Algebra) does not count. Exactly one name left is a choice.
    haystack = f" {normalize_name(text)} "
    spans: list[tuple[int, int, int]] = []
    for index, name in enumerate(normalized):
        for match in re.finditer(re.escape(f" {name} "), haystack):
            spans.append((match.start(), match.end(), index))
    found = {
        index
        for start, end, index in spans
        if not any(s <= start and end <= e and (s, e) != (start, end) for s, e, _ in spans)
    }
    if len(found) == 1:
        return found.pop()
    if found:
        return None
    numbers = _NUMBER.findall(text)
    if len(numbers) == 1 and 1 <= _option_number(numbers[0]) <= count:
        return _option_number(numbers[0]) - 1
    return None


def _tokens(text: str) -> list[str]:
    words = re.findall(r"[a-z]{2,}", text.lower())
    return [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]


class _Nearest:
    """TF-IDF nearest option: the fallback when the model names no valid option."""

    def __init__(self, documents: list[str]) -> None:
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer

        stop = frozenset(ENGLISH_STOP_WORDS)

        def analyzer(text: str) -> list[str]:
            return [t for t in _tokens(text) if t not in stop]

        self._vectorizer = TfidfVectorizer(analyzer=analyzer, sublinear_tf=True)
        self._matrix = self._vectorizer.fit_transform(documents)

    def nearest(self, text: str) -> int:
        vector = self._vectorizer.transform([text])
        scores = (self._matrix @ vector.T).toarray().ravel()
        if scores.size == 0 or scores.max() <= 0.0:
            return 0
        return int(scores.argmax())


@dataclass
class _Choice:
    index: int | None
    replies: list[str] = field(default_factory=list)


class Classifier:
    """Files tasks under a taxonomy's (category, subcategory), choosing with `client`'s model.

    `taxonomy` is a `Taxonomy`, a built-in name ("math", "code") or a TOML path. Task text
    longer than `max_task_chars` is cut (the head usually says what kind of task it is).
    Safe to share between threads.
    """

    def __init__(
        self,
        client: ModelClient,
        taxonomy: Taxonomy | str,
        *,
        max_tokens: int = 16,
        max_task_chars: int = 3000,
        retry: bool = True,
    ) -> None:
        self.client = client
        self.taxonomy = load_taxonomy(taxonomy)
        self.max_task_chars = max_task_chars
        self.retry = retry
        self.decoding = Decoding(temperature=0.0, max_tokens=max_tokens)
        self.stats = ClassifierStats()
        self._prompts = classify_prompts()
        self._memo: dict[str, Label] = {}
        self._lock = threading.Lock()
        self._fallback_index: dict[str, _Nearest] = {}

    # -- public ----------------------------------------------------------------------------
    def classify(self, task: str | Task) -> Label:
        """The (category, subcategory) of a task (its prompt text, or a `Task`)."""
        text = task.prompt if isinstance(task, Task) else task
        key = " ".join(text.split())
        with self._lock:
            self.stats.classifications += 1
            hit = self._memo.get(key)
            if hit is not None:
                self.stats.memo_hits += 1
                return hit
        label = self._classify(key)
        with self._lock:
            self._memo.setdefault(key, label)
            if label.source == "fallback":
                self.stats.fallbacks += 1
        return label

    def classify_many(self, tasks: Sequence[str | Task]) -> list[Label]:
        """Labels of several tasks, in order."""
        return [self.classify(t) for t in tasks]

    # -- steps -----------------------------------------------------------------------------
    def _classify(self, text: str) -> Label:
        shown = self._shown(text)
        tax = self.taxonomy
        fallback_steps: list[Step] = []
        replies: list[str] = []

        options = [(c.name, c.description) for c in tax.tree]
        cat_index = self._level("category", shown, text, options, "", replies, fallback_steps)
        category = tax.tree[cat_index]
        options = [(s.name, s.description) for s in category.subcategories]
        sub_index = self._level(
            "subcategory", shown, text, options, category.name, replies, fallback_steps
        )
        sub_names = category.subcategory_names()

        with self._lock:
            self.stats.category_fallbacks += "category" in fallback_steps
            self.stats.subcategory_fallbacks += "subcategory" in fallback_steps
        return Label(
            category=category.name,
            subcategory=sub_names[sub_index],
            source="fallback" if fallback_steps else "model",
            raw=" | ".join(r.strip() for r in replies),
            fallback_steps=tuple(fallback_steps),
        )

    def _level(
        self,
        step: Step,
        shown: str,
        text: str,
        options: Sequence[tuple[str, str]],
        category: str,
        replies: list[str],
        fallback_steps: list[Step],
    ) -> int:
        """One level's choice: by the model, else by the fallback (recorded in the lists)."""
        if len(options) == 1:
            return 0
        choice = self._choose(step, shown, options, category)
        replies += choice.replies
        if choice.index is not None:
            return choice.index
        fallback_steps.append(step)
        return self._fallback(f"subcategory:{category}" if category else "category", text)

    def _shown(self, text: str) -> str:
        if len(text) <= self.max_task_chars:
            return text
        return text[: self.max_task_chars].rstrip() + " ..."

    def prompt(
        self, step: Step, task_text: str, options: Sequence[tuple[str, str]], category: str = ""
    ) -> str:
        """The question of one step (without the retry line)."""
        p = self._prompts[step]
        lines = [
            (p["option"] if description else p["option_bare"]).format(
                number=i, name=name, description=description
            )
            for i, (name, description) in enumerate(options, start=1)
        ]
        noun = self._prompts["nouns"].get(self.taxonomy.domain, "task")
        return p["prompt"].format(
            noun=noun,
            Noun=noun[:1].upper() + noun[1:],
            task=task_text,
            options="\n".join(lines),
            category=category,
        )

    def _choose(
        self, step: Step, task_text: str, options: Sequence[tuple[str, str]], category: str
    ) -> _Choice:
        names = [name for name, _ in options]
        question = self.prompt(step, task_text, options, category)
        choice = _Choice(index=None)
        reply = self._ask(question)
        choice.replies.append(reply)
        choice.index = parse_choice(reply, names)
        if choice.index is None and self.retry:
            with self._lock:
                self.stats.retries += 1
            stricter = self._prompts["retry"]["suffix"].format(count=len(names))
            reply = self._ask(f"{question}\n\n{stricter}")
            choice.replies.append(reply)
            choice.index = parse_choice(reply, names)
        return choice

    def _ask(self, content: str) -> str:
        request = ChatRequest(messages=(user(content),), decoding=self.decoding)
        completion: Completion = self.client.complete(request)
        with self._lock:
            self.stats.model_calls += 1
            self.stats.cached_calls += completion.cached
            self.stats.model_seconds += completion.latency_s
        return completion.text

    def _fallback(self, key: str, text: str) -> int:
        with self._lock:
            index = self._fallback_index.get(key)
        if index is None:
            if key == "category":
                documents = [
                    " ".join(
                        [c.name, c.description]
                        + [f"{s.name} {s.description}" for s in c.subcategories]
                    )
                    for c in self.taxonomy.tree
                ]
            else:
                category = self.taxonomy.category(key.split(":", 1)[1])
                documents = [f"{s.name} {s.description}" for s in category.subcategories]
            index = _Nearest(documents)
            with self._lock:
                self._fallback_index.setdefault(key, index)
        return index.nearest(text)


class DomainClassifier:
    """One `Classifier` per domain, all asking the same model: files any task by its domain."""

    def __init__(
        self, client: ModelClient, taxonomies: Mapping[str, Taxonomy | str] | None = None
    ) -> None:
        from memcollab.domains import DOMAINS

        chosen = {name: d.taxonomy for name, d in DOMAINS.items()} | dict(taxonomies or {})
        self.by_domain = {domain: Classifier(client, tax) for domain, tax in chosen.items()}

    def classify(self, task: Task) -> Label:
        """The (category, subcategory) of `task` in its domain's taxonomy."""
        return self.by_domain[task.domain].classify(task)

    def stats(self) -> dict[str, dict[str, float]]:
        """Counters per domain."""
        return {domain: c.stats.as_dict() for domain, c in self.by_domain.items()}
