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
interpreter in isolated mode (`python -I -B`) started on this file, whose harness part (the
`_h_*` functions) sets the process up before any untrusted code runs. Two backends:

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
`assert`, passed through a guard that rejects values whose type overrides comparison,
truth, membership, `__class__` or arithmetic dunders with code not from the interpreter's
installed files, libraries or the tests (the "always equal" object, a `str` subclass with a
forged `__eq__`), and values equal to a fresh private object (`unittest.mock.ANY`). After
the candidate and after every test the harness restores the builtins and fails the run if
any were replaced, if a loaded module holds a function the candidate compiled
(`math.isclose = lambda *a, **k: True`, also through exec or eval, seen by an audit hook),
or if the candidate rebinds a builtin the tests use. So `sys.exit(0)` or `os._exit(0)`
before the asserts, printed success markers, `SystemExit` in a test, a replaced
`AssertionError`, `print` or `sys.stdout`, atexit handlers, deleting or redefining test
functions and always-equal objects are all judged not passed. The price: a candidate whose
own classes define comparison or arithmetic dunders (a dataclass with `eq`) and whose
instances reach a test's comparison is judged "error".

Not protected
-------------
Code that deliberately attacks the harness inside its own process (walking frames or `gc`
to the nonce and forging a record, ctypes writes into the interpreter, code objects built
with a forged file name) can fake a verdict: the tests must run in the candidate's process.
Memory is bounded per process (memory_mb x max_processes), not per run. The rest of the
system stays readable (read-only). Without root and without namespaces (bubblewrap
unusable), writes to world-writable directories, reads of the user's own files and signals
to the user's other processes (the reaper included, after which a process that left the
process group survives) are not prevented.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import json
import linecache
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

if __name__ != "__main__":
    from memcollab.errors import MemcollabError
else:  # inside the sandbox: keep the package's heavy imports out of the harness
    MemcollabError = RuntimeError  # type: ignore[misc,assignment]

__all__ = [
    "DEFAULT_LIMITS",
    "ExecResult",
    "SandboxError",
    "SandboxLimits",
    "TestVerdict",
    "isolation_report",
    "run_code",
    "run_tests",
]

BackendName = Literal["auto", "bwrap", "fallback"]

ENV_SWITCH = "MEMCOLLAB_SANDBOX"
_HARNESS_FILE = os.path.realpath(__file__)
_SETUP_FAILED = 97  # exit status of a harness that could not set the sandbox up
_READY = b"READY\n"  # written by the harness once set up, before untrusted code runs
_UID_BASE = 0x4D430000  # per-run uids are drawn from [_UID_BASE, _UID_BASE + _UID_SPAN)
_UID_SPAN = 1 << 20
_TRACEBACK_LINES = 30
_MAX_RECORD_BYTES = 8 << 20
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxError(MemcollabError):
    """The sandbox could not be set up here (never a verdict about the code that was run)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one sandboxed run.

    `memory_mb` is RLIMIT_AS (address space) per process: 1 GiB runs ordinary CPython code;
    numpy with many BLAS threads reserves more address space and may need a higher value.
    `max_processes` bounds processes and threads of the run. `disk_mb` is the size of the
    private tmpfs used as the work directory (namespace backends).
    """

    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    max_processes: int = 32
    file_size_mb: int = 16
    output_bytes: int = 20_000
    disk_mb: int = 64

    def __post_init__(self) -> None:
        for name in ("wall_s", "cpu_s", "memory_mb", "max_processes", "file_size_mb", "disk_mb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be positive")
        if self.output_bytes < 0:
            raise ValueError("SandboxLimits.output_bytes must not be negative")


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
    raw = _execute("exec", {"code": code}, limits, backend)
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
            stderr += f"\n[sandbox] {_describe_exit(raw.returncode)}\n"
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
    raw = _execute("tests", payload, limits, backend)
    total = len(tests)

    def verdict(
        status: Any, passed: int = 0, line: str | None = None, error: str | None = None
    ) -> TestVerdict:
        return TestVerdict(status, passed, total, line, error, raw.duration_s)

    if raw.timed_out:
        return verdict("timeout", error=f"killed: {raw.timeout_reason}")
    record = _parse_record(raw.records, raw.nonce, total)
    if record is None or raw.returncode != 0:
        tail = _tail_lines(raw.stderr.text())
        reason = "the sandboxed process ended without reporting a verdict"
        if raw.returncode != 0:
            reason += f" ({_describe_exit(raw.returncode)})"
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
    requested = _requested_backend(backend)
    bwrap_path = shutil.which("bwrap")
    info: dict[str, object] = {
        "requested": requested,
        "switch": f"{ENV_SWITCH}=auto|bwrap|fallback",
        "interpreter": sys.executable,
        "running_as_root": os.geteuid() == 0,
        "bwrap": {"path": bwrap_path, "usable": None, "error": None},
    }
    if bwrap_path is not None and requested != "fallback":
        probed = _probe("bwrap")
        info["bwrap"] = {
            "path": bwrap_path,
            "usable": not isinstance(probed, SandboxError),
            "error": str(probed) if isinstance(probed, SandboxError) else None,
        }
    chosen = _backend(backend)
    info["backend"] = chosen.name
    info["mechanisms"] = dict(chosen.mechanisms)
    return info


# ------------------------------------------------------------------------------------------
# Backends: selection, probing, command lines
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Backend:
    name: Literal["bwrap", "fallback"]
    bwrap: str | None
    mechanisms: dict[str, object]  # what the probe found working
    root: bool

    @property
    def uid_drop(self) -> bool:
        return bool(self.mechanisms.get("uid_drop"))


_PROBES: dict[str, _Backend | SandboxError] = {}
_PROBE_LOCK = threading.Lock()


def _requested_backend(backend: BackendName | None) -> str:
    requested = backend or os.environ.get(ENV_SWITCH, "").strip().lower() or "auto"
    if requested not in ("auto", "bwrap", "fallback"):
        raise SandboxError(f"unknown sandbox backend {requested!r} (use auto, bwrap or fallback)")
    return requested


def _backend(backend: BackendName | None) -> _Backend:
    requested = _requested_backend(backend)
    if requested in ("auto", "bwrap"):
        probed = _probe("bwrap")
        if isinstance(probed, _Backend):
            return probed
        if requested == "bwrap":
            raise probed
    probed = _probe("fallback")
    if isinstance(probed, SandboxError):
        raise probed
    return probed


def _probe(name: str) -> _Backend | SandboxError:
    """Run the harness once in probe mode through a backend; cache what works."""
    with _PROBE_LOCK:
        if name not in _PROBES:
            _PROBES[name] = _run_probe(name)
        return _PROBES[name]


