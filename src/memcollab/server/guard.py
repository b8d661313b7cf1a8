"""The service's guarded write path, one for every surface that writes records.

POST /v1/records, POST /v1/import and the MCP tool `add_constraint` all come here:

* the content screen (memory/poison.py) first: a refused record is one clear error naming
  its reason, and each refusal is counted per namespace and reason (table
  `server_counters`: GET /v1/stats, GET /metrics), whether the write came by REST or MCP;
* dedup on add (memory/dedup.py): near-duplicate constraints merge into the bucket's,
  raising their support; the caller is told what merged where (opt-out per request);
* quarantine: what an untrusted key (`keys create --untrusted`) adds or imports is stored
  with status "quarantined", never served, until a trusted admin key or a person releases
  it (POST /v1/records/{id}/release, `memcollab memory release`), or until evidence
  supports it: a trusted add that nearly duplicates each of its constraints releases it
  automatically (memory/dedup.py says why that rule and no other);
* provenance (which key, how) in the same transaction as the record.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from memcollab.memory.dedup import AddResult
from memcollab.memory.poison import POISON_REASONS, PoisonVerdict, refusal, screen_record
from memcollab.memory.record import MemoryRecord
from memcollab.memory.store import MemoryNotFoundError, conflict_error
from memcollab.server.db import ServerDB
from memcollab.server.provenance import Via

if TYPE_CHECKING:
    from memcollab.server.auth import Principal

REFUSED = "refused:"
"""Counter names: `refused:REASON` per screen reason, and the names of `COUNTED`."""
COUNTED = ("stored", "merged", "quarantined", "released", "auto_released")


class CounterStore:
    """Per-namespace counters of the write path (table `server_counters`), shared by every
    service process on the database."""

    def __init__(self, db: ServerDB) -> None:
        self.db = db

    def bump(self, namespace: str, counts: Mapping[str, int]) -> None:
        """Add `counts` (name -> amount; zeros skipped) to the namespace's counters."""
        rows = [(namespace, name, n) for name, n in counts.items() if n]
        if not rows:
            return
        with self.db.write() as cur:
            for row in rows:
                cur.execute(
                    "INSERT INTO server_counters (namespace, name, n) VALUES (?, ?, ?) "
                    "ON CONFLICT (namespace, name) DO UPDATE SET n = server_counters.n + "
                    "excluded.n",
                    row,
                )

    def of(self, namespace: str) -> dict[str, int]:
        """The namespace's counters, name -> count."""
        rows = self.db.query(
            "SELECT name, n FROM server_counters WHERE namespace = ?", (namespace,)
        )
        return {str(name): int(n) for name, n in rows}

    def totals(self) -> dict[str, int]:
        """Every counter summed over the namespaces (for /metrics, which names none)."""
        rows = self.db.query("SELECT name, SUM(n) FROM server_counters GROUP BY name")
        return {str(name): int(n) for name, n in rows}


def guard_summary(counts: Mapping[str, int]) -> dict[str, Any]:
    """The counters as GET /v1/stats shows them: refusals (total and per reason, every
    reason listed), records stored, constraints merged, quarantined, released."""
    reasons = {r: int(counts.get(REFUSED + r, 0)) for r in POISON_REASONS}
    return {
        "refused": sum(reasons.values()),
        "refusals": reasons,
        **{name: int(counts.get(name, 0)) for name in COUNTED},
    }


def screen(
    counters: CounterStore,
    poison_counts: Any,
    records: Sequence[MemoryRecord],
    namespace: str,
    source: str,
) -> None:
    """Screen every record; if one is refused, count each refusal (per reason, in the
    namespace's counters and the memory's `poison`) and raise the first one's PoisonError
    (for several records: how many were refused, nothing written)."""
    verdicts: list[PoisonVerdict] = []
    for record in records:
        verdict = screen_record(record)
        poison_counts.add(verdict)
        verdicts.append(verdict)
    refused = [(i, v) for i, v in enumerate(verdicts) if v.refused]
    if not refused:
        return
    by_reason: dict[str, int] = {}
    for _, v in refused:
        by_reason[REFUSED + str(v.reason)] = by_reason.get(REFUSED + str(v.reason), 0) + 1
    counters.bump(namespace, by_reason)
    position, verdict = refused[0]
    if len(records) == 1:
        raise refusal(records[position], verdict, source)
    raise refusal(
        records[position],
        verdict,
        f"{source}, record {position + 1}",
        f"; {len(refused)} of {len(records)} records refused, nothing was imported",
    )


