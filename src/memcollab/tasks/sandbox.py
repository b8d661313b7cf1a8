"""Run model-written Python code and unit tests in a separate, locked-down process.

Threat model
------------
The code comes from a language model: usually honest and buggy, sometimes reward-hacking,
and treated as hostile. It must not write outside a fresh per-run working directory, reach
the network, read the user's home directory or other users' files, outlive its limits (with
every process it spawns), signal the parent, or get a test run judged "passed" without
passing the tests.

Every run gets a fresh temporary directory (removed afterwards), a scrubbed environment
(PATH, LANG, and HOME and TMPDIR pointing at the work directory), and the parent's own
interpreter in isolated mode (`python -I -B`) started on `sandbox_harness.py`, which sets the
process up before any untrusted code runs. The parent side (backends, launch, supervision,
killing) is `sandbox_launch.py`; the test guard is `sandbox_judge.py`. Two backends:

* ``bwrap`` (bubblewrap; preferred when installed and able to create namespaces): a
  read-only view of the system; empty read-only tmpfs over /tmp, /var/tmp, /run/lock,
  /run/user, /home, /root and $HOME, with only the interpreter's own directories bound back
  read-only; a private size-limited tmpfs as the work directory and as /dev/shm; fresh /dev
  and /proc; new network, PID, IPC and UTS namespaces; the harness is PID 1 of its PID
  namespace (everything it spawns dies with it) and bubblewrap dies with the parent.
* ``fallback``: as root, the harness does the same itself: `unshare(2)` of mount, network,
  PID, IPC and UTS namespaces through ctypes, a read-only remount of every mount, the same
  masks and tmpfs, and a fresh /proc, the code running as PID 1 of the new PID namespace
  under a reaper outside it. Where namespaces are refused it keeps the uid drop, limits,
  seccomp filter and a reaper (child subreaper) that kills every leftover descendant.

In both, before untrusted code runs: resource limits (RLIMIT_AS, CPU, FSIZE, NPROC, NOFILE,
CORE); `no_new_privs`; a seccomp filter refusing socket(2) (no network even without a
network namespace), io_uring, new namespaces (unshare, setns, clone with namespace flags),
ptrace, bpf, userfaultfd, perf events and kernel keys; and, when started as root, a switch
to a random unused uid that owns nothing but the work directory, after which no capability
is left. At the wall-clock limit, or when the harness ends, the parent kills the tree below
it, the process group, and every process of the run's uid, and the PID namespace takes the
rest. `isolation_report()` says which mechanisms are active here;
``MEMCOLLAB_SANDBOX=fallback`` (or ``backend="fallback"``) forces the fallback.

Verdict integrity (`run_tests`)
-------------------------------
The verdict never comes from the exit status or from stdout. The harness reads a per-run
random nonce from an inherited pipe, closes the pipe and keeps the nonce XOR-split before
the candidate runs, and only after the last test writes one structured record prefixed
with it to a second pipe, then leaves with `os._exit` (no atexit handlers, no flushing).
The parent accepts exactly one record with that nonce, from a harness that reported its
setup, exited with status 0 and accounted for every test. The tests run in a copy of the
candidate's globals with the real builtins. They are compiled before the candidate runs,
with every comparison operand, and every call result, name and asserted value inside an
`assert`, passed through a guard (`sandbox_judge.py`) that rejects values whose type
overrides comparison, truth, membership, `__class__` or arithmetic dunders with code not
from the interpreter's installed files, libraries or the tests (the "always equal" object,
a `str` subclass with a forged `__eq__`), or with library code that none of its own classes
defines (`__eq__ = fractions.Fraction.__eq__` on an int subclass), and values equal to a
fresh private object (`unittest.mock.ANY`). A comparison a library wrote in Python
(Fraction, UserString, Counter, a dataclass's `__eq__`) reads the object's state and may
call its class's attributes: the guard judges that state in turn, and every attribute of
the value's classes must be library code. It also looks inside deques, namespaces and
mapping views. After
the candidate and after every test the harness restores the builtins and fails the run if
any were replaced, if a loaded module holds a function the candidate compiled
(`math.isclose = lambda *a, **k: True`, also through exec or eval, seen by an audit hook),
or if the candidate rebinds a builtin the tests use. So `sys.exit(0)` or `os._exit(0)`
before the asserts, printed success markers, `SystemExit` in a test, a replaced
`AssertionError`, `print` or `sys.stdout`, atexit handlers, deleting or redefining test
functions and always-equal objects are all judged not passed. The price: a candidate whose
own classes define comparison or arithmetic dunders, or add methods of their own to a
class whose comparison a library wrote in Python (a dataclass with `eq`, a subclass of
Fraction or UserString), and whose instances reach a test's comparison is judged "error".

Not protected
-------------
Code that deliberately attacks the harness inside its own process (walking frames or `gc`
to the nonce and forging a record, ctypes writes into the interpreter, code objects built
with a forged file name, functions built from a library's code objects with forged
globals, its own classes planted into a library module) can fake a verdict: the tests must
run in the candidate's process. Values inside containers the guard does not open (numpy
object arrays) are not judged.
Memory is bounded per process (memory_mb x max_processes), not per run. The rest of the
system stays readable (read-only). Without root and without namespaces (bubblewrap
unusable), writes to world-writable directories, reads of the user's own files and signals
to the user's other processes (the reaper included, after which a process that left the
process group survives) are not prevented.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from memcollab.tasks.sandbox_launch import (
    ENV_SWITCH,
    BackendName,
    SandboxError,
    SandboxLimits,
    choose_backend,
    describe_exit,
    execute,
    parse_record,
    probe,
    requested_backend,
    tail_lines,
)

__all__ = [
    "DEFAULT_LIMITS",
    "ENV_SWITCH",
    "BackendName",
    "CodeRunner",
    "ExecResult",
    "LocalSandbox",
    "SandboxError",
    "SandboxLimits",
    "TestVerdict",
    "isolation_report",
    "run_code",
    "run_tests",
]

DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class ExecResult:
    """What a snippet printed, for the agent's tool; stderr holds the traceback on error."""

    status: Literal["ok", "error", "timeout"]
    stdout: str
    stderr: str
    duration_s: float


