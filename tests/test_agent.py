"""The solve loop on the scripted model: turns, tools, visible checks, memory, records."""

from collections.abc import Sequence
from dataclasses import dataclass, field

from memcollab.agent import MEMORY_CLOSE, MEMORY_OPEN, Agent, Guidance, python_blocks
from memcollab.llm.base import ChatRequest
from memcollab.llm.cache import Gateway
from memcollab.llm.scripted import ScriptedModel
from memcollab.tasks.sandbox import CodeRunner, ExecResult, SandboxLimits, TestVerdict
from memcollab.tasks.task import Task
from memcollab.trajectory import Trajectory

MATH = Task(id="t/math", domain="math", prompt="What is 6 * 7?", answer="42")
GSM = Task(
    id="t/gsm", domain="math", prompt="How many?", answer="18", metadata={"answer_style": "gsm8k"}
)
CODE = Task(
    id="t/code",
    domain="code",
    prompt="Write add(a, b).\nassert add(1, 2) == 3",
    tests=("assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"),
    visible_tests=("assert add(1, 2) == 3",),
    entry_point="add",
)
LIMITS = SandboxLimits(wall_s=10)


def agent(responses: list[str], max_turns: int = 5) -> tuple[Agent, ScriptedModel]:
    model = ScriptedModel(responses, name="scripted")
    return Agent(Gateway(None).bind(model), max_turns=max_turns, limits=LIMITS), model


def test_math_tool_call_then_boxed_answer() -> None:
    solver, model = agent(["Let me compute.\n```python\nprint(6 * 7)\n```", "So \\boxed{42}."])
    t = solver.solve(MATH)
    assert (t.correct, t.turns, t.finish) == (True, 2, "answer")
    assert t.steps[0].tool is not None and t.steps[0].tool.output == "42"
    assert "Output of your code" in model.requests[1].messages[-1].content
    assert "42" in model.requests[1].messages[-1].content
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "user", "assistant"]


def test_gsm8k_style_final_answer() -> None:
    solver, _ = agent(["She has 9 + 9 = 18 eggs.\n#### 18"])
    t = solver.solve(GSM)
    assert t.correct and t.turns == 1


def test_no_answer_runs_to_max_turns_with_nudges() -> None:
    solver, model = agent(["hmm", "still thinking", "no idea"], max_turns=3)
    t = solver.solve(MATH)
    assert (t.correct, t.turns, t.finish, t.final_answer) == (False, 3, "max_turns", None)
    assert t.check["reason"] == "no_answer"
    assert "\\boxed" in model.requests[1].messages[-1].content
    assert t.steps[-1].feedback is None  # nothing is sent after the last turn


def test_code_failure_is_fed_back_then_fixed() -> None:
    wrong = "```python\ndef add(a, b):\n    return a - b\n```"
    right = "```python\ndef add(a, b):\n    return a + b\n```"
    solver, model = agent([wrong, right])
    t = solver.solve(CODE)
    assert (t.correct, t.turns, t.finish) == (True, 2, "answer")
    feedback = model.requests[1].messages[-1].content
    assert "assert add(1, 2) == 3" in feedback
    assert t.check["passed_tests"] == 3


def test_passing_visible_but_failing_hidden_tests_is_wrong() -> None:
    overfit = "```python\ndef add(a, b):\n    return 3\n```"
    solver, _ = agent([overfit])
    t = solver.solve(CODE)
    assert (t.finish, t.turns, t.correct) == ("answer", 1, False)
    assert t.check["status"] == "failed"
    assert "add(-1, 1)" in t.check["failed_test"]


def test_memory_enters_one_delimited_block_and_is_recorded() -> None:
    solver, model = agent(["\\boxed{42}"])
    guidance = [
        Guidance("rec-1", "When multiplying, enforce a check; avoid guessing."),
        Guidance("rec-2", "When stuck, enforce small cases; avoid leaps."),
    ]
    t = solver.solve(MATH, guidance, condition="memcollab")
    system_prompt = model.requests[0].messages[0].content
    assert system_prompt.count(MEMORY_OPEN) == 1 and system_prompt.count(MEMORY_CLOSE) == 1
    block = system_prompt[system_prompt.index(MEMORY_OPEN) :]
    assert "1. When multiplying" in block and "2. When stuck" in block
    assert t.memory_ids == ("rec-1", "rec-2") and t.condition == "memcollab"
    assert MEMORY_OPEN not in agent(["\\boxed{42}"])[0].first_messages(MATH)[0].content


def test_trajectory_json_round_trip_is_exact() -> None:
    solver, _ = agent(["```python\nprint(1)\n```", "\\boxed{42}"])
    t = solver.solve(MATH, [Guidance("r", "When x, enforce y; avoid z.")])
    assert Trajectory.model_validate_json(t.model_dump_json()) == t


def test_context_overflow_ends_the_trajectory_as_an_error() -> None:
    from memcollab.errors import ContextOverflowError

    def overflow(request: ChatRequest) -> str:
        raise ContextOverflowError("too long")

    solver = Agent(Gateway(None).bind(ScriptedModel(overflow)), limits=LIMITS)
    t = solver.solve(MATH)
    assert (t.finish, t.correct, t.turns) == ("error", False, 0)
    assert t.error == "too long"


def test_python_blocks() -> None:
    text = "a\n```python\nx = 1\n```\nb\n```\ny = 2\n```\n```python\nz = 3"
    assert python_blocks(text) == ["x = 1\n", "y = 2\n", "z = 3"]


@dataclass
class RecordingRunner:
    """A CodeRunner that runs nothing: it records its calls and answers with canned results."""

    calls: list[tuple[object, ...]] = field(default_factory=list)

    def run_code(self, code: str, limits: SandboxLimits = LIMITS) -> ExecResult:
        self.calls.append(("run_code", code, limits))
        return ExecResult("ok", "from the fake runner\n", "", 0.01)

    def run_tests(
        self,
        candidate: str,
        tests: Sequence[str],
        setup_code: str = "",
        limits: SandboxLimits = LIMITS,
    ) -> TestVerdict:
        self.calls.append(("run_tests", candidate, tuple(tests), setup_code, limits))
        return TestVerdict("failed", 0, len(tests), "fake failing line", "fake error", 0.01)


def test_a_custom_code_runner_replaces_the_sandbox() -> None:
    runner = RecordingRunner()
    runner_view: CodeRunner = runner  # the fake satisfies the protocol (checked by mypy)
    model = ScriptedModel(["```python\nprint(6 * 7)\n```", "\\boxed{42}"], name="scripted")
    solver = Agent(Gateway(None).bind(model), limits=LIMITS, runner=runner_view)
    t = solver.solve(MATH)
    assert runner.calls == [("run_code", "print(6 * 7)\n", LIMITS)]
    assert t.steps[0].tool is not None and t.steps[0].tool.output == "from the fake runner"
    assert "from the fake runner" in model.requests[1].messages[-1].content

    code_model = ScriptedModel(["```python\ndef add(a, b):\n    return a + b\n```"] * 2)
    solver = Agent(Gateway(None).bind(code_model), max_turns=2, limits=LIMITS, runner=runner)
    t = solver.solve(CODE)
    candidate = "def add(a, b):\n    return a + b\n"
    visible = ("assert add(1, 2) == 3",)
    assert runner.calls[1:] == [("run_tests", candidate, visible, "", LIMITS)] * 2
    assert "fake failing line" in code_model.requests[1].messages[-1].content
    # The fake's "failed" kept the loop going; the hidden tests still ran in the real sandbox.
    assert (t.turns, t.finish, t.correct) == (2, "max_turns", True)
