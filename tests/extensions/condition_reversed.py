"""Extension scenario "a condition": this one file (registration included).

`memcollab-reversed`: memcollab's retrieval, with the constraints handed over in reverse
order (does the position of a constraint in the memory block matter?).
"""

from __future__ import annotations

from dataclasses import dataclass

from memcollab.experiment.conditions import MemCollab, register_condition


@register_condition("memcollab-reversed")
@dataclass(frozen=True)
class ReversedMemCollab(MemCollab):
    """memcollab's constraints, last first."""

    def guide(self, task, model, fleet, ctx):  # type: ignore[no-untyped-def]
        guidance, note = super().guide(task, model, fleet, ctx)
        return tuple(reversed(guidance)), {**note, "order": "reversed"}
