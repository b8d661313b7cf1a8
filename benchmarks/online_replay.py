"""Online learning through the proxy, live (issue 28): training tasks streamed through
`memcollab serve` to the evaluated models, judged by the service, memory learned online;
then an experiment file that evaluates that memory against the batch-built v2 memory and
against no memory on held-out tasks.

Step `learn` starts `memcollab serve --memory MEM --fleet FLEET --learn --distiller D
--data-dir DATA` on 127.0.0.1 (a subprocess started and stopped by its PID; with
`--worker separate` the service runs without --learn and a `memcollab learn` process
beside it), creates a write key for namespace `online`, and sends every training task to
every model through the proxy with the official `openai` client: the domain's own system
prompt and first user message (the agent's first turn), `x-memcollab-task-id` = the
benchmark task id, so POST /v1/feedback without a verdict has the service judge it, and
`x-memcollab-attempt-id` = a client id derived from (namespace, task, model), so a retry
after any crash replays the stored exchange instead of doubling it. Each finished
(task, model) is a line of WORK/progress.jsonl: a rerun of the same command skips them.
`--concurrency N` calls are in flight at once (worker threads; default: what the models'
engines decode at once, the sum of their batch widths as `collect` sizes its workers, 32
for the two Qwen models), in stream order, so both models of a task and several tasks are
in flight together; one lock serializes the progress lines, and a line cut by a kill of
the harness is dropped on resume (its call is redone, replayed by the proxy).
At the end it waits until GET /v1/learning shows nothing pending, claimed or waiting, stops
the processes, checks the database and exports the namespace to OUT/online.jsonl.

Training tasks: a seeded draw of `--tasks` (default 300) spread evenly over GSM8K, MATH and
MBPP train, less the development slices (`--dev-specs`, whole: the rows the v2 run's dev
phase draws from) and the v2 run's evaluation tasks; drawn from the whole train splits,
or with `--pool-from runs/v2/plan.json` from the v2 run's training pool (its
`train_tasks`), so online and batch memory learn from the same tasks. replay.json says
which and counts the overlap with that pool.

`--chaos`: at `--kills` seeded points of the stream the service (or, with `--worker
separate`, the worker or the service, a seeded choice) is killed with SIGKILL, every other
kill after a seeded delay in [0, --kill-delay-max] s from the start of that call (mid-call
or between calls), the others as soon as that call's answer arrives (before its feedback),
restarted, and the stream goes on: every call in flight then fails and is retried
with the same client id (one stored but not yet answered comes back replayed; replay.json
counts `chaos.replayed`, and each kill's `in_flight`). The end checks are the "zero lost,
zero twice" numbers:
  attempts_lost      client ids sent but not stored              (must be 0)
  attempts_extra     stored attempts the client never sent       (must be 0)
  attempts_doubled   (task, model) with more than one attempt    (must be 0)
  unjudged           stored attempts without a verdict           (must be 0)
  rows_unfinished    queue rows pending or claimed at the end    (must be 0)
  contrasts_missing  tasks with a correct and an incorrect model but no queue row (0)
  distilled_twice    done rows sharing a record id               (must be 0)
  provenance_missing done rows whose record has no learned provenance naming that row's
                     task and attempts (must be 0)
  learned_outside    stored records with learned provenance but no done row (must be 0)
Records of done rows are stored, or merged into a near-duplicate of their bucket (dedup on
add): records_stored + records_merged_away == rows done.

Step `eval` writes OUT/experiment.toml (vanilla, online = OUT/online.jsonl, v2-batch =
--v2-memory; the two Qwen models; [analysis] primary = "online") and OUT/excluded_tasks.json
(the replay's training tasks and the development slices): its held-out tasks are drawn
from GSM8K test, MATH-500 and MBPP test (HumanEval's test split is the v2 run's
evaluation whole), `[eval] exclude` leaves out those ids and the v2 evaluation list, and
each draw is sized so that `--per-benchmark` tasks remain. It needs both memories (an
experiment file naming a missing export does not load) and prints the command that runs
the evaluation; it does not run it.

    python benchmarks/online_replay.py learn --data-dir DATA [--tasks 300] [--chaos]
        [--worker inline|separate] [--pool-from runs/v2/plan.json] [--concurrency N]
    python benchmarks/online_replay.py eval --data-dir DATA [--v2-memory PATH]

Writes OUT/replay.json (the command recorded in it), OUT/online.jsonl, OUT/experiment.toml,
OUT/excluded_tasks.json; working files (memory, progress, logs, key) under WORK.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import functools
import hashlib
import json
import os
import platform
import random
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai

from memcollab.collect import MAX_DEFAULT_WORKERS, MIN_DEFAULT_WORKERS
from memcollab.domains import get_domain
from memcollab.errors import UserError
from memcollab.llm.fleet import Fleet
from memcollab.memory.api import Memory
from memcollab.memory.store import MemoryNotFoundError
from memcollab.server.context import ServerContext
from memcollab.tasks.datasets import load_task_specs, load_tasks
from memcollab.tasks.task import Task

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "online"
MODELS = ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")
TRAIN_SPECS = ("gsm8k:train", "math:train", "mbpp:train")
DEV_SPECS = ("gsm8k:dev", "math:dev", "mbpp:validation", "humaneval:train")
EVAL_SPECS = {"gsm8k": "gsm8k:test", "math500": "math500:test", "mbpp": "mbpp:test"}
V2_MEMORY = "runs/v2/memories/memcollab-near-miss.by.qwen2.5-coder-1.5b.jsonl"
LEARNED_KEYS = ("task_id", "pos_attempt", "neg_attempt")
RETRYABLE = (openai.APIConnectionError, openai.InternalServerError, httpx.TransportError)


class ReplayError(RuntimeError):
    """The replay cannot go on (the message says why); main prints it and exits 2."""


# --------------------------------------------------------------------------- tasks


def _ids_of(path: Path) -> set[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    found = set(data.get("train_tasks", []))
    for ids in (data.get("benchmarks") or {}).values():
        found |= set(ids)
    return found


def training_tasks(args: argparse.Namespace) -> tuple[list[Task], dict[str, Any]]:
    """The seeded draw of the replay's training tasks, interleaved across the datasets."""
    left_out = _ids_of(args.v2_eval) if args.v2_eval.is_file() else set()
    dev_ids = {t.id for t in load_task_specs(args.dev_specs, args.data_dir)}
    pool = _ids_of(args.pool_from) if args.pool_from else None
    per_dataset: list[list[Task]] = []
    share, extra = divmod(args.tasks, len(args.train_specs))
    for i, spec in enumerate(args.train_specs):
        candidates = [
            t
            for t in load_tasks(spec, args.data_dir)
            if t.id not in dev_ids and t.id not in left_out and (pool is None or t.id in pool)
        ]
        want = share + (i < extra)
        if want > len(candidates):
            raise ReplayError(f"{spec}: {want} tasks wanted, {len(candidates)} available")
        rng = random.Random(f"{args.seed}:{spec}")
        per_dataset.append(rng.sample(candidates, want))
    tasks = [t for group in zip_longest_all(per_dataset) for t in group]
    about: dict[str, Any] = {
        "train_specs": list(args.train_specs),
        "drawn_from": f"the v2 training pool ({args.pool_from})" if pool else "whole splits",
        "dev_specs_left_out": list(args.dev_specs),
        "per_dataset": {
            spec: len(g) for spec, g in zip(args.train_specs, per_dataset, strict=True)
        },
    }
    v2_plan = args.pool_from or ROOT / "runs/v2/plan.json"
    if Path(v2_plan).is_file():
        v2_pool = set(json.loads(Path(v2_plan).read_text()).get("train_tasks", []))
        about["in_v2_training_pool"] = sum(t.id in v2_pool for t in tasks)
    return tasks, about


