"""The online replay's end checks (benchmarks/online_replay.py), read straight from the
service's database once its processes have stopped: the "zero lost, zero twice" numbers.

  attempts_lost        client ids sent (no error row) but not stored       (must be 0)
  attempts_extra       stored attempts the client never sent               (must be 0)
  attempts_doubled     (task, model) with more than one attempt            (must be 0)
  unjudged             stored attempts without a verdict                   (must be 0)
  rows_unfinished      queue rows pending or claimed at the end            (must be 0)
  rows_failed          queue rows failed (model errors, expired leases)    (must be 0)
  contrasts_missing    tasks with a correct and an incorrect model, no row (must be 0)
  records_shared       done rows sharing a record id                       (must be 0)
  distilled_twice      distiller runs beyond the rows that were distilled  (must be 0)
                       (counted by the worker as each run returns, before its commit: a
                       kill in between makes the row run again, and shows here)
  provenance_missing   done rows whose record has no learned provenance naming that
                       row's task and attempts                             (must be 0)
  learned_outside      records with learned provenance but no done row     (must be 0)
  records_unaccounted  done rows' records neither stored nor named by a merge change
                                                                           (must be 0)
Reported beside them: calls_failed (error rows of the stream: a call that failed through
every retry), rows_redone (rows claimed more than once: a redone distillation, each
task named), records_stored / records_merged_away, the memory statuses of the calls.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from online_replay_common import NAMESPACE, client_id

from memcollab.memory.store import MemoryNotFoundError
from memcollab.server.context import ServerContext

LEARNED_KEYS = ("task_id", "pos_attempt", "neg_attempt")
MERGED = "merged a near-duplicate constraint of "  # memory/api.py add_or_merge's reason
BEFORE_DISTILLING = ("unknown_domain",)  # refusals made before the distiller runs
MUST_BE_ZERO = (
    "attempts_lost", "attempts_extra", "attempts_doubled", "unjudged", "rows_unfinished",
    "rows_failed", "contrasts_missing", "records_shared", "distilled_twice",
    "provenance_missing", "learned_outside", "records_unaccounted",
)  # fmt: skip


def check(
    memory_path: Path,
    task_ids: Sequence[str],
    models: Sequence[str],
    progress_rows: Sequence[dict[str, Any]],
    kills: int,
) -> dict[str, Any]:
    """The end checks (module doc), the models' accuracy and the learning counts."""
    ctx = ServerContext.open(str(memory_path), create=False)
    try:
        failed_calls = {r["attempt"] for r in progress_rows if "error" in r}
        sent = {client_id(t, m): (t, m) for t in task_ids for m in models}
        stored, total = ctx.attempts.list(NAMESPACE, limit=10**7)
        stored_ids = {a.id for a in stored}
        per_pair = Counter((a.task_id, a.model) for a in stored)
        verdicts: dict[str, dict[str, str]] = defaultdict(dict)
        for a in stored:
            verdicts[a.task_id][a.model] = a.verdict
        contrast = {
            tid for tid, by in verdicts.items()
            if "correct" in by.values() and "incorrect" in by.values()
        }  # fmt: skip
        items = ctx.learning.items(NAMESPACE)
        states = Counter(i.state for i in items)
        done = [i for i in items if i.state == "done"]
        record_ids = [i.record_id for i in done if i.record_id]
        provenance = ctx.provenance.many(record_ids)
        bad_provenance = 0
        for item in done:
            learned = provenance.get(item.record_id or "", {}).get("learned")
            named = (item.task_id, item.pos_attempt, item.neg_attempt)
            if not learned or tuple(learned[k] for k in LEARNED_KEYS) != named:
                bad_provenance += 1
        stored_records: set[str] = set()
        for rid in set(record_ids):
            try:
                ctx.memory.get(rid)
                stored_records.add(rid)
            except MemoryNotFoundError:
                pass
        merge_named = {
            rid
            for change in ctx.memory.changes(NAMESPACE)
            for rid in set(record_ids) - stored_records
            if MERGED + rid in change.reason
        }
        learned_ids = {
            rid for (rid,) in ctx.db.query(
                "SELECT record_id FROM server_learned_provenance WHERE namespace = ?", (NAMESPACE,)
            )
        }  # fmt: skip
        learning = ctx.learning.counts(NAMESPACE)
        refused_before = sum(learning["refused"].get(r, 0) for r in BEFORE_DISTILLING)
        distilled_rows = len(done) + states["refused"] - refused_before
        right = {m: sum(verdicts[t].get(m) == "correct" for t in task_ids) for m in models}
        accuracy = {m: round(n / max(len(task_ids), 1), 4) for m, n in right.items()}
        checks: dict[str, Any] = {
            "attempts_sent": len(sent),
            "attempts_stored": total,
            "calls_failed": len(failed_calls),
            "attempts_lost": len(set(sent) - stored_ids - failed_calls),
            "attempts_extra": len(stored_ids - set(sent)),
            "attempts_doubled": sum(n > 1 for n in per_pair.values()),
            "unjudged": sum(a.verdict == "unknown" for a in stored),
            "contrasting_tasks": len(contrast),
            "queue_rows": len(items),
            "queue_states": dict(sorted(states.items())),
            "rows_unfinished": states["pending"] + states["claimed"],
            "rows_failed": states["failed"],
            "contrasts_missing": len(contrast - {i.task_id for i in items}),
            "rows_done": len(done),
            "records_shared": len(record_ids) - len(set(record_ids)),
            "distillations": learning["distillations"],
            "rows_distilled": distilled_rows,
            "distilled_twice": learning["distillations"] - distilled_rows,
            "rows_redone": sorted(i.task_id for i in items if i.tries > 1),
            "provenance_missing": bad_provenance,
            "learned_outside": len(learned_ids - set(record_ids)),
            "records_stored": len(stored_records),
            "records_merged_away": len(merge_named),
            "records_unaccounted": len(set(record_ids) - stored_records - merge_named),
            "kills": kills,
        }
        checks["passed"] = all(checks[k] == 0 for k in MUST_BE_ZERO)
        return {"checks": checks, "accuracy": accuracy, "learning": learning}
    finally:
        ctx.close()
