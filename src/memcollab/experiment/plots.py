"""PNG plots of an experiment report (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from memcollab.experiment.results import Results, accuracy, average_accuracy  # noqa: E402


def _bar_offsets(n: int, width: float) -> list[float]:
    return [(i - (n - 1) / 2) * width for i in range(n)]


def accuracy_plot(results: Results, path: Path) -> Path:
    """Average accuracy (bars) and per-benchmark accuracy (dots) by condition, per model."""
    models, conditions, benches = results.models, results.conditions, results.benchmarks
    fig, axes = plt.subplots(
        1, len(models), figsize=(3.2 * len(models) + 1, 3.6), sharey=True, squeeze=False
    )
    markers = "osD^vP*X"
    for ax, model in zip(axes[0], models, strict=True):
        xs = range(len(conditions))
        avgs = [100 * (average_accuracy(results, model, c) or 0.0) for c in conditions]
        ax.bar(xs, avgs, color="#9db4d0", edgecolor="#34506e", label="average")
        for j, bench in enumerate(benches):
            ys = [100 * (accuracy(results.cell(model, c, bench)) or 0.0) for c in conditions]
            ax.scatter(xs, ys, marker=markers[j % len(markers)], s=18, zorder=3, label=bench)
        ax.set_title(model, fontsize=10)
        ax.set_xticks(list(xs), conditions, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    fig.suptitle("Accuracy by condition (bars: mean of benchmarks)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def turns_plot(results: Results, path: Path) -> Path:
    """Mean turns per task by condition, one bar group per model."""
    models, conditions = results.models, results.conditions
    width = 0.8 / max(len(conditions), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(models) + 3, 3.4))
    for offset, condition in zip(_bar_offsets(len(conditions), width), conditions, strict=True):
        means = []
        for model in models:
            cell = results.cell(model, condition)
            means.append(sum(r.turns for r in cell) / len(cell) if cell else 0.0)
        ax.bar([i + offset for i in range(len(models))], means, width, label=condition)
    ax.set_xticks(range(len(models)), models, fontsize=9)
    ax.set_ylabel("mean turns per task")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Turns by condition", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def p_ablation_conditions(results: Results) -> list[tuple[int, str]]:
    """(p, condition) of the task-aware memcollab conditions that differ only in p."""
    found = []
    for name, desc in results.plan["conditions"].items():
        same_retrieval = desc.get("retrieval") == "task_aware" and not desc.get(
            "participant_filter"
        )
        if desc.get("kind") == "memcollab" and same_retrieval:
            found.append((int(desc["p"]), name))
    return sorted(found)


def p_ablation_points(results: Results) -> dict[str, list[tuple[int, float, float]]]:
    """model -> (p, mean constraints retrieved, average accuracy in %) for every p, from
    vanilla (p = 0) where the run has it; empty unless at least two p > 0 were run."""
    variants = p_ablation_conditions(results)
    if len({p for p, _ in variants}) < 2:
        return {}
    if "vanilla" in results.conditions:  # no memory: the p = 0 end of the line
        variants = [(0, "vanilla"), *variants]
    points: dict[str, list[tuple[int, float, float]]] = {}
    for model in results.models:
        points[model] = []
        for p, name in variants:
            cell = results.cell(model, name)
            given = sum(r.constraints for r in cell) / len(cell) if cell else 0.0
            acc = 100 * (average_accuracy(results, model, name) or 0.0)
            points[model].append((p, given, acc))
    return points


def p_ablation_plot(results: Results, path: Path) -> Path | None:
    """Mean constraints retrieved vs average accuracy across p, one line per model."""
    points = p_ablation_points(results)
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for model, line in points.items():
        ax.plot([x for _, x, _ in line], [y for _, _, y in line], marker="o", label=model)
        for p, x, y in line:
            ax.annotate(f"p={p}", (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("constraints retrieved per task (mean)")
    ax.set_ylabel("accuracy (%, mean of benchmarks)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Retrieval size ablation", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_plots(results: Results, folder: Path) -> list[Path]:
    """Every plot the results allow, as PNG files in `folder`."""
    if not results.rows:
        return []
    paths = [
        accuracy_plot(results, folder / "accuracy_by_condition.png"),
        turns_plot(results, folder / "turns_by_condition.png"),
    ]
    ablation = p_ablation_plot(results, folder / "constraints_vs_accuracy.png")
    if ablation is not None:
        paths.append(ablation)
    return paths
