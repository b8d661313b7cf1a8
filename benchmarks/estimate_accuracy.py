"""How well the dry run's wall-time estimate predicts a run's parts, with and without a
prompt-token cost.

For each phase of each part of a run (a parts.jsonl line; a part's phases ran one after
another from its `started`), the calls that phase made are the call cache's rows stored
in its time window (`created_at`; the count is checked against the line's `model_calls`
where the line has it). Their prompt and completion tokens per model go through three
estimators, each fitted on the cache rows stored *before* the phase started (what a dry
run at that moment would have measured) and, for reference, on all rows (in-sample):

* `completion_only`: today's estimator (experiment/estimate.py `model_speed` and
  `phase_seconds`): a model's `sum(latency) / (width * sum(completion tokens))` times its
  completion tokens; the models side by side (slowest) except in the memory phase (sum).
* `per_call`: per model, latency / width = a * prompt + b * completion fitted over single
  calls by non-negative least squares (scipy.optimize.nnls).
* `windowed`: all models' calls pooled into 15-minute windows of the cache's history,
  sum(latency) / width = a * sum(prompt) + b * sum(completion) by NNLS; a model's phase
  time is its completion tokens times (b + a * the phase's prompt / completion tokens).
  Pooled because the engines of all models take turns on one scheduler thread
  (llm/engine.py), so a call's latency per token is paid for by every model's prefill.
* `windowed_robust`: the same windows, but fitted as seconds per completion token
  = b + a * (prompt / completion tokens) in log space with a robust loss (scipy's
  least_squares, soft_l1, f_scale 0.1: a window more than ~10% off counts less), since
  other work on the shared cores slows whole windows by a factor, up to 4x; a and b are
  then scaled so that they account for all of the history's latency.

A model with fewer than 20 earlier calls falls back to today's estimator (its packaged
speed). Each phase gets the ratio estimate / actual wall seconds per estimator; the summary
gives, per estimator, the median ratio and the geometric mean of max(r, 1/r).

Reads SQLite only (the cache opened read-only: a run may be writing it); run it niced:

    nice -n 10 python benchmarks/estimate_accuracy.py runs/v2 runs/paper \\
        --out benchmarks/results/estimate/estimate_accuracy.json
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from scipy.optimize import least_squares, nnls

from memcollab.experiment.estimate import (
    MIN_MEASURED_CALLS,
    ModelSpeed,
    model_speed,
    phase_seconds,
)
from memcollab.llm.base import Model
from memcollab.llm.cache import CallTimings
from memcollab.llm.packaged import PACKAGED_MODELS

PHASE_ORDER = ("train", "memory", "dev", "eval")
WINDOW_S = 900.0
DEFAULT_WIDTH = 16  # the packaged models' batch width (llm/packaged.py)


@dataclass(frozen=True)
class Call:
    """One cached model call with a recorded latency."""

    identity: str
    name: str
    created_at: float
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


@dataclass(frozen=True)
class PhaseWindow:
    """One phase of one part: its time window and what parts.jsonl says about it."""

    part: int
    phase: str
    start: float
    seconds: float
    model_calls: int | None


def load_calls(cache: Path) -> list[Call]:
    """The cache's calls that recorded a latency, oldest first (opened read-only)."""
    db = sqlite3.connect(f"file:{cache}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT model_identity, json_extract(completion_json, '$.model'), created_at,"
            " json_extract(completion_json, '$.usage.prompt_tokens'),"
            " json_extract(completion_json, '$.usage.completion_tokens'),"
            " json_extract(completion_json, '$.latency_s') FROM calls"
            " WHERE json_extract(completion_json, '$.latency_s') > 0 ORDER BY created_at"
        ).fetchall()
    finally:
        db.close()
    return [
        Call(ident, name or ident, float(t), int(p or 0), int(c or 0), float(lat))
        for ident, name, t, p, c, lat in rows
    ]


