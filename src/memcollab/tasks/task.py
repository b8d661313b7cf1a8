"""The Task record: one problem with what its checker needs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

Domain = str
"""The name of a registered domain (`memcollab.domains`): built in, "math" and "code"."""


def known_domain(name: str) -> str:
    """`name` if a domain is registered under it; else a ValueError naming the known ones
    (pydantic turns it into a validation error of the field)."""
    from memcollab.domains import DOMAINS  # registers the built-in domains

    if name not in DOMAINS:
        raise ValueError(f"unknown domain {name!r} (registered: {', '.join(sorted(DOMAINS))})")
    return name


class Task(BaseModel):
    """One problem.

    Math tasks carry a reference `answer`. Code tasks carry hidden `tests` (each a Python
    snippet that raises on failure: an `assert ...` line, or HumanEval's `check` program),
    the `visible_tests` the agent may see and run, the `entry_point` function name, and
    `setup_code` run before the tests. `metadata` holds dataset facts (dataset, split,
    subject, level, source id).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    domain: Domain
    prompt: str
    answer: str | None = None
    tests: tuple[str, ...] = ()
    visible_tests: tuple[str, ...] = ()
    entry_point: str | None = None
    setup_code: str = ""
    metadata: dict[str, str | int] = {}

    @field_validator("domain")
    @classmethod
    def _known_domain(cls, value: str) -> str:
        return known_domain(value)
