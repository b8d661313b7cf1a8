"""Hostile code in the sandbox: each snippet is contained, and never judged "passed" by cheating.

Every test runs on each backend that works here (bubblewrap and the fallback). Processes a
snippet starts rename themselves (prctl PR_SET_NAME) to a per-test token, so the host's
/proc shows whether any survived the run.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from memcollab.tasks.sandbox import (
    BackendName,
    SandboxLimits,
    TestVerdict,
    isolation_report,
    run_code,
    run_tests,
)
from memcollab.tasks.sandbox_launch import parse_record

FAST = SandboxLimits(wall_s=0.6, cpu_s=1)
# A well-formed "all passed" record for TESTS, as a forger would write it.
RECORD = repr(
    {"n": 2, "phase": None, "tests": [{"status": "passed", "line": None, "error": None}] * 2}
)
WRONG = "def f(x):\n    return 0\n"  # the task: f(1) == 2
TESTS = ["assert f(1) == 2", "assert f(2) == 3"]


def require(backend: BackendName, *names: str) -> None:
    """Skip a containment check when none of the mechanisms it relies on is active here.

    As root (and with bubblewrap) all are; an unprivileged fallback without namespaces
    cannot hide the user's own files or processes from code running as the same user.
    """
    mechanisms = isolation_report(backend)["mechanisms"]  # type: ignore[arg-type]
    assert isinstance(mechanisms, dict)
    if not any(mechanisms.get(name) for name in names):
        pytest.skip(f"none of {', '.join(names)} is active on the {backend} backend here")


@pytest.fixture
def token() -> str:
    return "sbx" + secrets.token_hex(4)


def tagged(token: str, code: str) -> str:
    """Prefix code with a rename of the process (inherited by its children) to `token`."""
    return f"import ctypes\nctypes.CDLL(None).prctl(15, b'{token}', 0, 0, 0)\n{code}"


def survivors(token: str) -> list[int]:
    """Live host processes named `token`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            comm = Path(f"/proc/{name}/comm").read_text().strip()
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if comm == token and state not in ("Z", "X"):
            found.append(int(name))
    return found


def judge(
    backend: BackendName, candidate: str, tests: list[str] = TESTS, **kw: object
) -> TestVerdict:
    return run_tests(candidate, tests, backend=backend, **kw)  # type: ignore[arg-type]


def assert_cheat_rejected(verdict: TestVerdict) -> None:
    assert not verdict.passed
    assert verdict.status != "passed"
    assert verdict.passed_tests < verdict.total_tests or verdict.status in ("error", "timeout")


