"""What the agent's repair mode "live" tells a model whose code failed a visible check.

The v1 feedback shows the failing assert and an `AssertionError` traceback: the code is
wrong, but not how. Here the operands of the failing assert that are not literals (the
left side of `assert f(3) == 7`, the argument of `assert math.isclose(f(3), 7.0)`) are
evaluated again, in a second sandboxed run of the same setup and candidate under the same
limits (`CodeRunner.run_code`), and the feedback shows what each returned, or the exception
it raised with the last lines of its traceback.

The verdict is untouched: `run_tests` judges the candidate as before and the probe only adds
text to the feedback. The probe's output is written by untrusted code, so it is read
defensively (a random marker, one JSON line, checked field by field), reprs are clipped in
the sandbox (`reprlib`, which also sorts sets so hash randomisation cannot change them) and
again here, and memory addresses are masked so that the feedback, and so the next request
and its cache key, depends on the candidate alone.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
from dataclasses import dataclass

from memcollab.domains.base import agent_prompts
from memcollab.tasks.sandbox import CodeRunner, SandboxLimits, TestVerdict
from memcollab.tasks.task import Task

__all__ = ["Probe", "live_failure_details", "normalise_code", "probe_program", "probe_targets"]

MAX_TARGETS = 3
EXPR_CHARS = 200
VALUE_CHARS = 300
TRACEBACK_LINES = 8
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def normalise_code(code: str) -> str:
    """Code with every run of whitespace made one space: what "identical" compares."""
    return " ".join(code.split())


@dataclass(frozen=True)
class Probe:
    """One expression of a failing assert to evaluate, and the literal it should equal
    (the other side of an `==`), if there is one."""

    expr: str
    expected: str | None
    is_call: bool


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _has_call(node: ast.expr) -> bool:
    return any(isinstance(n, ast.Call) for n in ast.walk(node))


def probe_targets(line: str) -> list[Probe]:
    """The expressions of the assert statement `line` worth showing the value of (at most
    MAX_TARGETS); [] when `line` is not one assert statement."""
    try:
        tree = ast.parse(line)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return []
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return []
    test = tree.body[0].test
    while isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        test = test.operand
    pairs: list[tuple[ast.expr, ast.expr | None]] = []
    if isinstance(test, ast.Compare):
        operands = [test.left, *test.comparators]
        single_eq = len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)
        for i, node in enumerate(operands):
            if _is_literal(node):
                continue
            other = operands[1 - i] if single_eq else None
            pairs.append((node, other if other is not None and _is_literal(other) else None))
    elif isinstance(test, ast.Call):
        args = [*test.args, *(k.value for k in test.keywords)]
        inner = [a for a in args if not _is_literal(a) and _has_call(a)]
        pairs += [(a, None) for a in inner] or [(test, None)]
    else:
        pairs.append((test, None))
    probes: list[Probe] = []
    for node, expected in pairs[:MAX_TARGETS]:
        expr = ast.get_source_segment(line, node)
        if expr is None:
            continue
        want = None if expected is None else ast.get_source_segment(line, expected)
        probes.append(Probe(expr, want, isinstance(node, ast.Call)))
    return probes


# The probe program. Setup and candidate run as in the test harness (the fresh __main__'s
# globals, compiled under their own file names); each expression is evaluated in a copy of
# those globals. Its one result line goes straight to file descriptor 1 (the candidate may
# have replaced print or sys.stdout), after everything the candidate printed.
_PROGRAM = """
import json as _mc_json, linecache as _mc_linecache, os as _mc_os, reprlib as _mc_reprlib
import sys as _mc_sys, traceback as _mc_traceback


def _mc_source(name, source, mode="exec"):
    _mc_linecache.cache[name] = (len(source), None, source.splitlines(True), name)
    return compile(source, name, mode, dont_inherit=True)


_mc_r = _mc_reprlib.Repr()
_mc_r.maxlevel = 6
_mc_r.maxtuple = _mc_r.maxlist = _mc_r.maxarray = _mc_r.maxdict = 30
_mc_r.maxset = _mc_r.maxfrozenset = _mc_r.maxdeque = 30
_mc_r.maxstring = _mc_r.maxlong = _mc_r.maxother = {value_chars}


def _mc_repr(value):
    try:
        return _mc_r.repr(value)[:{value_chars}]
    except BaseException as exc:
        return "<repr failed: " + type(exc).__name__ + ">"


