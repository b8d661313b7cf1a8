"""`memcollab memory review`: the records a person should look at, with their evidence.

Four kinds, each listed with the record's per-model estimate (memory/utility.py:
outcomes, helped, harmed, the baseline, p_harm, the verdict): records flagged by a person
or a process (with the flag's reason and history), quarantined records (an untrusted
source's, waiting to be released), records withheld from some model by
confident harm (and still served to the others), and stored records that the content
screen (memory/poison.py) would refuse today (stored before it existed, or written around
it). Nothing here changes a record: records are never deleted; a flag is lifted with
`memcollab memory flag MEMORY ID --undo --reason ...`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from memcollab.memory.poison import PoisonVerdict, screen_record
from memcollab.memory.record import MemoryRecord
from memcollab.memory.store import MemoryStore
from memcollab.memory.utility import Estimate, UtilityPolicy, estimates


@dataclass(frozen=True)
class ReviewItem:
    """One record to look at: why (flag, withheld models, screen) and the evidence."""

    record: MemoryRecord
    flag_reason: str | None
    history: tuple[dict[str, Any], ...]
    estimates: tuple[Estimate, ...]
    poison: PoisonVerdict = field(default_factory=PoisonVerdict)
    status: str = "active"
    """The record's status (memory/store_changes.py): active, flagged, quarantined."""

    @property
    def withheld_from(self) -> tuple[str, ...]:
        """The models this record is withheld from (confident harm)."""
        return tuple(e.model for e in self.estimates if e.withhold)

    @property
    def served_to(self) -> tuple[str, ...]:
        """The models with outcomes that it is still served to (when not flagged)."""
        return tuple(e.model for e in self.estimates if not e.withhold)

    def as_dict(self) -> dict[str, Any]:
        """JSON-native fields."""
        return {
            "id": self.record.id,
            "bucket": [self.record.domain, self.record.category, self.record.subcategory],
            "flagged": self.flag_reason,
            "status": self.status,
            "history": list(self.history),
            "withheld_from": list(self.withheld_from),
            "poison": list(self.poison.reasons),
            "estimates": [e.as_dict() for e in self.estimates],
        }


def review(
    store: MemoryStore, namespace: str = "default", policy: UtilityPolicy | None = None
) -> list[ReviewItem]:
    """Flagged, quarantined, withheld-for-some-model and screen-refused records of a
    namespace (archived ones left out), by id."""
    policy = policy or UtilityPolicy()
    records = store.records(namespace, include_flagged=True)
    flagged = store.flagged(namespace)
    statuses = store.statuses(namespace)
    records = [r for r in records if statuses.get(r.id) != "archived"]
    usage = store.usage_counts(namespace)
    models = sorted({m for _, m in usage})
    baselines = store.baselines(namespace)
    per_record: dict[str, list[Estimate]] = {r.id: [] for r in records}
    for model in models:
        used = [r for r in records if (r.id, model) in usage]
        for record, estimate in zip(
            used, estimates(used, model, usage, baselines, policy), strict=True
        ):
            per_record[record.id].append(estimate)
    items = []
    for record in sorted(records, key=lambda r: r.id):
        found = tuple(per_record[record.id])
        verdict = screen_record(record)
        status = statuses.get(record.id, "active")
        if status != "active" or verdict.refused or any(e.withhold for e in found):
            items.append(
                ReviewItem(
                    record,
                    flagged.get(record.id),
                    tuple(store.flag_history(record.id)),
                    found,
                    verdict,
                    status,
                )
            )
    return items
