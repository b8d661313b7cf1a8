"""Conditions on their own: which memory each one asks for, the name patterns and field
checks of `make_condition`, and the placebo's draw (a fake fleet and evaluation context;
no model)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from memcollab.agent import Guidance
from memcollab.experiment.conditions import (
    MemoryRecipe,
    make_condition,
    resolve_model,
)
from memcollab.experiment.config import ExperimentConfigError
from memcollab.memory.record import Constraint, MemoryRecord, task_hash
from memcollab.memory.retrieve import Retrieved
from memcollab.tasks.task import Task

STRENGTHS = {"small": 1, "mid": 2, "big": 3}


class Fleet:
    def names(self) -> list[str]:
        return list(STRENGTHS)

    def strength(self, name: str) -> int:
        return STRENGTHS[name]


FLEET = Fleet()


@dataclass
class Label:
    category: str
    subcategory: str = "sub"


def _record(i: int, category: str, text: str | None = None, constraints: int = 1) -> MemoryRecord:
    text = text or f"training task {i}"
    return MemoryRecord(
        id=f"r{i}",
        namespace="memcollab.by.big",
        domain="math",
        category=category,
        subcategory="sub",
        task_text=text,
        task_hash=task_hash(text),
        source_task_id=f"train/{i}",
        constraints=tuple(
            Constraint(when=f"case {i}.{j}", enforce="a check", avoid="an error")
            for j in range(constraints)
        ),
        pair_type="mixed",
        distiller="big",
        created_at=float(i),
    )


@dataclass
class Context:
    """The runner's evaluation context, reduced to fixed answers."""

    records_: list[MemoryRecord]
    retrieved: Retrieved
    seed: int = 1
    label_: Label = field(default_factory=lambda: Label("Algebra"))

    def label(self, model: str, task: Task, labeller: str | None = None) -> Label:
        return self.label_

    def retriever(self, namespace, p, mode, participant_filter):  # type: ignore[no-untyped-def]
        context = self

        class Fixed:
            def retrieve(self, task, label, model):  # type: ignore[no-untyped-def]
                return context.retrieved

        return Fixed()

    def records(self, namespace: str, domain: str) -> list[MemoryRecord]:
        return [r for r in self.records_ if r.domain == domain]


def test_resolve_model() -> None:
    assert resolve_model("self", FLEET, "mid", what="x") == "mid"
    assert resolve_model("strongest", FLEET, "mid", what="x") == "big"
    assert resolve_model("small", FLEET, "mid", what="x") == "small"
    with pytest.raises(ExperimentConfigError, match="no fleet model 'huge'"):
        resolve_model("huge", FLEET, "mid", what="x")


def test_each_condition_asks_for_its_memory() -> None:
    assert make_condition("vanilla").memories("mid", FLEET) == []
    assert make_condition("own").memories("small", FLEET) == [
        MemoryRecipe("own", "small", model="small")
    ]
    # naive transfer: the strongest *other* model's own memory, built by that model
    other = make_condition("other")
    assert other.memories("small", FLEET) == [MemoryRecipe("own", "big", model="big")]
    assert other.memories("big", FLEET) == [MemoryRecipe("own", "mid", model="mid")]
    assert make_condition("other", {"source": "small"}).memories("big", FLEET) == [
        MemoryRecipe("own", "small", model="small")
    ]
    # one shared cross-model memory, distilled by the strongest model
    assert make_condition("memcollab").memories("small", FLEET) == [
        MemoryRecipe("contrastive", "big")
    ]
    assert make_condition("placebo").memories("mid", FLEET)[0].namespace == "memcollab.by.big"
    sc = make_condition("self-contrast", {"samples": 4}).memories("mid", FLEET)[0]
    assert sc.namespace == "self-contrast.mid.by.mid" and sc.samples == 4


