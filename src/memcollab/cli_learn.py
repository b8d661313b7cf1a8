"""`memcollab learn`: the online-learning worker alone (server/learner.py), and the
worker factory `serve --learn` shares.

It distils the queued contrasting pairs of a served memory with a fleet model
(`--distiller`), labels them (trained labeller by default, or the LLM one), and files the
records with provenance. Several `learn` processes (and `serve --learn`) may share one
database: a pair is claimed by one at a time, and finished by at most one.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from memcollab.cli_common import (
    CacheOption,
    DataDirOption,
    FleetOption,
    NoCacheOption,
    console,
    make_gateway,
)
from memcollab.cli_serve import MemoryOption
from memcollab.errors import UserError
from memcollab.paths import default_memory

if TYPE_CHECKING:
    from memcollab.server.context import ServerContext
    from memcollab.server.learner import LearningWorker, Outcome

DistillerOption = Annotated[
    str | None,
    typer.Option("--distiller", help="The fleet model that distils the pairs."),
]
ScreenOption = Annotated[
    str, typer.Option("--screen", help="The distiller's screen: v2 (default) or v1.")
]
PROMPT_CHARS = 9000
"""The default size bound of a distillation request (characters), as a batch build's."""
REPLY_TOKENS = 400
"""The default reply budget of a distillation (tokens), as a batch build's."""


STOP_GRACE_S = 2.0
"""After SIGTERM / Ctrl-C: how long a distillation in progress may still finish (and be
filed); past it the pair is given back (pending again, the try not counted) and the
process exits, so a stop never waits on a slow model call."""


def make_worker(
    ctx: ServerContext,
    distiller: str,
    *,
    labeller: str = "trained",
    screen: str = "v2",
    data_dir: Path | None = None,
    cache: Path | None = None,
    no_cache: bool = False,
    prompt_chars: int = PROMPT_CHARS,
    reply_tokens: int = REPLY_TOKENS,
) -> LearningWorker:
    """The worker of `learn` and `serve --learn`: the fleet's `distiller` behind the call
    cache, the chosen labeller, the chosen screen, the distillation request's size bound
    (`prompt_chars`) and reply budget (`reply_tokens`)."""
    from memcollab.llm.base import Decoding
    from memcollab.memory.distill import SCREEN_VERSIONS, Distiller
    from memcollab.memory.labeller import check_labeller_kind, make_labeller
    from memcollab.server.learner import LearningWorker

    check_labeller_kind(labeller)
    version = next((v for v in SCREEN_VERSIONS if v == screen), None)
    if version is None:
        raise UserError(f"unknown screen {screen!r}", f"use one of {', '.join(SCREEN_VERSIONS)}")
    if ctx.fleet is None:
        raise UserError("online learning needs a fleet", "give --fleet FILE")
    client = make_gateway(cache, no_cache).bind(ctx.fleet.model(distiller))
    chosen = make_labeller(labeller, client=client, data_dir=data_dir)
    distiller_ = Distiller(
        client,
        max_prompt_chars=prompt_chars,
        decoding=Decoding(temperature=0.0, max_tokens=reply_tokens),
        screen=version,
    )
    return LearningWorker(ctx, ctx.learning, distiller_, chosen)


def learn_command(
    distiller: DistillerOption = None,
    memory: MemoryOption = None,
    fleet: FleetOption = None,
    labeller: Annotated[
        str,
        typer.Option(
            "--labeller",
            help="Who files learned records: trained (needs --data-dir's train files) or llm"
            " (the distiller model picks the taxonomy options).",
        ),
    ] = "trained",
    screen: ScreenOption = "v2",
    once: Annotated[
        bool, typer.Option("--once", help="Stop when nothing is left to claim.")
    ] = False,
    lease: Annotated[
        float,
        typer.Option(min=1.0, help="Seconds a claimed pair is held before another may take it."),
    ] = 600.0,
    max_pending: Annotated[
        int, typer.Option(min=1, help="Most pending pairs (more wait for the backlog scan).")
    ] = 1000,
    max_tries: Annotated[int, typer.Option(min=1, help="Claims of one pair before it fails.")] = 3,
    prompt_chars: Annotated[
        int,
        typer.Option(min=1000, help="Size bound of a distillation request, characters."),
    ] = PROMPT_CHARS,
    reply_tokens: Annotated[
        int, typer.Option(min=16, help="The distiller's reply budget, tokens.")
    ] = REPLY_TOKENS,
    data_dir: DataDirOption = None,
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """Distil the served memory's contrasting attempts as they come (online learning).
    SIGTERM or Ctrl-C stops it; a pair in progress is given back."""
    if not distiller:
        raise UserError("learn needs a distiller", "give --distiller MODEL (a fleet model)")
    try:
        from memcollab.server.context import ServerContext, Settings
    except ImportError as exc:
        raise UserError(
            f"memcollab learn needs the server extra ({exc.name} is not installed)",
            "pip install 'memcollab[server]'",
        ) from None
    settings = Settings(
        learn_lease_s=lease, learn_max_pending=max_pending, learn_max_tries=max_tries
    )
    ctx = ServerContext.open(
        memory or default_memory(), fleet=fleet, settings=settings, create=False
    )
    try:
        worker = make_worker(
            ctx,
            distiller,
            labeller=labeller,
            screen=screen,
            data_dir=data_dir,
            cache=cache,
            no_cache=no_cache,
            prompt_chars=prompt_chars,
            reply_tokens=reply_tokens,
        )
        _run(worker, once)
    finally:
        ctx.close()


def _run(worker: LearningWorker, once: bool) -> None:
    stop = threading.Event()
    seen = {"done": 0, "exists": 0, "refused": 0, "failed": 0, "retry": 0, "lost": 0}
    seen |= {"quarantined": 0, "merged": 0}
    errors: list[BaseException] = []

    def on_outcome(outcome: Outcome) -> None:
        seen[outcome.status] += 1
        seen["merged"] += outcome.merged
        seen["quarantined"] += outcome.status == "done" and outcome.record_status == "quarantined"

    def work() -> None:
        try:
            worker.run(stop, once=once, on_outcome=on_outcome)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_term)
    thread = threading.Thread(target=work, name="learner", daemon=True)
    console.print(
        f"learning with distiller [bold]{worker.distiller.name}[/bold] as {worker.owner}"
        f" ({worker.prompt_version})",
        highlight=False,
    )
    try:
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as progress:
            bar = progress.add_task("learning")
            thread.start()
            try:
                while thread.is_alive() and not stop.is_set():
                    thread.join(0.25)
                    progress.update(bar, description=_line(worker, seen))
            except KeyboardInterrupt:
                stop.set()
            stop.set()
            thread.join(STOP_GRACE_S)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if thread.is_alive():  # a model call still running: give the pair back and leave now
        worker.queue.release(worker.owner)
        console.print("stopped (a distillation in progress was given back)")
        os._exit(0)
    if errors:
        raise errors[0]
    console.print(_line(worker, seen), highlight=False)


def _line(worker: LearningWorker, seen: dict[str, int]) -> str:
    queue = worker.queue.counts()["queue"]
    return (
        f"distilled {seen['done']} (quarantined {seen['quarantined']}, constraints merged"
        f" {seen['merged']}, already stored {seen['exists']}), refused {seen['refused']},"
        f" failed {seen['failed']}, retried {seen['retry']}; queue: {queue['pending']} pending,"
        f" {queue['claimed']} claimed"
    )
