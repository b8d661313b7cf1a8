"""Dedup on add (memory/dedup.py, `Memory.add_or_merge`): near-duplicates merge into the
bucket's constraints, quarantined submissions stay apart, corroboration releases them."""

from __future__ import annotations

import pytest

from memcollab.memory.api import Memory
from memcollab.memory.dedup import AUTO_RELEASE_ACTOR, plan
from memcollab.memory.merge import MERGE_THRESHOLD, similarity
from memcollab.memory.record import Constraint, MemoryRecord
from memcollab.memory.store import MemoryStore
from memcollab.tasks.task import Task
from tests.memory.test_merge import ORDER, ORDER_AGAIN, UNITS, rec
from tests.memory.test_store import (  # noqa: F401 - fixtures
    kind,
    make,
    pg_url,
    store,
    stores,
)

SIGNS = Constraint(
    when="moving a term across the equals sign",
    enforce="flipping its sign",
    avoid="keeping the sign",
)
SIGNS_AGAIN = Constraint(
    when="moving a term across the equals sign",
    enforce="flipping the sign of it",
    avoid="keeping the sign",
)
LABEL = type("L", (), {"category": "algebra", "subcategory": "linear"})()


def _served(memory: Memory) -> set[str]:
    task = Task(id="q", domain="math", prompt="Task number 99: solve it.")
    return {h.record.id for h in memory.search(task, label=LABEL, p=20).hits}


def _status(memory: Memory, rid: str) -> str:
    return memory.status(rid)


def test_the_pairs_used_here_are_near_duplicates_by_merge_py() -> None:
    assert similarity(ORDER, ORDER_AGAIN) >= MERGE_THRESHOLD
    assert similarity(SIGNS, SIGNS_AGAIN) >= MERGE_THRESHOLD
    assert similarity(ORDER, UNITS) < MERGE_THRESHOLD
    assert similarity(ORDER, SIGNS_AGAIN) < MERGE_THRESHOLD


def test_a_near_duplicate_merges_raising_support_the_rest_is_stored(store: MemoryStore) -> None:  # noqa: F811
    memory = Memory(store)
    first = memory.add_or_merge(rec(1, ORDER))
    assert first.created and first.added == rec(1).id and first.merged == ()
    result = memory.add_or_merge(rec(2, ORDER_AGAIN, UNITS))
    assert result.created and result.status == "active" and result.kept == 1
    assert [(m.position, m.record_id, m.index, m.support) for m in result.merged] == [
        (0, rec(1).id, 0, 2)
    ]
    assert memory.get(rec(1).id).constraints == (ORDER.model_copy(update={"support": 2}),)
    assert memory.get(rec(2).id).constraints == (UNITS,)
    assert memory.stats()["dedup"] == {"submitted": 2, "stored": 2, "merged": 1, "released": 0}
    # A retry finds the id: nothing is counted twice.
    again = memory.add_or_merge(rec(2, ORDER_AGAIN, UNITS))
    assert not again and again.merged == () and again.added is None
    assert memory.get(rec(1).id).constraints[0].support == 2
    assert memory.stats()["dedup"]["merged"] == 1


def test_a_record_whose_constraints_all_merged_is_kept_empty_and_never_served(
    store: MemoryStore,  # noqa: F811
) -> None:
    memory = Memory(store)
    memory.add_or_merge(rec(1, ORDER, SIGNS))
    result = memory.add_or_merge(rec(2, SIGNS_AGAIN, ORDER_AGAIN))
    assert result.created and result.kept == 0 and result.added is None
    assert sorted((m.position, m.index) for m in result.merged) == [(0, 1), (1, 0)]
    assert memory.get(rec(2).id).constraints == ()
    assert [c.support for c in memory.get(rec(1).id).constraints] == [2, 2]
    assert _served(memory) == {rec(1).id}


def test_plain_add_builds_and_imports_do_not_dedup(store: MemoryStore) -> None:  # noqa: F811
    memory = Memory(store)
    assert memory.add(rec(1, ORDER)) is True
    assert memory.add(rec(2, ORDER_AGAIN)) is True  # the default: stored as given
    assert memory.get(rec(2).id).constraints == (ORDER_AGAIN,)
    assert memory.add(rec(3, ORDER_AGAIN), dedup=True) is True  # opt in: merged
    assert memory.get(rec(3).id).constraints == ()
    assert memory.get(rec(2).id).constraints[0].support == 2  # the most similar one