def _run_probe(name: str) -> _Backend | SandboxError:
    bwrap = shutil.which("bwrap") if name == "bwrap" else None
    if name == "bwrap" and bwrap is None:
        return SandboxError("bubblewrap (bwrap) is not installed")
    root = os.geteuid() == 0
    attempt = _Backend(
        name="bwrap" if name == "bwrap" else "fallback",
        bwrap=bwrap,
        mechanisms={"uid_drop": root, "namespaces": root, "seccomp": True},
        root=root,
    )
    limits = SandboxLimits(wall_s=30.0, cpu_s=30)
    try:
        raw = _launch(attempt, "probe", {}, limits, best_effort=True)
    except (OSError, SandboxError) as exc:
        return SandboxError(f"{name} sandbox unusable: {exc}")
    found = None
    for line in raw.records.split(b"\n"):
        if line.startswith(b"PROBE "):
            try:
                found = ast.literal_eval(line[6:].decode("utf-8"))
            except (ValueError, SyntaxError, UnicodeDecodeError):
                found = None
    if not isinstance(found, dict) or raw.returncode != 0:
        detail = _tail_lines(raw.stderr.text(), 8) or _describe_exit(raw.returncode)
        return SandboxError(f"{name} sandbox unusable: {detail}")
    mechanisms: dict[str, object] = {
        "fresh_workdir": True,
        "scrubbed_environment": True,
        "isolated_interpreter": True,
        "mount_namespace": False,
        "network_namespace": False,
        "pid_namespace": False,
        "ipc_namespace": False,
        "readonly_system": False,
        "private_proc": False,
    }
    if name == "bwrap":
        mechanisms.update(
            mount_namespace=True,
            network_namespace=True,
            pid_namespace=True,
            ipc_namespace=True,
            readonly_system=True,
            private_proc=True,
        )
    mechanisms.update(found)
    trees = ["process group"]
    if mechanisms.get("pid_namespace"):
        trees.append("pid namespace (harness is PID 1)")
    if mechanisms.get("uid_drop"):
        trees.append("sweep of the run's uid")
    if name == "fallback":
        trees.append("reaper (child subreaper)")
    mechanisms["process_tree_kill"] = trees
    return _Backend(name=attempt.name, bwrap=bwrap, mechanisms=mechanisms, root=root)


def _is_within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _mask_dirs() -> list[str]:
    """Directories hidden behind empty read-only tmpfs: temp dirs and home directories."""
    candidates = ["/tmp", "/var/tmp", "/run/lock", "/run/user", "/run/secrets", "/home", "/root"]
    candidates += [os.environ.get("HOME") or "", os.path.expanduser("~")]
    try:
        import pwd

        candidates.append(pwd.getpwuid(os.geteuid()).pw_dir)
    except (ImportError, KeyError):
        pass
    system = ("/", "/usr", "/etc", "/bin", "/lib", "/lib64", "/sbin", "/proc", "/dev", "/sys")
    found: list[str] = []
    for cand in candidates:
        if not cand or not os.path.isabs(cand) or not os.path.isdir(cand):
            continue
        real = os.path.realpath(cand)
        if any(_is_within(s, real) for s in system):
            continue  # never hide the system itself (a HOME of "/" or "/usr")
        found.append(real)
    found = sorted(set(found), key=len)
    return [m for i, m in enumerate(found) if not any(_is_within(m, o) for o in found[:i])]


def _rebind_dirs(masks: list[str]) -> list[str]:
    """The interpreter's and harness's directories that a mask would hide: bound back read-only."""
    dirs = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
        os.path.dirname(_HARNESS_FILE),
    }
    real = sorted({os.path.realpath(d) for d in dirs if d}, key=len)
    real = [d for i, d in enumerate(real) if not any(_is_within(d, o) for o in real[:i])]
    return [d for d in real if any(_is_within(d, m) for m in masks)]


def _bwrap_parents(path: str, masks: list[str]) -> list[str]:
    """bwrap arguments creating, world-traversable, the parents of `path` inside its mask."""
    mask = next((m for m in masks if _is_within(path, m)), None)
    if mask is None:
        return []
    args: list[str] = []
    parts = os.path.relpath(path, mask).split("/")[:-1]
    current = mask
    for part in parts:
        current = os.path.join(current, part)
        args += ["--perms", "0755", "--dir", current]
    return args


