"""`Memory`: the one public way to open, build, search and change a MemCollab memory.

The CLI, the experiment runner, the demo and every later surface (service, proxy, MCP)
use this class; what it wraps (stores, pairing rules, the build, retrieval strategies)
stays replaceable behind it:

    with Memory.open("mem.sqlite") as memory:            # or postgresql://...
        summary = memory.build(trajectories, tasks, distiller=..., labeller=...,
                               pairing="contrastive", strengths=fleet_strengths)
        found = memory.search(task, model="qwen", labeller=classifier)
        for hit in found.hits:
            print(hit.record.id, hit.score, hit.level)

Retrievers (and their per-bucket TF-IDF indexes) are kept per setting, so repeated
searches with one setting rank against an index built once per store version.
"""

from __future__ import annotations

import builtins
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from memcollab.memory.build import BuildEvent, BuildSummary, build_memory
from memcollab.memory.dedup import (
    AUTO_RELEASE_ACTOR,
    AddResult,
    DedupCounts,
    plan,
    unsupported,
)
from memcollab.memory.distill import Distiller
from memcollab.memory.gate_note import check_gate
from memcollab.memory.guidance import Labeller, LabelLike
from memcollab.memory.merge import MERGE_THRESHOLD, MergeSummary, merge_namespace
from memcollab.memory.pairs import PairingResult, PairingRule, pair_by_rule
from memcollab.memory.poison import PoisonCounts, first_refused, refusal
from memcollab.memory.record import MemoryRecord, record_id
from memcollab.memory.retrieve import Mode, Retrieved, Retriever
from memcollab.memory.review import ReviewItem, review
from memcollab.memory.store import (
    ImportCounts,
    MemoryFormatError,
    MemoryNotFoundError,
    MemoryStore,
    MemoryVersionError,
    OnConflict,
    PostgresMemory,
    RollbackCounts,
    open_memory,
    read_export_with_history,
)
from memcollab.memory.store_changes import Change, Status
from memcollab.memory.utility import Estimate, UtilityPolicy, estimates
from memcollab.tasks.task import Task
from memcollab.trajectory import Trajectory

SNAPSHOT_NOTE = "snapshot:"
"""Prefix of the namespace notes that name a version (`Memory.snapshot`)."""
RetrieverKey = tuple[str, int, str, bool, int, bool, bool, UtilityPolicy | None]


