"""memcollab: shared memory for LLM agents built on different models.

Collect trajectories of several models, distil what separates their successes from their
failures into constraints, and give every agent the constraints of its task's category.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.markup import escape

from memcollab import (
    __version__,
    cli_versions,  # noqa: F401 - registers memory versions|snapshot|rollback|archive
)
from memcollab.cli_cache import cache_app
from memcollab.cli_collect import collect_command, recheck_command
from memcollab.cli_common import err_console
from memcollab.cli_data import data_app
from memcollab.cli_experiment import demo, experiment_app
from memcollab.cli_learn import learn_command
from memcollab.cli_mcp import mcp_command
from memcollab.cli_memory import distill_command, memory_app, solve_command
from memcollab.cli_models import models_app
from memcollab.cli_serve import keys_app, serve_command
from memcollab.cli_trajectories import trajectories_app
from memcollab.errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(models_app, name="models")
app.command("collect")(collect_command)
app.command("recheck")(recheck_command)
app.command("distill")(distill_command)
app.command("solve")(solve_command)
app.add_typer(memory_app, name="memory")
app.add_typer(experiment_app, name="experiment")
app.add_typer(cache_app, name="cache")
app.add_typer(trajectories_app, name="trajectories")
app.add_typer(data_app, name="data")
app.command("demo")(demo)
app.command("serve")(serve_command)
app.command("learn")(learn_command)
app.add_typer(keys_app, name="keys")
app.command("mcp")(mcp_command)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"memcollab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """memcollab: shared memory for LLM agents built on different models."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app and turns user errors into one line and a non-zero exit.

    Usage errors, --help and Ctrl-C are handled by typer itself (standalone mode), which
    ends with SystemExit; our own `UserError`s propagate out of it and are printed here.
    """
    try:
        app(args=argv, prog_name="memcollab")
    except UserError as exc:
        err_console.print(
            f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