def test_other_buckets_and_flagged_records_are_never_merged_into(store: MemoryStore) -> None:  # noqa: F811
    memory = Memory(store)
    memory.add(rec(1, ORDER, category="geometry"))
    memory.add(rec(2, ORDER))
    memory.flag(rec(2).id, "wrong")
    result = memory.add_or_merge(rec(3, ORDER_AGAIN))
    assert result.merged == () and result.kept == 1
    assert memory.get(rec(1).id).constraints[0].support == 1


def test_a_quarantined_submission_is_stored_whole_unsupported_and_never_served(
    store: MemoryStore,  # noqa: F811
) -> None:
    memory = Memory(store)
    memory.add_or_merge(rec(1, ORDER))
    claimed = rec(2, ORDER_AGAIN.model_copy(update={"support": 9}), UNITS)
    held = memory.add_or_merge(claimed, status="quarantined", reason="untrusted key")
    assert held.created and held.status == "quarantined" and held.merged == ()
    stored = memory.get(rec(2).id)
    assert [c.support for c in stored.constraints] == [1, 1]  # a claim is no evidence
    assert memory.get(rec(1).id).constraints[0].support == 1  # it vouched for nothing
    assert _status(memory, rec(2).id) == "quarantined"
    assert _served(memory) == {rec(1).id}


def test_trusted_near_duplicates_of_every_constraint_release_a_quarantined_record(
    store: MemoryStore,  # noqa: F811
) -> None:
    memory = Memory(store)
    held_id = memory.add_or_merge(rec(1, ORDER, UNITS), status="quarantined").record_id
    # One constraint corroborated: merged into the held one, which stays quarantined.
    first = memory.add_or_merge(rec(2, ORDER_AGAIN))
    assert [(m.record_id, m.index, m.support, m.status) for m in first.merged] == [
        (held_id, 0, 2, "quarantined")
    ]
    assert first.released == () and _status(memory, held_id) == "quarantined"
    assert held_id not in _served(memory)
    # The other one too: released, with the reason and actor in its history.
    units_again = UNITS.model_copy(update={"enforce": "converting them to one unit first"})
    assert similarity(UNITS, units_again) >= MERGE_THRESHOLD
    second = memory.add_or_merge(rec(3, units_again))
    assert second.released == (held_id,)
    assert _status(memory, held_id) == "active"
    assert held_id in _served(memory)
    last = memory.history(held_id)[-1]
    assert last["actor"] == AUTO_RELEASE_ACTOR and "corroborated" in last["reason"]
    assert memory.stats()["dedup"]["released"] == 1


def test_a_trusted_add_prefers_an_active_near_duplicate_to_a_quarantined_one(
    store: MemoryStore,  # noqa: F811
) -> None:
    memory = Memory(store)
    memory.add_or_merge(rec(1, ORDER), status="quarantined")
    memory.add_or_merge(rec(2, ORDER_AGAIN))  # corroborates 1 and releases it
    assert _status(memory, rec(1).id) == "active"
    memory.add_or_merge(rec(3, UNITS), status="quarantined")
    result = memory.add_or_merge(rec(4, ORDER))
    assert [m.record_id for m in result.merged] == [rec(1).id]


def test_plan_picks_the_most_similar_constraint_and_checks_its_threshold() -> None:
    near = ORDER_AGAIN
    exact = ORDER
    new = rec(9, ORDER)
    kept, merges, changed, corroborated = plan(new, [rec(1, near), rec(2, exact)])
    assert kept == () and merges[0].record_id == rec(2).id and corroborated == []
    assert [r.id for r in changed] == [rec(2).id]
    with pytest.raises(ValueError, match="threshold"):
        plan(new, [], threshold=0)


def test_the_record_itself_is_never_its_own_target() -> None:
    record: MemoryRecord = rec(1, ORDER)
    kept, merges, _, _ = plan(record, [record])
    assert kept == (ORDER,) and merges == []