def zip_longest_all(groups: Sequence[Sequence[Task]]) -> Iterator[list[Task]]:
    """Round-robin: the first task of each group, then the second, ..."""
    for i in range(max((len(g) for g in groups), default=0)):
        yield [g[i] for g in groups if i < len(g)]


def client_id(task_id: str, model: str) -> str:
    """The attempt id the client sends for (task, model): the same on every retry/rerun."""
    digest = hashlib.sha256(f"{NAMESPACE}\n{task_id}\n{model}".encode()).hexdigest()
    return f"replay-{digest[:32]}"


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """A child gets SIGKILL when the harness dies (even by kill -9): a resumed replay never
    meets an orphaned service on its port. Linux only (prctl PR_SET_PDEATHSIG)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)


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
                    a.labeller, "--lease", str(a.lease), *data]  # fmt: skip
        learn = [] if a.worker == "separate" else [
            "--learn", "--distiller", a.distiller, "--learn-labeller", a.labeller,
            "--learn-lease", str(a.lease),
        ]  # fmt: skip
        # A call waits its turn behind a full batch: the proxy's upstream timeout (default
        # 300 s) would cut it; it answers 504 before the client's own timeout runs out.
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


# --------------------------------------------------------------------------- the stream


class Progress:
    """WORK/progress.jsonl: one line per finished (task, model), one per kill made.

    Worker threads write through one lock, each line whole, flushed and fsynced. A last
    line cut by a kill of the harness itself (no newline at its end) is cut off when the
    file is read again, so the lines a resumed run appends after it stay readable.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.Lock()
        self.done: dict[tuple[str, str], dict[str, Any]] = {}
        self.kills: list[dict[str, Any]] = []
        if not path.is_file():
            return
        data = path.read_bytes()
        whole = data[: data.rfind(b"\n") + 1]
        if len(whole) < len(data):
            with path.open("r+b") as fh:
                fh.truncate(len(whole))
        for line in whole.decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # not ours to read: skipped, its call redone
                continue
            if "kill" in row:
                self.kills.append(row)
            else:
                self.done[(row["task"], row["model"])] = row

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps(row) + "\n"
        with self.lock:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            if "kill" in row:
                self.kills.append(row)
            else:
                self.done[(row["task"], row["model"])] = row


