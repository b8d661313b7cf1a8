"""The experiment pipeline once on a real model: Gemma 3 270M through llama.cpp.

Two fleet entries share the one GGUF file and differ in strength and seed, so there are
two "models" to contrast; with a model this small every task may fail for both, so the
memory pairs all-wrong tasks too (`tie_break`). Two HumanEval training tasks build the
memory, two held-out tasks are evaluated under vanilla and memcollab.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memcollab.experiment.config import parse_experiment
from memcollab.experiment.report import write_report
from memcollab.experiment.runner import Experiment
from memcollab.llm.cache import Gateway
from memcollab.llm.fleet import Fleet
from memcollab.memory.store import SQLiteMemory

pytestmark = pytest.mark.live


def test_experiment_end_to_end_on_gemma(gemma_path: Path, tmp_path: Path) -> None:
    common = {"provider": "llamacpp", "path": str(gemma_path), "n_ctx": 2048, "batch_width": 4}
    fleet = Fleet.from_dict(
        {
            "models": {
                "gemma-a": {**common, "strength": 2, "decoding": {"max_tokens": 96}},
                "gemma-b": {
                    **common,
                    "strength": 1,
                    "decoding": {"max_tokens": 96, "temperature": 0.8, "seed": 5},
                },
            }
        }
    )
    config = parse_experiment(
        {
            "name": "live",
            "out": str(tmp_path / "out"),
            "agent": {"max_turns": 1},
            "train": {"tasks": ["humaneval:train[:2]"]},
            "memory": {"tie_break": True, "prompt_chars": 3000, "reply_tokens": 128},
            "eval": {"humaneval": "humaneval:test[:2]"},
            "conditions": ["vanilla", "memcollab"],
        }
    )
    experiment = Experiment(config, Gateway(None), fleet)
    part = experiment.run()
    assert part["finished"]
    assert part["phases"]["train"]["computed"] == 4
    out = tmp_path / "out"
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2  # tasks x models x conditions
    assert {r["condition"] for r in rows} == {"vanilla", "memcollab"}
    assert all(r["turns"] == 1 and r["completion_tokens"] > 0 for r in rows)
    summary = json.loads((out / "build_summary.json").read_text())
    built = summary["memcollab.by.gemma-a"]
    assert built["pairing"]["pairs"] == 2  # both tasks paired (mixed or tie-break)
    with SQLiteMemory(out / "memory.sqlite") as memory:
        records = memory.records("memcollab.by.gemma-a")
    assert len(records) == built["records"] == built["records_added"]
    memcollab_rows = [r for r in rows if r["condition"] == "memcollab"]
    if records:  # the querying model's label decides the level; some record is returned
        assert all(r["constraints"] > 0 for r in memcollab_rows)
    text, plots = write_report(out)
    assert "## Accuracy (%)" in text and len(plots) == 2
