"""`memcollab distill`, `memcollab solve` and `memcollab memory ...`: build, use and
inspect a MemCollab memory, all through `memcollab.memory.Memory`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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

from memcollab.agent import RepairMode, fleet_agent
from memcollab.cli_common import (
    CacheOption,
    DataDirOption,
    FleetOption,
    GateConditionOption,
    IgnoreGateOption,
    NoCacheOption,
    check_domain,
    console,
    gate_choice,
    load_tasks_or_fail,
    make_gateway,
    spinner,
)
from memcollab.collect import TrajectoryStore
from memcollab.errors import UserError
from memcollab.llm.fleet import Fleet
from memcollab.memory.gate_note import NOTE_PREFIX
from memcollab.tasks.task import Task

if TYPE_CHECKING:
    from memcollab.llm.cache import ModelClient
    from memcollab.memory.labeller import CountingLabeller

memory_app = typer.Typer(no_args_is_help=True, help="Inspect and move MemCollab memories.")
MemoryArg = Annotated[str, typer.Argument(help="Memory: a SQLite path or a postgresql:// URL.")]
TaxonomyOption = Annotated[
    list[str] | None,
    typer.Option("--taxonomy", help="DOMAIN=FILE: your own taxonomy TOML (repeatable)."),
]


def _taxonomies(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        domain, sep, path = item.partition("=")
        if not sep or not path:
            raise UserError(f"bad --taxonomy {item!r}", "write --taxonomy math=FILE or code=FILE")
        check_domain(domain)
        out[domain] = path
    return out


LabellerOption = Annotated[
    str,
    typer.Option(
        "--labeller",
        help="Who labels tasks: llm (the model picks the taxonomy's options) or trained (a"
        " classifier trained on --data-dir's train files, the same for every model; no model"
        " calls).",
    ),
]


def _labeller(
    kind: str, client: ModelClient, data_dir: Path | None, taxonomy: list[str] | None
) -> CountingLabeller:
    """The labeller `--labeller` names (one clear error for an unknown one)."""
    from memcollab.memory.labeller import make_labeller

    return make_labeller(kind, client=client, data_dir=data_dir, taxonomies=_taxonomies(taxonomy))


MemoryOption = Annotated[
    str, typer.Option("--memory", help="Memory: a SQLite path or a postgresql:// URL.")
]


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
    pairing_rule: Annotated[
        str,
        typer.Option(
            "--pairing",
            help="contrastive (the paper: best success vs worst failure) or near_miss (best"
            " success vs the strongest failure; models under --floor give no failure).",
        ),
    ] = "contrastive",
    floor: Annotated[
        float,
        typer.Option(min=0.0, max=0.99, help="near_miss: a model's training accuracy floor."),
    ] = 0.05,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Pairs distilled at once (default: what the distiller serves at once)."
        ),
    ] = None,
    screen: Annotated[
        str,
        typer.Option(
            "--screen",
            help="v1: the form rules; v2: also the semantic rules (vacuous, vague, ...).",
        ),
    ] = "v1",
    judge: Annotated[
        str | None,
        typer.Option(
            "--judge",
            help="--screen v2: a fleet model grades each constraint the rules keep (WRONG,"
            " VACUOUS or KEEP) and the first two are rejected (memory/judge.py).",
        ),
    ] = None,
    merge: Annotated[
        bool,
        typer.Option(
            "--merge", help="Merge near-duplicate constraints of a bucket (support counts)."
        ),
    ] = False,
    taxonomy: TaxonomyOption = None,
    labeller: LabellerOption = "llm",
    data_dir: DataDirOption = None,
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """Build memory from collected trajectories: pair, classify, distil (resumable)."""
    from memcollab.memory import Memory, PairingRule
    from memcollab.memory.distill import SCREEN_VERSIONS, Distiller
    from memcollab.memory.labeller import check_labeller_kind

    check_labeller_kind(labeller)
    version = next((v for v in SCREEN_VERSIONS if v == screen), None)
    if version is None:
        raise typer.BadParameter(
            f"{screen!r} is not one of {', '.join(SCREEN_VERSIONS)}", param_hint="--screen"
        )
    if judge is not None and version != "v2":
        raise UserError("--judge runs after the v2 screen's rules", "add --screen v2")
    loaded = Fleet.load(fleet)
    if judge is not None and judge not in loaded.names():
        raise UserError(
            f"the judge {judge!r} is not a model of the fleet",
            f"use one of: {', '.join(loaded.names())}",
        )
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
    name = distiller or loaded.strongest()
    gateway = make_gateway(cache, no_cache)
    client = gateway.bind(loaded.model(name))
    classifier = _labeller(labeller, client, data_dir, taxonomy)
    grader = None
    if judge is not None:
        from memcollab.memory.judge import ModelJudge

        grader = ModelJudge(gateway.bind(loaded.model(judge)))
    if pairing_rule not in ("contrastive", "near_miss"):
        raise UserError(f"unknown pairing {pairing_rule!r}", "use contrastive or near_miss")
    pairing = PairingRule(pairing_rule, tie_break=tie_break, floor=floor)
    pairs = Memory.pairs(trajectories, pairing, strengths)
    console.print(
        f"{len(trajectories)} trajectories of {len(models)} models on {len(tasks)}"
        f" tasks -> {len(pairs.pairs)} pairs; distiller {name}"
    )
    if _creates(memory):
        console.print(f"creating the memory {memory}")
    with (
        Memory.open(memory) as mem,
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
        summary = mem.build(
            trajectories,
            tasks,
            distiller=Distiller(
                client, max_constraints=max_constraints, screen=version, judge=grader
            ),
            labeller=classifier,
            pairing=pairing,
            strengths=strengths,
            namespace=namespace,
            # As many pairs at once as the distiller serves (a local model's batch width),
            # so its batching engine decodes them together.
            workers=workers or client.model.concurrency()[1],
            merge=merge,
            on_event=lambda event: progress.advance(bar),
        )
        total = mem.stats(namespace)["records"]
    table = Table(title=f"Memory built into {memory}")
    table.add_column("what")
    table.add_column("count", justify="right")
    counts = summary.pairing
    keys = ["tasks", "pairs", "mixed", "all_right", "all_wrong", "tie_breaks_used"]
    for key in keys + ["below_floor", "excluded_negatives"] * (pairing_rule == "near_miss"):
        table.add_row(key.replace("_", " "), str(counts.get(key, 0)))
    for key, value in summary.distill.items():
        if isinstance(value, dict):
            for reason, count in value.items():
                table.add_row(f"distill {key}: {reason}", str(count))
        else:
            table.add_row(f"distill {key.replace('_', ' ')}", str(value))
    for key, value in (summary.merge or {}).items():
        table.add_row(f"merge: {key.replace('_', ' ')}", str(value))
    table.add_row("records added", str(summary.records_added))
    table.add_row("records already there", str(summary.records_existing))
    table.add_row("records in namespace", str(total))
    judged = grader.stats() if grader is not None else None
    for key, value in (judged or {}).items():
        table.add_row(f"judge: {key}", str(value))
    console.print(table)
    written = {"memory": memory, "distiller": name, **summary.as_dict()}
    if judged is not None:
        written["judge"] = judged
    (runs / "distill_summary.json").write_text(json.dumps(written, indent=2) + "\n")


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
    data_dir: DataDirOption = None,
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
    repair: Annotated[
        RepairMode,
        typer.Option(help="The loop's repair mode: v1, or live (richer code feedback)."),
    ] = "v1",
    participant_filter: Annotated[
        bool,
        typer.Option(
            "--participant-filter", help="Only records whose pair involved this model (v2)."
        ),
    ] = False,
    taxonomy: TaxonomyOption = None,
    labeller: LabellerOption = "llm",
    ignore_gate: IgnoreGateOption = False,
    gate_condition: GateConditionOption = None,
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """Solve one task, retrieving guidance from memory; show the constraints it used."""
    from memcollab.memory import Memory
    from memcollab.memory.labeller import check_labeller_kind

    check_labeller_kind(labeller)
    check_domain(domain)
    loaded = Fleet.load(fleet)
    loaded.spec(model)
    agent = fleet_agent(
        loaded,
        make_gateway(cache, no_cache),
        model,
        max_turns=max_turns,
        max_tokens=max_tokens,
        repair=repair,
    )
    if (text is None) == (task_spec is None):
        raise UserError("give the task text or --task SPEC (one of them)")
    if task_spec is not None:
        task = load_tasks_or_fail([task_spec], data_dir, 0)[0]
    else:
        task = Task(id="cli/solve", domain=domain, prompt=text or "")  # type: ignore[arg-type]
    guidance: tuple = ()
    if memory is not None:
        classifier = _labeller(labeller, agent.client, data_dir, taxonomy)
        # search() labels the task only after the gate check: a withheld memory costs no
        # label call.
        with (
            Memory.open(memory, create=False) as mem,
            spinner(f"classifying the task ({labeller} labeller) and retrieving..."),
        ):
            got = mem.search(
                task,
                model=model,
                labeller=classifier,
                namespace=namespace,
                p=p,
                participant_filter=participant_filter,
                gate=gate_choice(ignore_gate, gate_condition),
            )
        guidance = got.guidance
        if got.gate is not None:
            console.print(
                f"[bold]utility gate[/bold] of {escape(got.gate.condition)}"
                f" (rule {escape(got.gate.rule or '?')}): {got.gate.verdict} for"
                f" {escape(model)} on {task.domain}"
            )
        said = f"{got.category} / {got.subcategory} ({got.label_source or labeller})"
        if got.gate is not None and got.gate.verdict == "withheld":
            said = "not asked (the gate withheld the memory)"
        console.print(
            f"[bold]label[/bold] {escape(said)}; retrieved at level [bold]{got.level}[/bold]:"
            f" {len(got.record_ids)} records, {len(guidance)} constraints"
        )
        for g in guidance:
            console.print(f"  {g.record_id} {g.text}", markup=False, highlight=False)
    with spinner(f"{model} is solving..."):
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
    from memcollab.memory import Memory

    with Memory.open(memory, create=False) as mem:
        count = mem.export(out, namespace)
    console.print(f"exported {count} records to {out}")


def _creates(memory: str) -> bool:
    """Whether opening `memory` will create a new SQLite file (a URL never does here)."""
    return "://" not in memory and not Path(memory).exists()


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
    no_screen: Annotated[
        bool,
        typer.Option(
            "--no-screen",
            help="Skip the content screen against poisoning (a trusted old export only).",
        ),
    ] = False,
) -> None:
    """Add the records of a JSONL export, all or nothing (records already there with the same
    content are skipped; an id stored with different content is refused unless
    --on-conflict says otherwise; a record carrying instructions, links, commands or
    secrets instead of reasoning refuses the file)."""
    from memcollab.memory import Memory
    from memcollab.memory.store import ON_CONFLICT

    choice = next((c for c in ON_CONFLICT if c == on_conflict), None)
    if choice is None:
        raise typer.BadParameter(
            f"{on_conflict!r} is not one of {', '.join(ON_CONFLICT)}", param_hint="--on-conflict"
        )
    if not source.is_file():
        raise UserError(f"memory file not found: {source}")
    from collections import Counter

    from memcollab.memory.store import read_jsonl

    created = _creates(memory)
    with Memory.open(memory) as mem:
        counts = mem.import_(source, on_conflict=choice, screen=not no_screen)
    if created:
        console.print(f"created the memory {memory}")
    namespaces = Counter(r.namespace for r in read_jsonl(source))
    where = ", ".join(f"{ns} ({n})" for ns, n in sorted(namespaces.items()))
    console.print(f"namespaces in the file: {where or 'none'}", markup=False, highlight=False)
    message = f"imported {counts.added} records, skipped {counts.present} already present"
    if counts.conflicts_skipped:
        message += f", skipped {counts.conflicts_skipped} conflicting (kept the stored version)"
    if counts.replaced:
        message += f", replaced {counts.replaced} conflicting"
    if counts.notes:
        message += f"; stored {counts.notes} namespace notes"
    console.print(message)


@memory_app.command("merge")
def memory_merge(
    memory: MemoryArg,
    namespace: Annotated[str, typer.Option(help="Memory namespace.")] = "default",
    into: Annotated[
        str | None,
        typer.Option(
            "--into",
            help="Copy the namespace into this one first and merge the copy"
            " (default: merge the namespace in place).",
        ),
    ] = None,
    threshold: Annotated[
        float,
        typer.Option(min=0.01, max=1.0, help="Share of words two constraints must share."),
    ] = 0.6,
) -> None:
    """Merge near-duplicate constraints within each bucket: the kept one counts how many
    pairs produced it (its support). Nothing is merged across buckets or with flagged
    records; records whose constraints all merged stay stored, with none."""
    from memcollab.memory import Memory

    with Memory.open(memory, create=False) as mem:
        target = namespace
        if into is not None and into != namespace:
            copied = mem.copy_namespace(namespace, into)
            console.print(f"copied {copied} records of {namespace!r} into {into!r}")
            target = into
        summary = mem.merge(target, threshold=threshold)
    console.print(
        f"namespace {target!r}: {summary.merged} constraints merged into others;"
        f" {summary.constraints} constraints in {summary.records} records"
        f" ({summary.records_emptied} left without constraints), {summary.buckets} buckets"
    )


@memory_app.command("stats")
def memory_stats(
    memory: MemoryArg,
    namespace: Annotated[
        str | None, typer.Option(help="One namespace (default: list every namespace).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Records and constraints per category and per source model pair."""
    from memcollab.memory import Memory

    with Memory.open(memory, create=False) as mem:
        if namespace is None:
            counts = mem.namespaces()
            if as_json:
                console.print_json(json.dumps({"namespaces": counts}))
                return
            table = Table("namespace", "records", title=f"Namespaces of {memory}")
            for ns, n in counts.items():
                table.add_row(ns, str(n))
            console.print(table if counts else f"{memory} holds no records")
            if counts:
                console.print("--namespace NS shows one namespace in detail")
            return
        stats = mem.stats(namespace)
        flagged = len(mem.flagged(namespace))
        notes = mem.notes(namespace)
    if as_json:
        console.print_json(json.dumps({**stats, "flagged": flagged, "notes": notes}))
        return
    console.print(
        f"{stats['records']} records ({flagged} flagged), {stats['constraints']} constraints"
        f" in namespace {namespace!r}"
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
    _print_notes(notes)


def _print_notes(notes: dict[str, dict[str, Any]]) -> None:
    """A namespace's notes: a utility gate's decisions as a table (model x domain: whether
    the memory is served, with the development accuracies behind it), others as JSON."""
    for key, value in notes.items():
        decisions = value.get("decisions") if key.startswith(NOTE_PREFIX) else None
        if not isinstance(decisions, dict):
            console.print(f"note {key}: {json.dumps(value)}", markup=False, highlight=False)
            continue
        table = Table(
            "model",
            "domain",
            "memory",
            "dev accuracy without / with",
            "n",
            title=f"utility gate of {value.get('condition', key)} (rule {value.get('rule')})",
        )
        for model, by_domain in decisions.items():
            for domain, d in by_domain.items():
                served = "served" if d.get("memory") else "withheld"
                accuracy = f"{d.get('accuracy_without', '?')} / {d.get('accuracy_with', '?')}"
                table.add_row(model, domain, served, accuracy, str(d.get("n", "?")))
        console.print(table)


@memory_app.command("list")
def memory_list(
    memory: MemoryArg,
    namespace: Annotated[str, typer.Option(help="Memory namespace.")] = "default",
    domain: Annotated[str | None, typer.Option(help="Only this domain.")] = None,
    category: Annotated[str | None, typer.Option(help="Only this category.")] = None,
    flagged: Annotated[
        bool, typer.Option("--flagged", help="Include flagged records (marked).")
    ] = False,
) -> None:
    """One line per record: id, bucket, first constraint."""
    from memcollab.memory import Memory

    with Memory.open(memory, create=False) as mem:
        records = mem.list(namespace, domain=domain, category=category, include_flagged=flagged)
        marks = mem.flagged(namespace) if flagged else {}
    for r in records:
        first = r.constraints[0].text() if r.constraints else ""
        mark = " [flagged]" if r.id in marks else ""
        console.print(
            f"{r.id}{mark}  {r.domain}/{r.category}/{r.subcategory}  {first[:100]}",
            markup=False,
            highlight=False,
        )
    console.print(f"{len(records)} records in namespace {namespace!r}")


@memory_app.command("flag")
def memory_flag(
    memory: MemoryArg,
    record_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")],
    undo: Annotated[bool, typer.Option("--undo", help="Lift the flag instead.")] = False,
) -> None:
    """Withhold a record from retrieval (or serve it again with --undo); never deletes."""
    from memcollab.memory import Memory

    with Memory.open(memory, create=False) as mem:
        changed = (mem.unflag if undo else mem.flag)(record_id, reason, actor="cli")
    state = "serves" if undo else "withholds"
    note = "" if changed else " (it already did)"
    console.print(f"{memory} {state} {record_id}{note}")


@memory_app.command("release")
def memory_release(
    memory: MemoryArg,
    record_id: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the history).")],
) -> None:
    """Serve a quarantined record (one an untrusted API key added or imported)."""
    from memcollab.memory import Memory

    with Memory.open(memory, create=False) as mem:
        mem.get(record_id)  # an unknown id is one clear error
        changed = mem.release(record_id, reason, "cli")
        status = mem.status(record_id)
    note = "released: it is served now" if changed else f"was not quarantined ({status})"
    console.print(f"{memory}: {record_id} {note}")


