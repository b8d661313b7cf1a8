"""The extension scenarios of docs/EXTENDING.md, each done from its own file(s) here and
used through the public surfaces (an experiment, `Memory`, a fleet file)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from memcollab.domains import DOMAINS
from memcollab.experiment.config import parse_experiment
from memcollab.experiment.runner import Experiment
from memcollab.llm.cache import Gateway
from memcollab.llm.fleet import Fleet
from memcollab.memory import Memory
from memcollab.memory.store import MemoryConflictError, MemoryNotFoundError
from memcollab.tasks.datasets import LOADERS
from memcollab.tasks.task import Task
from tests.experiment.scripted import experiment_dict, fleet_dict
from tests.extensions import (  # noqa: F401 - importing registers them
    backend_dict,
    condition_reversed,
    strategy_newest,
)
from tests.memory.test_api import Label, _record


def test_a_new_condition_and_a_new_strategy_run_in_an_experiment(tmp_path: Path) -> None:
    data = experiment_dict(tmp_path, ["vanilla", "memcollab", "memcollab-reversed", "newest"])
    data["condition"] = {"newest": {"kind": "memcollab", "retrieval": "newest", "p": 1}}
    experiment = Experiment(parse_experiment(data), Gateway(None), Fleet.from_dict(fleet_dict()))
    experiment.run(lambda event: None)
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    by = {(r["task_id"], r["model"], r["condition"]): r for r in rows}
    tasks = {r["task_id"] for r in rows}
    for t in tasks:
        plain, rev = by[(t, "wrong", "memcollab")], by[(t, "wrong", "memcollab-reversed")]
        assert rev["record_ids"] == plain["record_ids"] and rev["correct"]
        newest = by[(t, "wrong", "newest")]
        assert len(newest["record_ids"]) == 1 and newest["correct"]
    with Memory.open(tmp_path / "out" / "memory.sqlite") as memory:
        records = memory.list("memcollab.by.right")
        latest = max(records, key=lambda r: (r.created_at, r.id))
        task = Task(id="q", domain="math", prompt="Add three and one.")
        found = memory.search(task, namespace="memcollab.by.right", strategy="newest", p=1)
        assert found.record_ids == (latest.id,)


def test_a_new_storage_backend_serves_the_whole_memory_api(tmp_path: Path) -> None:
    with pytest.raises(MemoryNotFoundError, match="no memory at dict://scenario"):
        Memory.open("dict://scenario", create=False)
    with Memory.open("dict://scenario") as memory:
        assert memory.add(_record(1, text="area of a right triangle with legs"))
        assert memory.add(_record(2, text="perimeter of an isosceles triangle"))
        task = Task(id="q", domain="math", prompt="the perimeter of a right triangle")
        found = memory.search(task, label=Label("Geometry", "triangles"), p=2)
        assert found.record_ids == ("r2", "r1") and found.level == "subcategory"
        assert memory.flag("r2", "test")
        found = memory.search(task, label=Label("Geometry", "triangles"), p=2)
        assert found.record_ids == ("r1",)  # the retriever saw the version change
        assert memory.export(tmp_path / "m.jsonl") == 2
    with Memory.open(tmp_path / "copy.sqlite") as copy:
        assert copy.import_(tmp_path / "m.jsonl").added == 2
    changed = _record(1, text="changed text")
    (tmp_path / "bad.jsonl").write_text(changed.model_dump_json() + "\n")
    with Memory.open("dict://scenario", create=False) as memory:
        with pytest.raises(MemoryConflictError):
            memory.import_(tmp_path / "bad.jsonl")
        assert memory.import_(tmp_path / "bad.jsonl", on_conflict="replace").replaced == 1
        assert memory.get("r1").task_text == "changed text 1"


def _choice_rules(answer: str, with_memory: str | None = None) -> dict[str, str]:
    rules = {
        "reusable reasoning rules": (
            "1. When two options look alike, enforce checking each against the question;"
            " avoid picking the first plausible option."
        ),
        "Which topic fits it best?": "physics",
        "Which category": "Science",
    }
    if with_memory is not None:
        rules["<memory>"] = with_memory
    rules[""] = answer
    return rules


@pytest.fixture
def registries_restored() -> Iterator[None]:
    """The domain and loader registries as they were before the test: a domain registered
    here would otherwise stay for the rest of the session (an LLM labeller, for one, keeps
    counters for every registered domain)."""
    domains, loaders = dict(DOMAINS), dict(LOADERS)
    yield
    DOMAINS.clear()
    DOMAINS.update(domains)
    LOADERS.clear()
    LOADERS.update(loaders)


@pytest.mark.usefixtures("registries_restored")
def test_a_benchmark_of_a_new_kind_runs_through_memory_and_an_experiment(
    tmp_path: Path,
) -> None:
    from tests.extensions import domain_choice  # noqa: F401 - registers domain and loader

    data = tmp_path / "data" / "choice"
    data.mkdir(parents=True)
    for split, n in (("train", 3), ("test", 2)):
        rows = [
            {"id": f"{split}{i}", "question": f"Which force is meant, {split} {i}?"}
            | {"options": ["gravity", "friction", "tension"], "answer": "B"}
            for i in range(n)
        ]
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fleet = {
        "models": {
            "right": {"provider": "scripted", "strength": 2, "rules": _choice_rules("Answer: B")},
            "wrong": {
                "provider": "scripted",
                "strength": 1,
                "rules": _choice_rules("It is (C).", "With the rule: Answer: B"),
            },
        }
    }
    config = parse_experiment(
        {
            "name": "choice",
            "out": str(tmp_path / "out"),
            "data_dir": str(tmp_path / "data"),
            "agent": {"max_turns": 2},
            "train": {"tasks": ["choice:train"]},
            "eval": {"choice": "choice:test"},
            "conditions": ["vanilla", "memcollab"],
        }
    )
    experiment = Experiment(config, Gateway(None), Fleet.from_dict(fleet))
    experiment.run(lambda event: None)
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    verdict = {(r["task_id"], r["model"], r["condition"]): r["correct"] for r in rows}
    assert len(verdict) == 2 * 2 * 2
    for task in ("choice/test0", "choice/test1"):
        assert verdict[(task, "right", "vanilla")] and verdict[(task, "right", "memcollab")]
        assert not verdict[(task, "wrong", "vanilla")]  # it answers C, and is nudged twice
        assert verdict[(task, "wrong", "memcollab")]  # the memory block turns it right
    with Memory.open(tmp_path / "out" / "memory.sqlite") as memory:
        records = memory.list("memcollab.by.right")
        assert len(records) == 3
        assert {(r.domain, r.category, r.subcategory) for r in records} == {
            ("choice", "Science", "physics")
        }
