"""Which rows the trained labeller learns from, and which rows it must never see.

Only train files are read (math/train.jsonl, gsm8k/train.jsonl); evaluation files never.
With the default `Splits`:

- project development slices: the last 500 rows of math/train.jsonl and of
  gsm8k/train.jsonl (issue 26's rule: thresholds and rules are chosen there). Never
  trained on; the GSM8K tail is where the labeller's grade-school recall is measured.
- the labeller's own held-out MATH rows: 800 rows drawn with seed 26 from the rest of
  math/train.jsonl (math/train.jsonl is ordered by subject, so its tail is all Precalculus
  and cannot measure category accuracy). The first 300 drawn are the tuning slice (the
  abstain thresholds are chosen there), the other 500 the development slice (accuracy is
  reported there, by benchmarks/labeller_accuracy.py). Never trained on.
- training rows: every other MATH train row, labelled by its `type` (a MATH subject, which
  is a category of taxonomies/math-v2.toml), and 1,500 GSM8K train rows drawn with seed 26
  from the rows before the tail, labelled "Grade-school word problems".
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from memcollab.errors import UserError
from memcollab.tasks.datasets import DataError, data_dir, load_tasks
from memcollab.tasks.task import Task

GRADE_SCHOOL = "Grade-school word problems"
FILES = ("math/train.jsonl", "gsm8k/train.jsonl")


class LabellerDataError(UserError):
    """The trained labeller cannot read or use its training files."""


@dataclass(frozen=True)
class Splits:
    """How the train files are split (the defaults are the labeller's; tests shrink them)."""

    dev_tail: int = 500  # the project's development slice at the end of each train file
    tune: int = 300  # MATH rows drawn to choose thresholds
    dev: int = 500  # MATH rows drawn to report accuracy
    gsm8k_rows: int = 1500  # GSM8K rows trained on (at most)
    seed: int = 26


@dataclass
class LabellerData:
    """Training texts with their categories, and the held-out slices (as tasks)."""

    texts: list[str]
    labels: list[str]
    tune: list[Task]
    dev: list[Task]
    math_tail: list[Task]
    gsm8k_tail: list[Task]
    counts: dict[str, int] = field(default_factory=dict)

    def held_out_ids(self) -> set[str]:
        """Ids of every row the labeller was not trained on, and must not be."""
        return {t.id for t in self.tune + self.dev + self.math_tail + self.gsm8k_tail}


def _load(spec: str, root: Path) -> list[Task]:
    try:
        return load_tasks(spec, root)
    except DataError as exc:
        raise LabellerDataError(
            f"the trained labeller cannot read its training data: {exc.problem}",
            f"point the data directory at a folder holding {' and '.join(FILES)}",
        ) from None


def resolve_data_dir(explicit: str | Path | None) -> Path:
    """The data directory the labeller trains from (explicit, else MEMCOLLAB_DATA_DIR, else
    the default data directory)."""
    root = data_dir(explicit)
    missing = [name for name in FILES if not (root / name).is_file()]
    if missing:
        raise LabellerDataError(
            f"the trained labeller needs {', '.join(str(root / m) for m in missing)},"
            " which does not exist",
            f"point the data directory (--data-dir / MEMCOLLAB_DATA_DIR) at a folder holding"
            f" {' and '.join(FILES)}, or download them: memcollab data get gsm8k math",
        )
    return root


def labeller_data(root: str | Path | None, splits: Splits = Splits()) -> LabellerData:
    """Read the train files and split them (see the module docstring)."""
    path = resolve_data_dir(root)
    math = _load("math:train", path)
    gsm8k = _load("gsm8k:train", path)
    head = len(math) - splits.dev_tail
    gsm8k_head = len(gsm8k) - splits.dev_tail
    if head < splits.tune + splits.dev + 1 or gsm8k_head < 1:
        raise LabellerDataError(
            f"too few rows to train the labeller: {len(math)} MATH and {len(gsm8k)} GSM8K"
            f" train rows, of which the last {splits.dev_tail} of each are held out",
            "use the full MATH and GSM8K train files",
        )
    rng = random.Random(splits.seed)
    held = rng.sample(range(head), splits.tune + splits.dev)
    held_set = set(held)
    train = [math[i] for i in range(head) if i not in held_set]
    chosen = sorted(
        random.Random(splits.seed).sample(range(gsm8k_head), min(splits.gsm8k_rows, gsm8k_head))
    )
    labels = [str(t.metadata.get("subject", "")) for t in train]
    data = LabellerData(
        texts=[t.prompt for t in train] + [gsm8k[i].prompt for i in chosen],
        labels=labels + [GRADE_SCHOOL] * len(chosen),
        tune=[math[i] for i in held[: splits.tune]],
        dev=[math[i] for i in held[splits.tune :]],
        math_tail=math[head:],
        gsm8k_tail=gsm8k[gsm8k_head:],
    )
    data.counts = {"math_train": len(train), "gsm8k_train": len(chosen)}
    return data
