"""`memcollab collect` and `memcollab recheck`: trajectories of a fleet on tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from memcollab.agent import RepairMode, fleet_agent
from memcollab.cli_common import (
    CacheOption,
    DataDirOption,
    FleetOption,
    NoCacheOption,
    check_domain,
    console,
    counting_progress,
    exit_interrupted,
    load_tasks_or_fail,
    make_gateway,
    print_gateway_stats,
    stop_on_sigterm,
)
from memcollab.collect import (
    CollectEvent,
    ModelSummary,
    TrajectoryStore,
    collect,
    summarise,
    write_summary,
)
from memcollab.llm.fleet import Fleet


def _summary_table(title: str, rows: dict[str, ModelSummary]) -> Table:
    table = Table(title=title)
    table.add_column("model", no_wrap=True, min_width=18)
    for col in ("tasks", "accuracy", "mean turns", "prompt tok", "completion tok"):
        table.add_column(col, justify="right")
    for name, s in rows.items():
        table.add_row(
            name,
            str(s.tasks),
            f"{100 * s.accuracy:.1f}%",
            f"{s.mean_turns:.2f}",
            f"{s.prompt_tokens:,}",
            f"{s.completion_tokens:,}",
        )
    return table


def collect_command(
    tasks: Annotated[
        list[str],
        typer.Option(
            "--tasks",
            "-t",
            help="Dataset spec (repeatable),"
            " e.g. gsm8k:train[:200], mbpp:train[~50], humaneval:train.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Runs folder (created or resumed).")],
    fleet: FleetOption = None,
    models: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Only these fleet models (repeatable)."),
    ] = None,
    data_dir: DataDirOption = None,
    max_turns: Annotated[int, typer.Option(min=1, help="Model calls per task at most.")] = 5,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Tokens per reply.")] = None,
    repair: Annotated[
        RepairMode,
        typer.Option(
            help="The loop's repair mode: v1, or live (a failed code check shows the actual"
            " value; a repeated candidate is asked again, sampled). Use its own --out.",
        ),
    ] = "v1",
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Tasks in flight at once (default: what the models serve at once, e.g. each"
            " local model's batch width).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of `[~n]` task sampling.")] = 0,
    redo: Annotated[bool, typer.Option("--redo", help="Recompute stored trajectories.")] = False,
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """Run every fleet model on every task; stream trajectories to OUT (resumable)."""
    loaded = Fleet.load(fleet)
    names = models or loaded.names()
    for name in names:
        loaded.spec(name)
    task_list = load_tasks_or_fail(tasks, data_dir, seed)
    gateway = make_gateway(cache, no_cache)
    stop_on_sigterm()
    agents = [
        fleet_agent(
            loaded, gateway, name, max_turns=max_turns, max_tokens=max_tokens, repair=repair
        )
        for name in names
    ]
    store = TrajectoryStore.in_dir(out)
    console.print(
        f"{len(task_list)} tasks x {len(agents)} models -> {out}"
        f" ({len(store)} trajectories already there)"
    )
    tally: dict[str, list[int]] = {name: [0, 0] for name in names}
    with counting_progress() as progress:
        overall = progress.add_task("[bold]all", total=len(task_list) * len(agents), acc="")
        bars = {name: progress.add_task(name, total=len(task_list), acc="") for name in names}

        def on_event(event: CollectEvent) -> None:
            progress.advance(overall)
            progress.advance(bars[event.model])
            if not event.skipped:
                tally[event.model][0] += int(event.correct)
                tally[event.model][1] += 1
                right, seen = tally[event.model]
                progress.update(bars[event.model], acc=f"acc {right}/{seen}")

        try:
            result = collect(
                agents, task_list, store, redo=redo, workers=workers, on_event=on_event
            )
        except KeyboardInterrupt:
            progress.stop()
            exit_interrupted(
                f"interrupted: {len(store)} trajectories are kept in {out};"
                " run the same command again to resume"
            )
    count = store.export_jsonl(Path(out) / "trajectories.jsonl")
    write_summary(
        Path(out),
        result.per_model,
        {
            "tasks": tasks,
            "fleet": loaded.source,
            "models": names,
            "max_turns": max_turns,
            **({} if repair == "v1" else {"repair": repair}),
        },
    )
    console.print(
        f"computed {result.computed}, reused {result.skipped};"
        f" {count} trajectories in {out}/trajectories.jsonl"
    )
    console.print(_summary_table("Collection summary", result.per_model))
    datasets = sorted({t.id.split("/")[0] for t in task_list})
    if len(datasets) > 1:
        for dataset in datasets:
            subset = [t for t in store if t.task_id.startswith(dataset + "/")]
            console.print(_summary_table(f"{dataset}", summarise(subset)))
    print_gateway_stats(gateway)


def recheck_command(
    runs: Annotated[Path, typer.Argument(help="Folder holding trajectories.sqlite.")],
    domain: Annotated[
        str | None, typer.Option("--domain", help="Only math or only code trajectories.")
    ] = None,
) -> None:
    """Judge every stored trajectory again with the current checkers; exit 1 on a change."""
    from memcollab.recheck import recheck

    if domain is not None:
        check_domain(domain)
    store = TrajectoryStore.open_existing(runs)
    result = recheck(store, store.tasks(), domain)
    table = Table("domain", "model", "checked", "stored timeouts", title=f"Recheck of {runs}")
    for (task_domain, model), n in sorted(result.checked.items()):
        timeouts = result.stored_timeouts[(task_domain, model)]
        table.add_row(task_domain, model, str(n), str(timeouts))
    console.print(table)
    console.print(
        f"{sum(result.checked.values())} checked, {len(result.disagreements)} disagreements"
    )
    for d in result.disagreements:
        task_id, model, condition, sample = d.key
        console.print(
            f"  {task_id} {model} {condition} #{sample}: stored {d.stored}"
            f" ({d.stored_details}), now {d.now} ({d.now_details})",
            highlight=False,
            markup=False,
        )
    if result.disagreements:
        raise typer.Exit(1)