@dataclass(frozen=True)
class TestVerdict:
    """The judgement of a candidate against tests."""

    __test__ = False  # not a pytest test class

    status: Literal["passed", "failed", "error", "timeout"]
    passed_tests: int
    total_tests: int
    failed_test: str | None
    error: str | None
    duration_s: float

    @property
    def passed(self) -> bool:
        """True only when every test ran and none raised."""
        return self.status == "passed"


# ------------------------------------------------------------------------------------------
# Public entry points
# ------------------------------------------------------------------------------------------


def run_code(
    code: str, limits: SandboxLimits = DEFAULT_LIMITS, *, backend: BackendName | None = None
) -> ExecResult:
    """Run a snippet as a script in a fresh sandbox; return what it printed and how it ended."""
    raw = execute("exec", {"code": code}, limits, backend)
    stdout = raw.stdout.text()
    stderr = raw.stderr.text()
    if raw.timed_out:
        status: Literal["ok", "error", "timeout"] = "timeout"
        stderr += f"\n[sandbox] killed: {raw.timeout_reason}\n"
    elif raw.returncode == 0:
        status = "ok"
    else:
        status = "error"
        if raw.returncode > 128:
            stderr += f"\n[sandbox] {describe_exit(raw.returncode)}\n"
    return ExecResult(status=status, stdout=stdout, stderr=stderr, duration_s=raw.duration_s)