@dataclass(frozen=True)
class Submitter:
    """Who writes: the key's id, namespace and trust, and how (add, import, mcp)."""

    key_id: str
    namespace: str
    trusted: bool
    via: Via

    @classmethod
    def of(cls, principal: Principal, via: Via) -> Submitter:
        """The caller `principal` writing through `via`."""
        return cls(principal.key_id, principal.namespace, principal.trusted, via)

    @property
    def actor(self) -> str:
        return f"key:{self.key_id}"


def add(context: Any, who: Submitter, record: MemoryRecord, *, dedup: bool = True) -> AddResult:
    """Screen, then store one record as `who` submits it (dedup, quarantine, provenance,
    counters) in one transaction; PoisonError when the screen refuses it."""
    screen(context.counters, context.memory.poison, [record], who.namespace, who.via)
    memory = context.memory
    with context.db.write():
        if not who.trusted:
            result = memory.add_or_merge(
                record,
                screen=False,
                status="quarantined",
                reason=f"from untrusted key {who.key_id} ({who.via})",
                actor=who.actor,
            )
        elif dedup:
            result = memory.add_or_merge(record, screen=False)
        else:
            created = memory.add(record, screen=False)
            result = AddResult(record.id, created, "active", len(record.constraints) * created)
        if result.created:
            context.provenance.record([record.id], who.namespace, who.key_id, who.via)
        context.counters.bump(who.namespace, counted(result))
    return result


class SubmissionConflict(Exception):
    """A submitted record's id is already stored with other content (REST: 409)."""


def submit(context: Any, who: Submitter, record: MemoryRecord, *, dedup: bool = True) -> AddResult:
    """`add`, then the retry rule every front end shares (REST add, MCP add_constraint): the
    same submission again adds nothing; another content under a stored id raises
    SubmissionConflict instead of reporting it as already stored."""
    result = add(context, who, record, dedup=dedup)
    if not result.created:
        stored = context.memory.get(record.id)
        if stored.namespace != record.namespace or not same_submission(stored, record):
            raise SubmissionConflict(f"record {record.id!r} is already stored with other content")
    return result


def same_submission(stored: MemoryRecord, submitted: MemoryRecord) -> bool:
    """Whether `stored` is what adding `submitted` left: the same fields, and constraints
    that are submitted ones (those that merged elsewhere are missing; supports may have
    grown since)."""
    fields = {"created_at", "constraints", "format_version"}
    if stored.model_dump(exclude=fields) != submitted.model_dump(exclude=fields):
        return False
    sent = [(c.when, c.enforce, c.avoid) for c in submitted.constraints]
    return all((c.when, c.enforce, c.avoid) in sent for c in stored.constraints)


def counted(result: AddResult) -> dict[str, int]:
    """The counters one add raises."""
    return {
        "stored": int(result.created),
        "merged": len(result.merged),
        "quarantined": int(result.created and result.status == "quarantined"),
        "auto_released": len(result.released),
    }


def release(context: Any, who: Principal, record_id: str, reason: str) -> bool:
    """Release a quarantined record for `who` (the caller checked it is theirs and that
    the key is trusted), counted; False when it was not quarantined."""
    with context.db.write():
        changed = bool(context.memory.release(record_id, reason, who.actor))
        if changed:
            context.counters.bump(who.namespace, {"released": 1})
    return changed


def import_records(
    context: Any,
    who: Submitter,
    records: Sequence[MemoryRecord],
    on_conflict: str,
    source: str,
) -> dict[str, int]:
    """An untrusted key's import: screened whole (as every import), then each new record
    added quarantined, all in one transaction. Stored ids are never replaced (the caller
    refuses `replace`): the same content counts as present, other content is a conflict
    (`skip` keeps the stored one, `error` imports nothing)."""
    screen(context.counters, context.memory.poison, records, who.namespace, source)
    counts = {"added": 0, "present": 0, "conflicts_skipped": 0, "replaced": 0}
    conflicts: list[str] = []
    memory = context.memory
    with context.db.write():
        for record in records:
            try:
                stored = memory.get(record.id)
            except MemoryNotFoundError:
                stored = None
            if stored is not None:
                same = stored.model_dump(exclude={"created_at"}) == record.model_dump(
                    exclude={"created_at"}
                )
                if same:
                    counts["present"] += 1
                elif on_conflict == "skip":
                    counts["conflicts_skipped"] += 1
                else:
                    conflicts.append(record.id)
                continue
            result = memory.add_or_merge(
                record,
                screen=False,
                status="quarantined",
                reason=f"imported by untrusted key {who.key_id}",
                actor=who.actor,
            )
            if result.created:
                counts["added"] += 1
                context.provenance.record([record.id], who.namespace, who.key_id, "import")
        if conflicts:
            raise conflict_error(source, conflicts)  # rolls the transaction back
        context.counters.bump(who.namespace, {"quarantined": counts["added"]})
    return counts
