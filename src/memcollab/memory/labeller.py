"""The trained labeller: one deterministic function files records and queries, whoever asks.

`TrainedLabeller` implements the `Labeller` protocol without a model call:

- math: TF-IDF word 1-2-grams and a linear SVM with sigmoid-calibrated probabilities
  (scikit-learn, 3-fold calibration), trained on MATH train rows (their subject) and GSM8K
  train rows (a category of their own, "Grade-school word problems"), in the taxonomy
  taxonomies/math-v2.toml; which rows it trains on: `memory.labeller_data`.
- code: no gold labels exist, so the category is the nearest category description of the
  built-in code taxonomy (TF-IDF cosine over the category's name, description and
  subcategories; identifiers split into words).
- subcategory (both domains): the nearest subcategory description within the chosen
  category (TF-IDF cosine; for math the word weights come from that category's training
  texts).

Abstaining: a category whose probability (math) or cosine (code) is below the domain's
threshold is not trusted: the label is `UNLABELLED` at both levels; a subcategory below its
threshold leaves the category and sets the subcategory to `UNLABELLED`. A record so labelled
is filed under that reserved name, and task-aware retrieval treats such a query as "no
category" (the whole domain) or "no subcategory" (the category), so abstaining only ever
widens the search. Abstentions are counted per domain (`stats()`). A task of a domain the
labeller has no model for abstains too, counted as `unsupported`.

Thresholds were chosen on development rows only (benchmarks/labeller_accuracy.py shows the
sweep): never on an evaluation task. The fitted models are kept in memory per data
directory for the life of the process (fitting takes a few seconds); nothing is cached on
disk. Only math needs the data directory (code has no training rows): a labeller asked for
some domains only (`domains`, e.g. an experiment's task domains) fits only those, so a
code-only run needs no data directory. `make_labeller` picks the labeller by name: "llm"
(the default everywhere: the `DomainClassifier`, today's behaviour) or "trained".
"""

from __future__ import annotations

import re
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache, lru_cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from memcollab.errors import UserError
from memcollab.memory.guidance import UNLABELLED, Labeller
from memcollab.memory.labeller_data import LabellerDataError, labeller_data, resolve_data_dir
from memcollab.memory.taxonomy import Taxonomy, builtin_taxonomy, parse_taxonomy
from memcollab.tasks.task import Task

if TYPE_CHECKING:
    from memcollab.llm.cache import ModelClient

LABELLER_KINDS = ("llm", "trained")
# The domains the trained labeller has a model for, and those whose model is fitted on the
# data directory's train files (code's model reads only the built-in taxonomy).
TRAINED_DOMAINS = ("math", "code")
DATA_DOMAINS = frozenset({"math"})
# Category thresholds: the grid value with the most right minus wrong labels among those
# kept (an abstention scores 0; ties to the lowest), on development rows: math on the tune
# slice (300 MATH train rows; grid 0.30, 0.35, ... 0.90), code on the 60 hand-labelled MBPP
# validation tasks (grid 0.00, 0.05, ... 0.40). benchmarks/labeller_accuracy.py recomputes
# both choices and reports them beside these values.
MATH_THRESHOLD = 0.60  # calibrated probability of the top category
CODE_THRESHOLD = 0.15  # TF-IDF cosine to the nearest category description
# No gold subcategories exist: below this cosine the task shares no more than an incidental
# word with the nearest description (0 = none, where argmax would take the first-listed one).
SUBCATEGORY_THRESHOLD = 0.05
SEED = 0

# Words that say nothing about a task's kind (task boilerplate), besides English stop words.
_BOILERPLATE = frozenset(
    {
        *("write", "function", "python", "program", "given", "code", "pass", "test"),
        *("assert", "return", "def", "print", "true", "false", "none", "value", "result"),
        *("number", "numbers", "find", "compute", "calculate"),
    }
)
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


@cache
def math_v2_taxonomy() -> Taxonomy:
    """The trained labeller's math taxonomy: the MATH subjects plus grade-school problems."""
    resource = files("memcollab").joinpath("memory/taxonomies/math-v2.toml")
    return parse_taxonomy(resource.read_text(encoding="utf-8"), "<built-in math-v2.toml>")


