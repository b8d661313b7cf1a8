"""Simulation with known ground truth: how fast per-model withholding catches a harmful record,
and how often it withholds a helpful or neutral one (memory/utility.py's thresholds).

Ground truth. Three simulated models with success rates 0.2, 0.45 and 0.7 without memory.
Records are planted with an effect per model on the success rate (added, then clipped to
[0.02, 0.98]; the realised effects are reported):

* split records: harmful (-e) for one model, helpful (+e) for another, neutral for the
  third, for every ordered pair of models and e in {0.15, 0.3} (12 kinds);
* neutral records (0 for every model) and helpful records (+0.15 or +0.3 for every model).

Each kind is planted `--replicates` times. In one replicate every model has its own
baseline bucket: `--baseline` outcomes without memory before the first serve, then one
more per round. Each round serves every record to every model once (the harm decision
for a model is taken on its own counts only, so serving it while it is not yet withheld
is what the live system would do), and draws the outcome with a seeded NumPy RNG. After
each outcome the exact P(p_with < p_without) of memory/utility.py (`prob_worse`, uniform
priors) is computed. A record is withheld from a model at the first outcome t where
t >= min_outcomes and P >= confidence (withholding is final: no more outcomes come), so
one simulated path answers every threshold setting: the decision time of a setting is the
first time its rule fires on that path. The horizon is `--horizon` outcomes per (record,
model).

Measured per (confidence, min_outcomes): for harmful cells, the share withheld within the
horizon and the outcomes it took (median, 90th percentile); for helpful and neutral cells,
the false-withhold rate (withheld at any time within the horizon); for split records,
the share withheld from the model harmed while still served to the model helped.

The rule for choosing the defaults, written before the first run:
  1. keep the settings whose false-withhold rate within the horizon is at most 1% for
     helpful cells and at most 5% for neutral cells (each pooled over models and effects);
  2. among them, take the setting that withholds the largest share of harmful cells within
     the horizon (pooled over models and both effect sizes);
  3. ties (within 0.5 percentage points): the smaller median outcomes to withhold a
     harmful cell of effect -0.3, then the higher confidence, then the larger minimum.

Pure Python and NumPy, no model calls. Writes benchmarks/results/utility/ (simulation.json,
curves.png, withhold_over_time.png); see COMMAND.md there for the command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from memcollab.memory.utility import prob_worse

BASE_RATES = (0.2, 0.45, 0.7)
EFFECTS = (0.15, 0.3)
CONFIDENCES = (0.8, 0.9, 0.95, 0.975, 0.99, 0.995)
MIN_OUTCOMES = (5, 10, 15, 20, 30, 40, 60, 80)
CLIP = (0.02, 0.98)
OUT = Path(__file__).resolve().parent / "results" / "utility"


def kinds() -> list[tuple[str, tuple[float, ...]]]:
    """(name, effect per model) of every planted record kind."""
    out: list[tuple[str, tuple[float, ...]]] = []
    n = len(BASE_RATES)
    for e in EFFECTS:
        for harmed in range(n):
            for helped in range(n):
                if harmed != helped:
                    eff = [0.0] * n
                    eff[harmed], eff[helped] = -e, e
                    out.append((f"split-{e}-harms{harmed}-helps{helped}", tuple(eff)))
    out.append(("neutral", (0.0,) * n))
    for e in EFFECTS:
        out.append((f"helpful-{e}", (e,) * n))
    return out


def simulate(replicates: int, horizon: int, baseline: int, seed: int) -> dict[str, np.ndarray]:
    """One path per cell (replicate x kind x model): the P(harm) after each outcome."""
    rng = np.random.default_rng(seed)
    plan = kinds()
    n_models = len(BASE_RATES)
    base = np.array(BASE_RATES)
    effect = np.array([eff for _, eff in plan])  # kinds x models
    p_with = np.clip(base[None, :] + effect, *CLIP)
    shape = (replicates, len(plan), n_models)
    p_cell = np.broadcast_to(p_with[None], shape).ravel()
    model_of = np.broadcast_to(np.arange(n_models)[None, None, :], shape).ravel()
    rep_of = np.broadcast_to(np.arange(replicates)[:, None, None], shape).ravel()
    # Baselines: per replicate and model, `baseline` outcomes before, one more per round.
    base_draws = rng.random((replicates, n_models, baseline + horizon)) < base[None, :, None]
    base_succ = np.cumsum(base_draws, axis=2)  # successes after k+1 draws
    draws = rng.random((p_cell.size, horizon)) < p_cell[:, None]
    helped = np.cumsum(draws, axis=1)
    p_harm = np.empty((p_cell.size, horizon))
    for t in range(horizon):
        n_base = baseline + t + 1
        s = base_succ[rep_of, model_of, n_base - 1]
        h = helped[:, t]
        p_harm[:, t] = prob_worse(h, (t + 1) - h, s, n_base - s)
    return {
        "p_harm": p_harm,
        "effect": np.broadcast_to(effect[None], shape).ravel(),
        "realised": (p_with - base[None, :])[None].repeat(replicates, 0).ravel(),
        "model": model_of,
        "kind": np.broadcast_to(np.arange(len(plan))[None, :, None], shape).ravel(),
        "replicate": rep_of,
    }


def decision_times(p_harm: np.ndarray, confidence: float, min_outcomes: int) -> np.ndarray:
    """Outcomes until withheld (1-based), or 0 when never within the horizon."""
    fired = p_harm >= confidence
    fired[:, : min_outcomes - 1] = False
    first = fired.argmax(axis=1) + 1
    return np.where(fired.any(axis=1), first, 0)


def _rate(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else float("nan")


def summarise(sim: dict[str, np.ndarray], horizon: int) -> list[dict]:
    """Every setting's measurements, pooled and per (base rate, effect)."""
    plan = kinds()
    effect, model, kind = sim["effect"], sim["model"], sim["kind"]
    harmful, helpful, neutral = effect < 0, effect > 0, effect == 0
    split_kinds = [i for i, (name, _) in enumerate(plan) if name.startswith("split")]
    rows = []
    for c in CONFIDENCES:
        for n in MIN_OUTCOMES:
            times = decision_times(sim["p_harm"], c, n)
            withheld = times > 0
            strong = harmful & (effect <= -0.3 + 1e-9)
            per_cell = []
            for m, rate in enumerate(BASE_RATES):
                for e in sorted({float(v) for v in effect}):
                    sel = (model == m) & np.isclose(effect, e)
                    hit = times[sel & withheld]
                    per_cell.append(
                        {
                            "base_rate": rate,
                            "effect": e,
                            "realised_effect": round(float(np.clip(rate + e, *CLIP) - rate), 3),
                            "cells": int(sel.sum()),
                            "withheld_share": round(_rate(withheld[sel]), 4),
                            "median_outcomes_to_withhold": float(np.median(hit))
                            if hit.size
                            else None,
                        }
                    )
            # Split records: withheld from the model harmed, still served to the one helped.
            separated = []
            reps = sim["replicate"]
            for k in split_kinds:
                eff = plan[k][1]
                harmed_m, helped_m = eff.index(min(eff)), eff.index(max(eff))
                sel_h = (kind == k) & (model == harmed_m)
                sel_g = (kind == k) & (model == helped_m)
                order_h, order_g = np.argsort(reps[sel_h]), np.argsort(reps[sel_g])
                w_h = withheld[sel_h][order_h]
                w_g = withheld[sel_g][order_g]
                separated.append(w_h & ~w_g)
            sep = np.concatenate(separated)
            hit_strong = times[strong & withheld]
            rows.append(
                {
                    "confidence": c,
                    "min_outcomes": n,
                    "harmful_withheld_share": round(_rate(withheld[harmful]), 4),
                    "harmful_0.3_withheld_share": round(_rate(withheld[strong]), 4),
                    "harmful_0.15_withheld_share": round(_rate(withheld[harmful & ~strong]), 4),
                    "median_outcomes_to_withhold_0.3": float(np.median(hit_strong))
                    if hit_strong.size
                    else None,
                    "p90_outcomes_to_withhold_0.3": float(np.percentile(hit_strong, 90))
                    if hit_strong.size
                    else None,
                    "false_withhold_helpful": round(_rate(withheld[helpful]), 4),
                    "false_withhold_neutral": round(_rate(withheld[neutral]), 4),
                    "split_separated_share": round(_rate(sep), 4),
                    "per_cell": per_cell,
                }
            )
    return rows