def chaos_plan(args: argparse.Namespace, calls: int) -> list[dict[str, Any]]:
    """The seeded kill points: call index, target, and when: `delay` s from the start of
    that call (kills 0, 2, ...), or as soon as its answer arrives, before its feedback
    (kills 1, 3, ...: the retry then meets the stored exchange and is replayed)."""
    if not args.chaos or calls < 2:
        return []
    rng = random.Random(f"chaos:{args.seed}")
    points = sorted(rng.sample(range(1, calls), min(args.kills, calls - 1)))
    targets = ["service", "worker"] if args.worker == "separate" else ["service"]
    plan = []
    for n, step in enumerate(points):
        kill: dict[str, Any] = {"kill": n, "step": step, "target": rng.choice(targets)}
        delay = round(rng.uniform(0.0, args.kill_delay_max), 3)
        kill |= {"when": "answered"} if n % 2 else {"when": "delay", "delay_s": delay}
        plan.append(kill)
    return plan


def one_call(
    client: openai.OpenAI,
    http: httpx.Client,
    task: Task,
    model: str,
    args: argparse.Namespace,
    on_answer: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """The task to one model through the proxy, then feedback without a verdict
    (`on_answer` runs between the two: a chaos kill in that window)."""
    domain = get_domain(task.domain)
    cid = client_id(task.id, model)
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[
            {"role": "system", "content": domain.system_prompt(task)},
            {"role": "user", "content": domain.user_message(task)},
        ],
        max_tokens=args.max_tokens,
        temperature=0.0,
        extra_headers={
            "x-memcollab-task-id": task.id,
            "x-memcollab-attempt-id": cid,
            "x-memcollab-domain": task.domain,
        },
    )
    raw.parse()
    if on_answer is not None:
        on_answer()
    records = raw.headers.get("x-memcollab-records")
    feedback = http.post("/v1/feedback", json={"attempt_id": cid})
    if feedback.status_code >= 500:
        feedback.raise_for_status()
    judged = feedback.json() if feedback.status_code == 200 else {}
    return {
        "task": task.id,
        "model": model,
        "attempt": cid,
        "verdict": judged.get("attempt", {}).get("verdict", f"unjudged:{feedback.status_code}"),
        "memory": raw.headers.get("x-memcollab-memory"),
        "records": records.split(",") if records else [],
        "replayed": raw.headers.get("x-memcollab-replayed") == "true",
    }


def default_concurrency(args: argparse.Namespace) -> int:
    """Calls worth having in flight: what the models' engines serve at once, by collect's
    rule (`default_workers`: the sum of their concurrency limits, a batching llama.cpp
    engine's being its `batch_width`; models sharing an engine count once). Builds the
    fleet's models without loading any weights."""
    try:
        fleet = Fleet.load(args.fleet)
        limits = dict(fleet.model(m).concurrency() for m in args.models)
    except UserError as exc:
        raise ReplayError(f"cannot size --concurrency from the fleet: {exc}") from None
    return max(MIN_DEFAULT_WORKERS, min(MAX_DEFAULT_WORKERS, sum(limits.values())))


