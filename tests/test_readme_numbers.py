"""The numbers of the README's "Results in brief" are the committed run's: each cell of its
table, and the counts and p-values its bullets quote, recomputed here from the committed
per-task results (benchmarks/results/paper and benchmarks/results/v2: results.jsonl, and
the v2 build summary and gate) by the report's own code. A number edited by hand, or a run
recommitted without updating the README, fails."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from memcollab.experiment.report import POOLED, ContrastResult, comparisons, primary_rows
from memcollab.experiment.results import Results, accuracy, average_accuracy, load_results
from memcollab.experiment.stats import detectable_difference

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "benchmarks" / "results" / "paper"


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(f"## {title}\n")
    return text[start : text.index("\n## ", start + 1)]


def _key(name: str) -> str:
    """A model's name as the README writes it ("Qwen2.5-Coder-1.5B", "Gemma 3 270M") or the
    run does ("qwen2.5-coder-1.5b", "gemma3-270m"), reduced to letters and digits."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _run(folder: Path) -> tuple[Results, list[ContrastResult]]:
    """A committed run's results and the report's comparisons, with the run's seed."""
    results = load_results(folder)
    return results, comparisons(results, seed=int(results.plan["config"].get("seed", 0)))


def _difference_text(
    difference: float, ci_low: float, ci_high: float, p_value: float, holm_p: float | None
) -> str:
    """A comparison cell as the README writes it: difference, interval, McNemar p (and the
    Holm-adjusted p when given)."""
    adjusted = "" if holm_p is None else f"; {holm_p:.2g}"
    return (
        f"{100 * difference:+.1f} pp ([{100 * ci_low:+.1f}, {100 * ci_high:+.1f}]; "
        f"p = {p_value:.2g}{adjusted})"
    )


def _difference_cell(c: ContrastResult, holm: bool = False) -> str:
    """A report comparison's cell (with `holm`, its Holm-adjusted p too)."""
    d = c.comparison
    return _difference_text(
        d.difference, d.ci_low, d.ci_high, d.p_value, c.holm_p if holm else None
    )


@pytest.fixture(scope="module")
def paper() -> tuple[Results, list[ContrastResult]]:
    return _run(PAPER)


def _pooled(
    comps: list[ContrastResult], model: str, condition: str, baseline: str = "vanilla"
) -> ContrastResult:
    (row,) = [
        c
        for c in comps
        if (c.model, c.condition, c.baseline, c.benchmark) == (model, condition, baseline, POOLED)
    ]
    return row


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _table(condition: str) -> tuple[list[str], list[list[str]]]:
    """The header and body rows of the section's table ("| model | vanilla | ...") whose
    header names `condition`."""
    lines = _section("Results in brief").splitlines()
    found = [
        i
        for i, line in enumerate(lines)
        if line.startswith("| model | vanilla |") and condition in _cells(line)
    ]
    assert len(found) == 1, f"one table with a {condition} column, found {len(found)}"
    body = []
    for line in lines[found[0] + 2 :]:  # past the header and its |---| line
        if not line.startswith("| "):
            break
        body.append(_cells(line))
    return _cells(lines[found[0]]), body


def _rows_by_model(results: Results, rows: list[list[str]]) -> dict[str, list[str]]:
    """A table's body rows keyed by the run's model names; one row for every model."""
    by_model = {_key(m): m for m in results.models}
    keyed = {by_model[_key(cells[0])]: cells for cells in rows}
    assert len(keyed) == len(rows)
    assert set(keyed) == set(results.models)
    return keyed


def _assert_pooled_accuracies(
    results: Results, model: str, conditions: list[str], cells: list[str]
) -> None:
    """Each cell is `model`'s accuracy under its condition, pooled over the run's tasks."""
    for condition, cell in zip(conditions, cells, strict=True):
        pooled = accuracy(results.cell(model, condition))
        assert pooled is not None
        assert cell.strip("*") == f"{100 * pooled:.1f}", (model, condition)


