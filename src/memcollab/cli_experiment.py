"""`memcollab experiment run|report`: the experiment runner and its report on the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import TaskID
from rich.table import Table

from memcollab.cli_common import (
    CacheOption,
    DataDirOption,
    NoCacheOption,
    console,
    counting_progress,
    exit_interrupted,
    make_gateway,
    prepare_with_progress,
    print_gateway_stats,
    stop_on_sigterm,
)
from memcollab.errors import UserError
from memcollab.experiment.demo import DEMO_TEST, DEMO_TRAIN

experiment_app = typer.Typer(no_args_is_help=True, help="Run experiments and report on them.")


def plan_table(experiment) -> Table:  # type: ignore[no-untyped-def]
    """The plan: jobs, model calls, tokens and wall time per phase, and what each estimate
    rests on (experiment/estimate.py)."""
    from memcollab.experiment.estimate import format_seconds

    table = Table(title=f"Plan of {experiment.config.name} -> {experiment.out}")
    columns = ("phase", "jobs", "done", "replayed", "model calls", "completion tokens")
    for col in (*columns, "prompt tokens", "wall time"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    bases: list[str] = []
    times: list[float | None] = []
    highs: list[str] = []
    estimates = experiment.estimate()
    for phase, e in estimates.items():
        table.add_row(
            phase,
            f"{e.jobs:,}",
            f"{e.done:,}",
            f"{e.replayed:,}",
            _count(e.calls),
            _count(e.completion_tokens),
            _count(e.prompt_tokens),
            format_seconds(e.seconds),
        )
        bases.append(f"{phase}: {e.basis}")
        times.append(e.seconds)
        if e.seconds is not None and e.seconds_high is not None and e.seconds_high > e.seconds:
            highs.append(f"{phase} {format_seconds(e.seconds_high).lstrip('~')}")
    total = None if None in times else sum(t for t in times if t is not None)
    table.add_row("whole plan", "", "", "", "", "", "", format_seconds(total), style="bold")
    speeds = [
        speed.describe(name) if speed else f"{name}: no speed known (time ?)"
        for name, speed in experiment.model_speeds().items()
    ]
    table.caption = (
        "Calls and tokens: " + "; ".join(bases) + ". Replayed: jobs whose first call the"
        " call cache holds, or that the gate runs without memory (they ask what vanilla"
        " asks): no model call. Wall time: completion tokens at each model's"
        " speed, the models side by side (" + (", ".join(highs) or "no phase") + " if one"
        " after another): " + ", ".join(speeds) + "."
    )
    return table


def _count(n: int | None) -> str:
    """A rough count for the plan: ~1,234, ~56k, ~1.4M, or ? when unknown."""
    if n is None:
        return "?"
    if n < 10_000:
        return f"~{n:,}"
    return f"~{n / 1000:.0f}k" if n < 1_000_000 else f"~{n / 1_000_000:.1f}M"


def run_with_progress(experiment, phases=None, redo: bool = False) -> dict:  # type: ignore[no-untyped-def]
    """Run an experiment under rich progress bars (overall with ETA, and one per phase)."""
    from memcollab.experiment.runner import PHASES, ProgressEvent

    estimate = experiment.estimate()
    chosen = [p for p in (phases or PHASES) if p in estimate]  # dev: only with [dev]
    tally: dict[str, list[int]] = {}
    with counting_progress() as progress:
        totals = {p: estimate[p].jobs for p in chosen}
        overall = progress.add_task("[bold]whole plan", total=sum(totals.values()), acc="")
        bars: dict[str, TaskID] = {
            p: progress.add_task(p, total=totals[p], acc="", start=False) for p in chosen
        }

        def on_event(event: ProgressEvent) -> None:
            bar = bars[event.phase]
            if event.total is not None:
                totals[event.phase] = event.total
                progress.update(bar, total=event.total)
                progress.update(overall, total=sum(totals.values()))
                progress.start_task(bar)
                return
            progress.advance(bar)
            progress.advance(overall)
            if event.correct is not None and not event.skipped and event.model:
                right_seen = tally.setdefault(f"{event.phase}:{event.model}", [0, 0])
                right_seen[0] += int(event.correct)
                right_seen[1] += 1
                acc = sum(v[0] for k, v in tally.items() if k.startswith(event.phase))
                seen = sum(v[1] for k, v in tally.items() if k.startswith(event.phase))
                progress.update(bar, acc=f"acc {acc}/{seen}")

        return experiment.run(on_event, phases=chosen, redo=redo)


@experiment_app.command("run")
def experiment_run(
    file: Annotated[Path, typer.Argument(help="Experiment TOML file.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan and its estimate; run nothing.")
    ] = False,
    phase: Annotated[
        list[str] | None,
        typer.Option("--phase", help="Only these phases (train, memory, dev, eval; repeatable)."),
    ] = None,
    redo: Annotated[bool, typer.Option("--redo", help="Recompute stored trajectories.")] = False,
    data_dir: DataDirOption = None,
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
    replay_only: Annotated[
        bool,
        typer.Option(
            "--replay-only",
            help="Answer every model call from the cache; a call it lacks stops the run"
            " (checks that a recorded run replays exactly).",
        ),
    ] = False,
) -> None:
    """Build memories from training splits, evaluate every model x benchmark x condition."""
    from memcollab.experiment.config import load_experiment
    from memcollab.experiment.runner import PHASES, Experiment

    for p in phase or []:
        if p not in PHASES:
            raise UserError(f"unknown phase {p!r}", f"use one of: {', '.join(PHASES)}")
    config = load_experiment(file, data_dir)
    if replay_only and no_cache:
        raise UserError("--replay-only needs the cache", "drop --no-cache")
    gateway = make_gateway(cache, no_cache, replay_only=replay_only)
    experiment = Experiment(config, gateway)
    if "dev" in (phase or []) and experiment.dev is None:
        raise UserError(f"{file} has no [dev] table: no dev phase to run", "drop --phase dev")
    console.print(plan_table(experiment))
    if dry_run:
        return
    stop_on_sigterm()
    try:
        part = run_with_progress(experiment, phase, redo)  # type: ignore[arg-type]
    except KeyboardInterrupt:
        exit_interrupted(
            f"interrupted: everything finished is kept in {experiment.out};"
            " run the same command again to resume"
        )
    from memcollab.experiment.results import describe_phase

    for name, info in part["phases"].items():
        console.print(describe_phase(name, info))
    print_gateway_stats(gateway)
    if "eval" in part["phases"]:
        from memcollab.experiment.report import write_report

        text, _ = write_report(experiment.out)
        console.print(text, markup=False, highlight=False)


@experiment_app.command("report")
def experiment_report(
    results: Annotated[Path, typer.Argument(help="The experiment's output folder.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write report.md and plots here instead.")
    ] = None,
) -> None:
    """Tables (accuracy, effort, paired tests against vanilla) and PNG plots of a run."""
    from memcollab.experiment.report import write_report

    text, plots = write_report(results, out)
    console.print(text, markup=False, highlight=False)
    where = out or results
    console.print(f"wrote {where}/report.md and {len(plots)} plot(s)")


def demo(
    train: Annotated[
        int, typer.Option(min=2, max=64, help="HumanEval training tasks (HumanEval/0..N-1).")
    ] = DEMO_TRAIN,
    test: Annotated[
        int, typer.Option(min=1, max=100, help="Held-out HumanEval tasks (HumanEval/64..).")
    ] = DEMO_TEST,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="With GSM8K / MATH files here, add GSM8K and MATH-500 (memory from GSM8K train).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: <cache>/demo-v2).")
    ] = None,
    memory_export: Annotated[
        Path | None,
        typer.Option(
            "--memory-export",
            help="Also evaluate a memory built elsewhere (its JSONL export, e.g. the v2"
            " run's benchmarks/results/v2/memories/...), as condition 'imported'.",
        ),
    ] = None,
    cache: CacheOption = None,
    no_cache: NoCacheOption = False,
) -> None:
    """Build a small MemCollab memory with the packaged fleet, then compare vanilla and
    memcollab (and an imported memory) on held-out tasks; prints the table and the
    constraints learned."""
    from memcollab.experiment.demo import demo_config, demo_fleet
    from memcollab.experiment.report import (
        POOLED,
        accuracy_table,
        comparisons,
        effort_table,
        write_report,
    )
    from memcollab.experiment.results import load_results
    from memcollab.experiment.runner import Experiment

    if memory_export is not None and not memory_export.is_file():
        raise UserError(
            f"no memory export at {memory_export}",
            "give the JSONL file `memcollab memory export` wrote",
        )
    fleet = demo_fleet()
    prepare_with_progress([fleet.spec(n).packaged or n for n in fleet.names()])
    config = demo_config(out, train=train, test=test, data_dir=data_dir, imported=memory_export)
    gateway = make_gateway(cache, no_cache)
    experiment = Experiment(config, gateway, fleet)
    console.print(plan_table(experiment))
    stop_on_sigterm()
    try:
        run_with_progress(experiment)
    except KeyboardInterrupt:
        exit_interrupted(f"interrupted: the demo resumes from {experiment.out} next time")
    _, plots = write_report(experiment.out)
    results = load_results(experiment.out)
    console.rule("Constraints the fleet learned (memcollab memory)")
    _print_learned(experiment)
    if memory_export is not None:
        console.rule(f"Constraints the imported memory gave ({memory_export.name})")
        _print_imported(experiment, results.rows)
    console.rule("Accuracy (%) on held-out tasks")
    console.print(accuracy_table(results), markup=False, highlight=False)
    console.print(effort_table(results), markup=False, highlight=False)
    for row in comparisons(results):
        if row.benchmark == POOLED:
            paired = row.comparison
            console.print(
                f"{row.model}: {row.condition} - {row.baseline} ="
                f" {100 * paired.difference:+.1f} pp (95% CI {100 * paired.ci_low:+.1f} to"
                f" {100 * paired.ci_high:+.1f}; McNemar p = {paired.p_value:.2g};"
                f" n = {paired.n})",
                highlight=False,
            )
    console.print(
        f"[dim]{len(results.rows)} rows; report, plots and results in {experiment.out}."
        " A small demo cannot show a significant effect: see benchmarks/results/paper.[/dim]"
    )
    print_gateway_stats(gateway)


def _print_imported(experiment, rows) -> None:  # type: ignore[no-untyped-def]
    """Per held-out task and model, the imported memory's constraints it was given."""
    from memcollab.experiment.demo import IMPORTED
    from memcollab.memory import Memory

    with Memory.open(experiment.memory_path()) as memory:
        for row in rows:
            if row.condition != IMPORTED:
                continue
            verdict = "right" if row.correct else "wrong"
            console.print(
                f"[bold]{row.task_id}[/bold] {row.model} ({verdict}):"
                f" {len(row.record_ids)} record(s)"
            )
            for record in map(memory.get, dict.fromkeys(row.record_ids)):
                for c in record.constraints:
                    console.print(f"  - {c.text()}", markup=False, highlight=False)