class Memory:
    """A MemCollab memory: records of distilled constraints filed by task category."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.poison = PoisonCounts()
        """What the content screen (memory/poison.py) checked and refused in `add` and
        `import_`, per reason."""
        self.dedup = DedupCounts()
        """What `add_or_merge` stored and merged, per namespace (memory/dedup.py)."""
        self._retrievers: dict[RetrieverKey, Retriever] = {}
        self._lock = threading.Lock()

    # -- opening
    @classmethod
    def open(cls, location: str | Path, *, create: bool = True) -> Memory:
        """Open the memory at a SQLite path or a URL (`postgresql://...`, `sqlite:///...`,
        or any scheme a backend registered). With `create=False` a memory that does not
        exist yet is refused instead of created (for commands that only read)."""
        return cls(open_memory(location, create=create))

    @property
    def location(self) -> str:
        """Where the memory lives (a path, or a URL without its password)."""
        return self.store.location

    def close(self) -> None:
        """Release the store's connections."""
        self.store.close()

    def __enter__(self) -> Memory:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- building
    @staticmethod
    def pairs(
        trajectories: Iterable[Trajectory],
        pairing: PairingRule | str = "contrastive",
        strengths: Mapping[str, int] | None = None,
    ) -> PairingResult:
        """The pairs a build with this rule would distil (nothing is called or written)."""
        return pair_by_rule(trajectories, pairing, strengths)

    def build(
        self,
        trajectories: Iterable[Trajectory],
        tasks: Mapping[str, Task],
        *,
        distiller: Distiller,
        labeller: Labeller,
        pairing: PairingRule | str = "contrastive",
        strengths: Mapping[str, int] | None = None,
        namespace: str = "default",
        workers: int = 1,
        recount_existing: bool = False,
        merge: bool = False,
        on_event: Callable[[BuildEvent], None] | None = None,
    ) -> BuildSummary:
        """Pair the trajectories by `pairing`, then label and distil every pair into records
        of `namespace`. Resumable: pairs already stored are skipped (record ids are
        deterministic), and their model calls come from the call cache when re-asked.
        With `merge`, near-duplicate constraints of a bucket then merge (see `merge`)."""
        pairs = pair_by_rule(trajectories, pairing, strengths)
        return build_memory(
            pairs,
            tasks,
            self.store,
            distiller,
            labeller,
            namespace=namespace,
            workers=workers,
            recount_existing=recount_existing,
            merge=merge,
            on_event=on_event,
        )

    def merge(
        self, namespace: str = "default", *, threshold: float = MERGE_THRESHOLD
    ) -> MergeSummary:
        """Merge near-duplicate constraints within each bucket of a namespace, in place: a
        kept constraint's `support` counts the pairs that produced it (memory/merge.py)."""
        return merge_namespace(self.store, namespace, threshold)

    def copy_namespace(self, source: str, target: str) -> int:
        """Copy the records of `source` (flagged ones left out) into namespace `target`,
        under the ids a build of `target` would give them; returns how many were new."""
        if source == target:
            raise ValueError("copy a namespace into another one")
        return self.store.add_many(_refiled(r, target) for r in self.store.records(source))

    # -- searching
    def retriever(
        self,
        namespace: str = "default",
        *,
        p: int = 3,
        strategy: Mode = "task_aware",
        participant_filter: bool = False,
        seed: int = 0,
        count_usage: bool = True,
        prefer_support: bool = False,
        utility: UtilityPolicy | None = None,
    ) -> Retriever:
        """The retriever of one setting (made once, then shared: thread-safe)."""
        key = (
            namespace,
            p,
            strategy,
            participant_filter,
            seed,
            count_usage,
            prefer_support,
            utility,
        )
        with self._lock:
            retriever = self._retrievers.get(key)
            if retriever is None:
                retriever = Retriever(
                    self.store,
                    p=p,
                    mode=strategy,
                    namespace=namespace,
                    participant_filter=participant_filter,
                    seed=seed,
                    count_usage=count_usage,
                    prefer_support=prefer_support,
                    utility=utility,
                )
                self._retrievers[key] = retriever
            return retriever

    def search(
        self,
        task: Task,
        *,
        model: str | None = None,
        label: LabelLike | None = None,
        labeller: Labeller | None = None,
        namespace: str = "default",
        p: int = 3,
        strategy: Mode = "task_aware",
        participant_filter: bool = False,
        seed: int = 0,
        count_usage: bool = True,
        prefer_support: bool = False,
        utility: UtilityPolicy | bool = False,
        gate: bool | str = True,
    ) -> Retrieved:
        """Constraints for `task` as `model` would get them: `hits` (record, score, back-off
        level) and the guidance lines. The task is labelled by `label`, else by `labeller`
        (task-aware strategies), else searched over its whole domain. `prefer_support`:
        among equally relevant records, the better supported first (memory/merge.py).
        `utility` (True: the default `UtilityPolicy`; needs `model`): rank by relevance
        and the record's utility for `model`, and withhold records of confident harm for
        it, listed in `withheld` (memory/utility.py). `gate` (True, or the condition
        whose note applies; needs `model`): honour the namespace's stored utility gate,
        so a (model, domain) it said no to gets nothing (`gate` of the result says what it
        decided; memory/gate_note.py); False ignores it."""
        checked = None
        if gate is not False and model is not None:  # a gate decides per model
            condition = gate if isinstance(gate, str) else None
            checked = check_gate(self.notes(namespace), model, task.domain, condition)
            if checked is not None and checked.verdict == "withheld":
                return Retrieved(
                    (),
                    (),
                    "none",
                    strategy,
                    category=getattr(label, "category", None),
                    subcategory=getattr(label, "subcategory", None),
                    gate=checked,
                )
        if label is None and labeller is not None and strategy == "task_aware":
            label = labeller.classify(task)
        retriever = self.retriever(
            namespace,
            p=p,
            strategy=strategy,
            participant_filter=participant_filter,
            seed=seed,
            count_usage=count_usage,
            prefer_support=prefer_support,
            utility=UtilityPolicy() if utility is True else (utility or None),
        )
        found = retriever.retrieve(task, label, model)
        return found if checked is None else replace(found, gate=checked)

    # -- records
    def get(self, record_id: str) -> MemoryRecord:
        """One record; MemoryNotFoundError when there is none."""
        return self.store.get(record_id)

    def list(
        self,
        namespace: str = "default",
        *,
        domain: str | None = None,
        category: str | None = None,
        subcategory: str | None = None,
        include_flagged: bool = False,
    ) -> list[MemoryRecord]:
        """Records of a namespace, filtered, ordered by (created_at, id)."""
        return self.store.records(
            namespace, domain, category, subcategory, include_flagged=include_flagged
        )

    def page(
        self,
        namespace: str = "default",
        *,
        domain: str | None = None,
        category: str | None = None,
        subcategory: str | None = None,
        include_flagged: bool = False,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[builtins.list[MemoryRecord], int]:
        """One page of `list(...)` (the same order: created_at, id) and the total count;
        the SQL stores read only the page."""
        return self.store.records_page(
            namespace,
            domain,
            category,
            subcategory,
            include_flagged=include_flagged,
            limit=limit,
            offset=offset,
        )

    def add(
        self,
        record: MemoryRecord | Mapping[str, Any],
        *,
        screen: bool = True,
        dedup: bool = False,
        status: Status = "active",
        reason: str = "",
        actor: str = "",
    ) -> bool:
        """Store one record (a mapping is validated as a `MemoryRecord` first); False when
        its id is already stored. With `screen` (the default) a record that carries
        instructions rather than reasoning (memory/poison.py) is refused with PoisonError
        naming the reason, and counted in `poison`. `status="quarantined"` stores it
        withheld until `release` (records of untrusted sources); the change is logged with
        `reason` and `actor`. With `dedup`, as `add_or_merge` (its near-duplicate
        constraints merge into the bucket's); builds and imports do not."""
        if dedup:
            found = self.add_or_merge(
                record, screen=screen, status=status, reason=reason, actor=actor
            )
            return bool(found)
        if not isinstance(record, MemoryRecord):
            record = MemoryRecord.model_validate(record)
        if screen:
            self._screen([record], "add")
        if status == "active" and not reason and not actor:
            return self.store.add(record)
        return bool(self.store.add_records([record], status=status, reason=reason, actor=actor))

    def add_or_merge(
        self,
        record: MemoryRecord | Mapping[str, Any],
        *,
        screen: bool = True,
        status: Status = "active",
        reason: str = "",
        actor: str = "",
        threshold: float = MERGE_THRESHOLD,
    ) -> AddResult:
        """Add one record as the service does (memory/dedup.py): screened like `add`; each
        constraint that nearly duplicates one of an active record of its bucket (else of a
        quarantined one) merges into it, raising its support; the rest are stored as the
        record. `status="quarantined"` (an untrusted source): stored whole, never served,
        never merged. Says what happened (an `AddResult`); counted in `dedup`."""
        if not isinstance(record, MemoryRecord):
            record = MemoryRecord.model_validate(record)
        if screen:
            self._screen([record], "add")
        with _serialised(self.store, record.namespace):
            result = self._add_or_merge(record, status, reason, actor, threshold)
        self.dedup.count(record.namespace, result)
        return result

    def _add_or_merge(
        self, record: MemoryRecord, status: Status, reason: str, actor: str, threshold: float
    ) -> AddResult:
        try:
            stored = self.store.get(record.id)
        except MemoryNotFoundError:
            pass
        else:
            return AddResult(stored.id, False, self.status(stored.id))
        if status != "active":
            created = self.add(
                unsupported(record), screen=False, status=status, reason=reason, actor=actor
            )
            return AddResult(record.id, created, status, len(record.constraints) if created else 0)
        bucket = (record.namespace, record.domain, record.category, record.subcategory)
        active = self.store.records(*bucket)
        served = {r.id for r in active}  # only the bucket's withheld records are looked up
        withheld = [
            r for r in self.store.records(*bucket, include_flagged=True) if r.id not in served
        ]
        statuses = self.store.statuses_of([r.id for r in withheld])
        held = [r for r in withheld if statuses[r.id] == "quarantined"]
        kept, merges, changed, corroborated = plan(record, active, held, threshold)
        created = self.add(record.with_constraints(kept), screen=False, reason=reason, actor=actor)
        if changed:
            merged_why = f"merged a near-duplicate constraint of {record.id}"
            self.store.save(
                changed, reason=f"{merged_why}: {reason}" if reason else merged_why, actor=actor
            )
        why = f"corroborated: each constraint nearly duplicated by a trusted add (last {record.id})"
        released = tuple(rid for rid in corroborated if self.release(rid, why, AUTO_RELEASE_ACTOR))
        return AddResult(record.id, created, "active", len(kept), tuple(merges), released)

    def _screen(self, records: builtins.list[MemoryRecord], source: str) -> None:
        """Refuse the records (all of them) if the content screen refuses one."""
        found = first_refused(records, self.poison)
        if found is None:
            return
        position, record, verdict, refused = found
        if len(records) == 1:
            raise refusal(record, verdict, source)
        raise refusal(
            record,
            verdict,
            f"{source}, record {position + 1}",
            f"; {refused} of {len(records)} records refused, nothing was imported",
        )

    def flag(self, record_id: str, reason: str, actor: str = "") -> bool:
        """Withhold a record from retrieval (never a delete); False if already flagged."""
        return self.store.flag(record_id, reason, actor)

    def unflag(self, record_id: str, reason: str, actor: str = "") -> bool:
        """Serve a flagged record again; False if it was not flagged."""
        return self.store.unflag(record_id, reason, actor)

    def release(self, record_id: str, reason: str, actor: str = "") -> bool:
        """Serve a quarantined record (quarantined -> active); False if it was active."""
        return self.store.transition(record_id, "release", reason, actor)

    def quarantine(self, record_id: str, reason: str, actor: str = "") -> bool:
        """Withhold an active record until it is released; False if already quarantined."""
        return self.store.transition(record_id, "quarantine", reason, actor)

    def archive(self, record_id: str, reason: str, actor: str = "") -> bool:
        """Withhold a record for good (kept, exported, restorable); False if archived."""
        return self.store.transition(record_id, "archive", reason, actor)

    def restore(self, record_id: str, reason: str, actor: str = "") -> bool:
        """Put an archived record back in the status it was archived from."""
        return self.store.transition(record_id, "restore", reason, actor)

    def status(self, record_id: str) -> Status:
        """ "active" (served), "flagged", "quarantined" or "archived"."""
        return self.store.status(record_id)

    def statuses(self, namespace: str = "default") -> dict[str, Status]:
        """id -> status of the namespace's records that are not served (not active)."""
        return self.store.statuses(namespace)

    # -- versions
    def version(self, namespace: str = "default") -> int:
        """The namespace's version: how many changes its records have had."""
        return self.store.namespace_version(namespace)

    def changes(
        self,
        namespace: str = "default",
        *,
        record_id: str | None = None,
        since: int = 0,
        until: int | None = None,
    ) -> builtins.list[Change]:
        """The namespace's change log (of one record, when given), oldest first."""
        return self.store.changes(namespace, record_id=record_id, since=since, until=until)

    def snapshot(self, namespace: str, name: str, actor: str = "") -> int:
        """Name the namespace's current version (kept as the note "snapshot:NAME", exported
        with it); returns that version. A name is given once: naming another version with
        it is refused with MemoryVersionError."""
        if not name.strip() or any(ch.isspace() for ch in name):
            raise MemoryVersionError(
                f"snapshot name {name!r} is empty or holds spaces", "give a name like v1"
            )
        version = self.version(namespace)
        taken = self.note(namespace, SNAPSHOT_NOTE + name)
        if taken is not None and taken.get("version") != version:
            raise MemoryVersionError(
                f"snapshot {name!r} of namespace {namespace!r} already names version "
                f"{taken.get('version')}",
                "choose another name",
            )
        if taken is None:
            value = {"version": version, "at": time.time(), "actor": actor}
            self.set_note(namespace, SNAPSHOT_NOTE + name, value)
        return version

    def snapshots(self, namespace: str = "default") -> dict[str, int]:
        """Snapshot name -> the version it names."""
        return {
            key.removeprefix(SNAPSHOT_NOTE): int(value["version"])
            for key, value in self.notes(namespace).items()
            if key.startswith(SNAPSHOT_NOTE)
        }

    def rollback(
        self, namespace: str, to: int | str, reason: str, actor: str = ""
    ) -> RollbackCounts:
        """Set the namespace's records back to their status and content at a version (a
        number or a snapshot name), as new changes: a later rollback can undo it."""
        version = to
        if isinstance(to, str):
            if to.isdigit():
                version = int(to)
            else:
                known = self.snapshots(namespace)
                if to not in known:
                    names = ", ".join(sorted(known)) or "none"
                    raise MemoryVersionError(
                        f"namespace {namespace!r} has no snapshot {to!r} (snapshots: {names})",
                        "give a version number or a snapshot name",
                    )
                version = known[to]
        with self._lock:
            self._retrievers.clear()
        return self.store.rollback(namespace, int(version), reason, actor)

    def flagged(self, namespace: str | None = None) -> dict[str, str]:
        """Flagged record id -> reason."""
        return self.store.flagged(namespace)

    def history(self, record_id: str) -> builtins.list[dict[str, Any]]:
        """Every status change of a record, oldest first: action (flag, unflag,
        quarantine, release, archive, restore, rollback), reason, actor, at, and where the
        store keeps versions the namespace's version and the status it left. `changes`
        has the full log (adds and content changes too)."""
        if not self.store.keeps_history:
            return self.store.flag_history(record_id)
        return self.histories(self.get(record_id).namespace, [record_id])[record_id]

    def histories(
        self, namespace: str, record_ids: Sequence[str]
    ) -> dict[str, builtins.list[dict[str, Any]]]:
        """id -> `history(id)` for records of one namespace, from one read of their log."""
        if not self.store.keeps_history:
            return {rid: self.store.flag_history(rid) for rid in record_ids}
        out: dict[str, builtins.list[dict[str, Any]]] = {rid: [] for rid in record_ids}
        for c in self.store.changes_of(namespace, record_ids):
            if c.op not in ("add", "replace"):
                out[c.record_id].append(
                    {
                        "action": c.op,
                        "reason": c.reason,
                        "actor": c.actor,
                        "at": c.at,
                        "version": c.version,
                        "status": c.status_after,
                    }
                )
        return out

    def record_outcome(self, record_id: str, model: str, helped: bool) -> None:
        """Count that the record, given to `model`, helped (True) or harmed (False) it."""
        self.store.record_usage(record_id, model, helped)

    def usage(self, record_id: str) -> dict[str, Any]:
        """How often a record was retrieved, and per model how often it helped or harmed."""
        return self.store.usage(record_id)

    def usages(self, record_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """id -> `usage(id)` for each of the given ids, in one read."""
        return self.store.usages_of(record_ids)

    def record_baseline(
        self,
        model: str,
        success: bool,
        *,
        domain: str,
        category: str,
        subcategory: str,
        namespace: str = "default",
    ) -> None:
        """Count one outcome of `model` on a task of this bucket solved with no record
        served: the baseline a record's outcomes are compared with (memory/utility.py)."""
        self.store.record_baseline(namespace, domain, category, subcategory, model, success)

    def utility(self, record_id: str, policy: UtilityPolicy | None = None) -> dict[str, Estimate]:
        """Model -> the record's estimate for it, for every model with outcomes."""
        return self.utilities([self.store.get(record_id)], policy)[record_id]

    def utilities(
        self, records: Sequence[MemoryRecord], policy: UtilityPolicy | None = None
    ) -> dict[str, dict[str, Estimate]]:
        """id -> `utility(id)` for records of one namespace: one read of the namespace's
        usage counts and baselines for all of them."""
        out: dict[str, dict[str, Estimate]] = {r.id: {} for r in records}
        if not records:
            return out
        namespace = records[0].namespace
        if any(r.namespace != namespace for r in records):
            raise ValueError("utilities() takes records of one namespace")
        buckets = {(r.domain, r.category, r.subcategory) for r in records}
        # Records of one bucket (e.g. a single record): read that bucket's counts alone;
        # of several: the namespace's counts in one read.
        domain, category, subcategory = buckets.pop() if len(buckets) == 1 else (None, None, None)
        usage = self.store.usage_counts(namespace, None, domain, category, subcategory)
        baselines = self.store.baselines(namespace)
        policy = policy or UtilityPolicy()
        wanted = set(out)
        for model in sorted({m for rid, m in usage if rid in wanted}):
            mine = [r for r in records if (r.id, model) in usage]
            for record, estimate in zip(
                mine, estimates(mine, model, usage, baselines, policy), strict=True
            ):
                out[record.id][model] = estimate
        return out

    def review(
        self, namespace: str = "default", policy: UtilityPolicy | None = None
    ) -> builtins.list[ReviewItem]:
        """Flagged records, records withheld from some model, and stored records the
        content screen refuses, each with its evidence (memory/review.py)."""
        return review(self.store, namespace, policy)

    # -- moving and summaries
    def export(self, path: str | Path, namespace: str | None = None) -> int:
        """Write the records (of one namespace, or all) as JSONL; returns the count."""
        return self.store.export_jsonl(path, namespace)

    def import_(
        self,
        path: str | Path,
        *,
        on_conflict: OnConflict = "error",
        namespace: str | None = None,
        screen: bool = True,
    ) -> ImportCounts:
        """Add the records (and namespace notes) of a JSONL export, all or nothing. An id
        stored with other content is a conflict: refused (`error`), kept (`skip`) or
        overwritten (`replace`). With `namespace`, the export (of one namespace) is filed
        under that namespace instead, its record ids made as a build of it would make them.
        With `screen` (the default) a file holding one record the content screen refuses
        (memory/poison.py) is refused whole with PoisonError, nothing imported."""
        if namespace is None and not screen:
            return self.store.import_jsonl(path, on_conflict=on_conflict)
        records, notes, changes = read_export_with_history(path)
        if namespace is not None:
            held = sorted({r.namespace for r in records} | {n.namespace for n in notes})
            if len(held) > 1:
                raise MemoryFormatError(
                    f"{path} holds {len(held)} namespaces ({', '.join(held)}); it can be filed"
                    " under one namespace only when it holds one",
                    "export one namespace: memcollab memory export MEMORY FILE --namespace NS",
                )
            records = [_refiled(r, namespace) for r in records]
            notes = [n.model_copy(update={"namespace": namespace}) for n in notes]
            changes = []  # its record ids changed: the history cannot follow them
        if screen:
            self._screen(records, str(path))
        return self.store.import_parsed(records, notes, on_conflict, str(path), changes)

    # -- namespace notes
    def set_note(self, namespace: str, key: str, value: Mapping[str, Any]) -> bool:
        """Keep a JSON object under `key` with a namespace (e.g. the utility gate's decision);
        exported and imported with the namespace. False when that value was stored already."""
        return self.store.set_note(namespace, key, dict(value))

    def note(self, namespace: str, key: str) -> dict[str, Any] | None:
        """The note `key` of a namespace, or None."""
        found = [n.value for n in self.store.notes(namespace) if n.key == key]
        return found[0] if found else None

    def notes(self, namespace: str) -> dict[str, dict[str, Any]]:
        """Every note of a namespace: key -> value."""
        return {n.key: n.value for n in self.store.notes(namespace)}

    def stats(self, namespace: str = "default") -> dict[str, Any]:
        """Records and constraints in a namespace, per bucket, source pair and distiller;
        `dedup`: what this handle's `add_or_merge` stored and merged there."""
        return {**self.store.stats(namespace), "dedup": self.dedup.as_dict(namespace)}

    def namespaces(self) -> dict[str, int]:
        """Namespace -> record count."""
        return self.store.namespaces()

    def __repr__(self) -> str:
        return f"Memory({self.location!r})"


@contextmanager
def _serialised(store: MemoryStore, namespace: str) -> Iterator[None]:
    """One transaction in which no other add_or_merge of the namespace runs (SQLite's
    write transactions are serial already; PostgreSQL takes an advisory lock), so two
    adds never both raise a support from the same stored value. A backend without
    transactions runs the block as it is."""
    transaction = getattr(store, "transaction", None)
    if transaction is None:
        yield
        return
    with transaction() as cur:
        if isinstance(store, PostgresMemory):
            key = int.from_bytes(hashlib.sha256(f"dedup:{namespace}".encode()).digest()[:8])
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (key - 2**63,))
        yield


def _refiled(record: MemoryRecord, namespace: str) -> MemoryRecord:
    """The record filed under `namespace`, with the id a build of that namespace gives it."""
    new_id = record_id(
        namespace,
        record.source_task_id,
        record.pair_type,
        record.model_pos,
        record.model_neg,
        record.distiller,
    )
    return record.model_copy(update={"namespace": namespace, "id": new_id})