def _command(backend: _Backend, cfg: dict[str, Any]) -> list[str]:
    harness = [sys.executable, "-I", "-B", _HARNESS_FILE, json.dumps(cfg)]
    if backend.name == "fallback":
        return harness
    assert backend.bwrap is not None
    masks: list[str] = cfg["masks"]
    workdir: str = cfg["workdir"]
    args = [
        backend.bwrap,
        "--die-with-parent",
        "--new-session",
        "--as-pid-1",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    if not backend.root:
        args.append("--unshare-user")
    for mask in masks:
        args += ["--perms", "0755", "--tmpfs", mask]
    shm = str(cfg["shm_mb"] << 20)
    args += ["--perms", "1777", "--size", shm, "--tmpfs", "/dev/shm"]
    for path in cfg["rebinds"]:
        args += _bwrap_parents(path, masks) + ["--ro-bind", path, path]
    disk = str(cfg["limits"]["disk_mb"] << 20)
    args += _bwrap_parents(workdir, masks) + ["--perms", "0700", "--size", disk, "--tmpfs", workdir]
    for mask in masks:
        args += ["--remount-ro", mask]
    args += ["--chdir", "/"]
    if backend.root:
        # Keep only what the harness needs to hand the work directory to the run's uid and
        # to switch to it; every capability is gone after the switch.
        args += ["--cap-drop", "ALL"]
        if cfg["uid"] is not None:
            for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN"):
                args += ["--cap-add", cap]
    return args + ["--", *harness]


# ------------------------------------------------------------------------------------------
# Running one sandboxed process
# ------------------------------------------------------------------------------------------


class _Tail:
    """The last `limit` bytes of a stream, and how many came before them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self.buf += data
        if len(self.buf) > 2 * self.limit + 65536:
            del self.buf[: len(self.buf) - self.limit]

    def text(self) -> str:
        kept = bytes(self.buf[len(self.buf) - self.limit :]) if self.limit else b""
        text = kept.decode("utf-8", "replace")
        if self.total > len(kept):
            text = f"[... {self.total - len(kept)} earlier bytes truncated ...]\n{text}"
        return text


class _Buffer:
    """Bytes up to a cap (beyond it, the content is void); the first bytes are always kept."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.buf = bytearray()
        self.head = b""
        self.overflow = False

    def add(self, data: bytes) -> None:
        if len(self.head) < 64:
            self.head = (self.head + data)[:64]
        if self.overflow or len(self.buf) + len(data) > self.cap:
            self.overflow = True
            self.buf = bytearray()
            return
        self.buf += data


@dataclass
class _Raw:
    returncode: int
    stdout: _Tail
    stderr: _Tail
    records: bytes
    nonce: str
    timed_out: bool
    timeout_reason: str
    duration_s: float
    ready: bool


def _execute(
    mode: str, payload: dict[str, Any], limits: SandboxLimits, backend: BackendName | None
) -> _Raw:
    if not isinstance(limits, SandboxLimits):
        raise TypeError("limits must be a SandboxLimits")
    chosen = _backend(backend)
    raw = _launch(chosen, mode, payload, limits, best_effort=False)
    if not raw.ready and not raw.timed_out:
        detail = _tail_lines(raw.stderr.text(), 8) or _describe_exit(raw.returncode)
        raise SandboxError(f"the {chosen.name} sandbox failed to start: {detail}")
    return raw


def _launch(
    backend: _Backend,
    mode: str,
    payload: dict[str, Any],
    limits: SandboxLimits,
    *,
    best_effort: bool,
) -> _Raw:
    if not sys.platform.startswith("linux"):
        raise SandboxError("the code sandbox needs Linux (namespaces, seccomp, /proc)")
    if not sys.executable:
        raise SandboxError("no Python interpreter path (sys.executable is empty)")
    uid = _pick_uid() if backend.uid_drop else None
    masks = _mask_dirs()
    workdir = tempfile.mkdtemp(prefix="memcollab-sbx-")
    fds: list[int] = []
    try:
        os.chmod(workdir, 0o700)
        if uid is not None:
            os.chown(workdir, uid, uid)  # used as is only when no mount namespace is possible
        nonce = secrets.token_hex(16)
        payload_fd = os.memfd_create("memcollab-sandbox-payload", os.MFD_CLOEXEC)
        fds.append(payload_fd)
        _write_all(payload_fd, json.dumps(payload).encode("utf-8"))
        os.lseek(payload_fd, 0, os.SEEK_SET)
        nonce_r, nonce_w = os.pipe()
        fds += [nonce_r, nonce_w]
        os.write(nonce_w, nonce.encode("ascii"))
        os.close(nonce_w)
        fds.remove(nonce_w)
        result_r, result_w = os.pipe()
        fds += [result_r, result_w]
        cfg: dict[str, Any] = {
            "backend": backend.name,
            "mode": mode,
            "best_effort": best_effort,
            "payload_fd": payload_fd,
            "nonce_fd": nonce_r,
            "result_fd": result_w,
            "uid": uid,
            "workdir": workdir,
            "namespaces": backend.name == "fallback" and bool(backend.mechanisms.get("namespaces")),
            "seccomp": bool(backend.mechanisms.get("seccomp")),
            "masks": masks,
            "rebinds": _rebind_dirs(masks),
            "shm_mb": max(16, limits.memory_mb // 8),
            "parent_pid": os.getpid(),
            "limits": {
                "cpu_s": limits.cpu_s,
                "memory_mb": limits.memory_mb,
                "max_processes": limits.max_processes,
                "file_size_mb": limits.file_size_mb,
                "disk_mb": limits.disk_mb,
            },
        }
        env = {"PATH": _SAFE_PATH, "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}
        started = time.monotonic()
        proc = subprocess.Popen(
            _command(backend, cfg),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd="/",
            pass_fds=(payload_fd, nonce_r, result_w),
            start_new_session=True,
        )
        for fd in (payload_fd, nonce_r, result_w):
            os.close(fd)
            fds.remove(fd)
        try:
            return _supervise(proc, result_r, limits, uid, nonce, started)
        finally:
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()
    finally:
        for fd in fds:
            os.close(fd)
        _remove_tree(workdir)


def _supervise(
    proc: subprocess.Popen[bytes],
    result_r: int,
    limits: SandboxLimits,
    uid: int | None,
    nonce: str,
    started: float,
) -> _Raw:
    """Wait for the sandbox, reading its pipes; kill its whole tree at the end in any case."""
    assert proc.stdout is not None and proc.stderr is not None
    stdout, stderr = _Tail(limits.output_bytes), _Tail(limits.output_bytes)
    records = _Buffer(_MAX_RECORD_BYTES)
    sinks: dict[int, _Tail | _Buffer] = {
        proc.stdout.fileno(): stdout,
        proc.stderr.fileno(): stderr,
        result_r: records,
    }
    poller = select.poll()
    for fd in sinks:
        os.set_blocking(fd, False)
        poller.register(fd, select.POLLIN)
    pidfd: int | None = None
    try:
        pidfd = opened = os.pidfd_open(proc.pid)
        poller.register(opened, select.POLLIN)
    except (AttributeError, OSError):  # Linux < 5.3: poll the child instead
        pidfd = None

    def pump(timeout_s: float) -> bool:
        """Read what is there; True once the sandbox's main process has exited."""
        exited = False
        for fd, _ in poller.poll(max(0, int(timeout_s * 1000))):
            if fd == pidfd:
                exited = True
                continue
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if data:
                sinks[fd].add(data)
            else:
                poller.unregister(fd)
                sinks.pop(fd)
        if pidfd is None:
            flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
            try:
                exited = os.waitid(os.P_PID, proc.pid, flags) is not None
            except ChildProcessError:
                exited = True
        return exited

    deadline = started + limits.wall_s
    timed_out = False
    try:
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timed_out = True
                    break
                if pump(min(remaining, 0.05 if pidfd is None else remaining)):
                    break
        except BaseException:  # KeyboardInterrupt and the like: leave nothing running
            _kill_descendants(proc.pid)
            _kill_group(proc.pid)
            if uid is not None:
                _sweep_uid(uid)
            os.waitpid(proc.pid, 0)
            proc.returncode = -signal.SIGKILL
            raise
        duration = time.monotonic() - started
        if timed_out:
            # Kill the tree below the top process (bubblewrap or the reaper) first, so that
            # it reaps the harness and ends by itself: killed first, it would leave the
            # harness to an init that may never reap it.
            _kill_descendants(proc.pid)
            if uid is not None:
                _sweep_uid(uid)
            settle = time.monotonic() + 2.0
            while time.monotonic() < settle and not pump(0.05):
                pass
        # The main process has exited (a zombie still holding its pid, so the process
        # group id cannot be reused yet) or is stuck: kill everything left.
        _kill_group(proc.pid)
        if uid is not None:
            _sweep_uid(uid)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = returncode = os.waitstatus_to_exitcode(status)
        if pidfd is not None:
            poller.unregister(pidfd)
        drain_deadline = time.monotonic() + 2.0
        while len(sinks) > 0 and time.monotonic() < drain_deadline:
            pump(0.05)
    finally:
        if pidfd is not None:
            os.close(pidfd)
    if returncode < 0:  # killed by a signal directly (fallback): same code as bubblewrap
        returncode = 128 - returncode
    cpu_used = usage.ru_utime + usage.ru_stime
    reason = f"wall-clock limit of {limits.wall_s:g} s"
    cpu_killed = returncode == 128 + signal.SIGXCPU or (
        returncode == 128 + signal.SIGKILL and cpu_used >= limits.cpu_s * 0.95
    )
    if cpu_killed and not timed_out:
        timed_out, reason = True, f"CPU time limit of {limits.cpu_s} s"
    raw_records = b"" if records.overflow else bytes(records.buf)
    return _Raw(
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        records=raw_records,
        nonce=nonce,
        timed_out=timed_out,
        timeout_reason=reason,
        duration_s=round(duration, 4),
        ready=records.head.startswith(_READY),
    )


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _proc_stat(pid: str) -> tuple[bytes, int] | None:
    """(state, parent pid) of a process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (fields[0], int(fields[1])) if len(fields) > 1 else None


def _descendants(root: int) -> list[int]:
    """Live (non-zombie) processes below `root`."""
    children: dict[int, list[int]] = {}
    live: set[int] = set()
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := _proc_stat(name)) is not None:
            children.setdefault(info[1], []).append(int(name))
            if info[0] not in (b"Z", b"X"):
                live.add(int(name))
    found, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid in live:
            found.append(pid)
        stack.extend(children.get(pid, []))
    return found


def _kill_until_gone(find: Callable[[], list[int]], attempts: int) -> None:
    """SIGKILL what `find` returns, again and again, until it finds nothing (or we give up)."""
    for attempt in range(attempts):
        pids = find()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.002 if attempt < 50 else 0.02)


def _kill_descendants(root: int) -> None:
    _kill_until_gone(lambda: _descendants(root), 200)


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real, effective or saved uid is `uid`."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                status = f.read()
        except OSError:
            continue
        state = uids = b""
        for line in status.split(b"\n"):
            if line.startswith(b"State:"):
                state = line[6:].strip()[:1]
            elif line.startswith(b"Uid:"):
                uids = line
        if state in (b"Z", b"X"):
            continue
        if str(uid).encode() in uids.split()[1:4]:
            pids.append(int(name))
    return pids


def _sweep_uid(uid: int) -> None:
    """Kill every process of the run's uid until none is left (its own uid: nothing else)."""
    _kill_until_gone(lambda: _pids_of_uid(uid), 400)


def _id_ranges(path: str) -> list[tuple[int, int]]:
    """[start, end) ranges of ids mapped in this user namespace (all of them if unreadable)."""
    try:
        with open(path) as f:
            rows = [line.split() for line in f]
        return [(int(r[0]), int(r[0]) + int(r[2])) for r in rows if len(r) == 3]
    except (OSError, ValueError):
        return [(0, 1 << 32)]


def _pick_uid() -> int | None:
    """A fresh uid (used as gid too) for one run: nobody else's, and mapped here.

    Drawn from a high range owning nothing; inside a user namespace whose map does not
    reach it (rootless containers), from the top of the largest mapped range instead.
    """
    ranges = [
        (max(a, c), min(b, d))
        for a, b in _id_ranges("/proc/self/uid_map")
        for c, d in _id_ranges("/proc/self/gid_map")
        if max(a, c) < min(b, d)
    ]
    if any(a <= _UID_BASE and b >= _UID_BASE + _UID_SPAN for a, b in ranges):
        return _UID_BASE + secrets.randbelow(_UID_SPAN)
    lo, hi = max(ranges, key=lambda r: r[1] - r[0], default=(0, 0))
    lo, hi = max(lo, 1000, (lo + hi) // 2), min(hi, 1 << 31) - 1
    taken: set[int] = {65534, 65535}
    for table in ("/etc/passwd", "/etc/group"):
        with contextlib.suppress(OSError), open(table) as f:
            taken |= {
                int(p[2]) for p in (line.split(":") for line in f) if len(p) > 2 and p[2].isdigit()
            }
    free = [lo + secrets.randbelow(hi - lo) for _ in range(64)] if hi > lo else []
    return next((u for u in free if u not in taken), None)


def _remove_tree(path: str) -> None:
    """Remove a work directory, whatever permissions the code left on it (never following
    its symlinks)."""
    if os.geteuid() != 0:
        with contextlib.suppress(OSError):
            os.chmod(path, 0o700)
        for dirpath, dirnames, _ in os.walk(path):
            for name in dirnames:
                full = os.path.join(dirpath, name)
                if not os.path.islink(full):
                    with contextlib.suppress(OSError):
                        os.chmod(full, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _describe_exit(returncode: int) -> str:
    if returncode > 128:
        try:
            name = signal.Signals(returncode - 128).name
        except ValueError:
            name = f"signal {returncode - 128}"
        return f"killed by {name}"
    return f"exit status {returncode}"


def _tail_lines(text: str, n: int = _TRACEBACK_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-n:])


def _parse_record(raw: bytes, nonce: str, total: int) -> dict[str, Any] | None:
    """The one record carrying this run's nonce, checked for shape; None if absent or bad."""
    prefix = nonce.encode("ascii") + b" "
    found = [line[len(prefix) :] for line in raw.split(b"\n") if line.startswith(prefix)]
    if len(found) != 1:
        return None
    try:
        record = ast.literal_eval(found[0].decode("utf-8"))
    except (ValueError, SyntaxError, UnicodeDecodeError, MemoryError, RecursionError):
        return None
    if not isinstance(record, dict) or record.get("n") != total:
        return None
    phase = record.get("phase")
    if phase is not None:
        ok = isinstance(phase, dict) and all(_is_str(phase.get(k)) for k in ("phase", "error"))
        return record if ok else None
    results = record.get("tests")
    if not isinstance(results, list) or len(results) != total:
        return None
    for result in results:
        if not isinstance(result, dict) or result.get("status") not in _TEST_STATUSES:
            return None
        if not all(result.get(k) is None or _is_str(result.get(k)) for k in ("line", "error")):
            return None
    return record


_TEST_STATUSES = ("passed", "failed", "error")


def _is_str(value: object) -> bool:
    return isinstance(value, str)


# ------------------------------------------------------------------------------------------
# Harness: runs inside the sandbox as `python -I -B sandbox.py CONFIG` (root until it drops
# to the run's uid). Everything below sets the process up, then runs untrusted code.
# ------------------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_CLONE_NEWNS = 0x00020000
_CLONE_NEWUTS = 0x04000000
_CLONE_NEWIPC = 0x08000000
_CLONE_NEWPID = 0x20000000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_NOATIME, _MS_NODIRATIME, _MS_BIND = 32, 1024, 2048, 4096
_MS_REC, _MS_PRIVATE, _MS_RELATIME = 1 << 14, 1 << 18, 1 << 21
_PR_SET_PDEATHSIG, _PR_SET_SECCOMP, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 22, 36, 38
# seccomp: syscall -> errno. No sockets (EACCES: no network even without a network
# namespace), no io_uring (it can open sockets), no new namespaces (unshare, setns, clone
# with namespace flags; clone3 answers ENOSYS so that libc falls back to clone), and no
# debugging or kernel-key interfaces.
_SECCOMP_DENY = {
    "socket": 13,
    "io_uring_setup": 1,
    "unshare": 1,
    "setns": 1,
    "clone3": 38,
    "ptrace": 1,
    "bpf": 1,
    "userfaultfd": 1,
    "perf_event_open": 1,
    "keyctl": 1,
    "add_key": 1,
    "request_key": 1,
}
_SECCOMP_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_SECCOMP_NR = {
    "x86_64": {
        "socket": 41,
        "io_uring_setup": 425,
        "unshare": 272,
        "setns": 308,
        "clone3": 435,
        "clone": 56,
        "ptrace": 101,
        "bpf": 321,
        "userfaultfd": 323,
        "perf_event_open": 298,
        "keyctl": 250,
        "add_key": 248,
        "request_key": 249,
    },
    "aarch64": {
        "socket": 198,
        "io_uring_setup": 425,
        "unshare": 97,
        "setns": 268,
        "clone3": 435,
        "clone": 220,
        "ptrace": 117,
        "bpf": 280,
        "userfaultfd": 282,
        "perf_event_open": 241,
        "keyctl": 219,
        "add_key": 217,
        "request_key": 218,
    },
}
_CLONE_NAMESPACES = 0x7E020080  # NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
_PRELOAD = _words(
    "abc array bisect cmath collections copy dataclasses datetime decimal encodings.idna "
    "enum fractions functools hashlib heapq itertools json math numbers operator random re "
    "socket statistics string struct textwrap threading time typing unicodedata"
)


class _Libc:
    """The few libc calls Python 3.11 lacks (unshare, mount, prctl), through ctypes."""

    def __init__(self) -> None:
        import ctypes

        self.ctypes = ctypes
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        self.libc.unshare.argtypes = [ctypes.c_int]
        self.libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            err = self.ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def unshare(self, flags: int) -> None:
        self._check(self.libc.unshare(flags), "unshare")

    def mount(
        self, source: str | None, target: str, fstype: str | None, flags: int, data: str | None
    ) -> None:
        def enc(s: str | None) -> bytes | None:
            return None if s is None else os.fsencode(s)

        rc = self.libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data))
        self._check(rc, f"mount {target}")

    def prctl(self, option: int, arg: int = 0) -> None:
        self._check(self.libc.prctl(option, arg, 0, 0, 0), f"prctl {option}")

    def seccomp_filter(self) -> None:
        """Install `_SECCOMP_DENY` (see there) for this process and its children."""
        import ctypes

        machine = os.uname().machine
        if machine not in _SECCOMP_ARCH:
            raise OSError(f"no seccomp filter for {machine}")
        audit_arch = _SECCOMP_ARCH[machine]
        numbers = _SECCOMP_NR[machine]
        ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
        allow, errno_ret = 0x7FFF0000, 0x00050000
        program = [
            (ld, 0, 0, 4),  # A = seccomp_data.arch
            (jeq, 1, 0, audit_arch),
            (ret, 0, 0, errno_ret | 1),  # another ABI (int 0x80...): EPERM for everything
            (ld, 0, 0, 0),  # A = seccomp_data.nr
            (jge, 0, 1, 0x40000000),  # the x32 ABI on x86_64
            (ret, 0, 0, errno_ret | 1),
        ]
        for name, errno in _SECCOMP_DENY.items():
            program += [(jeq, 0, 1, numbers[name]), (ret, 0, 0, errno_ret | errno)]
        program += [
            (jeq, 0, 3, numbers["clone"]),
            (ld, 0, 0, 16),  # A = low half of clone's flags
            (jset, 0, 1, _CLONE_NAMESPACES),
            (ret, 0, 0, errno_ret | 1),
            (ret, 0, 0, allow),
        ]

        class SockFilter(ctypes.Structure):
            _fields_ = [
                ("code", ctypes.c_ushort),
                ("jt", ctypes.c_ubyte),
                ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32),
            ]

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]

        filters = (SockFilter * len(program))(*(SockFilter(*ins) for ins in program))
        fprog = SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(SockFilter)))
        rc = self.libc.prctl(_PR_SET_SECCOMP, 2, ctypes.addressof(fprog), 0, 0)
        self._check(rc, "seccomp")