def _print_learned(experiment) -> None:  # type: ignore[no-untyped-def]
    """The demo memory's constraints (merged ones once, with their support); when there are
    none, why: the pairing and distillation counts of build_summary.json."""
    import json

    from memcollab.memory import Memory

    shown = 0
    # the memories the demo built (an imported one, --memory-export, is shown apart)
    built = [ns for ns, recipe in experiment.recipes.items() if recipe.built]
    with Memory.open(experiment.memory_path()) as memory:
        for ns in built:
            for record in memory.list(ns):
                if not record.constraints:  # all merged into another record's (support)
                    continue
                shown += 1
                console.print(
                    f"[bold]{record.category} / {record.subcategory}[/bold]"
                    f" [dim](from {record.source_task_id}: {record.model_pos} right,"
                    f" {record.model_neg} wrong)[/dim]"
                )
                for c in record.constraints:
                    support = f" (support {c.support})" if c.support > 1 else ""
                    console.print(f"  - {c.text()}{support}", markup=False, highlight=False)
    if shown:
        return
    summaries = json.loads((experiment.out / "build_summary.json").read_text())
    for ns in built:
        summary = summaries[ns]
        pairing, distill = summary.get("pairing", {}), summary.get("distill", {})
        console.print(
            f"none in {ns}: {pairing.get('pairs', 0)} pair(s) of {pairing.get('tasks', 0)}"
            f" training tasks ({pairing.get('mixed', 0)} with a success and a failure,"
            f" {pairing.get('below_floor', 0)} of them failed only by models under the"
            f" near-miss floor); {distill.get('constraints', 0)} constraint(s) kept",
            markup=False,
            highlight=False,
        )
