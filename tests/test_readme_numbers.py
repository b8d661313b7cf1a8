"""The numbers of the README's "Results in brief" are the committed run's: each cell of its
table, and the counts and p-values its bullets quote, recomputed here from the committed
per-task results (benchmarks/results/paper/results.jsonl) by the report's own code. A
number edited by hand, or a run recommitted without updating the README, fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from memcollab.experiment.report import POOLED, ContrastResult, comparisons
from memcollab.experiment.results import Results, average_accuracy, load_results

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


@pytest.fixture(scope="module")
def paper() -> tuple[Results, list[ContrastResult]]:
    results = load_results(PAPER)
    return results, comparisons(results, seed=int(results.plan["config"].get("seed", 0)))


def _pooled(comps: list[ContrastResult], model: str, condition: str) -> ContrastResult:
    (row,) = [
        c
        for c in comps
        if (c.model, c.condition, c.baseline, c.benchmark) == (model, condition, "vanilla", POOLED)
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
        c = _pooled(comps, model, "memcollab").comparison
        n = sum(len(ids) for ids in results.complete_tasks.values())
        assert header[6].startswith(f"memcollab - vanilla, {n} tasks")
        want = (
            f"{100 * c.difference:+.1f} pp ([{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]; "
            f"p = {c.p_value:.2g})"
        )
        assert cells[6] == want, model
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
