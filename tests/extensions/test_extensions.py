"""The extension scenarios of docs/EXTENDING.md, each done from its own file(s) here and
used through the public surfaces (an experiment, `Memory`, a fleet file)."""

from __future__ import annotations

import json
from pathlib import Path

from memcollab.experiment.config import parse_experiment
from memcollab.experiment.runner import Experiment
from memcollab.llm.cache import Gateway
from memcollab.llm.fleet import Fleet
from memcollab.memory import Memory
from memcollab.tasks.task import Task
from tests.experiment.scripted import experiment_dict, fleet_dict
from tests.extensions import condition_reversed, strategy_newest  # noqa: F401 - registers


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
