"""The online replay's processes (benchmarks/online_replay.py): `memcollab serve` (and, with
`--worker separate`, `memcollab learn`) started, health-checked, killed and stopped by
their PIDs, and the replay's write key."""

from __future__ import annotations

import argparse
import ctypes
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from online_replay_common import NAMESPACE, ReplayError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _libc() -> Any:
    """libc, loaded here in the parent: the child between fork and exec (where
    `_die_with_parent` runs, while the harness has many threads) must not load a library
    (dlopen takes locks another thread may have held at the fork). None off Linux."""
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


LIBC = _libc()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """A child gets SIGKILL when the harness dies (even by kill -9): a resumed replay never
    meets an orphaned service on its port. Linux only (prctl PR_SET_PDEATHSIG)."""
    if LIBC is not None:
        LIBC.prctl(1, signal.SIGKILL)


@dataclass
class Processes:
    """The service (and the separate worker), started and killed by their PIDs. Safe for
    several threads: one lock around starting, health checks and kills, so calls failing
    together after a kill restart the service once."""

    args: argparse.Namespace
    port: int
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: Counter[str] = field(default_factory=Counter)
    lock: threading.RLock = field(default_factory=threading.RLock)
    up: bool = False  # answered /v1/health, and nothing killed or suspected since
    closed: bool = False  # stopped: nothing starts again (a late worker thread, a timer)
    starter: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="replay-starter")
    )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _command(self, which: str) -> list[str]:
        a = self.args
        common = ["--memory", str(a.work / "memory.sqlite")]
        common += ["--fleet", str(a.fleet)] if a.fleet else []  # else: the packaged models
        data = ["--data-dir", str(a.data_dir)] if a.data_dir else []
        base = [sys.executable, "-m", "memcollab"]
        if which == "worker":
            return [*base, "learn", *common, "--distiller", a.distiller, "--labeller",
                    a.labeller, "--lease", str(a.lease), "--prompt-chars", str(a.prompt_chars),
                    "--reply-tokens", str(a.reply_tokens), *data]  # fmt: skip
        learn = [] if a.worker == "separate" else [
            "--learn", "--distiller", a.distiller, "--learn-labeller", a.labeller,
            "--learn-lease", str(a.lease), "--learn-prompt-chars", str(a.prompt_chars),
            "--learn-reply-tokens", str(a.reply_tokens),
        ]  # fmt: skip
        # A call waits its turn behind a full batch: the proxy's upstream timeout (default
        # 300 s) would cut it; it answers 504 before the client's own timeout runs out (and
        # a generation it cuts still ends and is stored: the retry gets it replayed).
        return [*base, "serve", *common, "--port", str(self.port), "--log-level", "warning",
                "--labeller", a.search_labeller, "--upstream-timeout", str(a.call_timeout),
                *learn, *data]  # fmt: skip

    def wanted(self) -> list[str]:
        return ["service", "worker"] if self.args.worker == "separate" else ["service"]

    def start(self, which: str) -> None:
        # PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the
        # process: a service started from a call's worker thread or a kill's timer would be
        # killed when that thread ends. So every start runs on one thread that lives as long
        # as these processes.
        self.procs[which] = self.starter.submit(self._popen, which).result()
        self.starts[which] += 1

    def _popen(self, which: str) -> subprocess.Popen[bytes]:
        with (self.args.work / f"{which}.log").open("ab") as log:
            return subprocess.Popen(
                self._command(which), stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )  # fmt: skip

    def _alive(self) -> bool:
        return all(
            (p := self.procs.get(which)) is not None and p.poll() is None for which in self.wanted()
        )

    def ensure(self, timeout_s: float = 600.0) -> None:
        """Start what is not running and wait until the service answers /v1/health (a
        service killed meanwhile is started again; one that keeps exiting is an error)."""
        with self.lock:
            if self.closed:
                raise ReplayError("the replay is stopping")
            if self.up and self._alive():
                return
            self.up = False
            for which in self.wanted():
                proc = self.procs.get(which)
                if proc is None or proc.poll() is not None:
                    self.start(which)
            deadline = time.monotonic() + timeout_s
            restarts = 0
            while True:
                service = self.procs["service"]
                if service.poll() is not None:
                    restarts += 1
                    if restarts > 3:
                        log = self.args.work / "service.log"
                        tail = log.read_text(errors="replace")[-2000:]
                        raise ReplayError(f"the service exited with {service.returncode}:\n{tail}")
                    self.start("service")
                    continue
                try:
                    if httpx.get(self.url + "/v1/health", timeout=2.0).status_code == 200:
                        self.up = True
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ReplayError(f"the service did not answer within {timeout_s:.0f} s")
                time.sleep(0.1)

    def suspect(self) -> None:
        """A call failed in transport: check the service's health before the next one."""
        with self.lock:
            self.up = False

    def kill(self, which: str, *, when_up: bool = False) -> int | None:
        """SIGKILL `which` (with `when_up`, after starting it and waiting for the service's
        health, so that a kill planned while a restart is under way still kills a running
        process); its PID, or None if it was not running."""
        with self.lock:
            if when_up:
                self.ensure()
            proc = self.procs.get(which)
            if proc is None or proc.poll() is not None:
                return None
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            self.up = False
            return proc.pid

    def stop(self) -> None:
        """SIGTERM (a worker gives its pair back), then SIGKILL after 30 s."""
        with self.lock:
            self.up = False
            self.closed = True
            for which in ("worker", "service"):
                proc = self.procs.get(which)
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait(30)
            self.starter.shutdown()


def create_key(args: argparse.Namespace) -> str:
    """The replay's write key, created once (kept in WORK/key.txt for a resumed run)."""
    path = args.work / "key.txt"
    if path.is_file():
        return path.read_text().strip()
    out = subprocess.run(
        [sys.executable, "-m", "memcollab", "keys", "create", "--namespace", NAMESPACE,
         "--scope", "write", "--label", "online replay", "--memory",
         str(args.work / "memory.sqlite")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise ReplayError(f"keys create failed: {out.stderr.strip()[-500:]}")
    secret = out.stdout.strip()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(secret)
    tmp.replace(path)
    return secret
