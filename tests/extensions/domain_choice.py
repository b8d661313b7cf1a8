"""Extension scenario "a benchmark of a new kind": this file (domain + loader, both
registered) and its taxonomy, choice_taxonomy.toml.

Multiple-choice questions: the model answers with one letter ("Answer: B"); a reply
without one gets a nudge; the letter is judged against the reference. Tasks come from a
JSONL file of {"id", "question", "options": [...], "answer": "B"} rows under
DATA_DIR/choice/SPLIT.jsonl, as the spec `choice:SPLIT`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from memcollab.domains import Domain, Reaction, register_domain
from memcollab.tasks.checkers import CheckResult
from memcollab.tasks.datasets import DataError, register_loader
from memcollab.tasks.sandbox import CodeRunner, SandboxLimits
from memcollab.tasks.task import Task

_ANSWER = re.compile(r"answer\s*(?:is)?\s*[:=]?\s*\(?([A-E])\)?\b", re.IGNORECASE)
TAXONOMY = str(Path(__file__).with_name("choice_taxonomy.toml"))


class ChoiceDomain(Domain):
    """Multiple-choice questions judged by the chosen letter."""

    name = "choice"
    taxonomy = TAXONOMY

    def prompts(self) -> dict[str, str]:
        return {
            "system": "Answer the multiple-choice question. Think briefly, then end with"
            " 'Answer: X' where X is the letter of your choice.",
            "user": "{prompt}",
            "nudge": "End with 'Answer: X', X being one letter.",
        }

    def react(self, task: Task, reply: str, runner: CodeRunner, limits: SandboxLimits) -> Reaction:
        found = _ANSWER.findall(reply)
        if found:
            return Reaction(None, "", True, found[-1].upper())
        return Reaction(None, self.prompts()["nudge"], False, None)

    def check(self, task: Task, final: str | None, limits: SandboxLimits) -> CheckResult:
        if final is None:
            return CheckResult(False, {"reason": "no_answer"})
        return CheckResult(final == task.answer, {"chosen": final, "reference": task.answer})


register_domain(ChoiceDomain())


@register_loader("choice")
def load_choice(root: Path | None, split: str | None) -> list[Task]:
    """DATA_DIR/choice/SPLIT.jsonl as tasks of the choice domain."""
    if root is None:
        raise DataError("choice needs a data directory", "pass --data-dir")
    path = root / "choice" / f"{split or 'test'}.jsonl"
    tasks = []
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        options = "\n".join(f"({chr(65 + i)}) {o}" for i, o in enumerate(row["options"]))
        prompt = f"{row['question']}\n{options}"
        tasks.append(
            Task(id=f"choice/{row['id']}", domain="choice", prompt=prompt, answer=row["answer"])
        )
    return tasks
