"""What the CLI modules share: consoles, common options, the gateway, the call table."""

from __future__ import annotations

import functools
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from memcollab.errors import UserError
from memcollab.llm import packaged
from memcollab.llm.cache import CallCache, Gateway
from memcollab.paths import call_cache_path
from memcollab.tasks.datasets import load_task_specs
from memcollab.tasks.task import Task

console = Console()
err_console = Console(stderr=True)

FleetOption = Annotated[
    Path | None,
    typer.Option("--fleet", "-f", help="Fleet TOML file (default: the three packaged models)."),
]
CacheOption = Annotated[
    Path | None, typer.Option("--cache", help="Call-cache SQLite file (default: user cache dir).")
]
NoCacheOption = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the cache.")]

DataDirOption = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", envvar="MEMCOLLAB_DATA_DIR", help="Folder holding gsm8k/, math/, mbpp/."
    ),
]

SinceOption = Annotated[
    str | None,
    typer.Option(help="Only rows stored at or after this time (ISO, UTC; or epoch seconds)."),
]


def parse_since(value: str | None) -> float | None:
    """An ISO date-time (UTC unless it names a zone) or seconds since the epoch."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(
            f"bad --since {value!r}", "write an ISO time like 2026-12-02T04:00 or epoch seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def make_gateway(cache: Path | None, no_cache: bool, *, replay_only: bool = False) -> Gateway:
    """The gateway of a command: the call cache (default location unless given), or none."""
    if no_cache:
        return Gateway(None)
    return Gateway(CallCache(cache or call_cache_path()), replay_only=replay_only)


def print_gateway_stats(gateway: Gateway) -> None:
    table = Table(title="Model calls")
    for col in ("model", "calls", "cache hits", "completion tokens", "seconds"):
        table.add_column(col)
    for name, s in gateway.stats().items():
        table.add_row(
            name, str(s.calls), str(s.cache_hits), str(s.completion_tokens), f"{s.seconds:.1f}"
        )
    console.print(table)


def prepare_with_progress(names: list[str], force: bool = False) -> None:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        for name in names:
            entry = packaged.get(name)
            if not force and packaged.status(entry) is packaged.Status.READY:
                console.print(f"[green]ready[/green]  {name}  {entry.target()}")
                continue
            task = progress.add_task(f"assembling {name}", total=entry.size)
            packaged.prepare(
                entry,
                progress=functools.partial(_show_assembly, progress, task),
                force=force,
            )
            progress.update(task, description=f"[green]verified[/green] {name}")


def counting_progress() -> Progress:
    """Bars of counted jobs with a running-accuracy field (`acc`), elapsed time and ETA."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[acc]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


def stop_on_sigterm() -> None:
    """Make `kill PID` stop a long run the way Ctrl-C does.

    SIGTERM becomes KeyboardInterrupt, and so does SIGINT where the shell started us in the
    background with SIGINT ignored (POSIX shells without job control do that).
    """

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, interrupt)


def exit_interrupted(message: str) -> NoReturn:
    """Print `message` and leave at once with status 130.

    Model calls still running in worker threads would otherwise be waited for at exit
    (concurrent.futures joins its threads), which takes minutes; everything finished is
    already committed to SQLite, so leaving without them loses nothing stored.
    """
    err_console.print(message)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def load_tasks_or_fail(specs: list[str], data_dir: Path | None, seed: int) -> list[Task]:
    """The tasks of dataset specs; a UserError when they select none."""
    tasks = load_task_specs(specs, data_dir, seed)
    if not tasks:
        raise UserError(f"the task specs {specs} select no task")
    return tasks


def check_domain(domain: str) -> None:
    """Refuse a domain no benchmark kind has."""
    from memcollab.domains import get_domain

    get_domain(domain)


def _show_assembly(progress: Progress, task: TaskID, done: int, total: int) -> None:
    progress.update(task, completed=done, total=total)