@dataclass
class Stream:
    """The calls of a replay, `concurrency` at a time on worker threads (the official
    openai client is synchronous and thread-safe; threads keep one_call plain).

    Pairs start in stream order (task by task, both models of a task next to each other),
    so the engines of both models fill. A planned kill fires from a timer started with its
    call; every call in flight then fails in transport and is retried with its own client
    attempt id once the service is back, which is the window the proxy replays: an attempt
    stored but not answered, or answered but not yet given feedback.
    """

    args: argparse.Namespace
    procs: Processes
    progress: Progress
    client: openai.OpenAI
    http: httpx.Client
    plan: dict[int, dict[str, Any]]
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    in_flight: int = 0

    def _fire(self, kill: dict[str, Any]) -> None:
        if self.stop.is_set():
            return
        with self.lock:
            kill["in_flight"] = self.in_flight
        try:
            kill["pid"] = self.procs.kill(kill["target"], when_up=True)
        except ReplayError as exc:
            kill["pid"], kill["error"] = None, str(exc)

    def run(self, step: int, task: Task, model: str) -> dict[str, Any]:
        """One (task, model): the call (with its planned kill), then its progress line."""
        kill = self.plan.get(step)
        made = {k["kill"] for k in self.progress.kills}
        timer = on_answer = None
        if kill is not None and kill["kill"] not in made:
            kill = dict(kill)
            if kill["when"] == "answered":
                fired = threading.Event()

                def on_answer(kill: dict[str, Any] = kill) -> None:
                    if not fired.is_set():  # the first answer only, not a retry's
                        fired.set()
                        self._fire(kill)
            else:
                timer = threading.Timer(kill["delay_s"], self._fire, (kill,))
                timer.start()  # the kill lands mid-call or after it, as the delay falls
        began = time.monotonic()
        with self.lock:
            self.in_flight += 1
            self.counts["max_in_flight"] = max(self.counts["max_in_flight"], self.in_flight)
        try:
            row, retries = self._with_retries(
                functools.partial(
                    one_call, self.client, self.http, task, model, self.args, on_answer
                )
            )
        except BaseException:
            if timer is not None:
                timer.cancel()
            raise
        finally:
            with self.lock:
                self.in_flight -= 1
        if timer is not None:
            timer.join()
        if kill is not None and (timer is not None or on_answer is not None):
            self.progress.write({**kill, "at": time.time()})
        row = {**row, "retries": retries, "seconds": round(time.monotonic() - began, 3)}
        self.progress.write(row)
        with self.lock:
            self.counts["calls"] += 1
            self.counts["replayed"] += row["replayed"]
        return row

    def _with_retries(self, call: Any) -> tuple[dict[str, Any], int]:
        """`call()` until it succeeds: a transport error or a 5xx (the service killed or
        restarting) is retried with the same client id; any other error ends the replay.
        Returns the result and the number of retries."""
        for attempt in range(self.args.retries + 1):
            if self.stop.is_set():
                raise ReplayError("stopped: another call failed")
            try:
                self.procs.ensure()
                result: dict[str, Any] = call()
                return result, attempt
            except RETRYABLE as exc:
                failure: Exception = exc
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code < 500:
                    raise ReplayError(f"the service refused a call: {exc}") from None
                failure = exc
            except openai.APIStatusError as exc:
                raise ReplayError(f"the service refused a call: {exc}") from None
            with self.lock:
                self.counts["retries"] += 1
            self.procs.suspect()
            if attempt == self.args.retries:
                raise ReplayError(f"gave up after {attempt + 1} tries: {failure}") from None
            time.sleep(0.2)
        raise AssertionError("unreachable")


def stream(
    args: argparse.Namespace, procs: Processes, key: str, tasks: list[Task], progress: Progress
) -> dict[str, int]:
    """Every (task, model) not yet in the progress file through the proxy, `--concurrency`
    at a time; the first call that fails for good stops the others."""
    steps = [(task, model) for task in tasks for model in args.models]
    todo = [(i, t, m) for i, (t, m) in enumerate(steps) if (t.id, m) not in progress.done]
    client = openai.OpenAI(
        base_url=procs.url + "/v1", api_key=key, max_retries=0, timeout=args.call_timeout + 60
    )
    http = httpx.Client(
        base_url=procs.url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=args.call_timeout,
    )
    plan = {k["step"]: k for k in chaos_plan(args, len(steps))}
    run = Stream(args, procs, progress, client, http, plan)
    procs.ensure()
    pool = ThreadPoolExecutor(max_workers=args.concurrency, thread_name_prefix="replay")
    try:
        futures = [pool.submit(run.run, i, t, m) for i, t, m in todo]
        for finished, future in enumerate(as_completed(futures), start=1):
            future.result()
            if finished % 10 == 0 or finished == 1 or finished == len(todo):
                print(f"{len(progress.done)}/{len(steps)} calls", flush=True)
    except BaseException:
        run.stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    http.close()
    client.close()
    counts = dict(run.counts)
    counts["concurrency"] = args.concurrency
    return counts