def phase_windows(parts_jsonl: Path) -> list[PhaseWindow]:
    """Every phase of every part, its window starting where the part's previous phase
    ended (a part runs its phases one after another)."""
    windows = []
    for number, line in enumerate(parts_jsonl.read_text().splitlines(), 1):
        if not line.strip():
            continue
        part = json.loads(line)
        start = float(part["started"])
        for phase in PHASE_ORDER:
            info = part.get("phases", {}).get(phase)
            if info is None:
                continue
            seconds = float(info["seconds"])
            windows.append(PhaseWindow(number, phase, start, seconds, info.get("model_calls")))
            start += seconds
    return windows


def width_of(identity: str, default: int) -> int:
    """The batch width a packaged model runs at (by the sha256 in its identity)."""
    for model in PACKAGED_MODELS.values():
        if model.sha256 in identity:
            return model.batch_width
    return default


class _Known:
    """Just enough of a Model for estimate.model_speed: its identity and width."""

    prompt_format = "chat"

    def __init__(self, identity: str, width: int) -> None:
        self._identity, self._width = identity, width

    def identity(self) -> str:
        return self._identity

    def concurrency(self) -> tuple[str, int]:
        return "engine", self._width


def timings(calls: Iterable[Call]) -> dict[str, CallTimings]:
    """What CallCache.timings() answers for these calls."""
    sums: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0])
    for call in calls:
        s = sums[call.identity]
        s[0] += 1
        s[1] += call.prompt_tokens
        s[2] += call.completion_tokens
        s[3] += call.latency_s
    return {k: CallTimings(int(n), int(p), int(c), s) for k, (n, p, c, s) in sums.items()}


@dataclass(frozen=True)
class Costs:
    """Wall seconds per prompt token and per completion token (at the model's width)."""

    prompt: float
    completion: float
    calls: int


def fit_per_call(calls: Sequence[Call], width: int) -> Costs | None:
    """latency / width = a * prompt + b * completion over single calls (NNLS); None
    without MIN_MEASURED_CALLS calls."""
    if len(calls) < MIN_MEASURED_CALLS:
        return None
    design = np.array([[c.prompt_tokens, c.completion_tokens] for c in calls], dtype=float)
    target = np.array([c.latency_s / width for c in calls])
    (a, b), _ = nnls(design, target)
    return Costs(float(a), float(b), len(calls))


