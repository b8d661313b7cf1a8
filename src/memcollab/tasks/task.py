"""The Task record: one problem with what its checker needs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

Domain = Literal["math", "code"]


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
