"""`memcollab cache export|import|stats`: move the model-call cache between machines.

A long experiment's only state that cannot be recomputed for free is its model calls: with
the cache imported, `experiment run` replays every stored call and resumes where it stopped
(`memcollab trajectories import` of the run's trajectories makes that replay unnecessary).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from memcollab.cli_common import CacheOption, SinceOption, console, parse_since
from memcollab.llm.cache import CallCache
from memcollab.paths import call_cache_path

cache_app = typer.Typer(no_args_is_help=True, help="Export, import and count cached model calls.")


@cache_app.command("export")
def cache_export(
    out: Annotated[Path, typer.Argument(help="JSONL file (gzip-compressed if it ends in .gz).")],
    since: SinceOption = None,
    cache: CacheOption = None,
) -> None:
    """Write cached model calls as JSONL, in the order they were stored."""
    count = CallCache(cache or call_cache_path()).export_jsonl(out, parse_since(since))
    console.print(f"exported {count} calls to {out}")


@cache_app.command("import")
def cache_import(
    sources: Annotated[list[Path], typer.Argument(help="JSONL files written by `cache export`.")],
    cache: CacheOption = None,
) -> None:
    """Add the calls of export files, each file checked whole first (every line's key must
    be its request's key and its answer must match the digest exports write; lines without
    a digest, from older exports, are trusted input whose answers cannot be checked); keys
    already stored are skipped."""
    store = CallCache(cache or call_cache_path())
    for source in sources:
        added, skipped = store.import_jsonl(source)
        console.print(f"{source}: imported {added} calls, skipped {skipped} already present")


@cache_app.command("stats")
def cache_stats(cache: CacheOption = None) -> None:
    """How many calls the cache holds."""
    path = cache or call_cache_path()
    console.print(f"{len(CallCache(path))} calls in {path}")