def drain(args: argparse.Namespace, procs: Processes, key: str) -> dict[str, Any]:
    """Wait until GET /v1/learning shows nothing pending, claimed or waiting."""
    deadline = time.monotonic() + args.drain_timeout
    while True:
        procs.ensure()
        try:
            r = httpx.get(
                procs.url + "/v1/learning",
                headers={"Authorization": f"Bearer {key}"},
                timeout=30.0,
            )
            r.raise_for_status()
            learning: dict[str, Any] = r.json()
        except httpx.HTTPError:
            time.sleep(0.5)
            continue
        queue = learning["queue"]
        if queue["pending"] == 0 and queue["claimed"] == 0 and learning["waiting"] == 0:
            return learning
        if time.monotonic() > deadline:
            raise ReplayError(f"the queue did not drain in {args.drain_timeout} s: {learning}")
        time.sleep(1.0)


# --------------------------------------------------------------------------- checks


def check(
    memory_path: Path, tasks: list[Task], models: Sequence[str], progress: Progress
) -> dict[str, Any]:
    """The end checks, straight from the database (the processes stopped)."""
    ctx = ServerContext.open(str(memory_path), create=False)
    try:
        sent = {client_id(t.id, m): (t.id, m) for t in tasks for m in models}
        stored, total = ctx.attempts.list(NAMESPACE, limit=10**7)
        per_pair = Counter((a.task_id, a.model) for a in stored)
        verdicts: dict[str, dict[str, str]] = defaultdict(dict)
        for a in stored:
            verdicts[a.task_id][a.model] = a.verdict
        contrast = {
            tid for tid, by in verdicts.items()
            if "correct" in by.values() and "incorrect" in by.values()
        }  # fmt: skip
        items = ctx.learning.items(NAMESPACE)
        states = Counter(i.state for i in items)
        done = [i for i in items if i.state == "done"]
        record_ids = [i.record_id for i in done if i.record_id]
        provenance = ctx.provenance.many(record_ids)
        bad_provenance = 0
        for item in done:
            learned = provenance.get(item.record_id or "", {}).get("learned")
            named = (item.task_id, item.pos_attempt, item.neg_attempt)
            if not learned or tuple(learned[k] for k in LEARNED_KEYS) != named:
                bad_provenance += 1
        stored_records = 0
        for rid in set(record_ids):
            try:
                ctx.memory.get(rid)
                stored_records += 1
            except MemoryNotFoundError:
                pass
        learned_ids = {
            rid for (rid,) in ctx.db.query(
                "SELECT record_id FROM server_learned_provenance WHERE namespace = ?", (NAMESPACE,)
            )
        }  # fmt: skip
        accuracy = {
            m: round(sum(verdicts[t.id].get(m) == "correct" for t in tasks) / max(len(tasks), 1), 4)
            for m in models
        }
        checks = {
            "attempts_sent": len(sent),
            "attempts_stored": total,
            "attempts_lost": len(set(sent) - {a.id for a in stored}),
            "attempts_extra": len({a.id for a in stored} - set(sent)),
            "attempts_doubled": sum(n > 1 for n in per_pair.values()),
            "unjudged": sum(a.verdict == "unknown" for a in stored),
            "contrasting_tasks": len(contrast),
            "queue_rows": len(items),
            "queue_states": dict(sorted(states.items())),
            "rows_unfinished": states["pending"] + states["claimed"],
            "contrasts_missing": len(contrast - {i.task_id for i in items}),
            "rows_done": len(done),
            "distilled_twice": len(record_ids) - len(set(record_ids)),
            "provenance_missing": bad_provenance,
            "learned_outside": len(learned_ids - set(record_ids)),
            "records_stored": stored_records,
            "records_merged_away": len(set(record_ids)) - stored_records,
            "kills": len(progress.kills),
        }
        zero = ("attempts_lost", "attempts_extra", "attempts_doubled", "unjudged",
                "rows_unfinished", "contrasts_missing", "distilled_twice",
                "provenance_missing", "learned_outside")  # fmt: skip
        checks["passed"] = all(checks[k] == 0 for k in zero) and (
            checks["attempts_stored"] == checks["attempts_sent"]
        )
        return {"checks": checks, "accuracy": accuracy, "learning": ctx.learning.counts(NAMESPACE)}
    finally:
        ctx.close()