def test_the_paper_table_is_the_committed_run(
    paper: tuple[Results, list[ContrastResult]],
) -> None:
    results, comps = paper
    models = {_key(m): m for m in results.models}
    header, rows = _table("own")
    conditions = header[1:6]
    assert conditions == ["vanilla", "own", "other", "memcollab", "placebo"]
    seen = set()
    for cells in rows:
        model = models[_key(cells[0])]
        seen.add(model)
        for condition, cell in zip(conditions, cells[1:6], strict=True):
            accuracy = average_accuracy(results, model, condition)
            assert accuracy is not None
            assert cell.strip("*") == f"{100 * accuracy:.1f}", (model, condition)
        n = sum(len(ids) for ids in results.complete_tasks.values())
        assert header[6].startswith(f"memcollab - vanilla, {n} tasks")
        assert cells[6] == _difference_cell(_pooled(comps, model, "memcollab")), model
    assert seen == set(results.models)


def test_the_paper_bullets_quote_the_committed_run(
    paper: tuple[Results, list[ContrastResult]],
) -> None:
    results, comps = paper
    text = " ".join(_section("Results in brief").split())
    big, small = results.models[:2]
    assert (big, small) == ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")
    ties = [_pooled(comps, m, "memcollab").comparison for m in (big, small)]
    quoted = " and ".join(f"{c.only_baseline}/{c.only_condition}" for c in ties)
    assert f"({quoted})" in text
    other = _pooled(comps, big, "other")
    family = sum(1 for c in comps if c.benchmark == POOLED)
    assert (
        f"lost {-100 * other.comparison.difference:.1f} pp "
        f"(p = {other.comparison.p_value:.2g}; {other.holm_p:.2g} after Holm's adjustment "
        f"for {family} comparisons"
    ) in text


V2 = ROOT / "benchmarks" / "results" / "v2"


@pytest.fixture(scope="module")
def v2() -> tuple[Results, list[ContrastResult]]:
    return _run(V2)


def test_the_v2_table_is_the_committed_run(v2: tuple[Results, list[ContrastResult]]) -> None:
    """The v2 table's accuracies are pooled over the 500 tasks (the primary comparison's
    unit), and its last column is the pre-registered primary row, Holm-adjusted over the
    two models as the plan named."""
    results, comps = v2
    header, rows = _table("memcollab-v2")
    conditions = header[1:5]
    assert conditions == results.conditions
    n = sum(len(ids) for ids in results.complete_tasks.values())
    assert n == sum(results.planned_tasks.values()) == 500
    assert header[5].startswith(f"memcollab-v2 - vanilla, {n} tasks")
    primary = {r.model: r for r in primary_rows(results, comps) or []}
    for model, cells in _rows_by_model(results, rows).items():
        _assert_pooled_accuracies(results, model, conditions, cells[1:5])
        assert cells[5] == _difference_cell(primary[model], holm=True), model


