"""Dedup on add: a submitted record's near-duplicates merge into the bucket's constraints.

`Memory.add_or_merge` (the service's adds: REST, MCP) stores a record the way a batch
merge pass (memory/merge.py) would leave it: each of its constraints that nearly
duplicates a constraint already kept in the same bucket (namespace, domain, category,
subcategory) is not stored again; the kept one's `support` grows by the new one's. The
measure and the threshold are merge.py's (`similarity`, `MERGE_THRESHOLD`); the target is
the most similar constraint (ties: record id, then position). Constraints without a
near-duplicate are stored as the new record; a record whose constraints all merged is
stored with none (never retrieved), so a retry of the same submission finds its id and
counts nothing twice.

Targets: the bucket's ACTIVE records first; failing those, its QUARANTINED records (from
untrusted keys). A trusted submission that nearly duplicates a quarantined constraint is
independent evidence for it: the quarantined constraint's support grows, and a
quarantined record is released automatically once EVERY one of its constraints has
support >= 2, i.e. once a trusted source produced a near-duplicate of each (the rule
`corroborated`; the release is logged with that reason, actor `auto:corroboration`).
Until then the trusted constraint stays merged into the quarantined one and is not served
either: serving nothing unvouched for is worth more than serving it at once. A record
submitted as quarantined never merges into anything (its support would vouch for other
records) and its constraints' support is reset to 1 (a claimed support is no evidence).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from memcollab.memory.merge import MERGE_THRESHOLD, similarity
from memcollab.memory.record import Constraint, MemoryRecord

AUTO_RELEASE_ACTOR = "auto:corroboration"
CORROBORATED = 2
"""Support every constraint of a quarantined record needs before it is released."""


@dataclass(frozen=True)
class Merged:
    """One submitted constraint merged into a stored one."""

    position: int
    """Its position in the submitted record (0-based)."""
    record_id: str
    index: int
    """The position of the constraint it merged into, in that record (0-based)."""
    support: int
    """That constraint's support after the merge."""
    status: str
    """The status of the record merged into: active, or quarantined (not served yet)."""


@dataclass(frozen=True)
class AddResult:
    """What `Memory.add_or_merge` did with a record. True when it changed the memory."""

    record_id: str
    created: bool
    """False: the id was stored already; nothing changed."""
    status: str
    """The record's status: active, or quarantined (from an untrusted source)."""
    kept: int = 0
    """Constraints stored in the new record (0: every one merged, or not created)."""
    merged: tuple[Merged, ...] = ()
    released: tuple[str, ...] = ()
    """Quarantined records this add corroborated completely and so released."""

    @property
    def added(self) -> str | None:
        """The new record's id when it was stored with constraints of its own, else None."""
        return self.record_id if self.created and self.kept else None

    def __bool__(self) -> bool:
        return self.created

    def as_dict(self) -> dict[str, Any]:
        """JSON-native fields."""
        return {
            "record_id": self.record_id,
            "created": self.created,
            "added": self.added,
            "status": self.status,
            "kept": self.kept,
            "merged": [m.__dict__ for m in self.merged],
            "released": list(self.released),
        }


@dataclass
class DedupCounts:
    """Per namespace: records submitted through `add_or_merge`, records stored, submitted
    constraints merged into stored ones, quarantined records released by corroboration."""

    counts: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))

    def count(self, namespace: str, result: AddResult) -> None:
        """Count one add's outcome."""
        c = self.counts[namespace]
        c["submitted"] += 1
        c["stored"] += int(result.created)
        c["merged"] += len(result.merged)
        c["released"] += len(result.released)

    def as_dict(self, namespace: str) -> dict[str, int]:
        """The counters of one namespace (zeros included)."""
        c = self.counts.get(namespace, Counter())
        return {k: int(c[k]) for k in ("submitted", "stored", "merged", "released")}


@dataclass
class _Target:
    record: MemoryRecord
    status: str
    constraints: list[Constraint]

    @property
    def changed(self) -> bool:
        return tuple(self.constraints) != self.record.constraints


def plan(
    record: MemoryRecord,
    active: Sequence[MemoryRecord],
    quarantined: Sequence[MemoryRecord] = (),
    threshold: float = MERGE_THRESHOLD,
) -> tuple[tuple[Constraint, ...], list[Merged], list[MemoryRecord], list[str]]:
    """Where each of `record`'s constraints goes, against its bucket's active and
    quarantined records: (the constraints kept in it, the merges, the stored records
    changed, the quarantined record ids now corroborated completely)."""
    if not 0 < threshold <= 1:
        raise ValueError("the merge threshold must be in (0, 1]")
    tiers = [
        [_Target(r, "active", list(r.constraints)) for r in sorted(active, key=lambda r: r.id)],
        [
            _Target(r, "quarantined", list(r.constraints))
            for r in sorted(quarantined, key=lambda r: r.id)
        ],
    ]
    kept: list[Constraint] = []
    merges: list[Merged] = []
    for position, c in enumerate(record.constraints):
        best = _nearest(c, tiers, record.id, threshold)
        if best is None:
            kept.append(c)
            continue
        target, index = best
        into = target.constraints[index]
        target.constraints[index] = into.model_copy(update={"support": into.support + c.support})
        merges.append(
            Merged(position, target.record.id, index, into.support + c.support, target.status)
        )
    targets = [t for tier in tiers for t in tier if t.changed]
    changed = [t.record.with_constraints(tuple(t.constraints)) for t in targets]
    corroborated = [
        t.record.id
        for t in targets
        if t.status == "quarantined"
        and t.constraints
        and all(x.support >= CORROBORATED for x in t.constraints)
    ]
    return tuple(kept), merges, changed, corroborated


def _nearest(
    c: Constraint, tiers: list[list[_Target]], own_id: str, threshold: float
) -> tuple[_Target, int] | None:
    """The most similar constraint at or above the threshold, active records first."""
    for tier in tiers:
        scored = [
            (similarity(c, other), t, i)
            for t in tier
            if t.record.id != own_id
            for i, other in enumerate(t.constraints)
        ]
        hits = [s for s in scored if s[0] >= threshold]
        if hits:
            best = min(hits, key=lambda s: (-s[0], s[1].record.id, s[2]))
            return best[1], best[2]
    return None


def unsupported(record: MemoryRecord) -> MemoryRecord:
    """The record with every constraint's support reset to 1 (a quarantined submission's
    claimed support is no evidence)."""
    if all(c.support == 1 for c in record.constraints):
        return record
    return record.with_constraints(
        tuple(c.model_copy(update={"support": 1}) for c in record.constraints)
    )