def run_tests(
    candidate: str,
    tests: Sequence[str],
    setup_code: str = "",
    limits: SandboxLimits = DEFAULT_LIMITS,
    *,
    backend: BackendName | None = None,
) -> TestVerdict:
    """Run `setup_code`, `candidate`, then each test in order, in one fresh sandbox.

    "passed" only if every test ran and none raised; "failed" when a test raised
    AssertionError (`failed_test` is its failing line); "error" when the setup, the
    candidate or a test raised anything else, or the process ended without a verdict;
    "timeout" when the wall-clock or CPU limit was hit.
    """
    if isinstance(tests, str):
        raise TypeError("tests must be a sequence of snippets, not one string")
    tests = [str(t) for t in tests]
    if not tests:
        raise ValueError("run_tests needs at least one test")
    payload = {"setup": setup_code, "candidate": candidate, "tests": tests}
    raw = execute("tests", payload, limits, backend)
    total = len(tests)

    def verdict(
        status: Any, passed: int = 0, line: str | None = None, error: str | None = None
    ) -> TestVerdict:
        return TestVerdict(status, passed, total, line, error, raw.duration_s)

    if raw.timed_out:
        return verdict("timeout", error=f"killed: {raw.timeout_reason}")
    record = parse_record(raw.records, raw.nonce, total)
    if record is None or raw.returncode != 0:
        tail = tail_lines(raw.stderr.text())
        reason = "the sandboxed process ended without reporting a verdict"
        if raw.returncode != 0:
            reason += f" ({describe_exit(raw.returncode)})"
        return verdict("error", error=f"{reason}\n{tail}".rstrip())
    phase = record["phase"]
    if phase is not None:
        return verdict("error", error=f"{phase['phase']} failed:\n{phase['error']}")
    results = record["tests"]
    passed = sum(1 for r in results if r["status"] == "passed")
    for result in results:
        if result["status"] != "passed":
            status = "failed" if result["status"] == "failed" else "error"
            return verdict(status, passed, result["line"], result["error"])
    return verdict("passed", passed)


def isolation_report(backend: BackendName | None = None) -> dict[str, object]:
    """Which isolation mechanisms are active here, for users and CI to check.

    Runs (once per process and backend) a probe through the sandbox itself, so what is
    reported is what the sandboxed code gets, not what was asked for.
    """
    requested = requested_backend(backend)
    bwrap_path = shutil.which("bwrap")
    info: dict[str, object] = {
        "requested": requested,
        "switch": f"{ENV_SWITCH}=auto|bwrap|fallback",
        "interpreter": sys.executable,
        "running_as_root": os.geteuid() == 0,
        "bwrap": {"path": bwrap_path, "usable": None, "error": None},
    }
    if bwrap_path is not None and requested != "fallback":
        probed = probe("bwrap")
        info["bwrap"] = {
            "path": bwrap_path,
            "usable": not isinstance(probed, SandboxError),
            "error": str(probed) if isinstance(probed, SandboxError) else None,
        }
    chosen = choose_backend(backend)
    info["backend"] = chosen.name
    info["mechanisms"] = dict(chosen.mechanisms)
    return info


# ------------------------------------------------------------------------------------------
# The agent's view: a code runner
# ------------------------------------------------------------------------------------------


class CodeRunner(Protocol):
    """What the solve loop runs code with: a snippet for its output, a candidate against tests."""

    def run_code(self, code: str, limits: SandboxLimits = DEFAULT_LIMITS) -> ExecResult:
        """Run a snippet as a script; return what it printed and how it ended."""
        ...

    def run_tests(
        self,
        candidate: str,
        tests: Sequence[str],
        setup_code: str = "",
        limits: SandboxLimits = DEFAULT_LIMITS,
    ) -> TestVerdict:
        """Run `setup_code`, `candidate`, then each test; judge the candidate."""
        ...


@dataclass(frozen=True)
class LocalSandbox:
    """The default CodeRunner: this module's sandbox on this machine (`backend`: None = auto)."""

    backend: BackendName | None = None

    def run_code(self, code: str, limits: SandboxLimits = DEFAULT_LIMITS) -> ExecResult:
        """`run_code` of this module."""
        return run_code(code, limits, backend=self.backend)

    def run_tests(
        self,
        candidate: str,
        tests: Sequence[str],
        setup_code: str = "",
        limits: SandboxLimits = DEFAULT_LIMITS,
    ) -> TestVerdict:
        """`run_tests` of this module."""
        return run_tests(candidate, tests, setup_code, limits, backend=self.backend)
