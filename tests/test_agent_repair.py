"""The solve loop's repair mode "live" on the scripted model: a failed assert's actual value
in the feedback, one seeded resample of a repeated candidate; "v1" exactly as before."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from memcollab.agent import Agent, fleet_agent, resample_seed
from memcollab.domains.code_repair import Probe, probe_targets
from memcollab.experiment.config import ExperimentConfigError, load_experiment, parse_experiment
from memcollab.experiment.runner import Experiment
from memcollab.llm.base import Decoding
from memcollab.llm.cache import Gateway
from memcollab.llm.fleet import Fleet
from memcollab.llm.scripted import ScriptedModel
from memcollab.tasks.sandbox import ExecResult, SandboxLimits, TestVerdict
from memcollab.tasks.task import Task
from memcollab.trajectory import Trajectory
from tests.experiment.scripted import experiment_dict, fleet_dict
from tests.test_cli import run_cli

CODE = Task(
    id="t/code",
    domain="code",
    prompt="Write add(a, b).\nassert add(1, 2) == 3",
    tests=("assert add(1, 2) == 3", "assert add(-1, 1) == 0"),
    visible_tests=("assert add(1, 2) == 3",),
    entry_point="add",
)
LIMITS = SandboxLimits(wall_s=10)
WRONG = "```python\ndef add(a, b):\n    return a - b\n```"
WRONG_SPACED = "Again:\n```python\ndef add(a,  b):\n\n    return a - b   \n```"
RIGHT = "```python\ndef add(a, b):\n    return a + b\n```"
V1_FEEDBACK = (
    "Your code did not pass an example test.\n"
    "Test: assert add(1, 2) == 3\n"
    "Traceback (most recent call last):\n"
    '  File "<test 1>", line 1, in <module>\n'
    "    assert add(1, 2) == 3\n"
    "AssertionError\n"
    "Fix the problem and reply with the complete corrected solution in one ```python block."
)


def agent(responses: list[str], repair: str = "live", max_turns: int = 4, **kw: object):  # type: ignore[no-untyped-def]
    model = ScriptedModel(responses, name="scripted")
    solver = Agent(
        Gateway(None).bind(model),
        max_turns=max_turns,
        limits=LIMITS,
        repair=repair,  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )
    return solver, model


def test_live_feedback_shows_what_the_failing_call_returned() -> None:
    solver, model = agent([WRONG, RIGHT])
    t = solver.solve(CODE)
    assert (t.correct, t.turns, t.resampled) == (True, 2, 0)
    feedback = model.requests[1].messages[-1].content
    assert "Test: assert add(1, 2) == 3\n`add(1, 2)` returned -1, but the test expects 3." in (
        feedback
    )
    assert "Do not send the same code again." in feedback
    assert t.steps[0].feedback == feedback
    assert t.steps[0].tool is not None and t.steps[0].tool.status == "failed"


def test_live_feedback_shows_an_exception_raised_inside_the_failing_call() -> None:
    own_assert = "```python\ndef add(a, b):\n    assert a > 5, 'too small'\n    return a + b\n```"
    solver, model = agent([own_assert, RIGHT])
    solver.solve(CODE)
    feedback = model.requests[1].messages[-1].content
    assert "`add(1, 2)` raised an exception:\nTraceback (most recent call last):" in feedback
    assert 'File "<candidate>", line 2, in add' in feedback
    assert "AssertionError: too small" in feedback
    assert "<snippet>" not in feedback  # the probe's own frames are left out


def test_live_feedback_values_are_clipped_and_sets_sorted() -> None:
    task = Task(
        id="t/big",
        domain="code",
        prompt="p",
        tests=("assert f(3) == 'x'", "assert g(12) == {'a'}"),
        visible_tests=("assert f(3) == 'x'", "assert g(12) == {'a'}"),
    )
    huge = "```python\ndef f(n):\n    return 'a' * 10**6\ndef g(n):\n    return set()\n```"
    solver, model = agent([huge, RIGHT], max_turns=2)
    solver.solve(task)
    line = next(x for x in model.requests[1].messages[-1].content.splitlines() if "`f(3)`" in x)
    assert len(line) < 400 and "..." in line
    sets = "```python\ndef f(n):\n    return 'x'\n"
    sets += "def g(n):\n    return {str(i) for i in range(n)}\n```"
    solver, model = agent([sets, RIGHT], max_turns=2)
    solver.solve(task)
    shown = "{'0', '1', '10', '11', '2', '3', '4', '5', '6', '7', '8', '9'}"
    assert f"`g(12)` returned {shown}, but the test expects {{'a'}}." in (
        model.requests[1].messages[-1].content
    )


@pytest.mark.parametrize(
    ("line", "probes"),
    [
        ("assert f(3) == 7", [Probe("f(3)", "7", True)]),
        ("assert 7 == f(3)", [Probe("f(3)", "7", True)]),
        ("assert f(3) == -1", [Probe("f(3)", "-1", True)]),
        ("assert f(3)[0] == 2", [Probe("f(3)[0]", "2", False)]),
        ("assert f(3) == g(4)", [Probe("f(3)", None, True), Probe("g(4)", None, True)]),
        ("assert f(3) < 2", [Probe("f(3)", None, True)]),
        ("assert not f(3)", [Probe("f(3)", None, True)]),
        ("assert math.isclose(f(3), 7.0, rel_tol=0.001)", [Probe("f(3)", None, True)]),
        ("assert is_prime(7)", [Probe("is_prime(7)", None, True)]),
        ("assert x", [Probe("x", None, False)]),
        ("assert 1 == 1", []),
        ("x = f(3)", []),
        ("assert f(3) == 7; assert f(4) == 8", []),
        ("assert f(3", []),
    ],
)
def test_probe_targets(line: str, probes: list[Probe]) -> None:
    assert probe_targets(line) == probes


@dataclass
class ForgingRunner:
    """A CodeRunner whose visible check fails and whose probe output is what a hostile or
    broken candidate might print (`reply` gets the probe's marker)."""

    reply: str
    status: str = "ok"
    failed_line: str = "assert add(1, 2) == 3"
    probes: list[str] = field(default_factory=list)

    def run_code(self, code: str, limits: SandboxLimits = LIMITS) -> ExecResult:
        self.probes.append(code)
        found = re.search(r"@@memcollab-probe-[0-9a-f]+@@", code)
        marker = found.group(0) if found else "?"
        return ExecResult(self.status, self.reply.replace("MARKER", marker), "", 0.01)  # type: ignore[arg-type]

    def run_tests(
        self,
        candidate: str,
        tests: Sequence[str],
        setup_code: str = "",
        limits: SandboxLimits = LIMITS,
    ) -> TestVerdict:
        return TestVerdict("failed", 0, len(tests), self.failed_line, "AssertionError", 0.01)


@pytest.mark.parametrize(
    ("reply", "status", "reason"),
    [
        ("nothing printed\n", "ok", "the program ended before showing it"),
        ("MARKER{not json\n", "ok", "its output was garbled"),
        ('MARKER[{"value": 5}]\n', "ok", "its output was garbled"),
        ('MARKER[{"value": "1"}, {"value": "2"}]\n', "ok", "its output was garbled"),
        ('MARKER[{"value": "1", "raised": "x"}]\n', "ok", "its output was garbled"),
        ('MARKER[{"value": "-1"}]\n', "timeout", "it did not finish within the time limit"),
    ],
)
def test_a_probe_without_a_usable_answer_keeps_the_v1_details_and_says_why(
    reply: str, status: str, reason: str
) -> None:
    runner = ForgingRunner(reply, status)
    solver, model = agent([WRONG, RIGHT], max_turns=2, runner=runner)
    solver.solve(CODE)
    feedback = model.requests[1].messages[-1].content
    assert (
        "Test: assert add(1, 2) == 3\nAssertionError\n"
        f"(The actual value could not be shown: {reason}.)" in feedback
    )
    assert len(runner.probes) == 1


def test_a_forged_probe_answer_is_shown_clipped_without_addresses() -> None:
    runner = ForgingRunner('junk MARKER[{"value": "<X object at 0xdeadbeef>' + "y" * 5000 + '"}]\n')
    solver, model = agent([WRONG, RIGHT], max_turns=2, runner=runner)
    solver.solve(CODE)
    line = model.requests[1].messages[-1].content.splitlines()[2]
    assert line.startswith("`add(1, 2)` returned <X object>yyy")
    assert "0xdeadbeef" not in line and len(line) < 400


def test_a_failing_line_that_is_no_visible_test_line_is_not_probed() -> None:
    runner = ForgingRunner('MARKER[{"value": "1"}]\n', failed_line="assert open('/x') == 1")
    solver, model = agent([WRONG, RIGHT], max_turns=2, runner=runner)
    solver.solve(CODE)
    assert runner.probes == []
    assert "could not be shown: the test is not a simple assert" in (
        model.requests[1].messages[-1].content
    )


def test_a_repeated_candidate_is_asked_once_more_seeded_and_counted() -> None:
    # turn 2 repeats turn 1 (whitespace aside); its resample repeats it again and is kept.
    solver, model = agent([WRONG, WRONG_SPACED, WRONG, RIGHT], max_turns=3)
    t = solver.solve(CODE)
    assert (t.correct, t.turns, t.finish) == (True, 3, "answer")
    assert len(model.requests) == 4  # exactly one resample
    greedy = solver.decoding
    resample = greedy.model_copy(update={"temperature": 0.7, "seed": resample_seed(CODE.id, 2)})
    assert [r.decoding for r in model.requests] == [greedy, greedy, resample, greedy]
    assert model.requests[2].messages == model.requests[1].messages
    assert [s.resampled for s in t.steps] == [False, True, False]
    assert t.resampled == 1
    assert t.steps[1].reply == WRONG  # the kept reply is the resample's
    assert t.steps[1].completion_tokens == len(WRONG_SPACED.split()) + len(WRONG.split())
    assert [m.content for m in t.messages if m.role == "assistant"] == [WRONG, WRONG, RIGHT]
    assert t.seed == greedy.seed  # the trajectory's seed stays the loop's own
    again = Trajectory.model_validate_json(t.model_dump_json())
    assert again == t and json.loads(t.model_dump_json())["resampled"] == 1


def test_a_changed_candidate_is_not_resampled_and_replies_without_code_are_not_compared() -> None:
    solver, model = agent(["no code", "no code", WRONG, RIGHT], max_turns=4)
    t = solver.solve(CODE)
    assert (t.correct, t.turns, t.resampled) == (True, 4, 0)
    assert all(r.decoding == solver.decoding for r in model.requests)


def test_resample_seed_is_reproducible_per_task_and_turn() -> None:
    assert resample_seed("mbpp/511", 2) == resample_seed("mbpp/511", 2)
    seeds = {resample_seed(task, turn) for task in ("mbpp/511", "mbpp/512") for turn in (2, 3)}
    assert len(seeds) == 4 and all(0 <= s < 2**31 for s in seeds)


def test_v1_is_unchanged() -> None:
    solver, model = agent([WRONG, WRONG_SPACED, RIGHT], repair="v1", max_turns=3)
    assert Agent(Gateway(None).bind(model)).repair == "v1"  # the default
    t = solver.solve(CODE)
    assert len(model.requests) == 3  # no resample
    assert all(r.decoding == Decoding() for r in model.requests)
    assert model.requests[1].messages[-1].content == V1_FEEDBACK
    assert model.requests[2].messages[-1].content == V1_FEEDBACK
    assert "resampled" not in t.model_dump_json()
    assert all("resampled" not in json.loads(s.model_dump_json()) for s in t.steps)
    assert t.resampled == 0


def test_a_trajectory_stored_before_the_field_loads() -> None:
    solver, _ = agent([RIGHT], repair="v1")
    stored = json.loads(solver.solve(CODE).model_dump_json())
    assert "resampled" not in stored
    assert Trajectory.model_validate(stored).resampled == 0


def test_unknown_repair_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown repair mode 'fix'"):
        agent([RIGHT], repair="fix")
    with pytest.raises(ValueError, match="resample_temperature"):
        agent([RIGHT], resample_temperature=0.0)


def test_experiment_agent_repair_reaches_the_agents(tmp_path: Path) -> None:
    raw = experiment_dict(tmp_path, ["vanilla"])
    plain = parse_experiment(raw)
    assert plain.agent.repair == "v1"
    assert "repair" not in plain.resolved_json()["agent"]  # plans of older runs stay equal
    live = parse_experiment({**raw, "agent": {**raw.get("agent", {}), "repair": "live"}})
    assert live.resolved_json()["agent"]["repair"] == "live"
    experiment = Experiment(live, Gateway(None), Fleet.from_dict(fleet_dict()))
    assert experiment.agent(experiment.info.models[0]).repair == "live"
    with pytest.raises(ExperimentConfigError, match="agent.repair"):
        parse_experiment({**raw, "agent": {"repair": "fix"}})


def test_fleet_agent_repair() -> None:
    fleet = Fleet.from_dict(fleet_dict())
    name = fleet.names()[0]
    assert fleet_agent(fleet, Gateway(None), name).repair == "v1"
    assert fleet_agent(fleet, Gateway(None), name, repair="live").repair == "live"


def test_cli_collect_repair_live(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        '[models.bot]\nprovider = "scripted"\n'
        'responses = ["```python\\ndef add(a, b):\\n    return a - b\\n```"]\n'
    )
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"id": "c1", "q": "add", "tests": ["assert add(1, 2) == 3"]}\n')
    spec = f"jsonl:{tasks}#domain=code,prompt=q,tests=tests,id=id"
    out = tmp_path / "out"
    args = ["collect", "-t", spec, "--fleet", str(fleet), "--out", str(out), "--no-cache"]
    result = run_cli(*args, "--max-turns", "2", "--repair", "live")
    assert result.returncode == 0, result.stderr
    (line,) = (out / "trajectories.jsonl").read_text().splitlines()
    stored = json.loads(line)
    assert stored["resampled"] == 1 and stored["turns"] == 2
    assert "`add(1, 2)` returned -1" in stored["steps"][0]["feedback"]
    assert json.loads((out / "summary.json").read_text())["repair"] == "live"
    assert run_cli("solve", "--help").stdout.count("--repair") == 1


def test_the_committed_runs_would_still_resume() -> None:
    # The runner refuses an [agent] that differs from the stored plan.json's.
    results = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
    for name in ("paper", "ablation"):
        plan = json.loads((results / name / "plan.json").read_text())
        config = load_experiment(results / name / "experiment.toml")
        assert config.resolved_json()["agent"] == plan["config"]["agent"]