def _mc_tb(exc):
    frames = [f for f in _mc_traceback.extract_tb(exc.__traceback__) if f.filename != "<snippet>"]
    lines = ["Traceback (most recent call last):\\n"]
    lines += _mc_traceback.format_list(frames)
    lines += _mc_traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


exec(_mc_source("<setup>", {setup!r}), globals())
exec(_mc_source("<candidate>", {candidate!r}), globals())
_mc_results = []
for _mc_expr in {exprs!r}:
    try:
        _mc_code = _mc_source("<test>", _mc_expr, "eval")
        _mc_results.append({{"value": _mc_repr(eval(_mc_code, dict(globals())))}})
    except BaseException as _mc_exc:
        _mc_results.append({{"raised": _mc_tb(_mc_exc)}})
try:
    _mc_sys.stdout.flush()
except BaseException:
    pass
_mc_data = ("\\n" + {marker!r} + _mc_json.dumps(_mc_results) + "\\n").encode("utf-8", "replace")
while _mc_data:
    _mc_data = _mc_data[_mc_os.write(1, _mc_data):]
"""


def probe_program(setup: str, candidate: str, exprs: list[str], marker: str) -> str:
    """The snippet that runs `setup` and `candidate`, evaluates each of `exprs` and writes
    one line: `marker` then a JSON list of {"value": repr} or {"raised": traceback}."""
    return _PROGRAM.format(
        setup=setup, candidate=candidate, exprs=exprs, marker=marker, value_chars=VALUE_CHARS
    )


def _clip(text: str, limit: int) -> str:
    text = _ADDRESS.sub("", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read(stdout: str, marker: str, count: int) -> list[dict[str, str]] | str:
    """The probe's results, or why there are none."""
    at = stdout.rfind(marker)
    if at < 0:
        return "the program ended before showing it"
    line = stdout[at + len(marker) :].split("\n", 1)[0]
    try:
        results = json.loads(line)
    except ValueError:
        return "its output was garbled"
    if not isinstance(results, list) or len(results) != count:
        return "its output was garbled"
    clean: list[dict[str, str]] = []
    for item in results:
        if not isinstance(item, dict) or len(item) != 1:
            return "its output was garbled"
        ((key, value),) = item.items()
        if key not in ("value", "raised") or not isinstance(value, str):
            return "its output was garbled"
        clean.append({key: value})
    return clean


def _tail(traceback: str) -> str:
    lines = _ADDRESS.sub("", traceback).rstrip().splitlines()
    return "\n".join(line[:VALUE_CHARS] for line in lines[-TRACEBACK_LINES:])


def _render(probe: Probe, result: dict[str, str]) -> str:
    p = agent_prompts()["code_live"]
    expr = _clip(probe.expr, EXPR_CHARS)
    if "raised" in result:
        return str(p["raised"]).format(expr=expr, traceback=_tail(result["raised"]))
    value = _clip(result["value"], VALUE_CHARS)
    verb = "returned" if probe.is_call else "is"
    if probe.expected is not None:
        expected = _clip(probe.expected, VALUE_CHARS)
        return str(p[f"{verb}_expected"]).format(expr=expr, value=value, expected=expected)
    return str(p[verb]).format(expr=expr, value=value)


def _visible_line(task: Task, line: str) -> bool:
    return any(line == x.strip() for t in task.visible_tests for x in t.splitlines())


def live_failure_details(
    task: Task,
    candidate: str,
    verdict: TestVerdict,
    details: str,
    runner: CodeRunner,
    limits: SandboxLimits,
) -> str:
    """The details of a failed visible check for repair "live": for an assert that failed,
    the test and what its operands actually were; otherwise `details` (the v1 text)."""
    line = verdict.failed_test
    if verdict.status != "failed" or line is None:
        return details
    no_value = str(agent_prompts()["code_live"]["no_value"])
    probes = probe_targets(line) if _visible_line(task, line) else []
    if not probes:
        return f"{details}\n{no_value.format(reason='the test is not a simple assert')}"
    marker = f"@@memcollab-probe-{secrets.token_hex(8)}@@"
    program = probe_program(task.setup_code, candidate, [p.expr for p in probes], marker)
    run = runner.run_code(program, limits)
    if run.status == "timeout":
        results: list[dict[str, str]] | str = "it did not finish within the time limit"
    else:
        results = _read(run.stdout, marker, len(probes))
    if isinstance(results, str):
        return f"{details}\n{no_value.format(reason=results)}"
    shown = [_render(p, r) for p, r in zip(probes, results, strict=True)]
    return "\n".join([f"Test: {line}", *shown])