@cache
def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | _BOILERPLATE


def words(text: str) -> list[str]:
    """Content words of a text: identifiers split (snake_case, camelCase), lower case, a
    plural 's' stripped, stop words and task boilerplate left out."""
    text = _CAMEL.sub(" ", text).replace("_", " ").lower()
    stop = _stop_words()
    out = []
    for word in re.findall(r"[a-z]{2,}", text):
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        if word not in stop:
            out.append(word)
    return out


class LabellerError(UserError):
    """A labeller that cannot be made as asked."""


@dataclass(frozen=True)
class TrainedLabel:
    """Where the trained labeller files a task.

    `category` / `subcategory` are taxonomy names or `UNLABELLED` (abstained);
    `confidence` is the top category's probability (math) or cosine (code), `sub_score`
    the subcategory's cosine; `guess` is the best category even when it abstained.
    """

    category: str
    subcategory: str
    confidence: float
    sub_score: float
    guess: str

    @property
    def abstained(self) -> bool:
        """Whether the category abstained (the label says nothing)."""
        return self.category == UNLABELLED

    @property
    def source(self) -> str:
        """'trained', 'category only' (the subcategory abstained) or 'abstained'."""
        if self.abstained:
            return "abstained"
        return "category only" if self.subcategory == UNLABELLED else "trained"


class _Nearest:
    """TF-IDF nearest document (cosine); word weights from the documents plus a corpus."""

    def __init__(self, documents: Sequence[str], corpus: Sequence[str] = ()) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer

        self._vectorizer: TfidfVectorizer | None = TfidfVectorizer(
            analyzer=words, sublinear_tf=True
        )
        try:
            self._vectorizer.fit([*documents, *corpus])
            self._matrix = self._vectorizer.transform(documents)
        except ValueError:  # no document has a content word: nothing is ever near
            self._vectorizer = None
        self._size = len(documents)

    def scores(self, text: str) -> np.ndarray:
        if self._vectorizer is None:
            return np.zeros(self._size)
        vector = self._vectorizer.transform([text])
        return np.asarray((self._matrix @ vector.T).toarray()).ravel()

    def best(self, text: str) -> tuple[int, float]:
        """The nearest document's index and its cosine (the first on a tie)."""
        scores = self.scores(text)
        index = int(scores.argmax())
        return index, float(scores[index])