@memory_app.command("review")
def memory_review(
    memory: MemoryArg,
    namespace: Annotated[str, typer.Option(help="Memory namespace.")] = "default",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Flagged records, records withheld from some model (confident harm) and stored records
    the content screen refuses, with their evidence per model. Nothing is deleted."""
    from memcollab.memory import Memory

    with Memory.open(memory, create=False) as mem:
        items = mem.review(namespace)
    if as_json:
        console.print_json(json.dumps([i.as_dict() for i in items]))
        return
    for item in items:
        r = item.record
        why = []
        if item.flag_reason is not None:
            why.append(f"flagged: {item.flag_reason}")
        if item.status == "quarantined":
            why.append("quarantined (memory release ID --reason ... serves it)")
        if item.withheld_from:
            why.append(f"withheld from {', '.join(item.withheld_from)}")
        if item.poison.refused:
            why.append(f"content screen: {item.poison.reason} in {item.poison.where}")
        console.print(
            f"[bold]{r.id}[/bold] {escape(f'{r.domain}/{r.category}/{r.subcategory}')}"
            f"  {escape('; '.join(why))}"
        )
        for e in item.estimates:
            console.print(
                f"  {escape(e.model)}: {e.outcomes} outcomes ({e.helped} helped, {e.harmed}"
                f" harmed), p_with {e.p_with:.2f} vs p_without {e.p_without:.2f}"
                f" ({e.baseline_successes + e.baseline_failures} baseline outcomes,"
                f" {e.baseline_level}), P(harm) {e.p_harm:.3f}: {e.verdict}",
                highlight=False,
            )
        for event in item.history:
            console.print(f"  [dim]{event['action']}: {escape(event['reason'])}[/dim]")
        if item.flag_reason is not None:
            console.print(
                f"  [dim]lift the flag: memcollab memory flag {escape(memory)} {r.id}"
                " --undo --reason '...'[/dim]"
            )
    console.print(f"{len(items)} records to review in namespace {namespace!r}")


@memory_app.command("show")
def memory_show(memory: MemoryArg, record_id: Annotated[str, typer.Argument()]) -> None:
    """One record: its task, label, source models, constraints, usage and flags."""
    from memcollab.memory import Memory

    with Memory.open(memory, create=False) as mem:
        record = mem.get(record_id)
        usage = mem.usage(record_id)
        history = mem.history(record_id)
    console.print(
        f"[bold]{record.id}[/bold] {record.domain} / {record.category} /"
        f" {record.subcategory}  ({record.pair_type}: + {record.model_pos},"
        f" - {record.model_neg}; distiller {record.distiller}; namespace {record.namespace})"
    )
    console.print(f"[dim]task {record.source_task_id}:[/dim] {escape(record.task_text[:500])}")
    for c in record.constraints:
        console.print(f"  - {escape(c.text())}")
    console.print(f"[dim]usage: {json.dumps(usage)}[/dim]")
    for event in history:
        console.print(f"[dim]{event['action']}: {escape(event['reason'])}[/dim]")
