"""`memory versions|snapshot|rollback|archive`: a memory's history on the command line.

Registered on `memory_app` (cli_memory.py) when cli.py imports this module. Every command
goes through `Memory`; the change log itself is memory/store_changes.py.
"""

from __future__ import annotations

import datetime
import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from memcollab.cli_common import console
from memcollab.cli_memory import MemoryArg, memory_app

NamespaceOpt = Annotated[str, typer.Option(help="Memory namespace.")]


@memory_app.command("versions")
def memory_versions(
    memory: MemoryArg,
    namespace: NamespaceOpt = "default",
    record: Annotated[str | None, typer.Option(help="Only this record's changes.")] = None,
    since: Annotated[int, typer.Option(help="Only changes after this version.")] = 0,
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON Lines: one change per line.")
    ] = False,
) -> None:
    """A namespace's change log: every version, what changed, why, who, when."""
    from memcollab.memory import Memory

    with Memory.open(memory, create=False) as mem:
        changes = mem.changes(namespace, record_id=record, since=since)
        snapshots = mem.snapshots(namespace)
    if as_json:
        for change in changes:
            line = change.model_dump_json(exclude={"record_is_final"})
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        return
    names: dict[int, list[str]] = {}
    for name, version in snapshots.items():
        names.setdefault(version, []).append(name)
    table = Table(title=f"{escape(namespace)}: version {changes[-1].version if changes else since}")
    for column in ("version", "record", "change", "status", "reason", "by", "at", "snapshot"):
        table.add_column(column)
    for c in changes:
        at = datetime.datetime.fromtimestamp(c.at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            str(c.version),
            c.record_id,
            c.op + (" (content)" if c.record is not None and c.op != "add" else ""),
            f"{c.status_before or '-'} -> {c.status_after}",
            escape(c.reason),
            escape(c.actor),
            at,
            escape(", ".join(sorted(names.get(c.version, [])))),
        )
    console.print(table)


@memory_app.command("snapshot")
def memory_snapshot(
    memory: MemoryArg,
    name: Annotated[str, typer.Argument(help="A name for the current version, e.g. v1.")],
    namespace: NamespaceOpt = "default",
) -> None:
    """Name the namespace's current version, to roll back to it later by name."""
    from memcollab.memory import Memory

    with Memory.open(memory, create=False) as mem:
        version = mem.snapshot(namespace, name, actor="cli")
    console.print(f"snapshot {escape(name)} = version {version} of {escape(namespace)}")


@memory_app.command("rollback")
def memory_rollback(
    memory: MemoryArg,
    to: Annotated[str, typer.Argument(help="A version number or a snapshot name.")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")],
    namespace: NamespaceOpt = "default",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Set every record of the namespace back to its status and content at a version.

    Written as new changes: records added later are archived, never deleted, and a later
    rollback can undo this one."""
    from memcollab.memory import Memory

    with Memory.open(memory, create=False) as mem:
        counts = mem.rollback(namespace, to, reason, actor="cli")
    if as_json:
        console.print_json(json.dumps(counts.__dict__))
        return
    console.print(
        f"{escape(namespace)} rolled back to version {counts.to_version}: {counts.changed} "
        f"records changed ({counts.contents_restored} contents restored, {counts.archived} "
        f"archived); now version {counts.new_version}"
    )


@memory_app.command("archive")
def memory_archive(
    memory: MemoryArg,
    record_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")],
    undo: Annotated[
        bool, typer.Option("--undo", help="Restore it to the status it was archived from.")
    ] = False,
) -> None:
    """Withhold a record for good (kept and exported, never deleted), or restore it."""
    from memcollab.memory import Memory

    with Memory.open(memory, create=False) as mem:
        changed = (mem.restore if undo else mem.archive)(record_id, reason, actor="cli")
        status = mem.status(record_id)
    note = "" if changed else " (unchanged)"
    console.print(f"{record_id} is {status}{note}")
