"""Judge a run's stored trajectories again with the current checkers.

A run keeps the verdict its checker gave when each trajectory was made. After a checker
changes (run 2's math deadline moved from wall time to CPU time), `recheck` says whether any
stored verdict would now be different, and how many stored verdicts were timeouts (verdicts
that load on the machine could flip).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from memcollab.tasks.checkers import check
from memcollab.tasks.task import Task
from memcollab.trajectory import Trajectory


@dataclass(frozen=True)
class Disagreement:
    """One stored verdict the current checker would give differently."""

    key: tuple[str, str, str, int]
    stored: bool
    stored_details: dict[str, Any]
    now: bool
    now_details: dict[str, Any]


@dataclass
class RecheckResult:
    """Counts per (domain, model), and every disagreement."""

    checked: Counter[tuple[str, str]] = field(default_factory=Counter)
    stored_timeouts: Counter[tuple[str, str]] = field(default_factory=Counter)
    disagreements: list[Disagreement] = field(default_factory=list)


def was_timeout(details: dict[str, Any]) -> bool:
    """Whether a stored check ran out of time (math: `reason`; code: sandbox `status`)."""
    return details.get("status") == "timeout" or details.get("reason") == "timeout"


def recheck(
    trajectories: Iterable[Trajectory], tasks: dict[str, Task], domain: str | None = None
) -> RecheckResult:
    """Check every trajectory's final answer again (only `domain`'s, when given)."""
    result = RecheckResult()
    for trajectory in trajectories:
        if domain is not None and trajectory.domain != domain:
            continue
        group = (trajectory.domain, trajectory.model)
        result.checked[group] += 1
        if was_timeout(trajectory.check):
            result.stored_timeouts[group] += 1
        verdict = check(tasks[trajectory.task_id], trajectory.final_answer)
        if verdict.correct != trajectory.correct:
            result.disagreements.append(
                Disagreement(
                    trajectory.key(),
                    trajectory.correct,
                    trajectory.check,
                    verdict.correct,
                    verdict.details,
                )
            )
    return result
