"""Extension scenario "a retrieval strategy": this one file (registration included).

`newest`: the p most recent records of the task's category (no text ranking), e.g. for a
memory whose newest lessons matter most.
"""

from __future__ import annotations

from memcollab.memory import Hit, register_strategy
from memcollab.memory.guidance import LabelLike
from memcollab.memory.retrieve import Level, Retrieved, Retriever
from memcollab.tasks.task import Task


@register_strategy("newest")
def newest(
    retriever: Retriever, task: Task, label: LabelLike | None, model: str | None
) -> Retrieved:
    """The p newest records of the label's category (the whole domain without a label)."""
    category = label.category if label is not None else None
    records = retriever.store.records(retriever.namespace, task.domain, category)
    chosen = sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)[: retriever.p]
    level: Level = "category" if category is not None else "domain"
    return retriever.result([Hit(r, 0.0, level) for r in chosen], level, label)