# --------------------------------------------------------------------------- steps


def learn_step(args: argparse.Namespace) -> dict[str, Any]:
    began = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    lock = (args.work / "replay.lock").open("w")  # held until this process ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise ReplayError(f"another replay is running on {args.work}") from None
    if args.concurrency is None:
        args.concurrency = default_concurrency(args)
    tasks, about = training_tasks(args)
    (args.work / "tasks.json").write_text(json.dumps([t.id for t in tasks], indent=1))
    progress = Progress(args.work / "progress.jsonl")
    print(
        f"{len(progress.done)}/{len(tasks) * len(args.models)} calls done before;"
        f" {args.concurrency} at a time",
        flush=True,
    )
    key = create_key(args)
    procs = Processes(args, free_port())
    try:
        counts = stream(args, procs, key, tasks, progress)
        learning = drain(args, procs, key)
    finally:
        procs.stop()
    result = check(args.work / "memory.sqlite", tasks, args.models, progress)
    with Memory.open(args.work / "memory.sqlite", create=False) as memory:
        exported = memory.export(args.out / "online.jsonl", NAMESPACE)
    report = {
        "command": "python " + shlex.join(sys.argv),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "models": list(args.models),
        "distiller": args.distiller,
        "worker": args.worker,
        "concurrency": args.concurrency,
        "chaos": {
            "on": args.chaos,
            "planned": chaos_plan(args, len(tasks) * len(args.models)),
            "made": progress.kills,
            "starts": dict(procs.starts),
            "replayed": sum(bool(r.get("replayed")) for r in progress.done.values()),
            "retries": sum(int(r.get("retries", 0)) for r in progress.done.values()),
        },  # fmt: skip
        "tasks": {"count": len(tasks), **about},
        "this_run": {**counts, "wall_s": round(time.time() - began, 1)},
        "served_learning": learning,
        "exported_records": exported,
        **result,
    }
    out = args.out / "replay.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(result["checks"]), flush=True)
    print(f"wrote {out} and {args.out / 'online.jsonl'} ({exported} records)")
    return report


def _draw_spec(
    base: str, want: int, seed: int, left_out: set[str], data_dir: Path | None
) -> tuple[str, int]:
    """The smallest seeded draw of `base` that keeps `want` tasks outside `left_out`."""
    total = len(load_tasks(base, data_dir))
    for size in range(want, total + 1):
        spec = f"{base}[~{size}@{seed}]"
        kept = sum(t.id not in left_out for t in load_tasks(spec, data_dir))
        if kept >= want:
            return spec, kept
    raise ReplayError(f"{base}: fewer than {want} tasks are held out")


