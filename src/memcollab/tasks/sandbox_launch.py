"""Launching and supervising one sandboxed process, in the parent (see `sandbox.py`).

Backends (bubblewrap or the fallback): selection, probing and command lines; the launch of
`sandbox_harness.py` by its path with a per-run uid, work directory, payload and nonce;
supervision of its pipes and limits; killing its whole process tree; parsing its record.
"""

from __future__ import annotations

import ast
import contextlib
import json
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from memcollab.errors import MemcollabError
from memcollab.tasks import sandbox_harness
from memcollab.tasks.sandbox_harness import (
    READY,
    TEST_STATUSES,
    TRACEBACK_LINES,
    is_within,
    proc_stat,
)

BackendName = Literal["auto", "bwrap", "fallback"]

ENV_SWITCH = "MEMCOLLAB_SANDBOX"
# The harness runs as a script started by path (stdlib only, inside the sandbox).
_HARNESS_FILE = os.path.realpath(sandbox_harness.__file__)
_UID_BASE = 0x4D430000  # per-run uids are drawn from [_UID_BASE, _UID_BASE + _UID_SPAN)
_UID_SPAN = 1 << 20
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


# ------------------------------------------------------------------------------------------
# Backends: selection, probing, command lines
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """A sandbox backend and the isolation mechanisms its probe found working."""

    name: Literal["bwrap", "fallback"]
    bwrap: str | None
    mechanisms: dict[str, object]  # what the probe found working
    root: bool

    @property
    def uid_drop(self) -> bool:
        return bool(self.mechanisms.get("uid_drop"))


_PROBES: dict[str, Backend | SandboxError] = {}
_PROBE_LOCK = threading.Lock()


def requested_backend(backend: BackendName | None) -> str:
    """The backend asked for: the argument, else the environment switch, else "auto"."""
    requested = backend or os.environ.get(ENV_SWITCH, "").strip().lower() or "auto"
    if requested not in ("auto", "bwrap", "fallback"):
        raise SandboxError(f"unknown sandbox backend {requested!r} (use auto, bwrap or fallback)")
    return requested


def choose_backend(backend: BackendName | None) -> Backend:
    """The backend to run with (bubblewrap when asked or usable, else the fallback)."""
    requested = requested_backend(backend)
    if requested in ("auto", "bwrap"):
        probed = probe("bwrap")
        if isinstance(probed, Backend):
            return probed
        if requested == "bwrap":
            raise probed
    probed = probe("fallback")
    if isinstance(probed, SandboxError):
        raise probed
    return probed


def probe(name: str) -> Backend | SandboxError:
    """Run the harness once in probe mode through a backend; cache what works."""
    with _PROBE_LOCK:
        if name not in _PROBES:
            _PROBES[name] = _run_probe(name)
        return _PROBES[name]


def _run_probe(name: str) -> Backend | SandboxError:
    bwrap = shutil.which("bwrap") if name == "bwrap" else None
    if name == "bwrap" and bwrap is None:
        return SandboxError("bubblewrap (bwrap) is not installed")
    root = os.geteuid() == 0
    attempt = Backend(
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
        detail = tail_lines(raw.stderr.text(), 8) or describe_exit(raw.returncode)
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
    return Backend(name=attempt.name, bwrap=bwrap, mechanisms=mechanisms, root=root)


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
        if any(is_within(s, real) for s in system):
            continue  # never hide the system itself (a HOME of "/" or "/usr")
        found.append(real)
    found = sorted(set(found), key=len)
    return [m for i, m in enumerate(found) if not any(is_within(m, o) for o in found[:i])]


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
    real = [d for i, d in enumerate(real) if not any(is_within(d, o) for o in real[:i])]
    return [d for d in real if any(is_within(d, m) for m in masks)]


def _bwrap_parents(path: str, masks: list[str]) -> list[str]:
    """bwrap arguments creating, world-traversable, the parents of `path` inside its mask."""
    mask = next((m for m in masks if is_within(path, m)), None)
    if mask is None:
        return []
    args: list[str] = []
    parts = os.path.relpath(path, mask).split("/")[:-1]
    current = mask
    for part in parts:
        current = os.path.join(current, part)
        args += ["--perms", "0755", "--dir", current]
    return args


def _command(backend: Backend, cfg: dict[str, Any]) -> list[str]:
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
class RawRun:
    """What one sandboxed process left: exit status, output tails, record pipe, timing."""

    returncode: int
    stdout: _Tail
    stderr: _Tail
    records: bytes
    nonce: str
    timed_out: bool
    timeout_reason: str
    duration_s: float
    ready: bool


def execute(
    mode: str, payload: dict[str, Any], limits: SandboxLimits, backend: BackendName | None
) -> RawRun:
    """Run the harness in `mode` on `payload` in a fresh sandbox; raise if it did not start."""
    if not isinstance(limits, SandboxLimits):
        raise TypeError("limits must be a SandboxLimits")
    chosen = choose_backend(backend)
    raw = _launch(chosen, mode, payload, limits, best_effort=False)
    if not raw.ready and not raw.timed_out:
        detail = tail_lines(raw.stderr.text(), 8) or describe_exit(raw.returncode)
        raise SandboxError(f"the {chosen.name} sandbox failed to start: {detail}")
    return raw


def _launch(
    backend: Backend,
    mode: str,
    payload: dict[str, Any],
    limits: SandboxLimits,
    *,
    best_effort: bool,
) -> RawRun:
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
) -> RawRun:
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
    return RawRun(
        returncode=returncode,
        stdout=stdout,
        stderr=stderr,
        records=raw_records,
        nonce=nonce,
        timed_out=timed_out,
        timeout_reason=reason,
        duration_s=round(duration, 4),
        ready=records.head.startswith(READY),
    )


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _descendants(root: int) -> list[int]:
    """Live (non-zombie) processes below `root`."""
    children: dict[int, list[int]] = {}
    live: set[int] = set()
    for name in os.listdir("/proc"):
        if name.isdigit() and (info := proc_stat(name)) is not None:
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


def describe_exit(returncode: int) -> str:
    """An exit status in words ("killed by SIGKILL", "exit status 3")."""
    if returncode > 128:
        try:
            name = signal.Signals(returncode - 128).name
        except ValueError:
            name = f"signal {returncode - 128}"
        return f"killed by {name}"
    return f"exit status {returncode}"


def tail_lines(text: str, n: int = TRACEBACK_LINES) -> str:
    """The last `n` lines of `text`."""
    return "\n".join(text.rstrip().splitlines()[-n:])


def parse_record(raw: bytes, nonce: str, total: int) -> dict[str, Any] | None:
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
        if not isinstance(result, dict) or result.get("status") not in TEST_STATUSES:
            return None
        if not all(result.get(k) is None or _is_str(result.get(k)) for k in ("line", "error")):
            return None
    return record


def _is_str(value: object) -> bool:
    return isinstance(value, str)