class _Steps:
    """Runs setup steps: required ones raise on failure; in a probe they are only recorded."""

    def __init__(self, best_effort: bool) -> None:
        self.best_effort = best_effort
        self.applied: dict[str, object] = {}

    def run(self, name: str, func: Callable[[], object]) -> bool:
        try:
            func()
        except (OSError, ValueError) as exc:
            if not self.best_effort:
                raise OSError(f"{name}: {exc}") from exc
            self.applied[name] = False
            self.applied[f"{name}_error"] = str(exc)
            return False
        self.applied[name] = True
        return True


def _h_unescape(field: str) -> str:
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _h_enter_namespaces(libc: _Libc, cfg: dict[str, Any], steps: _Steps) -> bool:
    """Fallback as root: new namespaces and a read-only, masked view of the file system."""
    flags = _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS | _CLONE_NEWPID
    if not steps.run("namespaces", lambda: libc.unshare(flags)):
        return False
    for name in ("mount_namespace", "network_namespace", "pid_namespace", "ipc_namespace"):
        steps.applied[name] = True
    libc.mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)
    keep = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC}
    keep |= {"noatime": _MS_NOATIME, "nodiratime": _MS_NODIRATIME, "relatime": _MS_RELATIME}
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for fields in mounts:
        target = _h_unescape(fields[4])
        if target != "/" and (_is_within(target, "/proc") or _is_within(target, "/dev")):
            continue
        extra = sum(v for k, v in keep.items() if k in fields[5].split(","))
        try:
            libc.mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | extra, None)
        except OSError:
            if target == "/":
                raise
    steps.applied["readonly_system"] = True
    masks: list[str] = cfg["masks"]
    held = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in cfg["rebinds"]}
    quiet = _MS_NOSUID | _MS_NODEV
    for mask in masks:
        libc.mount("tmpfs", mask, "tmpfs", quiet, "mode=0755,size=1m")
    for path, fd in held.items():
        os.makedirs(path, mode=0o755, exist_ok=True)
        libc.mount(f"/proc/self/fd/{fd}", path, None, _MS_BIND | _MS_REC, None)
        libc.mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | quiet, None)
        os.close(fd)
    workdir = cfg["workdir"]
    os.makedirs(workdir, mode=0o755, exist_ok=True)
    owner = f",uid={cfg['uid']},gid={cfg['uid']}" if cfg["uid"] is not None else ""
    size = cfg["limits"]["disk_mb"]
    libc.mount("tmpfs", workdir, "tmpfs", quiet, f"mode=0700,size={size}m{owner}")
    libc.mount("tmpfs", "/dev/shm", "tmpfs", quiet, f"mode=1777,size={cfg['shm_mb']}m")
    for mask in masks:
        libc.mount(None, mask, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | quiet, None)
    steps.applied["masked"] = list(masks)
    return True


