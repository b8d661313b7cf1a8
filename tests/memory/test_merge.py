"""Agreement: merging near-duplicate constraints, support counts, and support in retrieval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memcollab.memory.api import Memory
from memcollab.memory.build import build_memory
from memcollab.memory.merge import MERGE_THRESHOLD, merge_bucket, similarity
from memcollab.memory.pairs import Pair, PairingResult
from memcollab.memory.record import MEMORY_FORMAT_VERSION, Constraint, MemoryRecord
from memcollab.memory.retrieve import Retriever
from memcollab.memory.store import MemoryFormatError, MemoryStore, read_jsonl
from memcollab.tasks.task import Task
from tests.memory.distill_helpers import distiller, line, traj
from tests.memory.test_store import (  # noqa: F401 - fixtures
    kind,
    make,
    pg_url,
    store,
    stores,
)

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "benchmarks/results/paper/memories/memcollab.by.qwen2.5-coder-1.5b.jsonl"

ORDER = Constraint(
    when="adding several amounts",
    enforce="listing every amount before adding",
    avoid="forgetting an amount",
)
ORDER_AGAIN = Constraint(  # the same lesson in nearly the same words
    when="adding several amounts",
    enforce="listing each amount before adding",
    avoid="forgetting an amount",
)
UNITS = Constraint(
    when="amounts come in different units",
    enforce="converting to one unit first",
    avoid="adding minutes to hours",
)


def rec(n: int, *constraints: Constraint, **kw: object) -> MemoryRecord:
    return make(n, **kw).with_constraints(constraints)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the format


def test_support_is_left_out_of_the_json_unless_merged() -> None:
    assert json.loads(ORDER.model_dump_json()) == {
        "when": ORDER.when,
        "enforce": ORDER.enforce,
        "avoid": ORDER.avoid,
    }
    merged = ORDER.model_copy(update={"support": 3})
    assert json.loads(merged.model_dump_json())["support"] == 3
    assert Constraint.model_validate_json(merged.model_dump_json()) == merged
    with pytest.raises(ValueError):
        Constraint(when="a b", enforce="c d", avoid="e f", support=0)


def test_the_committed_memory_reads_and_writes_byte_identical() -> None:
    lines = [x for x in COMMITTED.read_text(encoding="utf-8").splitlines() if x.strip()]
    records = [MemoryRecord.model_validate_json(x) for x in lines]
    assert [r.model_dump_json() for r in records] == lines
    assert {r.format_version for r in records} == {1}
    assert all(c.support == 1 for r in records for c in r.constraints)


def test_a_record_with_support_is_format_2_and_older_formats_still_read(tmp_path: Path) -> None:
    plain = rec(1, ORDER)
    assert plain.format_version == 1
    merged = plain.with_constraints((ORDER.model_copy(update={"support": 2}),))
    assert merged.format_version == 2 < MEMORY_FORMAT_VERSION  # 3: exports with notes
    assert merged.with_constraints((ORDER,)).format_version == 1
    raw = json.loads(plain.model_dump_json())
    raw["constraints"][0]["support"] = 4  # written by hand: the format follows
    assert MemoryRecord.model_validate(raw).format_version == 2
    path = tmp_path / "m.jsonl"
    newer = json.loads(merged.model_dump_json()) | {"format_version": MEMORY_FORMAT_VERSION + 1}
    path.write_text(plain.model_dump_json() + "\n" + merged.model_dump_json() + "\n")
    assert read_jsonl(path) == [plain, merged]
    path.write_text(json.dumps(newer) + "\n")
    with pytest.raises(MemoryFormatError, match="newer memcollab"):
        read_jsonl(path)


# --------------------------------------------------------------------------- one bucket


def test_similarity_threshold_separates_paraphrases() -> None:
    assert similarity(ORDER, ORDER_AGAIN) >= MERGE_THRESHOLD
    assert similarity(ORDER, UNITS) < MERGE_THRESHOLD


def test_merge_bucket_counts_support_and_keeps_the_first_by_id() -> None:
    a, b, c = rec(1, ORDER, UNITS), rec(2, ORDER_AGAIN), rec(3, ORDER, UNITS)
    first, *_ = sorted([a, b, c], key=lambda r: r.id)
    changed, merged = merge_bucket([c, b, a])  # input order does not matter
    assert merged == 3
    final = {r.id: r for r in [a, b, c]} | {r.id: r for r in changed}
    kept = [x for r in final.values() for x in r.constraints]
    assert sorted(x.support for x in kept) == [2, 3]
    assert sum(x.support for x in kept) == 5  # every distilled constraint is counted once
    assert len(final[first.id].constraints) == 2  # the first record in id order keeps both
    assert [r for r in final.values() if not r.constraints]  # some record emptied, kept
    again, merged_again = merge_bucket(list(final.values()))
    assert again == [] and merged_again == 0  # a second pass changes nothing


def test_constraints_of_one_record_never_merge_with_each_other() -> None:
    changed, merged = merge_bucket([rec(1, ORDER, ORDER_AGAIN)])
    assert changed == [] and merged == 0


def test_merge_threshold_is_checked() -> None:
    with pytest.raises(ValueError, match="threshold"):
        merge_bucket([], threshold=0)


# --------------------------------------------------------------------------- a store


def test_merge_namespace_per_bucket_on_both_backends(store: MemoryStore) -> None:  # noqa: F811
    records = [
        rec(1, ORDER, UNITS),
        rec(2, ORDER_AGAIN),
        rec(3, ORDER, subcategory="other"),  # another bucket: not merged
        rec(4, ORDER_AGAIN, namespace="elsewhere"),  # another namespace: untouched
        rec(5, UNITS),
    ]
    store.add_many(records)
    store.flag(records[4].id, "checked by hand")  # flagged: neither merged nor merged into
    before = store.version()
    memory = Memory(store)
    summary = memory.merge("default")
    assert summary.as_dict() == {
        "buckets": 2,
        "records": 3,
        "constraints": 3,
        "merged": 1,
        "records_emptied": 1,
    }
    assert store.version() > before
    stored = {r.source_task_id: r for r in store.records(include_flagged=True)}
    assert records[0].id < records[1].id  # toy/1 comes first in id order: it keeps
    assert [c.support for c in stored["toy/1"].constraints] == [2, 1]
    assert stored["toy/2"].constraints == ()
    assert sum(c.support for r in stored.values() for c in r.constraints) == 5
    assert stored["toy/5"] == records[4]
    assert store.records("elsewhere") == [records[3]]
    assert memory.merge("default").merged == 0


def test_save_replaces_by_id_and_counts(store: MemoryStore) -> None:  # noqa: F811
    first = rec(1, ORDER)
    store.add(first)
    counts = store.save([first.with_constraints((UNITS,)), rec(2, ORDER)])
    assert (counts.added, counts.replaced, counts.present) == (1, 1, 0)
    assert store.get(first.id).constraints == (UNITS,)
    assert store.save([store.get(first.id)]).present == 1


def test_copy_namespace_then_merge_leaves_the_source_alone(tmp_path: Path) -> None:
    with Memory.open(tmp_path / "m.sqlite") as memory:
        memory.store.add_many([rec(1, ORDER), rec(2, ORDER_AGAIN)])
        assert memory.copy_namespace("default", "merged") == 2
        assert memory.copy_namespace("default", "merged") == 0
        assert memory.merge("merged").merged == 1
        assert [c.support for r in memory.list("default") for c in r.constraints] == [1, 1]
        copies = memory.list("merged")
        assert {r.namespace for r in copies} == {"merged"}
        assert sorted(c.support for r in copies for c in r.constraints) == [2]
        with pytest.raises(ValueError):
            memory.copy_namespace("merged", "merged")


# --------------------------------------------------------------------------- the build

TASKS = {
    f"gsm/{i}": Task(id=f"gsm/{i}", domain="math", prompt=f"Add the {i} amounts of coins.")
    for i in range(1, 4)
}


class _Label:
    category = "Prealgebra"
    subcategory = "arithmetic"


class _Classifier:
    def classify(self, task: Task | str) -> _Label:
        return _Label()


def _pairs() -> PairingResult:
    pairs = tuple(
        Pair(tid, traj(task, "a", True), traj(task, "b", False), "a", "b", "mixed")
        for tid, task in TASKS.items()
    )
    return PairingResult(pairs=pairs, tasks=len(pairs), mixed=len(pairs))


@pytest.mark.parametrize("merge", [False, True])
def test_build_with_merge(tmp_path: Path, merge: bool) -> None:
    reply = line(ORDER.when, ORDER.enforce, ORDER.avoid)
    d, _ = distiller(lambda request: reply)
    with Memory.open(tmp_path / "m.sqlite") as memory:
        summary = build_memory(
            _pairs(), TASKS, memory.store, d, _Classifier(), workers=2, merge=merge
        )
        supports = sorted(c.support for r in memory.list() for c in r.constraints)
        assert len(memory.list()) == 3  # every pair stays recorded, so a rerun skips it
        if not merge:
            assert supports == [1, 1, 1] and "merge" not in summary.as_dict()
            return
        assert supports == [3] and summary.merge is not None
        assert summary.as_dict()["merge"]["merged"] == 2
        again = build_memory(_pairs(), TASKS, memory.store, d, _Classifier(), merge=True)
        assert again.records_existing == 3 and again.merge is not None
        assert again.merge["merged"] == 0
        assert sorted(c.support for r in memory.list() for c in r.constraints) == [3]


# --------------------------------------------------------------------------- retrieval


def test_empty_records_are_never_retrieved(tmp_path: Path) -> None:
    with Memory.open(tmp_path / "m.sqlite") as memory:
        memory.store.add_many([rec(1), rec(2, ORDER)])
        task = Task(id="q", domain="math", prompt="Task number 1: solve it.")
        for strategy in ("task_aware", "global_tfidf", "random"):
            found = memory.search(task, strategy=strategy, p=3, count_usage=False)
            assert found.record_ids == (rec(2, ORDER).id,), strategy


def test_prefer_support_breaks_ties_and_orders_constraints(tmp_path: Path) -> None:
    strong = ORDER_AGAIN.model_copy(update={"support": 4})
    # Same task text: equal scores. The default orders them by id; prefer_support by support.
    low = rec(1, ORDER, UNITS)
    high = rec(2, UNITS, strong)
    same_text = {"task_text": "Add the coins.", "task_hash": "h"}
    low = MemoryRecord.model_validate(low.model_dump() | same_text)
    high = MemoryRecord.model_validate(high.model_dump() | same_text)
    with Memory.open(tmp_path / "m.sqlite") as memory:
        memory.store.add_many([low, high])
        task = Task(id="q", domain="math", prompt="Add the coins, please.")
        assert low.id < high.id
        plain = memory.search(task, strategy="global_tfidf", p=2, count_usage=False)
        assert plain.record_ids == (low.id, high.id)
        assert plain.guidance[0].text == ORDER.text()
        supported = memory.search(
            task, strategy="global_tfidf", p=2, count_usage=False, prefer_support=True
        )
        assert supported.record_ids == (high.id, low.id)
        assert supported.guidance[0].text == strong.text()  # support 4 before support 1
        assert supported.hits[0].score == plain.hits[0].score  # scores are not rounded
        assert Retriever(memory.store, prefer_support=True).prefer_support


def test_cli_memory_merge(tmp_path: Path) -> None:
    from memcollab.memory.store import SQLiteMemory
    from tests.test_cli import run_cli

    path = tmp_path / "m.sqlite"
    with SQLiteMemory(path) as mem:
        mem.add_many([rec(1, ORDER), rec(2, ORDER_AGAIN)])
    copied = run_cli("memory", "merge", str(path), "--into", "merged")
    assert copied.returncode == 0, copied.stderr
    assert "copied 2 records" in copied.stdout and "1 constraints merged" in copied.stdout
    in_place = run_cli("memory", "merge", str(path), "--threshold", "0.99")
    assert in_place.returncode == 0 and "0 constraints merged" in in_place.stdout
    with SQLiteMemory(path) as mem:
        assert sorted(c.support for r in mem.records("merged") for c in r.constraints) == [2]
        assert [c.support for r in mem.records() for c in r.constraints] == [1, 1]
    bad = run_cli("memory", "merge", str(path), "--threshold", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
