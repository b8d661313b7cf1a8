"""What memory hands an agent, and the labeller protocol both records and queries are filed by.

These live in the memory package (not the agent loop) so that memory never imports the
agent: the agent imports `Guidance` from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from memcollab.tasks.task import Task

UNLABELLED = "unlabelled"
"""The category and subcategory name of a label that abstained (`memory.labeller`).

A record so labelled is filed under it; a query so labelled is searched by task-aware
retrieval over its whole domain (category abstained) or its category (subcategory
abstained). The LLM classifier never returns it (unless a taxonomy of yours has
a category of that name).
"""


@dataclass(frozen=True)
class Guidance:
    """One memory constraint handed to the agent, with the record it came from."""

    record_id: str
    text: str


class LabelLike(Protocol):
    """A (category, subcategory) label, as a labeller returns it."""

    @property
    def category(self) -> str: ...

    @property
    def subcategory(self) -> str: ...


class Labeller(Protocol):
    """Anything that files a task under a (category, subcategory) of its domain's taxonomy.

    Built in: `memcollab.memory.classify.DomainClassifier` (an LLM picks the options; the
    default) and `memcollab.memory.labeller.TrainedLabeller` (a trained, deterministic
    classifier that may abstain: `UNLABELLED`); `make_labeller` picks one by name. The
    memory build labels records with it and retrieval labels queries with it.
    """

    def classify(self, task: Task) -> LabelLike: ...