@pytest.fixture
def tcp_server() -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def assert_no_connection(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        conn, _ = server.accept()
        conn.close()


# --- resources and process trees -----------------------------------------------------------


def test_fork_bomb(backend: BackendName, token: str) -> None:
    require(backend, "pid_namespace", "uid_drop")
    code = tagged(
        token,
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    )
    verdict = judge(backend, code + WRONG, limits=FAST)
    assert verdict.status in ("timeout", "error")
    assert survivors(token) == []


def test_infinite_loop(backend: BackendName) -> None:
    verdict = judge(backend, "def f(x):\n    while True:\n        pass\n", limits=FAST)
    assert verdict.status == "timeout"


def test_daemonised_busy_child_is_killed(backend: BackendName, token: str) -> None:
    code = tagged(
        token,
        "import os\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        while True:\n"
        "            pass\n"
        "    os._exit(0)\n"
        "print('parent leaves')\n",
    )
    result = run_code(code, backend=backend)
    assert result.status == "ok" and result.stdout == "parent leaves\n"
    assert survivors(token) == []
    verdict = judge(backend, code + WRONG)
    assert verdict.status == "failed"
    assert survivors(token) == []


def test_huge_allocation(backend: BackendName) -> None:
    result = run_code("block = bytearray(16 * 1024**3)\nprint('allocated')", backend=backend)
    assert result.status == "error" and "MemoryError" in result.stderr
    verdict = judge(backend, "def f(x):\n    return len(bytearray(16 * 1024**3))\n")
    assert verdict.status == "error" and "MemoryError" in (verdict.error or "")


def test_huge_file(backend: BackendName) -> None:
    code = (
        "with open('big.bin', 'wb') as f:\n"
        "    for _ in range(200):\n"
        "        f.write(bytes(1 << 20))\n"
    )
    result = run_code(code, backend=backend)
    assert result.status == "error"
    assert "File too large" in result.stderr or "No space left" in result.stderr


def test_recursion_bomb(backend: BackendName) -> None:
    verdict = judge(backend, "def f(x):\n    return f(x + 1)\n")
    assert verdict.status == "error" and "RecursionError" in (verdict.error or "")
    deep = "import sys\nsys.setrecursionlimit(10**8)\ndef f(x):\n    return f(x + 1)\n"
    assert judge(backend, deep, limits=FAST).status in ("error", "timeout")


def test_thread_bomb(backend: BackendName, token: str) -> None:
    code = tagged(
        token,
        "import threading, time\n"
        "def f(x):\n"
        "    while True:\n"
        "        threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n",
    )
    verdict = judge(backend, code, limits=FAST)
    assert verdict.status in ("error", "timeout")
    assert "can't start new thread" in (verdict.error or "") or verdict.status == "timeout"
    assert survivors(token) == []


def test_ignored_signals_and_alarm(backend: BackendName, token: str) -> None:
    stubborn = tagged(
        token,
        "import signal\n"
        "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        "def f(x):\n"
        "    while True:\n"
        "        pass\n",
    )
    assert judge(backend, stubborn, limits=FAST).status == "timeout"
    assert survivors(token) == []
    # An alarm that leaves "successfully" while the tests are still running.
    alarm = (
        "import os, signal, time\n"
        "signal.signal(signal.SIGALRM, lambda *a: os._exit(0))\n"
        "signal.alarm(1)\n"
        "def f(x):\n"
        "    time.sleep(5)\n"
        "    return x + 1\n"
    )
    verdict = judge(backend, alarm, limits=SandboxLimits(wall_s=3.0))
    assert verdict.status == "error"
    assert "without reporting a verdict" in (verdict.error or "")


# --- file system ---------------------------------------------------------------------------


def home_dir() -> Path:
    return Path(pwd.getpwuid(os.getuid()).pw_dir)


def test_write_to_home_directory(backend: BackendName, token: str) -> None:
    require(backend, "mount_namespace", "uid_drop")
    target = home_dir() / f"memcollab-pwned-{token}"
    code = f"open({str(target)!r}, 'w').write('pwned')\n"
    result = run_code(code, backend=backend)
    assert result.status == "error"
    assert not target.exists()
    verdict = judge(backend, f"try:\n    {code}except OSError:\n    pass\n" + WRONG)
    assert verdict.status == "failed"
    assert not target.exists()


def test_write_outside_workdir_to_tmp_and_etc(backend: BackendName, token: str) -> None:
    require(backend, "mount_namespace")
    targets = [Path("/tmp") / f"escape-{token}", Path("/etc") / f"escape-{token}"]
    targets.append(Path("/var/tmp") / f"escape-{token}")
    targets.append(Path("/dev/shm") / f"escape-{token}")
    code = (
        "import os\n"
        f"for path in {[str(t) for t in targets]!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('escaped')\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', path, exc.strerror)\n"
    )
    result = run_code(code, backend=backend)
    assert result.status == "ok"
    for target in targets:
        assert not target.exists(), f"{target} written on the host"
    assert "refused /tmp" in result.stdout and "refused /etc" in result.stdout


def test_persisting_into_the_interpreter(backend: BackendName) -> None:
    require(backend, "mount_namespace", "uid_drop")
    code = (
        "import site, sys\n"
        "path = site.getsitepackages()[0] + '/sitecustomize.py'\n"
        "open(path, 'w').write('import builtins; builtins.passed = True')\n"
    )
    result = run_code(code, backend=backend)
    assert result.status == "error"
    import site

    assert not Path(site.getsitepackages()[0], "sitecustomize.py").exists()


@pytest.fixture
def home_secret(token: str) -> Iterator[tuple[Path, str]]:
    folder = home_dir() / f".memcollab-sbx-test-{token}"
    folder.mkdir(mode=0o755)
    secret = f"SECRET-{secrets.token_hex(8)}"
    path = folder / "secret.txt"
    path.write_text(secret)
    path.chmod(0o644)
    yield path, secret
    shutil.rmtree(folder)


def test_read_home_secret(backend: BackendName, home_secret: tuple[Path, str]) -> None:
    require(backend, "mount_namespace", "uid_drop")
    path, secret = home_secret
    code = (
        "import os, glob\n"
        f"for p in [{str(path)!r}, '/proc/1/root' + {str(path)!r}]:\n"
        "    try:\n"
        "        print(open(p).read())\n"
        "    except OSError as exc:\n"
        "        print('refused', exc.strerror)\n"
        f"print(os.listdir({str(path.parent.parent)!r}))\n"
        f"print(glob.glob({str(path.parent.parent)!r} + '/.*/*'))\n"
    )
    result = run_code(code, backend=backend)
    assert secret not in result.stdout + result.stderr
    assert path.parent.name not in result.stdout + result.stderr
    verdict = judge(backend, f"SECRET = open({str(path)!r}).read()\n" + WRONG)
    assert verdict.status == "error" and secret not in (verdict.error or "")


def test_environment_secrets_are_not_inherited(
    backend: BackendName, monkeypatch: pytest.MonkeyPatch
) -> None:
    require(backend, "pid_namespace", "uid_drop")
    secret = f"SECRET-{secrets.token_hex(8)}"
    monkeypatch.setenv("MEMCOLLAB_TEST_API_KEY", secret)
    code = (
        "import os\n"
        "print(dict(os.environ))\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit():\n"
        "        try:\n"
        "            print(open(f'/proc/{pid}/environ', 'rb').read())\n"
        "        except OSError:\n"
        "            pass\n"
        f"print(open('/proc/{os.getpid()}/environ', 'rb').read())\n"
    )
    result = run_code(code, backend=backend)
    assert secret not in result.stdout + result.stderr
    assert "MEMCOLLAB_TEST_API_KEY" not in result.stdout


# --- network -------------------------------------------------------------------------------


def test_tcp_to_a_local_server(backend: BackendName, tcp_server: socket.socket) -> None:
    port = tcp_server.getsockname()[1]
    code = (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "s.sendall(b'exfiltrated')\n"
    )
    result = run_code(code, backend=backend)
    assert result.status == "error"
    assert_no_connection(tcp_server)
    verdict = judge(
        backend,
        "try:\n    " + code.replace("\n", "\n    ") + "\nexcept OSError:\n    pass\n" + WRONG,
    )
    assert verdict.status == "failed"
    assert_no_connection(tcp_server)


def test_dns_and_udp(backend: BackendName) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.setblocking(False)
    port = receiver.getsockname()[1]
    code = (
        "import socket\n"
        "for attempt in (\n"
        "    lambda: socket.getaddrinfo('example.com', 80),\n"
        "    lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
        f".sendto(b'x', ('127.0.0.1', {port})),\n"
        "    lambda: socket.socket(socket.AF_INET6, socket.SOCK_DGRAM).sendto(b'x', ('::1', 53)),\n"
        "):\n"
        "    try:\n"
        "        print('reached', attempt())\n"
        "    except OSError as exc:\n"
        "        print('blocked', type(exc).__name__)\n"
    )
    result = run_code(code, backend=backend)
    receiver_got = None
    try:
        receiver_got = receiver.recv(100)
    except BlockingIOError:
        pass
    finally:
        receiver.close()
    assert receiver_got is None
    assert "reached" not in result.stdout
    assert result.stdout.count("blocked") == 3


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_subprocess(backend: BackendName, tcp_server: socket.socket) -> None:
    port = tcp_server.getsockname()[1]
    code = (
        "import subprocess\n"
        f"r = subprocess.run(['curl', '-sS', '-m', '3', 'http://127.0.0.1:{port}/steal'],\n"
        "                   capture_output=True, text=True)\n"
        "print('curl exit', r.returncode, r.stderr)\n"
    )
    result = run_code(code, backend=backend)
    assert result.status == "ok", result.stderr
    assert "curl exit 0" not in result.stdout
    assert_no_connection(tcp_server)


def test_ctypes_raw_syscalls(backend: BackendName, tcp_server: socket.socket) -> None:
    port = tcp_server.getsockname()[1]
    code = (
        "import ctypes, os, socket, struct\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM, 0)\n"
        "print('socket', fd, os.strerror(ctypes.get_errno()))\n"
        f"addr = struct.pack('=H', socket.AF_INET) + struct.pack('!H', {port})\n"
        "addr += bytes([127, 0, 0, 1]) + bytes(8)\n"
        "print('connect', libc.connect(fd, addr, len(addr)))\n"
        "print('setuid', libc.setuid(0), 'unshare', libc.unshare(0x10000000 | 0x40000000))\n"
        "print('uid', os.getuid())\n"
    )
    result = run_code(code, backend=backend)
    assert result.status == "ok", result.stderr
    assert "socket -1" in result.stdout
    assert "setuid -1 unshare -1" in result.stdout
    assert_no_connection(tcp_server)


# --- signals against the parent ------------------------------------------------------------


@pytest.fixture
def sentinel() -> Iterator[subprocess.Popen[bytes]]:
    """A process of the test's own user, for the snippet to try to kill."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_killing_the_parent_and_others(
    backend: BackendName, sentinel: subprocess.Popen[bytes]
) -> None:
    require(backend, "pid_namespace", "uid_drop")
    code = (
        "import os, signal\n"
        f"targets = [os.getppid(), {os.getpid()}, {sentinel.pid}, 1, -1, 0]\n"
        "for pid in targets:\n"
        "    try:\n"
        "        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError as exc:\n"
        "        print(pid, type(exc).__name__)\n"
        "try:\n"
        "    os.killpg(os.getpgid(0), signal.SIGKILL)\n"
        "except OSError as exc:\n"
        "    print('pgrp', type(exc).__name__)\n"
    )
    result = run_code(code, backend=backend)
    assert result.status in ("ok", "error")
    assert sentinel.poll() is None, "the sandbox killed a process outside it"
    verdict = judge(backend, code + WRONG)
    assert_cheat_rejected(verdict)
    assert sentinel.poll() is None
    # This test process is still here to run the next line.
    assert os.getpid() > 0


# --- verdict integrity ---------------------------------------------------------------------


def test_sys_exit_before_the_asserts(backend: BackendName) -> None:
    verdict = judge(backend, WRONG + "import sys\nsys.exit(0)\n")
    assert verdict.status == "error" and "SystemExit" in (verdict.error or "")


def test_os_exit_before_the_asserts(backend: BackendName) -> None:
    verdict = judge(backend, WRONG + "import os\nos._exit(0)\n")
    assert verdict.status == "error"


def test_raise_system_exit_in_the_candidate_body(backend: BackendName) -> None:
    verdict = judge(backend, WRONG + "raise SystemExit\n")
    assert verdict.status == "error"


def test_system_exit_raised_inside_a_test(backend: BackendName) -> None:
    candidate = "def f(x):\n    raise SystemExit(0)\n"
    verdict = judge(backend, candidate)
    assert verdict.status == "error" and verdict.failed_test == "assert f(1) == 2"
    kill = "import os\ndef f(x):\n    os._exit(0)\n"
    assert judge(backend, kill).status == "error"


def test_atexit_forgery(backend: BackendName) -> None:
    candidate = WRONG + (
        "import atexit, os\n"
        "def forge():\n"
        "    print('ALL TESTS PASSED')\n"
        "    for fd in range(1, 64):\n"
        "        try:\n"
        "            os.write(fd, b\"READY\\n{'n': 2, 'phase': None, 'tests': []}\\n\")\n"
        "        except OSError:\n"
        "            pass\n"
        "atexit.register(forge)\n"
    )
    verdict = judge(backend, candidate)
    assert verdict.status == "failed"


def test_a_forged_record_would_be_well_formed() -> None:
    # The forgeries below fail only for want of the nonce, not for their shape.
    nonce = "ab" * 16
    assert parse_record(f"{nonce} {RECORD}\n".encode(), nonce, 2) is not None
    assert parse_record(f"{'0' * 32} {RECORD}\n".encode(), nonce, 2) is None


def test_fake_success_markers_and_records(backend: BackendName) -> None:
    record = RECORD
    candidate = WRONG + (
        "import os, sys\n"
        "print('PASSED 2/2 tests OK')\n"
        f"line = ('0' * 32 + ' ' + {record!r} + '\\n').encode()\n"
        "for fd in range(0, 256):\n"
        "    try:\n"
        "        os.read(fd, 4096) if fd > 2 else None\n"
        "    except OSError:\n"
        "        pass\n"
        "    try:\n"
        "        os.write(fd, b'READY\\n' + line)\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    )
    verdict = judge(backend, candidate)
    assert verdict.status == "error"
    assert "without reporting a verdict" in (verdict.error or "")


def test_replacing_assertion_error(backend: BackendName) -> None:
    candidate = WRONG + (
        "import builtins\nclass Quiet(Exception):\n    pass\nbuiltins.AssertionError = Quiet\n"
    )
    verdict = judge(backend, candidate)
    assert_cheat_rejected(verdict)
    sneaky = "import builtins\ndef f(x):\n    builtins.AssertionError = KeyError\n    return 0\n"
    assert_cheat_rejected(judge(backend, sneaky, ["assert f(1) == 2", "assert 1 == 1"]))


def test_patching_print_and_stdout(backend: BackendName) -> None:
    candidate = WRONG + (
        "import builtins, io, sys\n"
        "builtins.print = lambda *a, **k: None\n"
        "sys.stdout = io.StringIO()\n"
        "sys.stdout.write('ok 2 tests passed')\n"
    )
    assert_cheat_rejected(judge(backend, candidate))
    only_stdout = WRONG + "import io, sys\nsys.stdout = sys.stderr = io.StringIO()\n"
    assert judge(backend, only_stdout).status == "failed"


def test_always_equal_object(backend: BackendName) -> None:
    candidate = (
        "class Anything:\n"
        "    def __eq__(self, other):\n"
        "        return True\n"
        "    def __ne__(self, other):\n"
        "        return False\n"
        "    __hash__ = object.__hash__\n"
        "def f(x):\n"
        "    return Anything()\n"
    )
    verdict = judge(backend, candidate)
    assert verdict.status == "error" and "_Cheat" in (verdict.error or "")
    nested = candidate.replace("return Anything()", "return [Anything(), {'k': Anything()}]")
    assert judge(backend, nested, ["assert f(1) == [2, {'k': 3}]"]).status == "error"


def test_forged_equality_from_library_objects(backend: BackendName) -> None:
    mock_any = "from unittest.mock import ANY\ndef f(x):\n    return ANY\n"
    assert judge(backend, mock_any).status == "error"
    str_sub = "class S(str):\n    __eq__ = str.__ne__\ndef f(x):\n    return S('nope')\n"
    assert judge(backend, str_sub, ["assert f(1) == 'two'"]).status == "error"
    int_sub = (
        "class I(int):\n"
        "    def __sub__(self, other):\n"
        "        return 0\n"
        "    __rsub__ = __sub__\n"
        "def f(x):\n"
        "    return I(7)\n"
    )
    assert judge(backend, int_sub, ["assert abs(f(1) - 2) < 1e-9"]).status == "error"


# Comparison methods written in Python by a library (trusted: their code comes from installed
# files) that read an attribute the candidate controls, which claims to equal every int.
INTS_EQUAL = (
    "class _IntsEqual:\n"
    "    def __eq__(self, other):\n"
    "        return isinstance(other, int)\n"
    "    __hash__ = object.__hash__\n"
)
ALWAYS_EQUAL = (
    "class _Same:\n    def __eq__(self, other):\n        return True\n    __hash__ = None\n"
)
# name: (candidate, tests that a value judged on its own merits fails)
FORGED_STATE = {
    # Fraction.__eq__ borrowed by an int subclass: compares `self._numerator` with the int.
    "fraction_eq_on_int": (
        INTS_EQUAL + "import fractions\n"
        "class _Num(int):\n"
        "    __eq__ = fractions.Fraction.__eq__\n"
        "    _numerator = _IntsEqual()\n"
        "    _denominator = 1\n"
        "def f(x):\n"
        "    return _Num(0)\n",
        TESTS,
    ),
    # UserString.__eq__ borrowed by an unrelated class: compares `self.data`.
    "userstring_eq_on_own_class": (
        INTS_EQUAL + "import collections\n"
        "class _Str:\n"
        "    __eq__ = collections.UserString.__eq__\n"
        "    __hash__ = object.__hash__\n"
        "    def __init__(self):\n"
        "        self.data = _IntsEqual()\n"
        "def f(x):\n"
        "    return _Str()\n",
        TESTS,
    ),
    # The same methods, inherited, on objects whose state the candidate replaced.
    "fraction_with_forged_numerator": (
        INTS_EQUAL + "import fractions\n"
        "def f(x):\n"
        "    value = fractions.Fraction(0)\n"
        "    value._numerator = _IntsEqual()\n"
        "    return value\n",
        TESTS,
    ),
    "userstring_with_forged_data": (
        INTS_EQUAL + "import collections\n"
        "class _Str(collections.UserString):\n"
        "    pass\n"
        "def f(x):\n"
        "    value = _Str('')\n"
        "    value.data = _IntsEqual()\n"
        "    return value\n",
        TESTS,
    ),
    "userstring_subclass_data_property": (
        INTS_EQUAL + "import collections\n"
        "class _Str(collections.UserString):\n"
        "    data = property(lambda self: _IntsEqual(), lambda self, value: None)\n"
        "def f(x):\n"
        "    return _Str('')\n",
        TESTS,
    ),
    "dataclass_eq_with_forged_field": (
        INTS_EQUAL + "import dataclasses\n"
        "@dataclasses.dataclass\n"
        "class P:\n"
        "    v: object\n"
        "def f(x):\n"
        "    return P(_IntsEqual())\n",
        ["assert f(1) == P(2)", "assert f(2) == P(3)"],
    ),
    "counter_subclass_getitem": (
        INTS_EQUAL + "import collections\n"
        "class _Count(collections.Counter):\n"
        "    def __getitem__(self, key):\n"
        "        return _IntsEqual()\n"
        "def f(x):\n"
        "    return _Count('z')\n",
        ["assert f(1) == collections.Counter(a=2)", "assert f(2) == collections.Counter(a=3)"],
    ),
    # A comparison slot holding an object that poses as a property, or a descriptor.
    "object_posing_as_property": (
        "class _Fake:\n"
        "    __class__ = property\n"
        "    fget = fset = fdel = None\n"
        "    def __call__(self, other):\n"
        "        return isinstance(other, int)\n"
        "class _Num:\n"
        "    __eq__ = _Fake()\n"
        "    __hash__ = object.__hash__\n"
        "def f(x):\n"
        "    return _Num()\n",
        TESTS,
    ),
    "descriptor_as_eq": (
        "class _Get:\n"
        "    def __get__(self, obj, owner=None):\n"
        "        return lambda other: isinstance(other, int)\n"
        "class _Num:\n"
        "    __eq__ = _Get()\n"
        "    __hash__ = object.__hash__\n"
        "def f(x):\n"
        "    return _Num()\n",
        TESTS,
    ),
    # Always-equal objects inside containers whose comparison compares what they hold.
    "inside_a_deque": (
        ALWAYS_EQUAL + "import collections\ndef f(x):\n    return collections.deque([_Same()])\n",
        ["assert f(1) == collections.deque([2])", "assert f(2) == collections.deque([3])"],
    ),
    "inside_a_namespace": (
        ALWAYS_EQUAL + "import types\ndef f(x):\n    return types.SimpleNamespace(v=_Same())\n",
        ["assert f(1) == types.SimpleNamespace(v=2)", "assert f(2) == types.SimpleNamespace(v=3)"],
    ),
}


def humaneval_form(tests: list[str]) -> list[str]:
    """The asserts as one HumanEval-style `check(candidate)` program."""
    body = "".join("    " + t.replace("f(", "candidate(", 1) + "\n" for t in tests)
    return [f"def check(candidate):\n{body}\ncheck(f)\n"]


@pytest.mark.parametrize("form", ["asserts", "humaneval"])
@pytest.mark.parametrize("attack", sorted(FORGED_STATE))
def test_comparison_reading_forged_state(backend: BackendName, attack: str, form: str) -> None:
    candidate, tests = FORGED_STATE[attack]
    verdict = judge(backend, candidate, tests if form == "asserts" else humaneval_form(tests))
    assert_cheat_rejected(verdict)
    assert verdict.status == "error" and "_Cheat" in (verdict.error or ""), verdict


def test_honest_library_values_still_pass(backend: BackendName) -> None:
    candidate = (
        "import collections, dataclasses, fractions, types\n"
        "class Money(fractions.Fraction):\n"
        "    pass\n"
        "@dataclasses.dataclass\n"
        "class Point:\n"
        "    x: int\n"
        "    y: int\n"
        "def half(x):\n"
        "    return fractions.Fraction(x, 2)\n"
        "def cents(x):\n"
        "    return Money(x, 100)\n"
        "def shout(s):\n"
        "    return collections.UserString(s.upper())\n"
        "def count(s):\n"
        "    return collections.Counter(s)\n"
        "def point(x):\n"
        "    return Point(x, x + 1)\n"
        "def queue(x):\n"
        "    return collections.deque([x, types.SimpleNamespace(v=x)])\n"
    )
    tests = [
        "from fractions import Fraction\nassert half(1) == Fraction(1, 2) and half(1) == 0.5",
        "assert half(4) == 2 and half(3) != 1 and half(1) < 1",
        "assert cents(50) == 0.5 and cents(100) == 1",
        "assert shout('ab') == 'AB' and shout('ab') != 'ab'",
        "assert count('aab') == {'a': 2, 'b': 1} and count('ab') == collections.Counter('ba')",
        "assert point(1) == Point(1, 2) and point(1) != Point(2, 1)",
        "assert queue(1) == collections.deque([1, types.SimpleNamespace(v=1)])",
        "def check(candidate):\n    assert candidate(3) == 1.5\n\ncheck(half)\n",
    ]
    verdict = judge(backend, candidate, tests)
    assert verdict.passed, verdict.error
    wrong = candidate.replace("Fraction(x, 2)", "Fraction(x, 3)")
    assert judge(backend, wrong, tests).status == "failed"


def test_monkeypatching_library_and_builtins_used_by_tests(backend: BackendName) -> None:
    isclose = "import math\nmath.isclose = lambda *a, **k: True\n" + WRONG
    verdict = judge(backend, isclose, ["import math\nassert math.isclose(f(1), 2)"])
    assert verdict.status == "error" and "math.isclose" in (verdict.error or "")
    shadow = "def abs(x):\n    return 0\n" + WRONG
    assert judge(backend, shadow, ["assert abs(f(1) - 2) < 1e-9"]).status == "error"
    for patch in ("exec('math.isclose = lambda *a, **k: True')", "math.isclose = eval('abs')"):
        candidate = f"import math\n{patch}\n" + WRONG
        verdict = judge(backend, candidate, ["import math\nassert math.isclose(f(1), 2)"])
        assert verdict.status in ("error", "failed")
    swap = "import builtins\nbuiltins.all = builtins.any\ndef f(x):\n    return x + (x == 1)\n"
    verdict = judge(backend, swap, ["assert all(f(x) == x + 1 for x in (1, 2))"])
    assert verdict.status == "error"


def test_deleting_or_replacing_the_tests(backend: BackendName) -> None:
    # A HumanEval-style program: the candidate pre-defines `check` and wipes what it can find.
    candidate = (
        "import gc\n"
        "def check(candidate):\n"
        "    pass\n"
        "for obj in gc.get_objects():\n"
        "    if isinstance(obj, list) and obj and isinstance(obj[0], str) and 'assert' in obj[0]:\n"
        "        obj.clear()\n"
        "def f(x):\n"
        "    globals().clear()\n"
        "    return 0\n"
    )
    program = "def check(candidate):\n    assert candidate(1) == 2\n\ncheck(f)\n"
    verdict = judge(backend, candidate, [program, "assert f(2) == 3"])
    assert verdict.status == "failed"
    assert verdict.failed_test == "assert candidate(1) == 2"


def test_forging_the_record_through_file_descriptors(backend: BackendName) -> None:
    # Read every descriptor (looking for the nonce), then write a "passing" record to all.
    candidate = WRONG + (
        "import os, re\n"
        "seen = b''\n"
        "for fd in range(3, 256):\n"
        "    try:\n"
        "        seen += os.read(fd, 4096)\n"
        "    except OSError:\n"
        "        pass\n"
        "for nonce in set(re.findall(rb'[0-9a-f]{32}', seen)) or {b'0' * 32}:\n"
        f"    rec = nonce + b' ' + {RECORD.encode()!r} + b'\\n'\n"
        "    for fd in range(1, 256):\n"
        "        try:\n"
        "            os.write(fd, rec)\n"
        "        except OSError:\n"
        "            pass\n"
        "os._exit(0)\n"
    )
    verdict = judge(backend, candidate)
    assert verdict.status == "error"


def test_privilege_escalation_attempts(backend: BackendName) -> None:
    require(backend, "uid_drop")
    code = (
        "import os\n"
        "for attempt in (lambda: os.setuid(0), lambda: os.setgid(0), lambda: os.chroot('/'),\n"
        "                lambda: open('/proc/sysrq-trigger', 'w').write('b')):\n"
        "    try:\n"
        "        attempt()\n"
        "        print('allowed')\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
        "print('uid', os.getuid(), os.geteuid())\n"
    )
    result = run_code(code, backend=backend)
    assert result.status == "ok", result.stderr
    assert "allowed" not in result.stdout
    assert "uid 0" not in result.stdout


def test_ctypes_memory_corruption(backend: BackendName) -> None:
    # Overwrite the interpreter's True with False, then segfault: never a pass.
    corrupt = "import ctypes\nctypes.memmove(id(True) + 24, id(False) + 24, 8)\n" + WRONG
    assert_cheat_rejected(judge(backend, corrupt))
    segfault = "import ctypes\ndef f(x):\n    return ctypes.string_at(0)\n"
    verdict = judge(backend, segfault)
    assert verdict.status == "error" and "SIGSEGV" in (verdict.error or "")
