"""What memory hands an agent, and the labeller protocol both records and queries are filed by.

These live in the memory package (not the agent loop) so that memory never imports the
agent: the agent imports `Guidance` from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from memcollab.tasks.task import Task


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

    `memcollab.memory.classify.DomainClassifier` (an LLM picks the options) is the built-in
    one; the memory build labels records with it and retrieval labels queries with it.
    """

    def classify(self, task: Task) -> LabelLike: ...
