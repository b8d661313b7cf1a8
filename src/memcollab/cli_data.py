"""`memcollab data get`: download GSM8K, MATH and MBPP into the layout the loaders read."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from memcollab.cli_common import DataDirOption, console
from memcollab.paths import default_data_dir

data_app = typer.Typer(no_args_is_help=True, help="Get the benchmark data files.")


@data_app.command("get")
def data_get(
    datasets: Annotated[
        list[str], typer.Argument(help="gsm8k, math, mbpp, or all (HumanEval needs none).")
    ],
    data_dir: DataDirOption = None,
    mirror: Annotated[
        str | None,
        typer.Option(
            "--mirror",
            envvar="MEMCOLLAB_DATA_MIRROR",
            help="Download from this base URL (http(s):// or file://) instead of upstream:"
            " URL/<file's path in the data directory>, and URL/math/MATH.tar.",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a present file whose hash differs.")
    ] = False,
) -> None:
    """Download the public benchmark files, check each against its pinned sha256, and lay
    them out as the loaders read them. Resumable: run it again after an interruption."""
    from memcollab.tasks.data_get import DATASETS, get_data, resolve_names
    from memcollab.tasks.datasets import data_dir as resolve_data_dir
    from memcollab.tasks.download import DownloadEvent

    root = resolve_data_dir(data_dir)
    names = resolve_names(datasets)  # an unknown name fails before anything is fetched
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as progress:
        bars: dict[str, TaskID] = {}

        def on_event(event: DownloadEvent) -> None:
            bar = bars.get(event.name)
            if bar is None:
                bar = bars[event.name] = progress.add_task(event.name, total=event.total)
            words = {
                "resume": "resuming",
                "restart": "restarting (no resume)",
                "verify": "checking",
                "convert": "converting",
                "present": "[green]present[/green]",
                "done": "[green]verified[/green]",
            }
            if event.status in words:
                progress.update(bar, description=f"{event.name} {words[event.status]}")
            progress.update(bar, completed=event.done, total=event.total)

        outcomes = get_data(names, root, mirror=mirror, force=force, on_event=on_event)
    table = Table(title=f"Benchmark data in {root}")
    for col in ("file", "status", "sha256"):
        table.add_column(col)
    for outcome in outcomes:
        table.add_row(
            str(outcome.path.relative_to(root)), outcome.status, outcome.sha256[:16] + "..."
        )
    console.print(table)
    for name in names:
        console.print(f"{name}: {DATASETS[name].licence}", highlight=False)
    if root == default_data_dir():
        console.print("the other commands read this folder by default", highlight=False)
    else:
        console.print(
            f"point the other commands here: --data-dir {root} (or MEMCOLLAB_DATA_DIR={root})",
            highlight=False,
        )