def test_the_v2_text_quotes_the_committed_run(v2: tuple[Results, list[ContrastResult]]) -> None:
    results, comps = v2
    text = " ".join(_section("Results in brief").split())
    big, small = results.models
    assert (big, small) == ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")

    def pp(row: ContrastResult) -> str:
        return f"{100 * row.comparison.difference:+.1f}"

    primary = [_pooled(comps, m, "memcollab-v2").comparison for m in (big, small)]
    assert (
        f"won {primary[0].only_condition} tasks and lost {primary[0].only_baseline} for the "
        f"1.5B model, won {primary[1].only_condition} and lost {primary[1].only_baseline} "
        "for the 0.5B model"
    ) in text
    power = []
    for c in primary:
        share = (c.only_baseline + c.only_condition) / c.n
        smallest = detectable_difference(c.n, share)
        assert smallest is not None
        power.append(f"{100 * smallest:.1f}")
    assert f"the design detects {power[0]} and {power[1]} pp with 80% power" in text
    placebo = [_pooled(comps, m, "memcollab-v2", "placebo-v2") for m in (big, small)]
    assert (
        f"{pp(placebo[0])} pp for the 1.5B model and {pp(placebo[1])} pp "
        f"(p = {placebo[1].comparison.p_value:.2g}) for the 0.5B"
    ) in text
    paper = [_pooled(comps, m, "memcollab-v2", "memcollab-paper") for m in (big, small)]
    assert f"{pp(paper[0])} and {pp(paper[1])} pp, neither significant" in text
    assert all(r.comparison.p_value >= 0.05 for r in paper)
    old = [_pooled(comps, m, "memcollab-paper") for m in (big, small)]
    assert f"({pp(old[0])} and {pp(old[1])} pp)" in text
    unrelated = [_pooled(comps, m, "placebo-v2") for m in (big, small)]
    assert f"nor did the placebo ({pp(unrelated[0])} and {pp(unrelated[1])} pp)" in text
    assert "memcollab-v2 and vanilla give the same verdicts" in text
    code_rows = [
        c
        for c in comps
        if (c.condition, c.baseline) == ("memcollab-v2", "vanilla")
        and c.benchmark in ("mbpp", "humaneval")
    ]
    assert len(code_rows) == 4
    assert all(c.comparison.only_baseline == c.comparison.only_condition == 0 for c in code_rows)
    build = json.loads((V2 / "build_summary.json").read_text())
    built = build["memcollab-near-miss.by.qwen2.5-coder-1.5b"]
    assert (
        f"near-miss pairs ({built['pairing']['pairs']}), the v2 screen "
        f"({built['distill']['constraints']} constraints kept of "
        f"{built['distill']['candidates']:,} written, in {built['records']} records)"
    ) in text
    gate = json.loads((V2 / "gate.json").read_text())["conditions"]["memcollab-v2"]
    code = [gate["decisions"][m]["code"] for m in (big, small)]
    assert not any(d["memory"] for d in code)
    assert all(gate["decisions"][m]["math"]["memory"] for m in (big, small))
    cost = [100 * (d["only_without_right"] - d["only_with_right"]) / d["n"] for d in code]
    assert f"cost {cost[0]:.1f} and {cost[1]:.1f} pp on development" in text


def test_the_online_replay_text_quotes_the_committed_replay() -> None:
    """The README's sentence on the live replay (issue 28, step 1) quotes replay.json."""
    replay = json.loads((ROOT / "benchmarks/results/online/replay.json").read_text())
    text = " ".join(_section("Reference").split())
    checks, learning = replay["checks"], replay["learning"]
    assert checks["passed"]
    accuracy = replay["accuracy"]
    assert (
        f"{replay['tasks']['count']} training tasks and `--chaos` (replay.json there): "
        f"{checks['attempts_stored']} of {checks['attempts_sent']} attempts stored through "
        f"{checks['kills']} kill -9s of the service, {checks['attempts_lost']} lost, "
        f"{checks['attempts_doubled']} doubled, {checks['distilled_twice']} distilled twice; "
        f"{checks['contrasting_tasks']} tasks gave a contrasting pair, "
        f"{learning['queue']['done']} records learned and {learning['queue']['refused']} pairs "
        f"refused by the screen; one-turn accuracy "
        f"{100 * accuracy['qwen2.5-coder-1.5b']:.1f}% (1.5B) and "
        f"{100 * accuracy['qwen2.5-coder-0.5b']:.1f}% (0.5B); memory applied to "
        f"{replay['memory_statuses']['applied']} of {replay['this_run']['calls']} calls"
    ) in text
    assert replay["exported_records"] == learning["queue"]["done"]


ONLINE = ROOT / "benchmarks" / "results" / "online"


@pytest.fixture(scope="module")
def online() -> tuple[Results, list[ContrastResult]]:
    return _run(ONLINE)


