"""Task-aware retrieval: filter memory to the task's bucket, rank by TF-IDF, take the top p.

`task_aware` (the paper): keep records of the task's (category, subcategory); when that
bucket is empty back off to the category, then to the whole domain (ours; the level used is
reported; a label that abstained, `UNLABELLED`, starts at the domain or the category); rank
by TF-IDF cosine between the new task and the stored task texts (scikit-learn); take the
top p records and return their constraints (at most p x K).
Ablations and controls: `global_tfidf` (the same ranking over the whole domain, no
category filter), `random` (p records drawn at random: a placebo), `none`.
Optional (the paper's v2): keep only records whose pair the querying model took part in.

Each mode is a strategy registered by name (`@register_strategy("name")`): a function of
the retriever, the task, the querying model's label and the model, returning `Retrieved`.
A new strategy is one function in one file plus its registration.

Each bucket's TF-IDF index is built once and reused until the store changes
(`store.version()`). Records without constraints (left by a merge, memory/merge.py) are
never retrieved. With `prefer_support` (opt-in), records whose scores agree to
`SUPPORT_DECIMALS` decimals are ordered by their constraints' total support (how many
pairs produced them) before their id, and a record's constraints by support.

With a `UtilityPolicy` (opt-in, memory/utility.py) and a querying model, the ranking
strategies (task_aware, global_tfidf) rank by relevance + weight x the record's utility
for that model, and pass over a record whose harm for that model is confident; `random`
leaves such records out of its pool. What was passed over is in `Retrieved.withheld`: in
the ranking strategies, the withheld records that would otherwise have been among the
top p; in `random`, every withheld record of the pool.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from memcollab.errors import UserError
from memcollab.memory.gate_note import GateCheck
from memcollab.memory.guidance import UNLABELLED, Guidance, LabelLike
from memcollab.memory.record import Constraint, MemoryRecord, task_hash
from memcollab.memory.utility import (
    Estimate,
    UtilityPolicy,
    Withheld,
    estimates,
    ranking_bonus,
)
from memcollab.tasks.task import Task

SUPPORT_DECIMALS = 2
"""With `prefer_support`, scores equal to this many decimals count as equally relevant."""
Mode = str
"""A registered strategy name: task_aware, global_tfidf, random, none, or your own."""
Level = Literal["subcategory", "category", "domain", "none"]

__all__ = [
    "STRATEGIES",
    "Hit",
    "LabelLike",
    "Level",
    "Mode",
    "RecordSource",
    "Retrieved",
    "Retriever",
    "register_strategy",
]


class RecordSource(Protocol):
    """What retrieval needs from a memory store."""

    def records(
        self,
        namespace: str = "default",
        domain: str | None = None,
        category: str | None = None,
        subcategory: str | None = None,
    ) -> list[MemoryRecord]: ...

    def version(self) -> int: ...

    def count_retrieved(self, record_ids: list[str]) -> None: ...


@dataclass(frozen=True)
class Hit:
    """One retrieved record, its score (TF-IDF cosine; 0 for unranked draws) and the
    back-off level of the bucket it came from."""

    record: MemoryRecord
    score: float
    level: Level


@dataclass(frozen=True)
class Retrieved:
    """What one query returned: guidance for the agent and where it came from."""

    guidance: tuple[Guidance, ...]
    record_ids: tuple[str, ...]
    level: Level
    mode: Mode
    category: str | None = None
    subcategory: str | None = None
    label_source: str | None = None
    """How the query's label came about, where its labeller says (e.g. 'model', 'fallback',
    'trained', 'abstained')."""
    hits: tuple[Hit, ...] = ()
    withheld: tuple[Withheld, ...] = ()
    """Records passed over for the querying model (confident harm; utility retrieval)."""
    gate: GateCheck | None = None
    """The namespace's utility gate for the querying model and domain, where it has one
    (memory/gate_note.py); `withheld`: nothing was retrieved."""


Strategy = Callable[["Retriever", Task, LabelLike | None, str | None], Retrieved]
STRATEGIES: dict[str, Strategy] = {}
# The records withheld during one retrieval (per thread / task), gathered across back-off
# levels without changing the strategies' signature.
_WITHHELD: ContextVar[dict[str, Withheld] | None] = ContextVar("_WITHHELD", default=None)


def register_strategy(name: str) -> Callable[[Strategy], Strategy]:
    """Register a retrieval strategy under `name` (usable as `Retriever(mode=name)`)."""

    def wrap(strategy: Strategy) -> Strategy:
        STRATEGIES[name] = strategy
        return strategy

    return wrap


class UnknownStrategyError(UserError):
    """A retrieval mode that no strategy is registered under."""


@dataclass
class _Index:
    version: int
    records: list[MemoryRecord]
    vectorizer: TfidfVectorizer | None
    matrix: object | None
    by_hash: dict[str, list[int]] = field(default_factory=dict)
    participant_masks: dict[str, np.ndarray] = field(default_factory=dict)
    id_rank: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    support: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def participant_mask(self, model: str) -> np.ndarray:
        """Which records come from a pair `model` took part in (cached per model)."""
        mask = self.participant_masks.get(model)
        if mask is None:
            mask = np.array([model in (r.model_pos, r.model_neg) for r in self.records], bool)
            self.participant_masks[model] = mask
        return mask


class Retriever:
    """Retrieves memory guidance for a task from a store."""

    def __init__(
        self,
        store: RecordSource,
        *,
        p: int = 3,
        mode: Mode = "task_aware",
        namespace: str = "default",
        participant_filter: bool = False,
        seed: int = 0,
        count_usage: bool = True,
        prefer_support: bool = False,
        utility: UtilityPolicy | None = None,
    ) -> None:
        if p < 1:
            raise ValueError("p must be at least 1")
        if mode not in STRATEGIES:
            raise UnknownStrategyError(
                f"unknown retrieval mode {mode!r}",
                f"registered: {', '.join(sorted(STRATEGIES))}",
            )
        self.store = store
        self.p = p
        self.mode = mode
        self.namespace = namespace
        self.participant_filter = participant_filter
        self.seed = seed
        self.count_usage = count_usage
        self.prefer_support = prefer_support
        self.utility = utility
        self.withheld_counts: Counter[str] = Counter()
        """Records withheld per querying model, over this retriever's life."""
        self._indexes: dict[tuple[str, str | None, str | None], _Index] = {}
        self._lock = threading.Lock()

    def retrieve(
        self, task: Task, label: LabelLike | None = None, model: str | None = None
    ) -> Retrieved:
        """Guidance for `task`; `label` is the querying model's classification of it."""
        if self.utility is None or model is None:
            return STRATEGIES[self.mode](self, task, label, model)
        token = _WITHHELD.set({})
        try:
            found = STRATEGIES[self.mode](self, task, label, model)
            withheld = _WITHHELD.get() or {}
        finally:
            _WITHHELD.reset(token)
        if not withheld:
            return found
        with self._lock:
            self.withheld_counts[model] += len(withheld)
        return replace(found, withheld=tuple(withheld[k] for k in sorted(withheld)))

    def _estimates(
        self, records: list[MemoryRecord], model: str, bucket: tuple[str, str | None, str | None]
    ) -> list[Estimate]:
        """The records' estimates for `model` (one usage query for the bucket, one for the
        model's baselines)."""
        assert self.utility is not None
        usage_counts = getattr(self.store, "usage_counts", None)
        baselines = getattr(self.store, "baselines", None)
        if usage_counts is None or baselines is None:
            raise UserError(
                f"utility retrieval needs a memory store that counts usage; "
                f"{type(self.store).__name__} does not",
                "use a SQLite or PostgreSQL memory",
            )
        usage = usage_counts(self.namespace, model, *bucket)
        return estimates(records, model, usage, baselines(self.namespace, model), self.utility)

    def _note_withheld(self, items: list[Withheld]) -> None:
        collected = _WITHHELD.get()
        if collected is not None:
            for item in items:
                collected.setdefault(item.record_id, item)

    def _index(self, domain: str, category: str | None, subcategory: str | None) -> _Index:
        key = (domain, category, subcategory)
        version = self.store.version()
        with self._lock:
            index = self._indexes.get(key)
            if index is not None and index.version == version:
                return index
        stored = self.store.records(self.namespace, domain, category, subcategory)
        records = [r for r in stored if r.constraints]  # a merge may leave a record empty
        vectorizer: TfidfVectorizer | None = None
        matrix = None
        if records:
            vectorizer = TfidfVectorizer(sublinear_tf=True)
            try:
                matrix = vectorizer.fit_transform([r.task_text for r in records])
            except ValueError:  # every text empty or stop words only: no vocabulary
                vectorizer, matrix = None, None
        by_hash: dict[str, list[int]] = {}
        for i, record in enumerate(records):
            by_hash.setdefault(record.task_hash, []).append(i)
        index = _Index(version, records, vectorizer, matrix, by_hash)
        # Each record's position in id order: the tie-break between equal scores.
        index.id_rank = np.argsort(np.argsort(np.array([r.id for r in records]), kind="stable"))
        index.support = np.array([sum(c.support for c in r.constraints) for r in records])
        with self._lock:
            self._indexes[key] = index
        return index

    def rank(
        self,
        task: Task,
        bucket: tuple[str, str | None, str | None],
        model: str | None,
        level: Level,
    ) -> list[Hit]:
        """The top p records of one bucket (domain, category|None, subcategory|None) by
        TF-IDF cosine to the task, ties broken by record id; the task's own record and
        (with the participant filter) records of other models' pairs are left out."""
        index = self._index(*bucket)
        if not index.records:
            return []
        if index.vectorizer is None or index.matrix is None:
            scores = np.zeros(len(index.records))
        else:
            query = index.vectorizer.transform([task.prompt])
            scores = (index.matrix @ query.T).toarray().ravel()  # rows are L2-normalised
        keep = self._keep(index, task, model)
        candidates = np.flatnonzero(keep) if keep is not None else np.arange(len(scores))
        if len(candidates) == 0:
            return []
        if self.utility is not None and model is not None:
            return self._rank_by_utility(index, bucket, scores, candidates, model, level)
        k = min(self.p, len(candidates))
        # Equally relevant (to SUPPORT_DECIMALS) with prefer_support: better supported first.
        ranked = np.round(scores, SUPPORT_DECIMALS) if self.prefer_support else scores
        # Top k in O(n): argpartition finds the k-th best score, every candidate at least
        # that good is kept (ties at the boundary included), and the exact order is score
        # descending then record id. Ties never depend on the order records were inserted
        # in, so a store rebuilt or imported in another order retrieves the same records.
        if k < len(candidates):
            kth = -np.partition(-ranked[candidates], k - 1)[k - 1]
            candidates = candidates[ranked[candidates] >= kth]
        keys = [index.id_rank[candidates]]
        if self.prefer_support:
            keys.append(-index.support[candidates])
        order = np.lexsort((*keys, -ranked[candidates]))[:k]
        return [Hit(index.records[i], float(scores[i]), level) for i in candidates[order]]

    def _rank_by_utility(
        self,
        index: _Index,
        bucket: tuple[str, str | None, str | None],
        scores: np.ndarray,
        candidates: np.ndarray,
        model: str,
        level: Level,
    ) -> list[Hit]:
        """Top p by relevance + weight x utility for `model`, passing over (and noting)
        the records whose harm for it is confident; ties by support (if preferred), id."""
        assert self.utility is not None
        records = [index.records[i] for i in candidates]
        found = self._estimates(records, model, bucket)
        bonus = np.array([ranking_bonus(e, self.utility) for e in found])
        relevance = scores[candidates]
        if self.prefer_support:
            relevance = np.round(relevance, SUPPORT_DECIMALS)
        keys = [index.id_rank[candidates]]
        if self.prefer_support:
            keys.append(-index.support[candidates])
        order = np.lexsort((*keys, -(relevance + bonus)))
        hits: list[Hit] = []
        withheld: list[Withheld] = []
        for j in order:
            if len(hits) == self.p:
                break
            if found[j].withhold:
                withheld.append(Withheld(records[j].id, model, "confident_harm", found[j]))
                continue
            hits.append(Hit(records[j], float(scores[candidates[j]]), level))
        self._note_withheld(withheld)
        return hits

    def pool(self, task: Task, model: str | None) -> list[MemoryRecord]:
        """Every record of the task's domain (participant filter applied; with a utility
        policy, records of confident harm for `model` left out)."""
        index = self._index(task.domain, None, None)
        records = index.records
        if self.participant_filter and model is not None:
            mask = index.participant_mask(model)
            records = [r for r, keep in zip(records, mask, strict=True) if keep]
        if self.utility is not None and model is not None and records:
            found = self._estimates(records, model, (task.domain, None, None))
            self._note_withheld(
                [
                    Withheld(r.id, model, "confident_harm", e)
                    for r, e in zip(records, found, strict=True)
                    if e.withhold
                ]
            )
            records = [r for r, e in zip(records, found, strict=True) if not e.withhold]
        return records

    def _keep(self, index: _Index, task: Task, model: str | None) -> np.ndarray | None:
        """A mask of usable records, or None when all are usable.

        A record distilled from this very task text is never retrieved for it; with the
        participant filter, only records whose pair involved `model` are kept.
        """
        same = index.by_hash.get(task_hash(task.prompt), [])
        use_filter = self.participant_filter and model is not None
        if not same and not use_filter:
            return None
        mask = index.participant_mask(model).copy() if use_filter and model else None
        if mask is None:
            mask = np.ones(len(index.records), dtype=bool)
        mask[same] = False
        return mask

    def _constraints(self, record: MemoryRecord) -> tuple[Constraint, ...]:
        if not self.prefer_support:
            return record.constraints
        return tuple(sorted(record.constraints, key=lambda c: -c.support))

    def result(self, hits: list[Hit], level: Level, label: LabelLike | None = None) -> Retrieved:
        """The `Retrieved` of these hits (counting their use when the retriever does)."""
        guidance = tuple(
            Guidance(h.record.id, c.text()) for h in hits for c in self._constraints(h.record)
        )
        ids = tuple(h.record.id for h in hits)
        if ids and self.count_usage:
            self.store.count_retrieved(list(ids))
        return Retrieved(
            guidance=guidance,
            record_ids=ids,
            level=level if ids else "none",
            mode=self.mode,
            category=label.category if label else None,
            subcategory=label.subcategory if label else None,
            label_source=getattr(label, "source", None),
            hits=tuple(hits),
        )


