"""The online replay's stream (benchmarks/online_replay.py): every (task, model) through the
proxy with its feedback, `--concurrency` at a time, the chaos kills, the progress file that
makes a rerun resume, and the wait for the learning queue to drain."""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from online_replay_common import ReplayError, client_id
from online_replay_procs import Processes

from memcollab.collect import MAX_DEFAULT_WORKERS, MIN_DEFAULT_WORKERS
from memcollab.domains import get_domain
from memcollab.errors import UserError
from memcollab.llm.fleet import Fleet
from memcollab.tasks.task import Task

RETRYABLE = (openai.APIConnectionError, openai.InternalServerError, httpx.TransportError)


class Progress:
    """WORK/progress.jsonl: one line per finished (task, model), one per kill made. A
    (task, model) is finished when its feedback returned a verdict, or when its call kept
    failing through every retry (an `error` line: counted, skipped on a rerun unless
    --retry-errors).

    Worker threads write through one lock, each line whole, flushed and fsynced. A last
    line cut by a kill of the harness itself (no newline at its end) is cut off when the
    file is read again, so the lines a resumed run appends after it stay readable.
    """

    def __init__(self, path: Path, *, retry_errors: bool = False) -> None:
        self.path = path
        self.retry_errors = retry_errors
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

    def finished(self, task_id: str, model: str) -> bool:
        """Whether (task, model) is done (an error row too, unless errors are redone)."""
        row = self.done.get((task_id, model))
        return row is not None and not ("error" in row and self.retry_errors)

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


class FeedbackError(RuntimeError):
    """Feedback answered 200 without a verdict (retried like a failed call)."""


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
    feedback.raise_for_status()  # any status but 2xx: retried, then an error row
    verdict = (feedback.json().get("attempt") or {}).get("verdict")
    if verdict not in ("correct", "incorrect"):
        raise FeedbackError(f"feedback on {cid} gave no verdict ({verdict!r})")
    return {
        "task": task.id,
        "model": model,
        "attempt": cid,
        "verdict": verdict,
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


class CallFailed(Exception):
    """A (task, model) whose every try failed: the last failure, and how many tries."""

    def __init__(self, reason: str, tries: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.tries = tries


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
        except CallFailed as failed:  # every try failed: a counted error row, and on
            row = {"task": task.id, "model": model, "attempt": client_id(task.id, model)}
            row |= {"error": failed.reason, "replayed": False}
            retries = failed.tries - 1
            with self.lock:
                self.counts["errors"] += 1
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
        """`call()` until it succeeds: a transport error, any HTTP error status of the
        call or of its feedback (the service killed or restarting, a 504, a 422 of the
        judge) or a feedback without a verdict is retried with the same client id, up to
        --retries times; then CallFailed (the caller writes an error row and goes on). A
        refused key (401/403) ends the replay: no call can succeed. Returns the result and
        the number of retries."""
        failure = ""
        for attempt in range(self.args.retries + 1):
            if self.stop.is_set():
                raise ReplayError("stopped: another call failed")
            try:
                self.procs.ensure()
                result: dict[str, Any] = call()
                return result, attempt
            except (*RETRYABLE, FeedbackError) as exc:
                failure = f"{type(exc).__name__}: {exc}"
            except (httpx.HTTPStatusError, openai.APIStatusError) as exc:
                status = exc.response.status_code
                if status in (401, 403):
                    raise ReplayError(f"the service refused the replay's key: {exc}") from None
                failure = f"HTTP {status}: {str(exc)[:300]}"
            with self.lock:
                self.counts["retries"] += 1
            self.procs.suspect()
            if attempt < self.args.retries:
                time.sleep(min(0.2 * 2**attempt, 10.0))
        raise CallFailed(failure, self.args.retries + 1)


def stream(
    args: argparse.Namespace, procs: Processes, key: str, tasks: list[Task], progress: Progress
) -> dict[str, int]:
    """Every (task, model) not yet in the progress file through the proxy, `--concurrency`
    at a time; the first call that fails for good stops the others."""
    steps = [(task, model) for task in tasks for model in args.models]
    todo = [(i, t, m) for i, (t, m) in enumerate(steps) if not progress.finished(t.id, m)]
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