class _Subcategories:
    """The nearest subcategory description within a category."""

    def __init__(
        self, taxonomy: Taxonomy, corpora: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        self._names = {c.name: c.subcategory_names() for c in taxonomy.tree}
        self._index = {
            c.name: _Nearest(
                [f"{s.name} {s.description}" for s in c.subcategories],
                (corpora or {}).get(c.name, ()),
            )
            for c in taxonomy.tree
        }

    def best(self, category: str, text: str) -> tuple[str, float]:
        index, score = self._index[category].best(text)
        return self._names[category][index], score


class DomainModel(Protocol):
    """A fitted model of one domain: its taxonomy, category guess and subcategories."""

    taxonomy: Taxonomy
    threshold: float

    def guess(self, text: str) -> tuple[str, float]:
        """The best category and its confidence."""
        ...

    def subcategory(self, category: str, text: str) -> tuple[str, float]:
        """The nearest subcategory of `category` and its cosine."""
        ...


class MathModel:
    """Calibrated linear SVM over TF-IDF word 1-2-grams (categories of math-v2)."""

    def __init__(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        taxonomy: Taxonomy | None = None,
        *,
        threshold: float = MATH_THRESHOLD,
    ) -> None:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.svm import LinearSVC

        self.taxonomy = taxonomy or math_v2_taxonomy()
        self.threshold = threshold
        _check_labels(self.taxonomy, labels, len(texts))
        self.vectorizer = TfidfVectorizer(
            sublinear_tf=True,
            ngram_range=(1, 2),
            min_df=2,
            token_pattern=r"\\?[A-Za-z]+|\d+|[^\w\s]",  # words, \commands, numbers, symbols
        )
        matrix = self.vectorizer.fit_transform(texts)
        svm = LinearSVC(C=0.5, class_weight="balanced", random_state=SEED)
        self.classifier = CalibratedClassifierCV(svm, cv=3, method="sigmoid")
        self.classifier.fit(matrix, list(labels))
        by_category: dict[str, list[str]] = {}
        for text, label in zip(texts, labels, strict=True):
            by_category.setdefault(label, []).append(text)
        self._subcategories = _Subcategories(self.taxonomy, by_category)

    def probabilities(self, text: str) -> dict[str, float]:
        """Category -> calibrated probability."""
        row = self.classifier.predict_proba(self.vectorizer.transform([text]))[0]
        return {str(c): float(p) for c, p in zip(self.classifier.classes_, row, strict=True)}

    def guess(self, text: str) -> tuple[str, float]:
        probabilities = self.probabilities(text)
        best = max(probabilities, key=lambda c: (probabilities[c], c))
        return best, probabilities[best]

    def subcategory(self, category: str, text: str) -> tuple[str, float]:
        return self._subcategories.best(category, text)


def _check_labels(taxonomy: Taxonomy, labels: Sequence[str], n_texts: int) -> None:
    if len(labels) != n_texts:
        raise LabellerDataError(f"{n_texts} training texts but {len(labels)} labels")
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    unknown = sorted(c for c in counts if not taxonomy.has(c))
    if unknown:
        raise LabellerDataError(
            f"training label(s) {', '.join(map(repr, unknown))} are not categories of"
            f" taxonomy {taxonomy.name!r}",
            f"its categories: {', '.join(taxonomy.categories())}",
        )
    few = sorted(c for c, n in counts.items() if n < 3)
    if len(counts) < 2 or few:
        raise LabellerDataError(
            "the labeller needs at least 2 categories with 3 or more training rows each"
            + (f" (too few: {', '.join(few)})" if few else ""),
        )


class DescriptionModel:
    """Nearest category description (no training rows): the code domain's labeller."""

    def __init__(self, taxonomy: Taxonomy, *, threshold: float = CODE_THRESHOLD) -> None:
        self.taxonomy = taxonomy
        self.threshold = threshold
        self._names = taxonomy.categories()
        self._categories = _Nearest(
            [
                " ".join(
                    [c.name, c.description] + [f"{s.name} {s.description}" for s in c.subcategories]
                )
                for c in taxonomy.tree
            ]
        )
        self._subcategories = _Subcategories(taxonomy)

    def guess(self, text: str) -> tuple[str, float]:
        index, score = self._categories.best(text)
        return self._names[index], score

    def subcategory(self, category: str, text: str) -> tuple[str, float]:
        return self._subcategories.best(category, text)


@dataclass
class LabellerStats:
    """Counters of one domain: labels given, and abstentions at each level."""

    classifications: int = 0
    memo_hits: int = 0
    category_abstentions: int = 0
    subcategory_abstentions: int = 0
    unsupported: int = 0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


class TrainedLabeller:
    """Files a task of any domain it has a model for; abstains (counted) otherwise.

    The label depends on the task's domain and text only, never on who asks, so records
    and queries of every model are filed by the same function. Safe to share between
    threads.
    """

    def __init__(
        self,
        models: Mapping[str, DomainModel],
        *,
        subcategory_threshold: float = SUBCATEGORY_THRESHOLD,
    ) -> None:
        self.models = dict(models)
        self.subcategory_threshold = subcategory_threshold
        self._stats: dict[str, LabellerStats] = {d: LabellerStats() for d in self.models}
        self._memo: dict[tuple[str, str], TrainedLabel] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_data(
        cls, data_dir: str | Path | None, domains: Collection[str] | None = None
    ) -> TrainedLabeller:
        """A labeller trained on the train files of `data_dir` (else MEMCOLLAB_DATA_DIR);
        fitted once per directory and process, then shared (each labeller counts alone).

        With `domains`, only the models of those domains are made: the data directory is
        read only if one of them needs it (math), so a code-only labeller needs none. A
        task of a domain left out abstains, counted as `unsupported`."""
        wanted = [d for d in TRAINED_DOMAINS if domains is None or d in domains]
        models: dict[str, DomainModel] = {}
        if "math" in wanted:
            models["math"] = _math_model(str(resolve_data_dir(data_dir).resolve()))
        if "code" in wanted:
            models["code"] = _code_model()
        return cls(models)

    def classify(self, task: Task) -> TrainedLabel:
        """The (category, subcategory) of `task`, or `UNLABELLED` where it abstains."""
        return self.label(task.domain, task.prompt)

    def label(self, domain: str, text: str) -> TrainedLabel:
        """The label of a text of `domain` (what `classify` does with a task)."""
        key = (domain, " ".join(text.split()))
        with self._lock:
            stats = self._stats.setdefault(domain, LabellerStats())
            stats.classifications += 1
            hit = self._memo.get(key)
            if hit is not None:
                stats.memo_hits += 1
        if hit is not None:
            label = hit
        else:
            label = self._label(domain, key[1])
            with self._lock:
                self._memo.setdefault(key, label)
        with self._lock:
            stats.unsupported += domain not in self.models
            stats.category_abstentions += label.abstained
            stats.subcategory_abstentions += label.source == "category only"
        return label

    def _label(self, domain: str, text: str) -> TrainedLabel:
        model = self.models.get(domain)
        if model is None:
            return TrainedLabel(UNLABELLED, UNLABELLED, 0.0, 0.0, "")
        guess, confidence = model.guess(text)
        if confidence < model.threshold:
            return TrainedLabel(UNLABELLED, UNLABELLED, confidence, 0.0, guess)
        subcategory, score = model.subcategory(guess, text)
        if score < self.subcategory_threshold:
            subcategory = UNLABELLED
        return TrainedLabel(guess, subcategory, confidence, score, guess)

    def stats(self) -> dict[str, dict[str, float]]:
        """Counters per domain."""
        with self._lock:
            return {domain: s.as_dict() for domain, s in sorted(self._stats.items())}


@lru_cache(maxsize=4)
def _math_model(root: str) -> MathModel:
    data = labeller_data(root)
    return MathModel(data.texts, data.labels)


@cache
def _code_model() -> DescriptionModel:
    return DescriptionModel(builtin_taxonomy("code"))


def check_trained_data(data_dir: str | Path | None, domains: Collection[str]) -> None:
    """Raise the labeller's one clear error now if labelling `domains` needs train files
    that `data_dir` (else MEMCOLLAB_DATA_DIR, else the default) does not hold; reads nothing
    else and fits nothing (a long run can check before its first phase)."""
    if DATA_DOMAINS & set(domains):
        resolve_data_dir(data_dir)


class CountingLabeller(Labeller, Protocol):
    """A labeller that counts what it did (both built-in labellers do)."""

    def stats(self) -> dict[str, dict[str, float]]: ...


def make_labeller(
    kind: str = "llm",
    *,
    client: ModelClient | None = None,
    data_dir: str | Path | None = None,
    taxonomies: Mapping[str, Taxonomy | str] | None = None,
    domains: Collection[str] | None = None,
) -> CountingLabeller:
    """The labeller called `kind`: "llm" (default: `DomainClassifier`, the `client`'s model
    picks the options of each domain's taxonomy, or of `taxonomies`) or "trained"
    (`TrainedLabeller`, trained on the train files of `data_dir`; no model calls; with
    `domains`, only those domains' models, see `TrainedLabeller.from_data`)."""
    check_labeller_kind(kind)
    if kind == "llm":
        if client is None:
            raise LabellerError("the llm labeller needs a model client")
        from memcollab.memory.classify import DomainClassifier

        return DomainClassifier(client, taxonomies)
    if taxonomies:
        raise LabellerError(
            "the trained labeller has its own taxonomies (math-v2, code)",
            "give --taxonomy only with the llm labeller",
        )
    return TrainedLabeller.from_data(data_dir, domains)


def check_labeller_kind(kind: str) -> str:
    """`kind` if a labeller is called so; else one clear error naming the known ones."""
    if kind not in LABELLER_KINDS:
        raise LabellerError(
            f"unknown labeller {kind!r}", f"use one of: {', '.join(LABELLER_KINDS)}"
        )
    return kind
