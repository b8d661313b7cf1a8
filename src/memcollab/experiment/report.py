"""The report of an experiment folder: markdown tables and PNG plots.

Only *complete* tasks enter the numbers: tasks for which every planned (model, condition)
cell is stored. A partial run (split across sessions) thus compares conditions on the
same tasks, and the report says how many of the planned tasks that is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from memcollab.collect import TrajectoryStore
from memcollab.experiment.parts import PARTS_FILE, read_parts
from memcollab.experiment.plots import write_plots
from memcollab.experiment.results import (
    Results,
    accuracy,
    average_accuracy,
    describe_phase,
    load_results,
    write_results,
)
from memcollab.experiment.stats import (
    PairedComparison,
    compare_paired,
    detectable_difference,
    holm_adjust,
)
from memcollab.memory.build import NEW_PAIRS_ONLY

BASELINE = "vanilla"
HEADLINE = "memcollab"
POOLED = "all"

Contrast = tuple[str, str]  # (baseline condition, condition)


def headline(results: Results) -> str:
    """The condition the direct comparisons centre on: the pre-registered primary
    condition ([analysis] primary in the experiment file) where one is named, else the
    condition called `memcollab`."""
    return str(_analysis(results).get("primary") or HEADLINE)


def _analysis(results: Results) -> dict[str, Any]:
    """The experiment file's [analysis] section (empty when it has none)."""
    return dict(results.plan["config"].get("analysis") or {})


def contrasts(results: Results) -> list[Contrast]:
    """Which pairs of conditions the report compares: every condition against vanilla;
    then the headline condition (`headline`) against every other memory condition (own,
    other, self-contrast, placebo, another memory, or a user kind), the paper's direct
    claims; and each variant of memcollab (memcollab-pN, memcollab-global, whose kind is the
    headline's name) against the headline, the ablation."""
    kinds = {name: spec.get("kind", name) for name, spec in results.plan["conditions"].items()}
    centre = headline(results)
    out: list[Contrast] = []
    if BASELINE in results.conditions:
        out += [(BASELINE, c) for c in results.conditions if c != BASELINE]
    if centre in results.conditions:
        others = [c for c in results.conditions if c not in (BASELINE, centre)]
        out += [(c, centre) for c in others if kinds.get(c) != centre]
        out += [(centre, c) for c in others if kinds.get(c) == centre]
    return out


@dataclass(frozen=True)
class ContrastResult:
    """One row of a comparison table; `holm_p` is adjusted within its family (the pooled
    rows of every table, or the per-benchmark rows of every table)."""

    model: str
    baseline: str
    condition: str
    benchmark: str
    comparison: PairedComparison
    holm_p: float


def comparisons(results: Results, seed: int = 0) -> list[ContrastResult]:
    """Every contrast for every model and benchmark (and pooled), with Holm-adjusted
    p-values: one family for the pooled rows, one for the per-benchmark rows."""
    raw: list[tuple[str, str, str, str, PairedComparison]] = []
    pairs = contrasts(results)
    for model in results.models:
        for baseline, condition in pairs:
            base = {(r.benchmark, r.task_id): r.correct for r in results.cell(model, baseline)}
            cond = {(r.benchmark, r.task_id): r.correct for r in results.cell(model, condition)}
            for bench in [*results.benchmarks, POOLED]:
                keys = sorted(k for k in base if k in cond and bench in (k[0], POOLED))
                if keys:
                    c = compare_paired([base[k] for k in keys], [cond[k] for k in keys], seed=seed)
                    raw.append((model, baseline, condition, bench, c))
    holm = [0.0] * len(raw)
    for pooled in (True, False):
        family = [i for i, row in enumerate(raw) if (row[3] == POOLED) == pooled]
        adjusted = holm_adjust([raw[i][4].p_value for i in family])
        for i, p_adjusted in zip(family, adjusted, strict=True):
            holm[i] = p_adjusted
    return [ContrastResult(*row, holm_p=h) for row, h in zip(raw, holm, strict=True)]


