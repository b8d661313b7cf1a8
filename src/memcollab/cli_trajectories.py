"""`memcollab trajectories export|import`: move a runs folder's trajectories between machines.

With the call cache alone, a resumed run replays every stored call and so re-runs every
sandboxed program and math check; importing the trajectories too makes a resume skip them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memcollab.cli_common import SinceOption, console, parse_since
from memcollab.collect import TrajectoryStore
from memcollab.trajectory_archive import export_archive, import_archive

trajectories_app = typer.Typer(
    no_args_is_help=True, help="Export and import the trajectories of a runs folder."
)

RunDirArg = Annotated[
    Path, typer.Argument(help="Runs folder holding trajectories.sqlite (e.g. runs/paper/eval).")
]


@trajectories_app.command("export")
def trajectories_export(
    run_dir: RunDirArg,
    out: Annotated[Path, typer.Argument(help="JSONL file (gzip-compressed if it ends in .gz).")],
    since: SinceOption = None,
) -> None:
    """Write the folder's tasks and trajectories (with the time each was stored) as JSONL."""
    count = export_archive(TrajectoryStore.open_existing(run_dir), out, parse_since(since))
    console.print(f"exported {count} trajectories to {out}")


@trajectories_app.command("import")
def trajectories_import(
    run_dir: Annotated[Path, typer.Argument(help="Runs folder to add to (created if needed).")],
    sources: Annotated[
        list[Path], typer.Argument(help="JSONL files written by `trajectories export`.")
    ],
) -> None:
    """Add the trajectories of export files (each file checked whole first; known keys kept)."""
    store = TrajectoryStore.in_dir(run_dir)
    for source in sources:
        added, skipped = import_archive(store, source)
        console.print(f"{source}: imported {added} trajectories, skipped {skipped} already present")
