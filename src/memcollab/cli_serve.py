"""`memcollab serve` (the memory over HTTP) and `memcollab keys create|list|revoke`.

The server package is imported only when a command runs, so the library and the other
commands work without the `server` extra; `keys` needs no FastAPI at all.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from memcollab.cli_common import (
    DataDirOption,
    FleetOption,
    GateConditionOption,
    IgnoreGateOption,
    console,
    err_console,
    gate_choice,
)
from memcollab.errors import UserError
from memcollab.paths import default_memory

if TYPE_CHECKING:
    from memcollab.server.context import ServerContext
    from memcollab.server.keys import KeyStore

MemoryOption = Annotated[
    str | None,
    typer.Option(
        "--memory",
        "-m",
        envvar="MEMCOLLAB_MEMORY",
        help="Memory: a SQLite path or a postgresql:// URL (default: memory.sqlite in the"
        " user data dir).",
    ),
]

keys_app = typer.Typer(no_args_is_help=True, help="API keys of `memcollab serve`.")


def serve_command(
    memory: MemoryOption = None,
    host: Annotated[
        str, typer.Option(help="Address to bind (127.0.0.1: this machine only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8765,
    fleet: FleetOption = None,
    labeller: Annotated[
        str,
        typer.Option(
            help="Who labels search tasks that come without a category: none (search the"
            " task's domain) or trained (the deterministic classifier; needs --data-dir)."
        ),
    ] = "none",
    data_dir: DataDirOption = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
    upstream_timeout: Annotated[
        float,
        typer.Option(min=0.1, help="Seconds the proxy waits for an upstream model (then 504)."),
    ] = 300.0,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Worker processes (uvicorn); they share only the database. /metrics"
            " counts the worker that answers.",
        ),
    ] = 1,
    threads: Annotated[
        int,
        typer.Option(
            min=1,
            max=256,
            help="Request threads per worker; a PostgreSQL memory opens at most this many"
            " connections per worker (unless MEMCOLLAB_PG_POOL_SIZE says otherwise).",
        ),
    ] = 16,
    learn: Annotated[
        bool,
        typer.Option(
            "--learn",
            help="Run the online-learning worker in this process (a background thread):"
            " contrasting attempts are distilled into records as verdicts land.",
        ),
    ] = False,
    distiller: Annotated[
        str | None, typer.Option("--distiller", help="--learn: the fleet model that distils.")
    ] = None,
    learn_labeller: Annotated[
        str, typer.Option("--learn-labeller", help="--learn: trained (default) or llm.")
    ] = "trained",
    learn_lease: Annotated[
        float,
        typer.Option(
            "--learn-lease",
            min=1.0,
            help="--learn: seconds a claimed pair is held before another worker may take it"
            " (after a crash, the pair waits this long).",
        ),
    ] = 600.0,
    learn_prompt_chars: Annotated[
        int,
        typer.Option(
            "--learn-prompt-chars",
            min=1000,
            help="--learn: size bound of a distillation request, characters (as learn's).",
        ),
    ] = 9000,
    learn_reply_tokens: Annotated[
        int,
        typer.Option(
            "--learn-reply-tokens", min=16, help="--learn: the distiller's reply budget, tokens."
        ),
    ] = 400,
    ignore_gate: IgnoreGateOption = False,
    gate_condition: GateConditionOption = None,
) -> None:
    """Serve a memory over HTTP: the REST API under /v1, OpenAPI docs at /docs.

    On a memory that never had an API key, one admin key for namespace `default` is
    created and printed once.
    """
    try:
        import uvicorn

        from memcollab.server.app import SERVE_CONFIG_ENV, create_app
        from memcollab.server.context import ServerContext, Settings
    except ImportError as exc:
        raise UserError(
            f"memcollab serve needs the server extra ({exc.name} is not installed)",
            "pip install 'memcollab[server]'",
        ) from None
    if labeller not in ("none", "trained"):
        raise UserError(f"unknown labeller {labeller!r}", "use --labeller none or trained")
    chosen = None
    if labeller == "trained":
        from memcollab.memory.labeller import make_labeller

        chosen = make_labeller("trained", data_dir=data_dir)
    if learn and (distiller is None or workers > 1):
        raise UserError(
            "--learn needs --distiller MODEL and one worker process",
            "with --workers N, run `memcollab learn` beside the service instead",
        )
    location = memory or default_memory()
    settings = Settings(
        upstream_timeout_s=upstream_timeout,
        threads=threads,
        data_dir=None if data_dir is None else str(data_dir),
        learn_lease_s=learn_lease,
        gate=gate_choice(ignore_gate, gate_condition),
    )
    context = ServerContext.open(location, fleet=fleet, labeller=chosen, settings=settings)
    try:
        created = context.keys.bootstrap("default")
        if created is not None:
            key_id, secret = created
            console.print(
                f"No API key existed: created admin key [bold]{key_id}[/bold] for namespace"
                " 'default'. Its secret is shown this once; store it now:",
                highlight=False,
            )
            console.print(secret, highlight=False, soft_wrap=True)
        console.print(
            f"Serving the memory at {escape(context.location)} on http://{host}:{port}"
            f" (docs: http://{host}:{port}/docs, browser: http://{host}:{port}/browse)",
            highlight=False,
            soft_wrap=True,
        )
        if workers == 1:
            app = create_app(context)
            stop = (
                _start_learning(
                    context,
                    distiller,
                    learn_labeller,
                    data_dir,
                    prompt_chars=learn_prompt_chars,
                    reply_tokens=learn_reply_tokens,
                )
                if learn
                else None
            )
            try:
                uvicorn.run(app, host=host, port=port, log_level=log_level)
            finally:
                if stop is not None:
                    stop()
            return
    finally:
        context.close()
    # Several workers: each opens its own context from the environment (uvicorn spawns them).
    os.environ[SERVE_CONFIG_ENV] = json.dumps(
        {
            "memory": str(location),
            "fleet": None if fleet is None else str(fleet),
            "labeller": labeller,
            "data_dir": None if data_dir is None else str(data_dir),
            "settings": {"threads": threads},
        }
    )
    uvicorn.run(
        "memcollab.server.app:app_from_environment",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level=log_level,
    )


def _start_learning(
    context: ServerContext,
    distiller: str | None,
    labeller: str,
    data_dir: Path | None,
    *,
    prompt_chars: int = 9000,
    reply_tokens: int = 400,
) -> Callable[[], None]:
    """Start the online-learning worker on a daemon thread; returns its stop function."""
    import threading

    from memcollab.cli_learn import make_worker

    assert distiller is not None
    worker = make_worker(
        context,
        distiller,
        labeller=labeller,
        data_dir=data_dir,
        prompt_chars=prompt_chars,
        reply_tokens=reply_tokens,
    )
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="learner", daemon=True)
    thread.start()
    console.print(f"online learning: distiller {distiller}, worker {worker.owner}", highlight=False)

    def stopper() -> None:
        stop.set()
        thread.join(10.0)
        if thread.is_alive():  # a model call still running: its pair goes back to pending
            worker.queue.release(worker.owner)

    return stopper


@contextmanager
def _key_store(memory: str | None, *, create: bool) -> Iterator[KeyStore]:
    from memcollab.memory.api import Memory
    from memcollab.server.db import ServerDB
    from memcollab.server.keys import KeyStore

    with Memory.open(memory or default_memory(), create=create) as opened:
        db = ServerDB(opened.store)
        try:
            yield KeyStore(db)
        finally:
            db.close()


@keys_app.command("create")
def keys_create(
    namespace: Annotated[str, typer.Option(help="The only namespace the key may use.")],
    scope: Annotated[str, typer.Option(help="read, write (read + add) or admin (+ flag, import).")],
    label: Annotated[str, typer.Option(help="A note shown by `keys list`.")] = "",
    untrusted: Annotated[
        bool,
        typer.Option(
            "--untrusted",
            help="What this key adds or imports is quarantined (never served) until a"
            " trusted admin key or `memcollab memory release` releases it.",
        ),
    ] = False,
    memory: MemoryOption = None,
) -> None:
    """Create an API key. Its secret goes to stdout, alone, this once; only a hash is kept."""
    with _key_store(memory, create=True) as keys:
        key_id, secret = keys.create(namespace, scope, label, trusted=not untrusted)
    typer.echo(secret)
    trust = ", untrusted: its records are quarantined" if untrusted else ""
    err_console.print(
        f"created key {key_id} (namespace {namespace!r}, scope {scope}{trust}); the secret "
        "above is shown only now: store it",
        highlight=False,
        soft_wrap=True,
    )


def _when(at: float | None) -> str:
    return "" if at is None else datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M")


@keys_app.command("list")
def keys_list(
    namespace: Annotated[str | None, typer.Option(help="Only this namespace's keys.")] = None,
    memory: MemoryOption = None,
) -> None:
    """List the API keys (ids, namespaces, scopes; never a secret)."""
    with _key_store(memory, create=False) as keys:
        found = keys.list(namespace)
    table = Table()
    table.add_column("key id", no_wrap=True, min_width=16)
    for title in ("namespace", "scope", "trusted", "label"):
        table.add_column(title)
    for title in ("created (UTC)", "revoked (UTC)"):
        table.add_column(title, no_wrap=True)
    for key in found:
        table.add_row(
            key.key_id,
            escape(key.namespace),
            key.scope,
            "yes" if key.trusted else "no",
            escape(key.label),
            _when(key.created_at),
            _when(key.revoked_at),
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (from `keys list`).")],
    memory: MemoryOption = None,
) -> None:
    """Revoke an API key: every service process refuses it from its next request."""
    with _key_store(memory, create=False) as keys:
        changed = keys.revoke(key_id)
    console.print(f"key {key_id} {'revoked' if changed else 'was already revoked'}")
