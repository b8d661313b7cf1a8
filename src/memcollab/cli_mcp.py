"""`memcollab mcp`: the memory's MCP tools over stdio, for an MCP client to spawn.

The server package and the MCP SDK are imported only when the command runs. Nothing is
printed to stdout, which carries the protocol; a problem before serving is one `error:`
line on stderr and exit code 2 (cli.main).
"""

from __future__ import annotations

from typing import Annotated

import typer

from memcollab.cli_common import (
    DataDirOption,
    GateConditionOption,
    IgnoreGateOption,
    gate_choice,
)
from memcollab.cli_serve import MemoryOption
from memcollab.errors import UserError
from memcollab.paths import default_memory

_KEY_FIX = (
    "pass --key or set MEMCOLLAB_API_KEY to a key from "
    "`memcollab keys create --namespace NS --scope read|write`"
)


def mcp_command(
    memory: MemoryOption = None,
    key: Annotated[
        str | None,
        typer.Option(
            envvar="MEMCOLLAB_API_KEY",
            help="API key: gives the namespace the tools act on and their scope (read:"
            " search and stats; write: also record outcomes).",
            show_default=False,
        ),
    ] = None,
    namespace: Annotated[
        str | None,
        typer.Option(help="The namespace the key must be bound to (a check; the key decides)."),
    ] = None,
    labeller: Annotated[
        str,
        typer.Option(
            help="Who labels search tasks that come without a category: none (search the"
            " task's domain) or trained (the deterministic classifier; needs --data-dir)."
        ),
    ] = "none",
    data_dir: DataDirOption = None,
    ignore_gate: IgnoreGateOption = False,
    gate_condition: GateConditionOption = None,
) -> None:
    """Serve the memory's MCP tools (search_constraints, record_outcome, memory_stats) on
    stdin/stdout, for one API key's namespace."""
    try:
        import anyio

        from memcollab.server.context import ServerContext, Settings
        from memcollab.server.keys import InvalidKeyError
        from memcollab.server.mcp_stdio import key_principal, serve_stdio
    except ImportError as exc:
        raise UserError(
            f"memcollab mcp needs the server extra ({(exc.name or '?').split('.')[0]} is not"
            " installed)",
            "pip install 'memcollab[server]'",
        ) from None
    if not key or not key.strip():
        raise UserError("memcollab mcp needs an API key", _KEY_FIX)
    if labeller not in ("none", "trained"):
        raise UserError(f"unknown labeller {labeller!r}", "use --labeller none or trained")
    gate = gate_choice(ignore_gate, gate_condition)
    chosen = None
    if labeller == "trained":
        from memcollab.memory.labeller import make_labeller

        chosen = make_labeller("trained", data_dir=data_dir)
    context = ServerContext.open(
        memory or default_memory(), labeller=chosen, create=False, settings=Settings(gate=gate)
    )
    try:
        try:
            who = key_principal(context, key)
        except InvalidKeyError:
            raise UserError("invalid or revoked API key", _KEY_FIX) from None
        if namespace is not None and namespace != who.namespace:
            raise UserError(
                f"this key is bound to namespace {who.namespace!r}, not {namespace!r}",
                "use a key of that namespace, or drop --namespace",
            )
        anyio.run(serve_stdio, context, key)
    finally:
        context.close()