def _window_sums(calls: Sequence[Call], width: Callable[[str], int], window_s: float) -> np.ndarray:
    """Per window of `window_s` seconds: [prompt tokens, completion tokens, latency / width]."""
    sums: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
    for call in calls:
        s = sums[int(call.created_at // window_s)]
        s[0] += call.prompt_tokens
        s[1] += call.completion_tokens
        s[2] += call.latency_s / width(call.identity)
    return np.array(list(sums.values()))


def fit_windowed(
    calls: Sequence[Call], width: Callable[[str], int], window_s: float = WINDOW_S
) -> Costs | None:
    """All models pooled: per window of `window_s` seconds of the cache's history,
    sum(latency / width) = a * sum(prompt) + b * sum(completion) (NNLS); None without
    MIN_MEASURED_CALLS calls."""
    if len(calls) < MIN_MEASURED_CALLS:
        return None
    rows = _window_sums(calls, width, window_s)
    (a, b), _ = nnls(rows[:, :2], rows[:, 2])
    return Costs(float(a), float(b), len(calls))


def fit_windowed_robust(
    calls: Sequence[Call], width: Callable[[str], int], window_s: float = WINDOW_S
) -> Costs | None:
    """Per window, seconds per completion token = b + a * prompt / completion tokens,
    fitted to the logarithms with a soft-L1 loss, then scaled to the history's total
    latency; None without MIN_MEASURED_CALLS calls or a window with completions."""
    if len(calls) < MIN_MEASURED_CALLS:
        return None
    rows = _window_sums(calls, width, window_s)
    rows = rows[rows[:, 1] > 0]
    if not len(rows):
        return None
    share, per_token = rows[:, 0] / rows[:, 1], rows[:, 2] / rows[:, 1]
    start = [float(np.median(per_token)), 0.0]

    def residuals(theta: np.ndarray) -> np.ndarray:
        return np.asarray(np.log(theta[0] + theta[1] * share) - np.log(per_token))

    fit = least_squares(
        residuals, start, bounds=([1e-9, 0.0], [np.inf, np.inf]), loss="soft_l1", f_scale=0.1
    )
    b, a = (float(v) for v in fit.x)
    scale = rows[:, 2].sum() / ((b + a * share) * rows[:, 1]).sum()
    return Costs(a * scale, b * scale, len(calls))


def estimates(
    phase: str,
    made: Sequence[Call],
    history: Sequence[Call],
    default_width: int,
) -> dict[str, float | None]:
    """The three estimators' wall seconds for a phase that made the calls `made`, each
    fitted on `history`."""
    prompt: dict[str, float] = defaultdict(float)
    completion: dict[str, float] = defaultdict(float)
    for call in made:
        prompt[call.identity] += call.prompt_tokens
        completion[call.identity] += call.completion_tokens
    width = {m: width_of(m, default_width) for m in completion}
    measured = timings(history)
    old = {m: model_speed(cast(Model, _Known(m, width[m])), measured) for m in completion}
    by_model: dict[str, list[Call]] = defaultdict(list)
    for call in history:
        by_model[call.identity].append(call)
    per_call: dict[str, ModelSpeed | None] = {}
    for m in completion:
        fit = fit_per_call(by_model[m], width[m])
        per_call[m] = old[m] if fit is None else _speed(fit, prompt[m], completion[m])
    share = sum(prompt.values()) / max(sum(completion.values()), 1)
    speeds: dict[str, Mapping[str, ModelSpeed | None]] = {
        "completion_only": old,
        "per_call": per_call,
    }
    for name, fitter in (("windowed", fit_windowed), ("windowed_robust", fit_windowed_robust)):
        pooled = fitter(history, lambda m: width_of(m, default_width))
        speeds[name] = {
            m: old[m]
            if pooled is None or len(by_model[m]) < MIN_MEASURED_CALLS
            else ModelSpeed(pooled.completion + pooled.prompt * share, name)
            for m in completion
        }
    side = phase != "memory"
    return {
        name: phase_seconds(completion, by_model_speed, side_by_side=side)[0]
        for name, by_model_speed in speeds.items()
    }


def _speed(costs: Costs, prompt: float, completion: float) -> ModelSpeed:
    """Seconds per completion token with this model's prompt tokens folded in."""
    return ModelSpeed(costs.completion + costs.prompt * prompt / max(completion, 1), "per call")


def _ratio(estimate: float | None, actual: float) -> float | None:
    return None if estimate is None or actual <= 0 else round(estimate / actual, 3)


def measure_run(
    run: Path, cache: Path, default_width: int, min_calls: int, excluded: Iterable[int] = ()
) -> dict[str, Any]:
    """Per phase of each part: actual seconds, calls, tokens, and each estimator's ratio."""
    calls = load_calls(cache)
    stamps = [c.created_at for c in calls]
    phases = []
    skipped = []
    for w in phase_windows(run / "parts.jsonl"):
        lo = int(np.searchsorted(stamps, w.start, side="left"))
        hi = int(np.searchsorted(stamps, w.start + w.seconds, side="right"))
        made = calls[lo:hi]
        if len(made) < min_calls:
            skipped.append({"part": w.part, "phase": w.phase, "calls": len(made)})
            continue
        names: dict[str, str] = {c.identity: c.name for c in made}
        entry: dict[str, Any] = {
            "part": w.part,
            "phase": w.phase,
            "wall_s": round(w.seconds, 1),
            "calls_in_window": len(made),
            "model_calls_reported": w.model_calls,
            "in_summary": w.part not in set(excluded),
            "tokens": {
                names[m]: {
                    "calls": sum(c.identity == m for c in made),
                    "prompt": sum(c.prompt_tokens for c in made if c.identity == m),
                    "completion": sum(c.completion_tokens for c in made if c.identity == m),
                }
                for m in sorted(names)
            },
        }
        for basis, history in (("prior", calls[:lo]), ("all", calls)):
            est = estimates(w.phase, made, history, default_width)
            entry[f"ratio_{basis}"] = {k: _ratio(v, w.seconds) for k, v in est.items()}
        phases.append(entry)
    width = {c.identity: width_of(c.identity, default_width) for c in calls}
    coefficients = {}
    for identity in sorted(width):
        mine = [c for c in calls if c.identity == identity]
        fit = fit_per_call(mine, width[identity])
        coefficients[mine[0].name] = _costs_json(fit)
    return {
        "run": run.name,
        "cache_calls": len(calls),
        "phases": phases,
        "skipped_phases": skipped,
        "summary": {
            basis: summarise([p for p in phases if p["in_summary"]], f"ratio_{basis}")
            for basis in ("prior", "all")
        },
        "excluded_parts": sorted(set(excluded)),
        "fits_on_all_calls": {
            "per_call": coefficients,
            "windowed": _costs_json(fit_windowed(calls, lambda m: width[m])),
            "windowed_robust": _costs_json(fit_windowed_robust(calls, lambda m: width[m])),
        },
    }


def _costs_json(costs: Costs | None) -> dict[str, float] | None:
    if costs is None:
        return None
    return {
        "ms_per_prompt_token": round(costs.prompt * 1000, 3),
        "ms_per_completion_token": round(costs.completion * 1000, 3),
    }


def summarise(phases: Sequence[Mapping[str, Any]], key: str) -> dict[str, Any]:
    """Per estimator: phases, median ratio, geometric mean of max(r, 1/r), range."""
    out: dict[str, Any] = {}
    names = sorted({n for p in phases for n in p[key]})
    for name in names:
        ratios = [p[key][name] for p in phases if p[key][name]]
        if not ratios:
            out[name] = None
            continue
        out[name] = {
            "phases": len(ratios),
            "median_ratio": round(statistics.median(ratios), 3),
            "geo_mean_error_factor": round(
                math.exp(statistics.fmean(abs(math.log(r)) for r in ratios)), 3
            ),
            "min_ratio": min(ratios),
            "max_ratio": max(ratios),
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (parts.jsonl)")
    parser.add_argument("--cache", type=Path, action="append", help="a run's call cache")
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    parser.add_argument("--min-calls", type=int, default=MIN_MEASURED_CALLS)
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="RUN:PART",
        help="leave a part (its line number in parts.jsonl) out of the summary",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    caches = args.cache or [run / "calls.sqlite" for run in args.runs]
    if len(caches) != len(args.runs):
        parser.error("give one --cache per run, or none")
    started = time.perf_counter()
    runs = []
    for run, cache in zip(args.runs, caches, strict=True):
        if not (run / "parts.jsonl").is_file() or not cache.is_file():
            parser.error(f"{run}: needs parts.jsonl and the call cache {cache}")
        excluded = [int(e.split(":")[1]) for e in args.exclude if e.split(":")[0] == run.name]
        runs.append(measure_run(run, cache, args.width, args.min_calls, excluded))
    result = {
        "benchmark": "estimate_accuracy",
        "command": "python benchmarks/estimate_accuracy.py " + " ".join(argv or sys.argv[1:]),
        "window_s": WINDOW_S,
        "min_measured_calls": MIN_MEASURED_CALLS,
        "runs": runs,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for r in runs:
        print(r["run"], json.dumps(r["summary"]["prior"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
