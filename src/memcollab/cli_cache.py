"""`memcollab cache export|import|stats`: move the model-call cache between machines.

A long experiment's only state that cannot be recomputed for free is its model calls: with
the cache imported, `experiment run` replays every stored call and resumes where it stopped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from memcollab.cli_common import CacheOption, console
from memcollab.errors import UserError
from memcollab.llm.cache import CallCache
from memcollab.paths import call_cache_path

cache_app = typer.Typer(no_args_is_help=True, help="Export, import and count cached model calls.")


def _since(value: str | None) -> float | None:
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


@cache_app.command("export")
def cache_export(
    out: Annotated[Path, typer.Argument(help="JSONL file (gzip-compressed if it ends in .gz).")],
    since: Annotated[
        str | None,
        typer.Option(help="Only calls stored at or after this time (ISO, UTC; or epoch seconds)."),
    ] = None,
    cache: CacheOption = None,
) -> None:
    """Write cached model calls as JSONL, in the order they were stored."""
    count = CallCache(cache or call_cache_path()).export_jsonl(out, _since(since))
    console.print(f"exported {count} calls to {out}")


@cache_app.command("import")
def cache_import(
    sources: Annotated[list[Path], typer.Argument(help="JSONL files written by `cache export`.")],
    cache: CacheOption = None,
) -> None:
    """Add the calls of export files (each file checked whole first; known keys skipped)."""
    store = CallCache(cache or call_cache_path())
    for source in sources:
        added, skipped = store.import_jsonl(source)
        console.print(f"{source}: imported {added} calls, skipped {skipped} already present")


@cache_app.command("stats")
def cache_stats(cache: CacheOption = None) -> None:
    """How many calls the cache holds."""
    path = cache or call_cache_path()
    console.print(f"{len(CallCache(path))} calls in {path}")