def choose(rows: list[dict]) -> dict:
    """The rule of the module docstring, applied."""
    ok = [
        r
        for r in rows
        if r["false_withhold_helpful"] <= 0.01 and r["false_withhold_neutral"] <= 0.05
    ]
    if not ok:
        raise SystemExit("no setting meets the false-withhold limits; widen the sweep")
    best = max(r["harmful_withheld_share"] for r in ok)
    near = [r for r in ok if r["harmful_withheld_share"] >= best - 0.005]
    near.sort(
        key=lambda r: (
            r["median_outcomes_to_withhold_0.3"] or float("inf"),
            -r["confidence"],
            -r["min_outcomes"],
        )
    )
    return near[0]


def plot(rows: list[dict], sim: dict[str, np.ndarray], chosen: dict, out: Path) -> None:
    """curves.png (the sweep) and withhold_over_time.png (the chosen setting)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(20, 4.6))
    panels = [
        ("false_withhold_helpful", "false-withhold rate, helpful records", 0.01),
        ("false_withhold_neutral", "false-withhold rate, neutral records", 0.05),
        ("harmful_withheld_share", "harmful records withheld within horizon", None),
        ("median_outcomes_to_withhold_0.3", "median outcomes to withhold (effect -0.3)", None),
    ]
    for ax, (key, title, limit) in zip(axes, panels, strict=True):
        for c in CONFIDENCES:
            pts = [(r["min_outcomes"], r[key]) for r in rows if r["confidence"] == c]
            xs = [p[0] for p in pts]
            ys = [np.nan if p[1] is None else p[1] for p in pts]
            ax.plot(xs, ys, marker="o", label=f"confidence {c}")
        if limit is not None:
            ax.axhline(limit, color="grey", linestyle="--", linewidth=1)
        ax.scatter(
            [chosen["min_outcomes"]], [chosen[key]], s=160, facecolors="none", edgecolors="red"
        )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("min outcomes")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Per-model withholding: threshold sweep (chosen setting circled)")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)

    times = decision_times(sim["p_harm"], chosen["confidence"], chosen["min_outcomes"])
    horizon = sim["p_harm"].shape[1]
    fig, axes = plt.subplots(1, len(BASE_RATES), figsize=(15, 4.2), sharey=True)
    ts = np.arange(1, horizon + 1)
    for m, (ax, rate) in enumerate(zip(axes, BASE_RATES, strict=True)):
        for e in sorted({float(v) for v in sim["effect"]}):
            sel = (sim["model"] == m) & np.isclose(sim["effect"], e)
            t = times[sel]
            share = [((t > 0) & (t <= k)).mean() for k in ts]
            ax.plot(ts, share, label=f"effect {e:+.2f}")
        ax.set_title(f"model with base rate {rate}")
        ax.set_xlabel("outcomes of the record with the model")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share withheld")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Share withheld over time at confidence {chosen['confidence']}, "
        f"min outcomes {chosen['min_outcomes']}"
    )
    fig.tight_layout()
    fig.savefig(out / "withhold_over_time.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--horizon", type=int, default=200)
    parser.add_argument("--baseline", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    sim = simulate(args.replicates, args.horizon, args.baseline, args.seed)
    rows = summarise(sim, args.horizon)
    chosen = choose(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(rows, sim, chosen, args.out)
    seconds = round(time.perf_counter() - start, 1)
    headline = {k: v for k, v in chosen.items() if k != "per_cell"}
    result = {
        "config": {
            "base_rates": BASE_RATES,
            "effects": EFFECTS,
            "clip": CLIP,
            "kinds": [name for name, _ in kinds()],
            "replicates": args.replicates,
            "horizon": args.horizon,
            "baseline_outcomes_before": args.baseline,
            "baseline_outcomes_per_round": 1,
            "seed": args.seed,
            "prior": "Beta(1, 1) on p_with and p_without",
            "confidences": CONFIDENCES,
            "min_outcomes": MIN_OUTCOMES,
        },
        "rule": (
            "keep settings with false-withhold <= 1% (helpful) and <= 5% (neutral) within "
            "the horizon; take the largest share of harmful cells withheld; ties within 0.5 "
            "points: smaller median outcomes to withhold effect -0.3, then higher "
            "confidence, then larger minimum"
        ),
        "chosen": headline,
        "chosen_per_cell": chosen["per_cell"],
        "sweep": [{k: v for k, v in r.items() if k != "per_cell"} for r in rows],
        "seconds": seconds,
    }
    (args.out / "simulation.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({"chosen": headline, "seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
