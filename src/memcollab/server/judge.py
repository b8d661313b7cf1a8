"""Server-side judging for POST /v1/feedback: an attempt whose task id is a benchmark task
the service can load (e.g. `gsm8k/test/12`, `mbpp/11`, `humaneval/64`) is judged by the
task's domain checker, so a client need not say the verdict.

The task is found by its id's first part (the dataset) among the loaders' splits, read from
the service's data directory (`serve --data-dir`, else MEMCOLLAB_DATA_DIR, else the
default that `memcollab data get` fills) and kept per split. The answer judged is the
attempt's `answer` (an empty one included: judged incorrect), else its last assistant
message: a math reply as it is (the checker
takes its final answer), a code reply's last Python block run against the task's hidden
tests in the sandbox (as the agent's final check does).
"""

from __future__ import annotations

import threading
from pathlib import Path

from memcollab.domains import get_domain, python_blocks
from memcollab.errors import UserError
from memcollab.server.attempts import Attempt, Verdict
from memcollab.tasks.datasets import DataError, load_tasks
from memcollab.tasks.sandbox import SandboxLimits
from memcollab.tasks.task import Task

SPLITS = {
    "gsm8k": ("gsm8k:train", "gsm8k:test"),
    "math": ("math:train",),
    "math500": ("math500:test",),
    "mbpp": ("mbpp:train", "mbpp:validation", "mbpp:test", "mbpp:prompt"),
    "humaneval": ("humaneval:all",),
}
"""Dataset (a task id's first part) -> the specs whose tasks may carry that id."""


class JudgeError(UserError):
    """An attempt the service cannot judge (no verdict given and no known task)."""


class TaskJudge:
    """Finds benchmark tasks by id and judges an attempt's answer with their checker."""

    def __init__(self, data_dir: str | Path | None = None) -> None:
        self.data_dir = data_dir
        self._tasks: dict[str, dict[str, Task]] = {}
        self._lock = threading.Lock()

    def task(self, task_id: str) -> Task:
        """The benchmark task with this id; JudgeError when no loader holds it."""
        dataset = task_id.split("/", 1)[0]
        for spec in SPLITS.get(dataset, ()):
            found = self._split(spec).get(task_id)
            if found is not None:
                return found
        raise JudgeError(
            f"task {task_id!r} is not a benchmark task the service can judge",
            "give the verdict yourself, or use a task id such as gsm8k/test/12 or mbpp/11",
        )

    def _split(self, spec: str) -> dict[str, Task]:
        with self._lock:
            if spec not in self._tasks:
                try:
                    tasks = load_tasks(spec, self.data_dir)
                except DataError as exc:
                    raise JudgeError(
                        f"the service cannot read {spec} to judge with: {exc.problem}",
                        "start it with --data-dir (memcollab data get fills the default)",
                    ) from None
                self._tasks[spec] = {t.id: t for t in tasks}
            return self._tasks[spec]

    def judge(self, attempt: Attempt) -> Verdict:
        """correct / incorrect for the attempt's answer on its task."""
        task = self.task(attempt.task_id)
        # An answer that is empty ("", a model that said nothing) is a reply, judged (wrong)
        # like any other; only an attempt with no answer and no assistant turn is an error.
        reply = attempt.answer if attempt.answer is not None else _last_assistant(attempt)
        if reply is None:
            raise JudgeError(f"attempt {attempt.id!r} holds no answer to judge")
        if task.domain == "code":
            blocks = python_blocks(reply)
            final: str | None = blocks[-1] if blocks else None
        else:
            final = reply
        result = get_domain(task.domain).check(task, final, SandboxLimits())
        return "correct" if result.correct else "incorrect"


def _last_assistant(attempt: Attempt) -> str | None:
    for message in reversed(attempt.messages or []):
        content = message.get("content") if isinstance(message, dict) else None
        if message.get("role") == "assistant" and isinstance(content, str):
            return content
    return None
