"""Agreement: near-duplicate constraints of one bucket merge into one, counting support.

Many pairs teach the same lesson in nearly the same words. With merging (opt-in: `[memory]
merge = true`, `memcollab distill --merge`, `memcollab memory merge`), a constraint that
nearly duplicates one already kept in the same bucket (namespace, domain, category,
subcategory) is dropped from its record and the kept one's `support` grows by the
dropped one's; support counts the distilled pairs that produced a constraint. Retrieval
can then prefer supported constraints (`Retriever(prefer_support=True)`).

One pass over a bucket reads its records (flagged ones left alone) in id order, so the
result does not depend on when records were built, and keeps a constraint unless it
nearly duplicates a constraint kept from another record: the share of distinct words the
two share (Jaccard over the words of the whole sentence) is at least `threshold`. A
record whose constraints all merged stays stored with none, so a resumed build skips its
pair instead of counting it twice; retrieval never returns such a record. After a pass
no two kept constraints of a bucket are near-duplicates, so a second pass changes
nothing.

The threshold, 0.6, was chosen on the committed memory (training tasks): among its
constraint pairs within a bucket, those sharing 0.65 or more of their words say the same
thing in other words, those at 0.5-0.55 mix such paraphrases with different constraints,
and no pair falls between 0.55 and 0.65.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from memcollab.memory.record import Constraint, MemoryRecord
from memcollab.memory.store import MemoryStore

MERGE_THRESHOLD = 0.6
_WORD = re.compile(r"[a-z0-9]+")


def words(c: Constraint) -> frozenset[str]:
    """The distinct words of a constraint's sentence, lower-cased."""
    return frozenset(_WORD.findall(c.text().lower()))


def similarity(a: Constraint, b: Constraint) -> float:
    """The share of distinct words two constraints share (Jaccard)."""
    wa, wb = words(a), words(b)
    return len(wa & wb) / len(wa | wb) if wa or wb else 1.0


@dataclass
class MergeSummary:
    """What a merge pass did: buckets and records read, constraints kept and merged,
    records left without constraints."""

    buckets: int = 0
    records: int = 0
    constraints: int = 0
    merged: int = 0
    records_emptied: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def merge_bucket(
    records: Sequence[MemoryRecord], threshold: float = MERGE_THRESHOLD
) -> tuple[list[MemoryRecord], int]:
    """One bucket's pass (records in id order): the records that changed, and how many
    constraints merged into another."""
    if not 0 < threshold <= 1:
        raise ValueError("the merge threshold must be in (0, 1]")
    ordered = sorted(records, key=lambda r: r.id)
    kept: list[list[Constraint]] = [list(r.constraints) for r in ordered]
    keys: list[tuple[int, int, frozenset[str]]] = []  # (record, position, words) kept
    merged = 0
    for i, record in enumerate(ordered):
        own: list[Constraint] = []
        for c in record.constraints:
            mine = words(c)
            target = next(
                ((r, p) for r, p, other in keys if r != i and _jaccard(mine, other) >= threshold),
                None,
            )
            if target is None:
                own.append(c)
                continue
            r, p = target
            into = kept[r][p]
            kept[r][p] = into.model_copy(update={"support": into.support + c.support})
            merged += 1
        kept[i] = own
        keys.extend((i, p, words(c)) for p, c in enumerate(own))
    changed = [
        record.with_constraints(tuple(now))
        for record, now in zip(ordered, kept, strict=True)
        if tuple(now) != record.constraints
    ]
    return changed, merged


def _jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def merge_namespace(
    store: MemoryStore, namespace: str, threshold: float = MERGE_THRESHOLD
) -> MergeSummary:
    """Merge near-duplicate constraints in every bucket of a namespace, in place (each
    bucket in one transaction). Flagged records are neither merged nor merged into."""
    summary = MergeSummary()
    for domain, category, subcategory in store.buckets(namespace):
        records = store.records(namespace, domain, category, subcategory)
        changed, merged = merge_bucket(records, threshold)
        if changed:
            store.save(changed, reason="merge: near-duplicate constraints of the bucket")
        summary.buckets += 1
        summary.records += len(records)
        summary.merged += merged
        final = {r.id: r for r in records} | {r.id: r for r in changed}
        summary.constraints += sum(len(r.constraints) for r in final.values())
        summary.records_emptied += sum(1 for r in changed if not r.constraints)
    return summary