def _secondary_rows() -> dict[str, dict[str, Any]]:
    """secondary.json's pooled online - v2-batch row per model."""
    secondary = json.loads((ONLINE / "secondary.json").read_text())
    assert secondary["comparison"] == "online - v2-batch"
    return {r["model"]: r for r in secondary["rows"] if r["benchmark"] == "all"}


def test_the_online_table_is_the_committed_run(
    online: tuple[Results, list[ContrastResult]],
) -> None:
    """Accuracies pooled over the 300 held-out tasks; the primary online - vanilla
    (Holm over the two models, as pre-registered) and the secondary online - v2-batch
    (secondary.json, written by benchmarks/online_replay.py compare)."""
    results, comps = online
    header, rows = _table("online")
    conditions = header[1:4]
    assert conditions == results.conditions == ["vanilla", "online", "v2-batch"]
    n = sum(len(ids) for ids in results.complete_tasks.values())
    assert n == sum(results.planned_tasks.values()) == 300
    assert header[4].startswith(f"online - vanilla, {n} tasks")
    assert header[5].startswith("online - v2-batch")
    primary = {r.model: r for r in primary_rows(results, comps) or []}
    secondary = _secondary_rows()
    for model, cells in _rows_by_model(results, rows).items():
        _assert_pooled_accuracies(results, model, conditions, cells[1:4])
        assert cells[4] == _difference_cell(primary[model], holm=True), model
        row = secondary[model]
        report_row = _pooled(comps, model, "online", "v2-batch").comparison
        # The report's McNemar and the compare step's agree (same pairs, exact test).
        assert (row["only_baseline"], row["only_condition"]) == (
            report_row.only_baseline,
            report_row.only_condition,
        )
        assert cells[5] == _difference_text(
            row["difference"],
            row["ci_low"],
            row["ci_high"],
            row["p_value"],
            row["holm_p_across_models"],
        ), model


def test_the_online_text_quotes_the_committed_run(
    online: tuple[Results, list[ContrastResult]],
) -> None:
    """The bullets under the online table: tasks won and lost, power at the Holm level the
    amended pre-registration names (alpha 0.025), the secondary comparison against its
    prediction, and v2-batch against vanilla on these tasks."""
    results, comps = online
    text = " ".join(_section("Results in brief").split())
    big, small = results.models
    assert (big, small) == ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b")
    primary = [_pooled(comps, m, "online").comparison for m in (big, small)]
    assert (
        f"online memory against no memory won {primary[0].only_condition} tasks and lost "
        f"{primary[0].only_baseline} for the 1.5B model, won {primary[1].only_condition} and "
        f"lost {primary[1].only_baseline} for the 0.5B model"
    ) in text
    power = []
    for c in primary:
        smallest = detectable_difference(
            c.n, (c.only_baseline + c.only_condition) / c.n, alpha=0.025
        )
        assert smallest is not None
        power.append(f"{100 * smallest:.1f}")
    assert f"detects {power[0]} and {power[1]} pp with 80% power at Holm's first level" in text
    secondary = _secondary_rows()
    assert (
        f"online - v2-batch, predicted negative or zero: "
        f"{100 * secondary[big]['difference']:+.1f} pp for the 1.5B model and "
        f"{100 * secondary[small]['difference']:+.1f} pp for the 0.5B"
    ) in text
    batch = [_pooled(comps, m, "v2-batch").comparison for m in (big, small)]
    assert (
        f"v2-batch against vanilla on these tasks: {100 * batch[0].difference:+.1f} and "
        f"{100 * batch[1].difference:+.1f} pp"
    ) in text
    mbpp = {
        c.condition: c.comparison
        for c in comps
        if (c.model, c.baseline, c.benchmark) == (big, "vanilla", "mbpp")
    }
    assert (
        f"(MBPP: online {100 * mbpp['online'].difference:.0f} pp, v2-batch "
        f"{100 * mbpp['v2-batch'].difference:.0f} pp, p = {mbpp['v2-batch'].p_value:.2g})"
    ) in text
