"""The material of the screen study (issue 26): the committed memory's pairs, and new pairs.

Both come from the committed experiment's TRAINING trajectories (benchmarks/results/paper/
trajectories/train, restored into runs/paper/train by scripts/restore_paper_run.sh):

* `paper_pairs`: the 169 contrastive pairs the committed memory
  memcollab.by.qwen2.5-coder-1.5b was distilled from (its distillations are in the
  committed calls, so replaying them costs no model call);
* `own_pairs`: the 300 single-trajectory pairs of the committed memory
  own.qwen2.5-coder-1.5b.by.qwen2.5-coder-1.5b (same distiller, recorded calls too; the
  v2 rules were written on the first memory only, so this one is held out);
* `new_pairs`: mixed pairs the committed run never distilled: for a task with several
  right and several wrong trajectories, the (right, wrong) model combinations other than
  the one the pairing rule chose. `draw` of them per source (gsm8k, math, mbpp), drawn
  with a fixed seed from the sorted list.

The distiller is set up as the committed run set it up (experiment.toml: k = 3,
prompt_chars = 4000, reply_tokens = 200; temperature 0), so the paper pairs' requests are
the recorded ones. The library does the work; this file only picks pairs.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from memcollab.collect import TrajectoryStore
from memcollab.llm.base import Decoding
from memcollab.llm.cache import ModelClient
from memcollab.llm.fleet import Fleet
from memcollab.memory import Memory, PairingRule
from memcollab.memory.distill import Distiller
from memcollab.memory.pairs import Pair
from memcollab.tasks.task import Task
from memcollab.trajectory import Trajectory

ROOT = Path(__file__).resolve().parent.parent
TRAIN_RUNS = ROOT / "runs" / "paper" / "train"
DISTILLER = "qwen2.5-coder-1.5b"
NEW_PAIRS_SEED = 26
SOURCES = ("gsm8k", "math", "mbpp")


def training() -> tuple[list[Trajectory], dict[str, Task], dict[str, int]]:
    """The committed run's training trajectories, their tasks, and the fleet strengths."""
    store = TrajectoryStore.open_existing(TRAIN_RUNS)
    trajectories = [t for t in store if t.condition == "vanilla"]
    fleet = Fleet.default()
    strengths = {m: fleet.spec(m).strength for m in sorted({t.model for t in trajectories})}
    return trajectories, store.tasks(), strengths


def paper_pairs(trajectories: list[Trajectory], strengths: dict[str, int]) -> list[Pair]:
    """The pairs of the committed memory (contrastive, no tie-break)."""
    return list(Memory.pairs(trajectories, PairingRule("contrastive"), strengths).pairs)


def own_pairs(trajectories: list[Trajectory], strengths: dict[str, int]) -> list[Pair]:
    """The pairs of the committed memory own.qwen2.5-coder-1.5b.by.qwen2.5-coder-1.5b: the
    distiller's own trajectories, one per task (own_success / own_failure)."""
    rule = PairingRule("own", model=DISTILLER)
    return list(Memory.pairs(trajectories, rule, strengths).pairs)


def new_pairs(trajectories: list[Trajectory], strengths: dict[str, int], draw: int) -> list[Pair]:
    """Mixed pairs the committed run did not distil, `draw` per source, seeded."""
    used = {(p.task_id, p.model_pos, p.model_neg) for p in paper_pairs(trajectories, strengths)}
    by_task: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        by_task[t.task_id].append(t)
    pool: dict[str, list[Pair]] = defaultdict(list)
    for task_id, ts in sorted(by_task.items()):
        right = sorted((t for t in ts if t.correct), key=lambda t: t.model)
        wrong = sorted((t for t in ts if not t.correct), key=lambda t: t.model)
        for pos in right:
            for neg in wrong:
                if (task_id, pos.model, neg.model) not in used:
                    pair = Pair(task_id, pos, neg, pos.model, neg.model, "mixed")
                    pool[task_id.split("/")[0]].append(pair)
    rng = random.Random(NEW_PAIRS_SEED)
    drawn: list[Pair] = []
    for source in SOURCES:
        drawn.extend(rng.sample(pool[source], min(draw, len(pool[source]))))
    return drawn


def paper_distiller(client: ModelClient, screen: str = "v1") -> Distiller:
    """The distiller as the committed run configured it (experiment.toml [memory])."""
    return Distiller(
        client,
        max_constraints=3,
        max_prompt_chars=4000,
        decoding=Decoding(temperature=0.0, max_tokens=200),
        **({} if screen == "v1" else {"screen": screen}),  # type: ignore[arg-type]
    )