def _h_children() -> list[int]:
    me = os.getpid()
    kids = []
    for name in os.listdir("/proc"):
        info = _proc_stat(name) if name.isdigit() else None
        if info is not None and info[1] == me and info[0] not in (b"Z", b"X"):
            kids.append(int(name))
    return kids


def _h_reap(worker: int) -> NoReturn:
    """The fallback's reaper: wait for the worker, kill and reap every leftover descendant."""
    status, done = 0, False
    while True:
        if done:
            for pid in _h_children():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        try:
            pid, st = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == worker:
            status, done = st, True
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _h_drop(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid):
        raise OSError("uid switch did not take")
    with open("/proc/self/status") as f:
        fields = (line.partition(":") for line in f)
        caps = {k: v.strip() for k, _, v in fields if k.startswith("Cap")}
    if any(int(caps.get(k, "0"), 16) for k in ("CapEff", "CapPrm", "CapAmb")):
        raise OSError(f"capabilities left after the uid switch: {caps}")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise OSError("could switch back to root")


def _h_setrlimits(cfg: dict[str, Any], own_uid: bool) -> None:
    import resource

    lim = cfg["limits"]
    mib = 1 << 20
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"]))  # SIGKILL at the limit
    resource.setrlimit(resource.RLIMIT_AS, (lim["memory_mb"] * mib, lim["memory_mb"] * mib))
    resource.setrlimit(resource.RLIMIT_FSIZE, (lim["file_size_mb"] * mib,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
    nproc = lim["max_processes"]
    if not own_uid:  # the count is per uid: leave room for the user's other processes
        nproc += sum(1 for n in os.listdir("/proc") if n.isdigit())
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))


