"""The sandbox harness: started by path inside the sandbox as `python -I -B THIS_FILE CONFIG`.

It runs as root until it drops to the run's uid: it sets the process up (namespaces in the
fallback, limits, seccomp, uid switch; see `sandbox.py` for the threat model), writes READY,
then runs the untrusted code: a snippet (`exec` mode) or a candidate and its tests (`tests`
mode, judged by `sandbox_judge.py`, loaded by path before the uid switch), or a probe.

Standard library only: it never imports memcollab (the package is not on the isolated
interpreter's path). Importing it from the parent has no side effects; the parent takes the
constants shared with the harness (READY, SETUP_FAILED, ...) from here.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import importlib.util
import json
import linecache
import os
import signal
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any, NoReturn

SETUP_FAILED = 97  # exit status of a harness that could not set the sandbox up
READY = b"READY\n"  # written by the harness once set up, before untrusted code runs
TRACEBACK_LINES = 30
TEST_STATUSES = ("passed", "failed", "error")
JUDGE_FILE = os.path.join(os.path.dirname(os.path.realpath(__file__)), "sandbox_judge.py")


def is_within(path: str, parent: str) -> bool:
    """Whether `path` is `parent` or below it (both absolute, normalised)."""
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def proc_stat(pid: str) -> tuple[bytes, int] | None:
    """(state, parent pid) of a process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return (fields[0], int(fields[1])) if len(fields) > 1 else None


def _load_judge() -> types.ModuleType:
    """The verdict-integrity module, loaded from its file (no package on this path)."""
    spec = importlib.util.spec_from_file_location("sandbox_judge", JUDGE_FILE)
    if spec is None or spec.loader is None:
        raise OSError(f"cannot load {JUDGE_FILE}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def _unescape(field: str) -> str:
    import re

    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _enter_namespaces(libc: _Libc, cfg: dict[str, Any], steps: _Steps) -> bool:
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
        target = _unescape(fields[4])
        if target != "/" and (is_within(target, "/proc") or is_within(target, "/dev")):
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


def _children() -> list[int]:
    me = os.getpid()
    kids = []
    for name in os.listdir("/proc"):
        info = proc_stat(name) if name.isdigit() else None
        if info is not None and info[1] == me and info[0] not in (b"Z", b"X"):
            kids.append(int(name))
    return kids


def _reap(worker: int) -> NoReturn:
    """The fallback's reaper: wait for the worker, kill and reap every leftover descendant."""
    status, done = 0, False
    while True:
        if done:
            for pid in _children():
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


def _drop(uid: int) -> None:
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


def _setrlimits(cfg: dict[str, Any], own_uid: bool) -> None:
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


def _socket_prelude() -> None:
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


def _worker_setup(libc: _Libc, cfg: dict[str, Any], steps: _Steps, namespaces: bool) -> None:
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
    _setrlimits(cfg, own_uid=uid is not None)
    steps.applied["rlimits"] = ["AS", "CPU", "FSIZE", "NPROC", "NOFILE", "CORE"]
    steps.run("no_new_privs", lambda: libc.prctl(_PR_SET_NO_NEW_PRIVS, 1))
    seccomp = cfg["seccomp"] and steps.run("seccomp", libc.seccomp_filter)
    if seccomp:
        steps.applied["seccomp_denies"] = [*_SECCOMP_DENY, "clone(namespace flags)"]
    if uid is not None:
        steps.run("uid_drop", lambda: _drop(uid))
    else:
        steps.applied["uid_drop"] = False
    netns = steps.applied.get("network_namespace") or cfg["backend"] == "bwrap"
    steps.applied["socket_prelude"] = not (seccomp or netns)
    if steps.applied["socket_prelude"]:
        _socket_prelude()
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # cleared by the uid switch: set again
    os.chdir(workdir)  # after the switch: root without CAP_DAC_OVERRIDE cannot enter it


def _probe_checks(cfg: dict[str, Any], applied: dict[str, object]) -> None:
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


def main() -> None:
    """Entry point of the harness."""
    cfg = json.loads(sys.argv[1])
    sys.argv[:] = [""]
    with os.fdopen(cfg["payload_fd"], "rb") as f:
        payload = json.loads(f.read())
    harness_module = sys.modules["__main__"]  # kept alive once __main__ is the candidate's
    steps = _Steps(cfg["best_effort"])
    result_fd: int = cfg["result_fd"]
    try:
        # Loaded while still root: the run's uid may not be able to read the package.
        judge_module = _load_judge() if cfg["mode"] == "tests" else None
        libc = _Libc()
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        namespaces = False
        if cfg["backend"] == "fallback":
            if os.getppid() != cfg["parent_pid"]:
                os._exit(SETUP_FAILED)
            if cfg["namespaces"]:
                namespaces = _enter_namespaces(libc, cfg, steps)
            steps.run("subreaper", lambda: libc.prctl(_PR_SET_CHILD_SUBREAPER, 1))
            worker = os.fork()
            if worker:
                for fd in (cfg["nonce_fd"], result_fd):
                    os.close(fd)
                _reap(worker)
        _worker_setup(libc, cfg, steps, namespaces)
    except (OSError, ValueError, ImportError) as exc:
        os.write(2, f"memcollab sandbox setup failed: {exc}\n".encode())
        os._exit(SETUP_FAILED)
    os.write(result_fd, READY)
    if cfg["mode"] != "tests":
        os.close(cfg["nonce_fd"])
    if cfg["mode"] == "probe":
        _probe_checks(cfg, steps.applied)
        os.write(result_fd, b"PROBE " + repr(steps.applied).encode() + b"\n")
        os._exit(0)
    if cfg["mode"] == "exec":
        _run_exec(payload["code"])
    else:
        assert judge_module is not None
        _run_tests(payload, cfg, judge_module)
    del harness_module


def _fresh_main() -> dict[str, Any]:
    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    return module.__dict__


def _register_source(filename: str, source: str) -> None:
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)