def primary_rows(results: Results, comps: list[ContrastResult]) -> list[ContrastResult] | None:
    """The pre-registered primary comparison ([analysis] in the experiment file): its pooled
    row for every model, Holm-adjusted across the models only; None when none is named."""
    analysis = _analysis(results)
    primary, baseline = analysis.get("primary"), analysis.get("baseline", BASELINE)
    if primary is None:
        return None
    rows = [
        r for r in comps if (r.condition, r.baseline, r.benchmark) == (primary, baseline, POOLED)
    ]
    adjusted = holm_adjust([r.comparison.p_value for r in rows])
    return [dataclasses.replace(r, holm_p=p) for r, p in zip(rows, adjusted, strict=True)]


def power_table(rows: list[ContrastResult]) -> str:
    """For each pooled comparison: n, the observed discordant share, and the difference the
    design detects with 80% power at a two-sided 5% level (`stats.detectable_difference`)."""
    header = ["model", "condition - baseline", "n", "discordant (%)", "detectable at 80% (pp)"]
    cells = []
    for row in rows:
        c = row.comparison
        share = (c.only_baseline + c.only_condition) / c.n if c.n else 0.0
        smallest = detectable_difference(c.n, share) if share > 0 else None
        detectable = "-" if smallest is None else f"{100 * smallest:.1f}"
        cells.append(
            [row.model, f"{row.condition} - {row.baseline}", str(c.n), _pct(share), detectable]
        )
    return _table(header, cells)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table; a "|" inside a cell (an error message, a name) is escaped so it
    stays in its cell."""

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *map(line, rows)])


def accuracy_table(results: Results) -> str:
    header = ["model", "condition", *results.benchmarks, "average"]
    rows = []
    for model in results.models:
        for condition in results.conditions:
            accs = [accuracy(results.cell(model, condition, b)) for b in results.benchmarks]
            rows.append(
                [
                    model,
                    condition,
                    *map(_pct, accs),
                    _pct(average_accuracy(results, model, condition)),
                ]
            )
    return _table(header, rows)


def effort_table(results: Results) -> str:
    header = [
        "model",
        "condition",
        "mean turns",
        "completion tokens",
        "prompt tokens",
        "constraints given",
        "wall s (incl. queueing)",
    ]
    rows = []
    for model in results.models:
        for condition in results.conditions:
            cell = results.cell(model, condition)
            n = max(len(cell), 1)
            rows.append(
                [
                    model,
                    condition,
                    f"{sum(r.turns for r in cell) / n:.2f}",
                    f"{sum(r.completion_tokens for r in cell) / n:.0f}",
                    f"{sum(r.prompt_tokens for r in cell) / n:.0f}",
                    f"{sum(r.constraints for r in cell) / n:.1f}",
                    f"{sum(r.wall_s for r in cell) / n:.1f}",
                ]
            )
    return _table(header, rows)


def comparison_table(rows: list[ContrastResult]) -> str:
    header = [
        "model",
        "condition - baseline",
        "benchmark",
        "n",
        "difference (pp)",
        "95% CI (pp)",
        "only baseline right",
        "only condition right",
        "McNemar p",
        "Holm p",
    ]
    cells = []
    for row in rows:
        c = row.comparison
        cells.append(
            [
                row.model,
                f"{row.condition} - {row.baseline}",
                row.benchmark,
                str(c.n),
                f"{100 * c.difference:+.1f}",
                f"[{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]",
                str(c.only_baseline),
                str(c.only_condition),
                f"{c.p_value:.3g}",
                f"{row.holm_p:.3g}",
            ]
        )
    return _table(header, cells)


PARTS_NOTE = (
    "A row per line of parts.jsonl, numbered in order. A part ended by SIGKILL (or killed "
    "while writing its line) leaves no line, so a run's own log may number its parts "
    "differently; its trajectories are stored and the next part resumed from them."
)


def parts_table(folder: Path) -> str | None:
    """How the run was split: a row per part in parts.jsonl (None without the file)."""
    if not (folder / PARTS_FILE).is_file():
        return None
    rows = []
    for i, part in enumerate(read_parts(folder), start=1):
        when = dt.datetime.fromtimestamp(part["started"], dt.UTC).strftime("%Y-%m-%d %H:%M")
        phases = ", ".join(describe_phase(name, v) for name, v in part.get("phases", {}).items())
        failed = any(v.get("failed") for v in part.get("phases", {}).values())
        state = "finished" if part.get("finished") else "failed" if failed else "stopped"
        rows.append([str(i), when, f"{part['wall_s'] / 60:.1f}", state, _code(part), phases or "-"])
    return _table(["part", "started (UTC)", "minutes", "state", "code", "what it computed"], rows)


def _code(part: dict[str, Any]) -> str:
    """The commit a part ran (`+` when the checkout had changes), `-` where not recorded."""
    commit = (part.get("code") or {}).get("commit")
    if not commit:
        return "-"
    return commit[:10] + ("+" if part["code"].get("dirty") else "")


def memory_table(folder: Path) -> str | None:
    path = folder / "build_summary.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    rows = []
    for ns, s in data.items():
        pairing = s.get("pairing", {})
        status = ", ".join(
            f"{key} {s.get('distill', {}).get(key, 0)}"
            for key in ("ok", "empty", "all_rejected", "malformed")
        )
        if s.get("distill_covers") == NEW_PAIRS_ONLY:
            status += " (last part's new pairs only)"
        if "imported" in s:  # a memory export served as it is: nothing was distilled
            recipe = s.get("recipe", {})
            status = f"imported from {Path(recipe.get('source', '?')).name}"
            status += f" (sha256 {str(recipe.get('sha256'))[:12]})"
        rows.append(
            [
                ns,
                str(pairing.get("pairs", 0)),
                str(s.get("records", 0)),
                str(s.get("pairs_without_constraints", 0)),
                status,
            ]
        )
    header = ["memory", "pairs", "records", "pairs without constraints", "distiller status"]
    return _table(header, rows)


def gate_section(folder: Path, results: Results) -> list[str]:
    """The utility gate's decisions (gate.json) and how many evaluation cells it withheld
    memory from; nothing when the run has no gate."""
    path = folder / "gate.json"
    if not path.is_file():
        return []
    gate = json.loads(path.read_text())
    rows = []
    for condition, entry in gate["conditions"].items():
        for model, domains in entry["decisions"].items():
            for domain, d in domains.items():
                rows.append(
                    [
                        condition,
                        model,
                        domain,
                        str(d["n"]),
                        _pct(d["accuracy_without"]),
                        _pct(d["accuracy_with"]),
                        str(d["only_without_right"]),
                        str(d["only_with_right"]),
                        "yes" if d["memory"] else "no",
                    ]
                )
    header = ["condition", "model", "domain", "dev n", "without (%)", "with (%)"]
    header += ["only without right", "only with right", "memory at eval"]
    dev = ", ".join(f"{b} {n}" for b, n in gate["dev_tasks"].items())
    excluded = ", ".join(f"{b} {n}" for b, n in gate["excluded_pool_tasks"].items())
    lines = [
        "## Utility gate (development tasks)",
        "",
        f"Rule `{gate['rule']}`: {gate['rule_description']}. Development tasks: {dev}"
        f" (memory-pool tasks left out: {excluded}).",
    ]
    if gate.get("follow"):
        lines.append(
            "Following another condition's gate: "
            + ", ".join(f"{f} follows {leader}" for f, leader in gate["follow"].items())
            + "."
        )
    lines += ["", _table(header, rows), ""]
    withheld = [
        [model, condition, str(sum(r.gate == "withheld" for r in cell)), str(len(cell))]
        for model in results.models
        for condition in results.conditions
        if (cell := results.cell(model, condition)) and any(r.gate for r in cell)
    ]
    if withheld:
        header = ["model", "condition", "tasks memory withheld by the gate", "tasks"]
        lines += ["Evaluation (complete tasks):", "", _table(header, withheld), ""]
    return lines


def write_report(folder: str | Path, out: str | Path | None = None) -> tuple[str, list[Path]]:
    """Write report.md and the plots into `out` (default: the folder), plus, for another
    `out`, the portable results; returns the text and the plot paths. A NOTES.md beside
    the report (what the numbers cannot say by themselves) goes in as its "Notes"."""
    folder = Path(folder)
    target = Path(out) if out is not None else folder
    target.mkdir(parents=True, exist_ok=True)
    results = load_results(folder)
    comps = comparisons(results, seed=int(results.plan["config"].get("seed", 0)))

    plots = write_plots(results, target)
    planned = sum(results.planned_tasks.values())
    complete = sum(len(v) for v in results.complete_tasks.values())
    lines = [
        f"# Experiment report: {results.plan['name']}",
        "",
        f"Models: {', '.join(results.models)}. Conditions: {', '.join(results.conditions)}.",
        f"Complete tasks (every model x condition stored): {complete} of {planned} planned"
        + " ("
        + ", ".join(
            f"{b} {len(results.complete_tasks[b])}/{results.planned_tasks[b]}"
            for b in results.benchmarks
        )
        + ").",
        "",
        "## Accuracy (%)",
        "",
        accuracy_table(results),
        "",
        "## Effort per task (means)",
        "",
        effort_table(results),
        "",
        "## Paired comparisons (same tasks)",
        "",
        "Difference in percentage points with a 95% paired-bootstrap interval (10,000"
        " resamples of tasks), the exact two-sided McNemar p-value, and that p-value"
        " Holm-adjusted for the number of comparisons: one family for the pooled (`all`)"
        " rows of both tables, one for the per-benchmark rows. `all` pools the benchmarks'"
        " tasks.",
        "",
    ]
    against_vanilla = [r for r in comps if r.baseline == BASELINE]
    direct = [r for r in comps if r.baseline != BASELINE]
    lines += [
        f"### Each condition against {BASELINE}",
        "",
        comparison_table(against_vanilla)
        if against_vanilla
        else f"(no {BASELINE} condition to compare with)",
        "",
    ]
    if direct:
        lines += ["### Memory conditions against each other", "", comparison_table(direct), ""]
    primary = primary_rows(results, comps)
    if primary is not None:
        lines += [
            "### The pre-registered primary comparison",
            "",
            "Pooled over every benchmark's tasks, per model; Holm-adjusted across the models"
            " only (the family the plan named).",
            "",
            comparison_table(primary) if primary else "(no complete task to compare yet)",
            "",
        ]
    pooled = [r for r in against_vanilla if r.benchmark == POOLED]
    if pooled:
        lines += [
            "### Power of the design",
            "",
            "The accuracy difference each pooled comparison would detect with 80% power"
            " (exact McNemar, two-sided, 5%), given the discordant share observed in the run"
            " (Connor 1987's approximation; `stats.detectable_difference`); - where no"
            " difference reaches that power (too few tasks or no discordant task).",
            "",
            power_table(pooled),
            "",
        ]
    memory = memory_table(folder)
    if memory:
        lines += ["## Memories", "", memory, ""]
    lines += gate_section(folder, results)
    parts = parts_table(folder)
    if parts:
        lines += ["## How the run was split", "", PARTS_NOTE, "", parts, ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    notes = target / NOTES
    if notes.is_file():
        lines += ["## Notes", "", notes.read_text(encoding="utf-8").strip(), ""]
    text = "\n".join(lines)
    (target / "report.md").write_text(text)
    if target.resolve() != folder.resolve():
        copy_artefacts(folder, target)
        # The run writes results.jsonl only when its evaluation finishes; a run stopped part
        # way has none (or an older one), so the table comes from the store the report read.
        store = TrajectoryStore.if_present(folder / "eval")
        if store is not None:
            write_results(target, results.plan, store)
    return text, plots


NOTES = "NOTES.md"
PORTABLE = ("plan.json", "results.jsonl", "parts.jsonl", "build_summary.json", "gate.json")


def copy_artefacts(folder: Path, target: Path) -> None:
    """Copy the portable results (per-task table, plan, parts, memories as JSONL) next to
    the report, so `target` alone documents the run (the SQLite files stay behind)."""
    for name in PORTABLE:
        if (folder / name).is_file():
            shutil.copy2(folder / name, target / name)
    memories = folder / "memories"
    if memories.is_dir():
        (target / "memories").mkdir(exist_ok=True)
        for path in sorted(memories.glob("*.jsonl")):
            shutil.copy2(path, target / "memories" / path.name)