def _h_socket_prelude() -> None:
    """Last resort without netns or seccomp: refuse sockets at the Python level (bypassable)."""
    import _socket
    import socket

    def refuse(*_args: object, **_kwargs: object) -> NoReturn:
        raise PermissionError(13, "network access is disabled in the sandbox")

    class NoSocket(socket.socket):
        def __init__(self, *args: object, **kwargs: object) -> None:
            refuse()

    socket.socket = _socket.socket = NoSocket  # type: ignore[misc]
    for name in ("create_connection", "getaddrinfo", "gethostbyname", "socketpair", "fromfd"):
        setattr(socket, name, refuse)


def _h_worker_setup(libc: _Libc, cfg: dict[str, Any], steps: _Steps, namespaces: bool) -> None:
    """Limits, privileges and filters of the process that runs the untrusted code."""
    uid: int | None = cfg["uid"]
    workdir: str = cfg["workdir"]
    if namespaces:  # fallback: PID 1 of the new PID namespace mounts its own /proc
        steps.run(
            "private_proc",
            lambda: libc.mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None),
        )
    if uid is not None and cfg["backend"] == "bwrap":
        os.chown(workdir, uid, uid)
    if uid is not None and not namespaces and cfg["backend"] == "fallback":
        # No mount namespace: the interpreter may live where the run's uid cannot read
        # (/root/...), so import the usual standard modules while still able to.
        for name in _PRELOAD:
            with contextlib.suppress(ImportError):
                __import__(name)
    _h_setrlimits(cfg, own_uid=uid is not None)
    steps.applied["rlimits"] = ["AS", "CPU", "FSIZE", "NPROC", "NOFILE", "CORE"]
    steps.run("no_new_privs", lambda: libc.prctl(_PR_SET_NO_NEW_PRIVS, 1))
    seccomp = cfg["seccomp"] and steps.run("seccomp", libc.seccomp_filter)
    if seccomp:
        steps.applied["seccomp_denies"] = [*_SECCOMP_DENY, "clone(namespace flags)"]
    if uid is not None:
        steps.run("uid_drop", lambda: _h_drop(uid))
    else:
        steps.applied["uid_drop"] = False
    netns = steps.applied.get("network_namespace") or cfg["backend"] == "bwrap"
    steps.applied["socket_prelude"] = not (seccomp or netns)
    if steps.applied["socket_prelude"]:
        _h_socket_prelude()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by the uid switch: set again
    os.chdir(workdir)  # after the switch: root without CAP_DAC_OVERRIDE cannot enter it


def _h_probe_checks(cfg: dict[str, Any], applied: dict[str, object]) -> None:
    """What the sandboxed code can actually do, for isolation_report()."""
    import socket

    try:
        socket.create_connection(("127.0.0.1", 9), timeout=1).close()
        applied["network_check"] = "reachable"
    except OSError as exc:
        applied["network_check"] = f"blocked ({type(exc).__name__}: {exc.strerror or exc})"
    except Exception as exc:  # noqa: BLE001 - whatever stops it, report it
        applied["network_check"] = f"blocked ({type(exc).__name__}: {exc})"
    visible: dict[str, object] = {}
    for mask in cfg["masks"]:
        try:
            visible[mask] = sorted(os.listdir(mask))
        except OSError as exc:
            visible[mask] = f"unreadable ({exc.strerror})"
    applied["masked_dirs_content"] = visible
    folders = ["/tmp", "/var/tmp", "/etc", "/", os.path.dirname(cfg["workdir"])]
    if cfg["backend"] == "bwrap" or applied.get("mount_namespace"):
        applied["dev_shm"] = "private tmpfs (gone with the run)"
    else:
        folders.append("/dev/shm")
    writable = []
    for folder in dict.fromkeys(folders):
        path = os.path.join(folder, f".memcollab-probe-{os.getpid()}")
        try:
            with open(path, "x"):
                pass
            os.unlink(path)
            writable.append(folder)
        except OSError:
            pass
    applied["writable_outside_workdir"] = writable
    applied["uid_seen_by_code"] = os.getuid()


def _h_main() -> None:
    """Entry point of the harness."""
    cfg = json.loads(sys.argv[1])
    sys.argv[:] = [""]
    with os.fdopen(cfg["payload_fd"], "rb") as f:
        payload = json.loads(f.read())
    harness_module = sys.modules["__main__"]  # kept alive once __main__ is the candidate's
    steps = _Steps(cfg["best_effort"])
    result_fd: int = cfg["result_fd"]
    try:
        libc = _Libc()
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        namespaces = False
        if cfg["backend"] == "fallback":
            if os.getppid() != cfg["parent_pid"]:
                os._exit(_SETUP_FAILED)
            if cfg["namespaces"]:
                namespaces = _h_enter_namespaces(libc, cfg, steps)
            steps.run("subreaper", lambda: libc.prctl(_PR_SET_CHILD_SUBREAPER, 1))
            worker = os.fork()
            if worker:
                for fd in (cfg["nonce_fd"], result_fd):
                    os.close(fd)
                _h_reap(worker)
        _h_worker_setup(libc, cfg, steps, namespaces)
    except (OSError, ValueError) as exc:
        os.write(2, f"memcollab sandbox setup failed: {exc}\n".encode())
        os._exit(_SETUP_FAILED)
    os.write(result_fd, _READY)
    if cfg["mode"] != "tests":
        os.close(cfg["nonce_fd"])
    if cfg["mode"] == "probe":
        _h_probe_checks(cfg, steps.applied)
        os.write(result_fd, b"PROBE " + repr(steps.applied).encode() + b"\n")
        os._exit(0)
    if cfg["mode"] == "exec":
        _h_run_exec(payload["code"])
    else:
        _h_run_tests(payload, cfg)
    del harness_module


def _h_fresh_main() -> dict[str, Any]:
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    return module.__dict__