def test_name_patterns_set_the_ablation_fields() -> None:
    assert make_condition("memcollab-p5").describe()["p"] == 5
    assert make_condition("memcollab-global").describe()["retrieval"] == "global_tfidf"
    assert make_condition("mine", {"kind": "memcollab", "p": 9}).describe() == {
        "kind": "memcollab",
        "name": "mine",
        "p": 9,
        "retrieval": "task_aware",
        "participant_filter": False,
        "distiller": "strongest",
    }


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nonsense", None, "unknown condition 'nonsense'"),
        ("memcollab", {"q": 1}, "unknown field"),
        ("vanilla", {"p": 3}, "unknown field"),
        ("memcollab-p0", None, "p must be at least 1"),
        ("memcollab", {"retrieval": "bm25"}, "unknown retrieval 'bm25'"),
        ("self-contrast", {"samples": 1}, "samples >= 2"),
        ("self-contrast", {"temperature": 0.0}, "temperature > 0"),
    ],
)
def test_bad_conditions_are_refused(name: str, params: dict | None, message: str) -> None:
    with pytest.raises(ExperimentConfigError, match=message):
        make_condition(name, params)


def test_other_needs_a_second_model() -> None:
    class Alone(Fleet):
        def names(self) -> list[str]:
            return ["big"]

    with pytest.raises(ExperimentConfigError, match="needs a second fleet model"):
        make_condition("other").memories("big", Alone())


def _placebo_context(seed: int = 1) -> Context:
    task = Task(id="test/1", domain="math", prompt="solve 2x + 1 = 5")
    records = [
        _record(1, "Algebra"),
        _record(2, "Algebra"),
        _record(3, "Geometry", constraints=2),
        _record(4, "Geometry"),
        _record(5, "Counting"),
        _record(6, "Counting", text=task.prompt),  # the evaluated task itself
    ]
    real = Retrieved(
        guidance=(Guidance("r1", "a"), Guidance("r2", "b"), Guidance("r2", "c")),
        record_ids=("r1", "r2"),
        level="category",
        mode="task_aware",
        category="Algebra",
        subcategory="sub",
    )
    return Context(records, real, seed=seed)


def test_placebo_draws_as_many_constraints_from_other_categories() -> None:
    placebo = make_condition("placebo")
    task = Task(id="test/1", domain="math", prompt="solve 2x + 1 = 5")
    ctx = _placebo_context()
    by_id = {r.id: r for r in ctx.records_}
    guidance, note = placebo.guide(task, "small", FLEET, ctx)
    assert note is not None
    assert len(guidance) == 3 == note["constraints"]  # as many as memcollab gave
    assert note["matched_to"] == ["r1", "r2"] and note["mode"] == "placebo"
    assert all(by_id[i].category != "Algebra" for i in note["record_ids"])
    assert "r6" not in note["record_ids"]  # never the evaluated task's own record
    assert {g.record_id for g in guidance} <= set(note["record_ids"])
    # the draw depends on the seed only: the same seed draws the same records
    assert placebo.guide(task, "small", FLEET, _placebo_context())[1] == note
    notes = [placebo.guide(task, "small", FLEET, _placebo_context(s))[1] for s in range(20)]
    draws = {tuple(n["record_ids"]) for n in notes if n is not None}
    assert len(draws) > 1


def test_placebo_draw_does_not_depend_on_when_records_were_created() -> None:
    """Two builds of one memory store its records at other times (so in another order);
    the placebo must draw the same records from both."""
    placebo = make_condition("placebo")
    task = Task(id="test/1", domain="math", prompt="solve 2x + 1 = 5")
    first = _placebo_context(seed=7)
    rebuilt = _placebo_context(seed=7)
    rebuilt.records_ = [
        r.model_copy(update={"created_at": 100.0 - i}) for i, r in enumerate(rebuilt.records_)
    ][::-1]
    drawn = placebo.guide(task, "small", FLEET, first)
    assert placebo.guide(task, "small", FLEET, rebuilt) == drawn


def test_placebo_skips_records_a_merge_emptied() -> None:
    """A record left without constraints by a merge gives nothing: it is never noted among
    the drawn records, and the draw still gives as many constraints as memcollab."""
    placebo = make_condition("placebo")
    task = Task(id="test/1", domain="math", prompt="solve 2x + 1 = 5")
    ctx = _placebo_context(seed=3)
    others = [r for r in ctx.records_ if r.category != "Algebra"]
    emptied = [
        r.model_copy(update={"id": f"{r.id}-emptied-{n}", "constraints": ()})
        for n in range(5)
        for r in others
    ]
    ctx.records_ = ctx.records_ + emptied
    guidance, note = placebo.guide(task, "small", FLEET, ctx)
    assert note is not None
    assert len(guidance) == 3 == note["constraints"]
    assert note["record_ids"] and not any("-emptied-" in i for i in note["record_ids"])