def _format(exc: BaseException) -> str:
    """A traceback without the harness's own frames."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, JUDGE_FILE):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _run_exec(code: str) -> None:
    """Tool mode: run the snippet like a script; SystemExit behaves as usual."""
    namespace = _fresh_main()
    _register_source("<snippet>", code)
    try:
        exec(compile(code, "<snippet>", "exec", dont_inherit=True), namespace)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - any failure of the snippet is reported
        sys.stderr.write(_format(exc))
        sys.exit(1)


def _names(tree: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _failing_line(exc: BaseException, filename: str, source: str) -> str:
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


def _tail(text: str) -> str:
    return "\n".join(text.rstrip().splitlines()[-TRACEBACK_LINES:])


def _run_tests(
    payload: dict[str, Any], cfg: dict[str, Any], verdicts: types.ModuleType
) -> NoReturn:
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
        _register_source(filename, source)
        try:
            tree = ast.parse(source, filename)
            test_names |= _names(tree)
            tree = ast.fix_missing_locations(verdicts.GuardInserter().visit(tree))
            compiled.append(compile(tree, filename, "exec", dont_inherit=True))
        except (SyntaxError, ValueError) as exc:
            compiled.append(exc)
    try:
        _register_source("<setup>", payload["setup"])
        setup_code = compile(payload["setup"], "<setup>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        record["phase"] = {"phase": "setup", "error": _tail(_format(exc))}
    judge = verdicts.Judge(cfg["workdir"], [c for c in [setup_code, *compiled] if c is not None])

    def emit() -> NoReturn:
        judge.restore_builtins()  # the real builtins back before using any
        text = repr(record).encode("utf-8", "backslashreplace")
        revealed = bytes(a ^ b for a, b in zip(hidden, mask, strict=True))
        data = memoryview(revealed + b" " + text + b"\n")
        while data:
            data = data[os_write(result_fd, data) :]
        os_exit(0)

    namespace = _fresh_main()
    if record["phase"] is not None:
        emit()
    phase = "setup"
    try:
        exec(setup_code or "", namespace)
        phase = "candidate"
        _register_source("<candidate>", payload["candidate"])
        exec(compile(payload["candidate"], "<candidate>", "exec", dont_inherit=True), namespace)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and all: the phase failed
        judge.restore_builtins()
        record["phase"] = {"phase": phase, "error": _tail(_format(exc))}
        emit()
    forged = judge.tampering(namespace, test_names)
    if forged:
        record["phase"] = {"phase": "candidate", "error": f"tampering detected: {forged}"}
        emit()
    globals_for_tests = dict(namespace)
    globals_for_tests["__builtins__"] = builtins
    globals_for_tests[verdicts.GUARD_NAME] = judge.guard
    results: list[dict[str, Any]] = []
    for index, code in enumerate(compiled, start=1):
        filename, source = f"<test {index}>", tests[index - 1]
        if isinstance(code, BaseException):
            error = _tail(_format(code))
            results.append({"status": "error", "line": source.strip()[:500], "error": error})
            continue
        try:
            exec(code, globals_for_tests)
        except BaseException as exc:  # noqa: BLE001 - any exception fails the test
            forged = judge.tampering(namespace, test_names)
            failed = issubclass(type(exc), real_assertion_error) and not forged
            error = _tail(_format(exc))
            if forged:
                error += f"\ntampering detected: {forged}"
            results.append(
                {
                    "status": "failed" if failed else "error",
                    "line": _failing_line(exc, filename, source),
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
    main()
