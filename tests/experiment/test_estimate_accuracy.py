"""benchmarks/estimate_accuracy.py: the prompt-aware fits recover known costs, long prompts
lengthen their estimate, too few calls fall back to today's speeds, and a run's parts are
measured from the cache rows in their time windows without writing to the cache."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import ModuleType

import pytest

from memcollab.experiment.estimate import PAPER_RUN_SPEEDS
from memcollab.llm.base import ChatRequest, Completion, Usage, user
from memcollab.llm.cache import CallCache
from tests.support.benchmarks import load_benchmark

SHA = next(iter(PAPER_RUN_SPEEDS))  # a packaged model: width 16, a fallback speed
PACKAGED = f"llamacpp:sha256:{SHA}:chat:batch"
A, B = 0.002, 0.05  # seconds per prompt token and per completion token, at width 16


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("estimate_accuracy")


def _calls(bench: ModuleType, n: int, *, start: float = 0.0, step: float = 10.0) -> list:
    """n calls whose latency is exactly 16 * (A * prompt + B * completion), one every
    `step` seconds, prompts and completions varied independently."""
    out = []
    for i in range(n):
        prompt, completion = 100 + 37 * (i % 11), 20 + 13 * (i % 7)
        latency = 16 * (A * prompt + B * completion)
        out.append(bench.Call(PACKAGED, "m", start + step * i, prompt, completion, latency))
    return out


def test_the_fits_recover_known_prompt_and_completion_costs(bench: ModuleType) -> None:
    calls = _calls(bench, 400)
    per_call = bench.fit_per_call(calls, 16)
    assert (per_call.prompt, per_call.completion) == (pytest.approx(A), pytest.approx(B))
    # windows of 100 s hold 10 calls each, whose prompt/completion mix varies
    for fit in (bench.fit_windowed, bench.fit_windowed_robust):
        costs = fit(calls, lambda _: 16, window_s=100.0)
        assert costs.prompt == pytest.approx(A, rel=1e-3), fit.__name__
        assert costs.completion == pytest.approx(B, rel=1e-3), fit.__name__


def test_the_robust_fit_discounts_windows_slowed_by_other_work(bench: ModuleType) -> None:
    def calls(slowdown: float) -> list:
        """Ten calls per 100-s window, the window's mix of prompt and completion varied;
        every seventh window `slowdown` times slower (other work on the cores)."""
        out = []
        for i in range(400):
            window = i // 10
            prompt, completion = 100 + 400 * (window % 5), 50 + 30 * (window % 3)
            factor = slowdown if window % 7 == 0 else 1
            latency = 16 * (A * prompt + B * completion) * factor
            out.append(bench.Call(PACKAGED, "m", 10.0 * i, prompt, completion, latency))
        return out

    robust = bench.fit_windowed_robust(calls(4), lambda _: 16, window_s=100.0)
    plain = bench.fit_windowed(calls(4), lambda _: 16, window_s=100.0)
    # the ratio of prompt to completion cost survives the slowed windows, not in plain NNLS
    assert robust.prompt / robust.completion == pytest.approx(A / B, rel=0.05)
    assert plain.prompt / plain.completion < 0.8 * A / B
    # scaled to the history's whole latency: slowed windows raise both costs
    assert robust.completion > B


def test_long_prompts_get_a_longer_estimate_than_short_ones(bench: ModuleType) -> None:
    history = _calls(bench, 400)
    short = [bench.Call(PACKAGED, "m", 0.0, 50, 100, 1.0) for _ in range(10)]
    long = [bench.Call(PACKAGED, "m", 0.0, 5000, 100, 1.0) for _ in range(10)]
    short_est = bench.estimates("train", short, history, 16)
    long_est = bench.estimates("train", long, history, 16)
    assert long_est["completion_only"] == pytest.approx(short_est["completion_only"])
    for name in ("per_call", "windowed_robust"):
        assert long_est[name] > 2 * short_est[name], name
        # the true cost of the long-prompt phase: 10 calls x (A * 5000 + B * 100)
        assert long_est[name] == pytest.approx(10 * (A * 5000 + B * 100), rel=1e-3), name


def test_too_few_calls_fall_back_to_todays_speed(bench: ModuleType) -> None:
    made = [bench.Call(PACKAGED, "m", 0.0, 5000, 100, 1.0) for _ in range(10)]
    few = _calls(bench, 19)
    est = bench.estimates("train", made, few, 16)
    expected = 10 * 100 * PAPER_RUN_SPEEDS[SHA]  # the packaged speed, prompts ignored
    assert est == {k: pytest.approx(expected) for k in est}
    other = [bench.Call("scripted:x", "x", 0.0, 50, 100, 1.0)]
    assert set(bench.estimates("train", other, few, 16).values()) == {None}  # no speed known
    enough = bench.estimates("train", made, _calls(bench, 20), 16)
    assert enough["per_call"] != pytest.approx(expected)


def _cache_with(path: Path, calls: list) -> None:
    cache = CallCache(path)
    for i, call in enumerate(calls):
        request = ChatRequest(messages=(user(f"q{i}"),))
        answer = Completion(
            text="x",
            finish_reason="stop",
            usage=Usage(prompt_tokens=call.prompt_tokens, completion_tokens=call.completion_tokens),
            latency_s=call.latency_s,
            model="m",
        )
        cache.put(request.cache_key(call.identity), call.identity, request, answer)
    cache.close()
    db = sqlite3.connect(path)
    with db:
        for i, call in enumerate(calls):
            key = ChatRequest(messages=(user(f"q{i}"),)).cache_key(call.identity)
            db.execute("UPDATE calls SET created_at = ? WHERE key = ?", (call.created_at, key))
    db.close()


def test_a_run_is_measured_part_by_part_from_the_cache(bench: ModuleType, tmp_path: Path) -> None:
    history = _calls(bench, 200, start=1000.0)  # 1000..2990
    part1 = _calls(bench, 50, start=5000.0, step=2.0)  # 5000..5098
    part2 = _calls(bench, 30, start=8000.0)  # 8000..8290, its memory phase: none
    _cache_with(tmp_path / "calls.sqlite", history + part1 + part2)
    true1 = sum(c.latency_s for c in part1) / 16
    lines = [
        {"started": 5000.0, "phases": {"train": {"seconds": true1, "model_calls": 50}}},
        {"started": 8000.0, "phases": {"train": {"seconds": 300.0}, "memory": {"seconds": 5}}},
    ]
    (tmp_path / "parts.jsonl").write_text("\n".join(json.dumps(p) for p in lines) + "\n")
    before = (tmp_path / "calls.sqlite").read_bytes()

    out = tmp_path / "out" / "accuracy.json"
    args = [str(tmp_path), "--exclude", f"{tmp_path.name}:2", "--out", str(out)]
    assert bench.main(args) == 0
    run = json.loads(out.read_text())["runs"][0]
    first, second = run["phases"]
    assert (first["part"], first["calls_in_window"], first["model_calls_reported"]) == (1, 50, 50)
    assert first["tokens"]["m"]["prompt"] == sum(c.prompt_tokens for c in part1)
    # one model, its calls 16 at a time: the exact per-call model predicts the part
    assert first["ratio_prior"]["per_call"] == pytest.approx(1.0, abs=0.002)
    assert second["calls_in_window"] == 30 and not second["in_summary"]
    assert run["skipped_phases"] == [{"part": 2, "phase": "memory", "calls": 0}]
    assert run["summary"]["prior"]["per_call"]["phases"] == 1
    assert run["excluded_parts"] == [2]
    assert (tmp_path / "calls.sqlite").read_bytes() == before  # read only