@register_strategy("none")
def _no_memory(
    retriever: Retriever, task: Task, label: LabelLike | None, model: str | None
) -> Retrieved:
    return Retrieved((), (), "none", "none")


@register_strategy("random")
def _random_draw(
    retriever: Retriever, task: Task, label: LabelLike | None, model: str | None
) -> Retrieved:
    # In record-id order: a draw must not depend on when the records were created.
    pool = sorted(retriever.pool(task, model), key=lambda r: r.id)
    rng = random.Random(f"{retriever.seed}:{task.id}")
    chosen = rng.sample(pool, min(retriever.p, len(pool)))
    return retriever.result([Hit(r, 0.0, "domain") for r in chosen], "domain")


@register_strategy("global_tfidf")
def _global_tfidf(
    retriever: Retriever, task: Task, label: LabelLike | None, model: str | None
) -> Retrieved:
    hits = retriever.rank(task, (task.domain, None, None), model, "domain")
    return retriever.result(hits, "domain")


@register_strategy("task_aware")
def _task_aware(
    retriever: Retriever, task: Task, label: LabelLike | None, model: str | None
) -> Retrieved:
    if label is None:  # no label: the whole domain, as global TF-IDF
        return _global_tfidf(retriever, task, label, model)
    levels: list[tuple[Level, tuple[str, str | None, str | None]]] = [
        ("subcategory", (task.domain, label.category, label.subcategory)),
        ("category", (task.domain, label.category, None)),
        ("domain", (task.domain, None, None)),
    ]
    # A labeller that abstained (memory.labeller) widens the search: no category, the
    # domain; no subcategory, the category. Its records are reached at the domain level.
    if label.category == UNLABELLED:
        levels = levels[2:]
    elif label.subcategory == UNLABELLED:
        levels = levels[1:]
    for level, bucket in levels:
        hits = retriever.rank(task, bucket, model, level)
        if hits:
            return retriever.result(hits, level, label)
    return retriever.result([], "domain", label)