def _h_register_source(filename: str, source: str) -> None:
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def _h_format(exc: BaseException) -> str:
    """A traceback without the harness's own frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _h_run_exec(code: str) -> None:
    """Tool mode: run the snippet like a script; SystemExit behaves as usual."""
    namespace = _h_fresh_main()
    _h_register_source("<snippet>", code)
    try:
        exec(compile(code, "<snippet>", "exec", dont_inherit=True), namespace)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure of the snippet is reported
        sys.stderr.write(_h_format(exc))
        sys.exit(1)


# Dunders through which an object can pass a comparison whatever the expected value: the
# comparisons, truth and membership, class spoofing for isinstance, and binary arithmetic
# (`abs(x - expected) < eps` with a `__sub__` returning 0). Conversions, iteration or
# attribute access yield definite values, which are judged in turn.
_RISKY_DUNDERS = _words(
    "__eq__ __ne__ __lt__ __le__ __gt__ __ge__ __bool__ __contains__ __class__ "
    "__instancecheck__ __call__ __add__ __radd__ __sub__ __rsub__ __mul__ __rmul__ "
    "__truediv__ __rtruediv__ __floordiv__ __rfloordiv__ __mod__ __rmod__ __divmod__ "
    "__rdivmod__ __pow__ __rpow__ __matmul__ __rmatmul__ __and__ __rand__ __or__ __ror__ "
    "__xor__ __rxor__ __lshift__ __rlshift__ __rshift__ __rrshift__"
)
# Builtins a test typically uses to judge a value; a candidate defining one of these names
# would replace it for the tests.
_JUDGE_BUILTINS = _words(
    "abs all any bool callable dict enumerate filter float frozenset getattr hasattr hash id "
    "int isinstance issubclass iter len list map max min next print range repr reversed "
    "round set sorted str sum tuple type zip AssertionError BaseException Exception "
    "__import__ __build_class__ eval exec compile globals vars"
)
_GUARD_NAME = "__memcollab_guard__"


class _Cheat(Exception):
    """Raised in a test when a value or the environment was forged to pass it."""


class _GuardInserter(ast.NodeTransformer):
    """Route comparison operands, and call results and names inside asserts, to the guard."""

    def __init__(self) -> None:
        self.in_assert = 0

    def _wrap(self, node: ast.expr) -> ast.expr:
        call = ast.Call(ast.Name(_GUARD_NAME, ast.Load()), [node], [])
        return ast.copy_location(call, node)

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        self.in_assert += 1
        node.test = self.visit(node.test)
        self.in_assert -= 1
        node.test = self._wrap(node.test)
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.Compare:
        self.generic_visit(node)
        node.left = self._wrap(node.left)
        node.comparators = [self._wrap(c) for c in node.comparators]
        return node

    def visit_Call(self, node: ast.Call) -> ast.expr:
        if isinstance(node.func, ast.Attribute):
            node.func.value = self.visit(node.func.value)
        elif not isinstance(node.func, ast.Name):
            node.func = self.visit(node.func)
        node.args = [self.visit(a) for a in node.args]
        node.keywords = [self.visit(k) for k in node.keywords]
        return self._wrap(node) if self.in_assert else node

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if self.in_assert and isinstance(node.ctx, ast.Load) and node.id != _GUARD_NAME:
            return self._wrap(node)
        return node


class _Canary:
    """A fresh object no honest value equals."""

    __slots__ = ()


class _Judge:
    """Decides whether values and the environment of a test run are honest.

    Trusted code: the code objects compiled from the setup and the tests; code from files
    under the interpreter's, sys.path's and the harness's directories (never the work
    directory); and code compiled from strings, unless the candidate's own code compiled
    it (an audit hook records those file names). Built before the candidate runs.
    """

    def __init__(self, workdir: str, trusted_codes: list[Any]) -> None:
        self.types = types
        self.builtins_dict = builtins.__dict__
        self.builtins_snapshot = dict(builtins.__dict__)
        self.modules = sys.modules
        self.canary = _Canary()
        self.workdir = os.path.join(os.path.realpath(workdir), "")
        roots = [*sys.path, sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
        roots.append(os.path.dirname(os.path.realpath(__file__)))
        real = {os.path.join(os.path.realpath(r), "") for r in roots if r and os.path.isabs(r)}
        self.roots = tuple(r for r in real if r != "/" and not r.startswith(self.workdir))
        self.codes: dict[int, Any] = {}
        for code in trusted_codes:
            self._trust(code)
        self.file_cache: dict[str, bool] = {}
        # File names the candidate compiled code under (exec, eval, compile called from its
        # own code), recorded by an audit hook, which the candidate cannot remove.
        self.untrusted_files = {"<candidate>"}
        self.in_hook = False
        sys.addaudithook(self._audit)
        self.c_callables = (
            types.WrapperDescriptorType,
            types.MethodDescriptorType,
            types.ClassMethodDescriptorType,
            types.GetSetDescriptorType,
            types.MemberDescriptorType,
        )
        self.type_dict = vars(type)["__dict__"].__get__
        self.type_flags = vars(type)["__flags__"].__get__
        self.type_mro = vars(type)["__mro__"].__get__
        self.module_dict = vars(types.ModuleType)["__dict__"].__get__
        self.leaves = frozenset({int, float, complex, bool, str, bytes, type(None)})

    def _trust(self, code: Any) -> None:
        self.codes[id(code)] = code
        for const in code.co_consts:
            if isinstance(const, self.types.CodeType):
                self._trust(const)

    def _audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event != "compile" or self.in_hook:
            return
        self.in_hook = True
        try:
            caller = sys._getframe(1)
            if not self.code_trusted(caller.f_code) and len(args) > 1:
                filename = args[1]
                if isinstance(filename, str | bytes):
                    self.untrusted_files.add(os.fsdecode(filename))
        except (ValueError, TypeError):
            pass
        finally:
            self.in_hook = False

    def code_trusted(self, code: Any) -> bool:
        """Compiled from the setup or tests, or from an installed file, or from a string by
        such code (frozen modules, code generated by libraries)."""
        if self.codes.get(id(code)) is code:
            return True
        filename = code.co_filename
        if filename in self.untrusted_files:
            return False
        cached = self.file_cache.get(filename)
        if cached is None:
            if filename.startswith("<"):
                cached = True
            else:
                # A file of the interpreter, its site-packages or the harness (the run's uid
                # cannot write there; it may not even be able to read there).
                real = os.path.realpath(filename) if os.path.isabs(filename) else ""
                inside = real.startswith(self.roots) and not real.startswith(self.workdir)
                cached = bool(real) and inside
            self.file_cache[filename] = cached
        return cached

    def callable_trusted(self, owner: type, name: str, value: Any) -> bool:
        types = self.types
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        if isinstance(value, property):
            return all(
                f is None or self.callable_trusted(owner, name, f)
                for f in (value.fget, value.fset, value.fdel)
            )
        if type(value) is types.FunctionType:
            return self.code_trusted(value.__code__)
        if isinstance(value, self.c_callables):
            # A C slot of one of the class's bases under its own name behaves as inherited
            # (`__ne__ = object.__ne__`); under another name (`__eq__ = str.__ne__`) it forges.
            objclass = getattr(value, "__objclass__", None)
            return objclass in self.type_mro(owner) and value.__name__ == name
        return value is None or not callable(value)

    def type_trusted(self, cls: type) -> bool:
        # Read through type's own descriptors: a metaclass cannot fake them.
        if not self.type_flags(cls) & (1 << 9):  # a static (C) type: cannot be changed
            return True
        for klass in self.type_mro(cls):
            if klass is object or not self.type_flags(klass) & (1 << 9):
                continue
            namespace = self.type_dict(klass)
            for name in _RISKY_DUNDERS.intersection(namespace):
                if not self.callable_trusted(klass, name, namespace[name]):
                    return False
        return True

    def check(self, value: Any, budget: int = 1_000_000) -> None:
        """Raise _Cheat if `value` (or anything it contains) can fake a comparison."""
        leaves = self.leaves
        stack = [value]
        seen: set[int] = set()
        while stack and budget > 0:
            budget -= 1
            obj = stack.pop()
            cls = type(obj)
            if cls in leaves:
                continue
            if not self.type_trusted(cls):
                raise _Cheat(
                    f"a {cls.__qualname__!r} value overrides comparison, truth or arithmetic "
                    "with code that does not come from the tests or the installed library"
                )
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if isinstance(obj, list):
                stack.extend(list.__iter__(obj))
            elif isinstance(obj, tuple):
                stack.extend(tuple.__iter__(obj))
            elif isinstance(obj, set | frozenset):
                stack.extend(set.__iter__(obj) if isinstance(obj, set) else frozenset.__iter__(obj))
            elif isinstance(obj, dict):
                for key, item in dict.items(obj):
                    stack.append(key)
                    stack.append(item)
            else:
                try:
                    equal = obj == self.canary
                except Exception:  # noqa: BLE001 - an honest value may refuse the comparison
                    continue
                if equal is True:
                    raise _Cheat(f"a {cls.__qualname__!r} value claims to equal anything")

    def guard(self, value: Any) -> Any:
        self.check(value)
        return value

    def restore_builtins(self) -> list[str]:
        """Put back replaced builtins; return their names."""
        replaced = [
            name
            for name, original in self.builtins_snapshot.items()
            if self.builtins_dict.get(name, _Canary) is not original
        ]
        dict.update(self.builtins_dict, self.builtins_snapshot)
        return replaced

    def tampering(self, candidate_module: dict[str, Any], test_names: set[str]) -> str | None:
        """Restore replaced builtins, then say what the candidate forged, if anything."""
        replaced = self.restore_builtins()
        if replaced:
            return f"the code replaced builtins: {', '.join(sorted(replaced)[:8])}"
        shadowed = sorted(
            name
            for name in _JUDGE_BUILTINS & test_names
            if name in candidate_module
            and candidate_module[name] is not self.builtins_snapshot.get(name)
        )
        if shadowed:
            return f"the code rebinds builtins the tests use: {', '.join(shadowed)}"
        types = self.types
        for mod_name, module in list(self.modules.items()):
            if isinstance(module, types.ModuleType):
                if self.module_dict(module) is candidate_module:
                    continue
                namespace = self.module_dict(module)
            else:
                namespace = getattr(module, "__dict__", None)
                if not isinstance(namespace, dict):
                    continue
            for attr, value in list(namespace.items()):
                func = value.__func__ if type(value) is types.MethodType else value
                if type(func) is types.FunctionType:
                    if not self.code_trusted(func.__code__):
                        return f"the code replaced {mod_name}.{attr}"
                elif (
                    not isinstance(value, type)
                    and not self.type_trusted(type(value))
                    and callable(value)
                ):
                    return f"the code replaced {mod_name}.{attr}"
        return None


def _h_names(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _h_failing_line(exc: BaseException, filename: str, source: str) -> str:
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    lines = source.splitlines()
    if line is not None and 0 < line <= len(lines):
        return lines[line - 1].strip()
    return source.strip()[:500]


def _h_tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-_TRACEBACK_LINES:])


def _h_run_tests(payload: dict[str, Any], cfg: dict[str, Any]) -> NoReturn:
    """Judge mode: setup, candidate, then each test; one nonce-authenticated record."""
    real_assertion_error = AssertionError
    os_write, os_exit = os.write, os._exit
    result_fd: int = cfg["result_fd"]
    # Read the nonce now and close its pipe, so no file descriptor the candidate could scan
    # holds it; keep it XOR-split so no string in memory looks like it either.
    nonce = os.read(cfg["nonce_fd"], 256)
    os.close(cfg["nonce_fd"])
    mask = os.urandom(len(nonce))
    hidden = bytes(a ^ b for a, b in zip(nonce, mask, strict=True))
    del nonce
    tests: tuple[str, ...] = tuple(payload["tests"])
    record: dict[str, Any] = {"n": len(tests), "phase": None, "tests": []}

    # Everything trusted is compiled before the candidate exists.
    compiled: list[Any] = []
    test_names: set[str] = set()
    setup_code = None
    for index, source in enumerate(tests, start=1):
        filename = f"<test {index}>"
        _h_register_source(filename, source)
        try:
            tree = ast.parse(source, filename)
            test_names |= _h_names(tree)
            tree = ast.fix_missing_locations(_GuardInserter().visit(tree))
            compiled.append(compile(tree, filename, "exec", dont_inherit=True))
        except (SyntaxError, ValueError) as exc:
            compiled.append(exc)
    try:
        _h_register_source("<setup>", payload["setup"])
        setup_code = compile(payload["setup"], "<setup>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        record["phase"] = {"phase": "setup", "error": _h_tail(_h_format(exc))}
    judge = _Judge(cfg["workdir"], [c for c in [setup_code, *compiled] if c is not None])

    def emit() -> NoReturn:
        judge.restore_builtins()  # the real builtins back before using any
        text = repr(record).encode("utf-8", "backslashreplace")
        revealed = bytes(a ^ b for a, b in zip(hidden, mask, strict=True))
        data = memoryview(revealed + b" " + text + b"\n")
        while data:
            data = data[os_write(result_fd, data) :]
        os_exit(0)

    namespace = _h_fresh_main()
    if record["phase"] is not None:
        emit()
    phase = "setup"
    try:
        exec(setup_code or "", namespace)
        phase = "candidate"
        _h_register_source("<candidate>", payload["candidate"])
        exec(compile(payload["candidate"], "<candidate>", "exec", dont_inherit=True), namespace)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and all: the phase failed
        judge.restore_builtins()
        record["phase"] = {"phase": phase, "error": _h_tail(_h_format(exc))}
        emit()
    forged = judge.tampering(namespace, test_names)
    if forged:
        record["phase"] = {"phase": "candidate", "error": f"tampering detected: {forged}"}
        emit()
    globals_for_tests = dict(namespace)
    globals_for_tests["__builtins__"] = builtins
    globals_for_tests[_GUARD_NAME] = judge.guard
    results: list[dict[str, Any]] = []
    for index, code in enumerate(compiled, start=1):
        filename, source = f"<test {index}>", tests[index - 1]
        if isinstance(code, BaseException):
            error = _h_tail(_h_format(code))
            results.append({"status": "error", "line": source.strip()[:500], "error": error})
            continue
        try:
            exec(code, globals_for_tests)
        except BaseException as exc:  # noqa: BLE001 - any exception fails the test
            forged = judge.tampering(namespace, test_names)
            failed = issubclass(type(exc), real_assertion_error) and not forged
            error = _h_tail(_h_format(exc))
            if forged:
                error += f"\ntampering detected: {forged}"
            results.append(
                {
                    "status": "failed" if failed else "error",
                    "line": _h_failing_line(exc, filename, source),
                    "error": error,
                }
            )
            continue
        forged = judge.tampering(namespace, test_names)
        if forged:
            error = f"tampering detected: {forged}"
            results.append({"status": "error", "line": source.strip()[:500], "error": error})
        else:
            results.append({"status": "passed", "line": None, "error": None})
    record["tests"] = results
    emit()


if __name__ == "__main__":
    _h_main()