def eval_step(args: argparse.Namespace) -> dict[str, Any]:
    # An experiment file whose memories are missing cannot load (and a committed one must).
    for what, path in (("online memory", args.out / "online.jsonl"), ("v2 memory", args.v2_memory)):
        if not Path(path).is_file():
            raise ReplayError(
                f"the {what} {path} does not exist yet: run the learn step (online) or the"
                " v2 run's memory phase (v2) first"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    tasks, _ = training_tasks(args)
    dev = sorted({t.id for t in load_task_specs(args.dev_specs, args.data_dir)})
    mine = sorted({t.id for t in tasks} | set(dev))
    (args.out / "excluded_tasks.json").write_text(
        json.dumps(
            {"why": {"replay_training": len(tasks), "development": len(dev)}, "tasks": mine},
            indent=1,
        )
        + "\n"
    )
    left_out = set(mine) | (_ids_of(args.v2_eval) if args.v2_eval.is_file() else set())
    specs = {
        bench: _draw_spec(base, args.per_benchmark, args.seed, left_out, args.data_dir)
        for bench, base in args.eval_specs.items()
    }
    toml_path = args.out / "experiment.toml"
    here = toml_path.parent.resolve()

    def rel(path: Path) -> str:
        return os.path.relpath(Path(path).resolve(), here)

    exclude = ["excluded_tasks.json"] + ([rel(args.v2_eval)] if args.v2_eval.is_file() else [])
    lines = [
        "# Online memory (issue 28), generated by benchmarks/online_replay.py eval:",
        f"#   {'python ' + shlex.join(sys.argv)}",
        "# online = the replay's learned namespace; v2-batch = the v2 run's batch memory.",
        "# Held out: [eval] exclude leaves out the v2 run's evaluation tasks, the replay's",
        f"# training tasks and the development slices; each draw keeps {args.per_benchmark} tasks.",
        'name = "online"',
        f"out = {json.dumps(rel(args.run_out))}",
        *([f"fleet = {json.dumps(rel(args.fleet))}"] if args.fleet else []),
        f"seed = {args.seed}",
        f"eval_models = {json.dumps(list(args.models))}",
        'conditions = ["vanilla", "online", "v2-batch"]',
        "",
        "[agent]   # as the v2 run",
        'max_turns = 4\nmax_tokens = 384\nrepair = "live"',
        "",
        '[memory]\nlabeller = "trained"   # both memories\' records were filed by it',
        "",
        "[eval]",
        *[
            f"{bench} = {json.dumps(spec)}   # {kept} held out"
            for bench, (spec, kept) in specs.items()
        ],
        f"exclude = {json.dumps(exclude)}",
        "",
        '[condition.online]\nkind = "memcollab"\nmemory = "online.jsonl"',
        "",
        f'[condition.v2-batch]\nkind = "memcollab"\nmemory = {json.dumps(rel(args.v2_memory))}',
        "",
        '[analysis]\nprimary = "online"\nbaseline = "vanilla"',
    ]
    toml_path.write_text("\n".join(lines) + "\n")
    data = f" --data-dir {shlex.quote(str(args.data_dir))}" if args.data_dir else ""
    shown = (
        os.path.relpath(toml_path) if toml_path.resolve().is_relative_to(Path.cwd()) else toml_path
    )
    command = f"memcollab experiment run {shown}{data}"
    print(f"wrote {toml_path}; run the evaluation with:\n  {command}")
    return {"toml": str(toml_path), "specs": specs, "command": command}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["learn", "eval"])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--fleet", type=Path, default=None, help="default: the packaged models")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--distiller", default="qwen2.5-coder-1.5b")
    parser.add_argument("--labeller", default="trained", help="who files learned records")
    parser.add_argument("--search-labeller", default="trained", help="serve --labeller")
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--train-specs", nargs="+", default=list(TRAIN_SPECS))
    parser.add_argument("--dev-specs", nargs="+", default=list(DEV_SPECS))
    parser.add_argument(
        "--v2-eval", type=Path, default=ROOT / "benchmarks/results/v2/eval_tasks.json"
    )
    parser.add_argument("--pool-from", type=Path, default=None)
    parser.add_argument("--max-tokens", type=int, default=384)
    parser.add_argument("--worker", choices=["inline", "separate"], default="inline")
    parser.add_argument("--lease", type=float, default=120.0, help="seconds a claimed pair is held")
    parser.add_argument(
        "--concurrency", type=int, default=None,
        help="calls in flight (default: the models' batch widths summed, as collect does)",
    )  # fmt: skip
    parser.add_argument("--chaos", action="store_true")
    parser.add_argument("--kills", type=int, default=4)
    parser.add_argument("--kill-delay-max", type=float, default=20.0)
    parser.add_argument("--retries", type=int, default=20)
    parser.add_argument(
        "--call-timeout", type=float, default=900.0, help="serve --upstream-timeout, s"
    )
    parser.add_argument("--drain-timeout", type=float, default=7200.0)
    parser.add_argument("--work", type=Path, default=ROOT / "runs/online-replay")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/online")
    parser.add_argument("--v2-memory", type=Path, default=ROOT / V2_MEMORY)
    parser.add_argument("--per-benchmark", type=int, default=100)
    parser.add_argument("--run-out", type=Path, default=ROOT / "runs/online-eval")
    args = parser.parse_args(argv)
    if args.concurrency is not None and args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    args.eval_specs = dict(EVAL_SPECS)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.step == "learn":
            report = learn_step(args)
            return 0 if report["checks"]["passed"] else 1
        eval_step(args)
        return 0
    except ReplayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
