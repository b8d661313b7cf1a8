"""What the CLI modules share: consoles, common options, the gateway, the call table."""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from memcollab.errors import UserError
from memcollab.llm import loading, packaged
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

IgnoreGateOption = Annotated[
    bool,
    typer.Option(
        "--ignore-gate",
        help="Serve memory even where the namespace's stored utility gate (an experiment's"
        " dev phase) said it does not help that model in that domain.",
    ),
]
GateConditionOption = Annotated[
    str | None,
    typer.Option(
        "--gate-condition",
        help="The condition whose stored utility gate applies, where the namespace holds"
        " several (gate:CONDITION notes) that disagree.",
    ),
]


def gate_choice(ignore_gate: bool, gate_condition: str | None) -> bool | str:
    """Memory.search's `gate` from the two options."""
    if ignore_gate and gate_condition is not None:
        raise UserError("--ignore-gate and --gate-condition exclude each other", "give one")
    return False if ignore_gate else (gate_condition or True)


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


class LoadingRows:
    """A model-loading listener that shows each load as a row of a live Progress.

    The row ("loading NAME (SIZE)", a pulsing bar and its elapsed time) appears when the
    load starts; when it ends the row gives way to a printed line with the seconds it took.
    """

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._rows: dict[str, TaskID] = {}
        self._lock = threading.Lock()

    def __call__(self, event: loading.LoadEvent) -> None:
        with self._lock:
            if not event.done:
                self._rows[event.name] = self.progress.add_task(
                    f"loading {event.name} ({_gb(event.size)})", total=None, acc=""
                )
                return
            row = self._rows.pop(event.name, None)
        if row is not None:
            self.progress.remove_task(row)
        self.progress.console.print(load_line(event))


def load_line(event: loading.LoadEvent) -> str:
    """The line that reports a finished (or failed) load."""
    if event.error is not None:
        return f"[red]loading {event.name} failed[/red] after {event.seconds:.1f}s"
    return f"[dim]loaded {event.name} ({_gb(event.size)}) in {event.seconds:.1f}s[/dim]"


def _gb(size: int) -> str:
    return f"{size / 1e9:.2f} GB"


class _CountingProgress(Progress):
    """A Progress that shows model loads as rows while it is live."""

    def __enter__(self) -> _CountingProgress:
        super().__enter__()
        self._loads = LoadingRows(self)
        loading.add_listener(self._loads)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        loading.remove_listener(self._loads)
        super().__exit__(exc_type, exc_val, exc_tb)


def counting_progress() -> Progress:
    """Bars of counted jobs with a running-accuracy field (`acc`), elapsed time and ETA;
    a model that loads meanwhile gets a row of its own (LoadingRows)."""
    return _CountingProgress(
        SpinnerColumn(finished_text=" "),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[acc]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    )


@contextmanager
def spinner(text: str) -> Iterator[list[loading.LoadEvent]]:
    """A spinner saying `text`, or "loading NAME" while a model loads inside the block.

    Yields the list of finished loads (filled as they end), so a caller can report the time
    spent loading apart from the time spent computing.
    """
    loads: list[loading.LoadEvent] = []

    with console.status(text) as status:

        def on_load(event: loading.LoadEvent) -> None:
            if not event.done:
                status.update(f"loading {event.name} ({_gb(event.size)})...")
                return
            loads.append(event)
            console.print(load_line(event))
            status.update(text)

        with loading.listening(on_load):
            yield loads


def stop_on_sigterm() -> None:
    """Make `kill PID` stop a long run the way Ctrl-C does.

    SIGTERM becomes KeyboardInterrupt, and so does SIGINT where the shell started us in the
    background with SIGINT ignored (POSIX shells without job control do that). Only the
    first SIGTERM: later ones are ignored, so they cannot cut short the shutdown that
    records the run's part (GNU `timeout` signals its command and then its whole process
    group, so a run under it gets two; one landing in the runner's `finally` lost a part's
    line in parts.jsonl). `kill -9` still stops it at once.
    """

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
