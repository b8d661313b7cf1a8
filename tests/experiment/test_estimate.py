"""The dry run's estimate on the scripted fleet with a temporary call cache: what the cache
already answers is subtracted, and wall time comes from measured speeds (or says "?")."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from memcollab.experiment.config import parse_experiment
from memcollab.experiment.estimate import (
    MIN_PROFILED,
    PAPER_RUN_SPEEDS,
    JobCost,
    ModelSpeed,
    TrajectoryProfile,
    format_seconds,
    model_speed,
    phase_seconds,
)
from memcollab.experiment.runner import Experiment
from memcollab.llm.base import ChatRequest, Completion, Usage, user
from memcollab.llm.cache import CallCache, CallTimings, Gateway
from memcollab.llm.fleet import Fleet
from tests.experiment.scripted import experiment_dict, fleet_dict


def _experiment(tmp_path: Path, cache: CallCache | None, out: str = "out") -> Experiment:
    raw = experiment_dict(tmp_path)
    raw["out"] = str(tmp_path / out)
    config = parse_experiment(raw)
    return Experiment(config, Gateway(cache), Fleet.from_dict(fleet_dict()))


def test_a_finished_run_with_its_cache_estimates_no_call_and_no_time(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.sqlite")
    _experiment(tmp_path, cache).run()
    estimate = _experiment(tmp_path, cache).estimate()
    for phase, e in estimate.items():
        assert (e.done, e.calls, e.completion_tokens) == (e.jobs, 0, 0), phase
        assert e.seconds == 0.0, phase
    assert estimate["memory"].basis.startswith("built")


def test_jobs_whose_first_call_is_cached_count_as_replayed(tmp_path: Path) -> None:
    cache = CallCache(tmp_path / "calls.sqlite")
    _experiment(tmp_path, cache).run()
    fresh = _experiment(tmp_path, cache, out="fresh")  # nothing stored, every call cached
    estimate = fresh.estimate()
    assert estimate["train"].replayed == estimate["train"].jobs == 8
    assert estimate["train"].calls == 0
    # eval: only vanilla jobs have a first call known before the memory exists
    assert estimate["eval"].replayed == 6 * 2
    assert estimate["eval"].calls > 0
    uncached = _experiment(tmp_path, CallCache(tmp_path / "other.sqlite"), out="fresh")
    assert uncached.estimate()["train"].replayed == 0
    assert uncached.estimate()["train"].calls == 8 * 2


def _timed_cache(path: Path, model: str, calls: int, tokens: int, seconds: float) -> CallCache:
    """A cache holding `calls` answers of scripted model `model`, each with a latency."""
    cache = CallCache(path)
    for i in range(calls):
        request = ChatRequest(messages=(user(f"question {i}"),))
        identity = f"scripted:{model}"
        answer = Completion(
            text="x",
            finish_reason="stop",
            usage=Usage(prompt_tokens=50, completion_tokens=tokens),
            latency_s=seconds,
        )
        cache.put(request.cache_key(identity), identity, request, answer)
    return cache


def test_wall_time_comes_from_the_speeds_the_cache_measured(tmp_path: Path) -> None:
    cache = _timed_cache(tmp_path / "calls.sqlite", "right", 30, tokens=100, seconds=8.0)
    assert cache.timings() == {"scripted:right": CallTimings(30, 1500, 3000, 240.0)}
    experiment = _experiment(tmp_path, cache)
    speeds = experiment.model_speeds()
    width = experiment.fleet.model("right").concurrency()[1]
    assert speeds["right"] == ModelSpeed(8.0 / (width * 100), "measured: 30 cached calls")
    assert speeds["wrong"] is None  # no recorded call, not a packaged model
    estimate = experiment.estimate()
    assert estimate["train"].seconds is None  # `wrong` has work and no speed
    assert estimate["train"].prompt_tokens == estimate["train"].calls * 50  # the cache's mean

    both = _timed_cache(tmp_path / "calls.sqlite", "wrong", 25, tokens=50, seconds=2.0)
    estimate = _experiment(tmp_path, both).estimate()
    train = estimate["train"]
    tokens_each = train.completion_tokens / 2  # both models have 4 tasks x max turns left
    right, wrong = tokens_each * 8.0 / (width * 100), tokens_each * 2.0 / (width * 50)
    assert train.seconds == pytest.approx(max(right, wrong))  # the models run side by side
    assert train.seconds_high == pytest.approx(right + wrong)


def test_too_few_calls_fall_back_to_the_packaged_default_or_nothing() -> None:
    class Packaged:
        name = "packaged"
        prompt_format = "chat"

        def __init__(self, sha: str) -> None:
            self.sha = sha

        def identity(self) -> str:
            return f"llamacpp:sha256:{self.sha}:chat:batch"

        def concurrency(self) -> tuple[str, int]:
            return "engine", 16

        def complete(self, request: ChatRequest) -> Completion:
            raise AssertionError("the estimate never calls the model")

    sha, rate = next(iter(PAPER_RUN_SPEEDS.items()))
    few = {Packaged(sha).identity(): CallTimings(5, 100, 500, 50.0)}
    assert model_speed(Packaged(sha), few) == ModelSpeed(rate, "the paper run's speed on 2 cores")
    many = {Packaged(sha).identity(): CallTimings(40, 100, 4000, 640.0)}
    assert model_speed(Packaged(sha), many) == ModelSpeed(0.01, "measured: 40 cached calls")
    assert model_speed(Packaged("0" * 64), few) is None

    class Unresolved(Packaged):
        prompt_format = "auto"  # its identity would load the weights

    assert model_speed(Unresolved(sha), many) is None


def test_phase_seconds_and_their_format() -> None:
    speeds = {"a": ModelSpeed(0.1, "x"), "b": ModelSpeed(0.2, "y"), "c": None}
    assert phase_seconds({"a": 100, "b": 100}, speeds, side_by_side=True) == (20.0, 30.0)
    assert phase_seconds({"a": 100, "b": 100}, speeds, side_by_side=False) == (30.0, 30.0)
    assert phase_seconds({"a": 100, "c": 0}, speeds, side_by_side=True) == (10.0, 10.0)
    assert phase_seconds({"c": 10}, speeds, side_by_side=True) == (None, None)
    assert phase_seconds({}, speeds, side_by_side=True) == (0.0, 0.0)
    assert [format_seconds(s) for s in (None, 0.2, 40, 600, 7200)] == [
        "?",
        "0",
        "~40 s",
        "~10 min",
        "~2.0 h",
    ]


def test_cli_dry_run_shows_wall_time_and_its_basis(tmp_path: Path) -> None:
    from tests.experiment.test_runner import _files
    from tests.test_cli import run_cli

    path = _files(tmp_path)
    cache = _timed_cache(tmp_path / "calls.sqlite", "right", 30, tokens=100, seconds=8.0)
    cache.close()
    dry = run_cli("experiment", "run", str(path), "--dry-run", "--cache", str(cache.path))
    assert dry.returncode == 0, dry.stderr
    text = " ".join(dry.stdout.split())
    assert "wall time" in text and "whole plan" in text
    assert "(measured: 30 cached calls)" in text
    assert "wrong: no speed known (time ?)" in text
    assert "upper bound: max turns x max tokens" in text


def _stored(
    model: str, domain: str, turns: int, prompt: int, completion: int, resampled: int = 0
) -> Any:
    """A stored trajectory as the profile reads it (turns, re-asks and token totals;
    `prompt` and `completion` per call)."""
    calls = turns + resampled
    return SimpleNamespace(
        model=model,
        domain=domain,
        turns=turns,
        resampled=resampled,
        prompt_tokens=prompt * calls,
        completion_tokens=completion * calls,
    )


def test_a_projected_job_costs_the_mean_tokens_of_a_stored_job() -> None:
    """Longer jobs have longer turns: calls x tokens per call must be the mean per job
    (a mean of per-trajectory ratios would project 2 x 200 = 400, not 500)."""
    short = [_stored("big", "code", 1, 50, 100) for _ in range(MIN_PROFILED)]
    long = [_stored("big", "code", 3, 500, 300) for _ in range(MIN_PROFILED)]
    cost = TrajectoryProfile(short + long, JobCost(5.0, None, 512.0)).cost("big", "code")
    assert cost.calls == 2.0
    assert cost.calls * cost.completion_per_call == pytest.approx((100 + 900) / 2)
    assert cost.prompt_per_call is not None
    assert cost.calls * cost.prompt_per_call == pytest.approx((50 + 1500) / 2)
    # A live loop's re-asked reply is a call of its own.
    again = TrajectoryProfile(
        [_stored("big", "code", 2, 10, 10, resampled=1) for _ in range(MIN_PROFILED)],
        JobCost(5.0, None, 512.0),
    )
    assert again.cost("big", "code") == JobCost(3.0, 10.0, 10.0)


def test_a_job_is_projected_from_its_own_model_and_domain_then_backs_off() -> None:
    fallback = JobCost(5.0, None, 512.0)
    stored = [_stored("big", "math", 1, 300, 200) for _ in range(MIN_PROFILED)]
    stored += [_stored("big", "code", 4, 2000, 150) for _ in range(MIN_PROFILED)]
    stored += [_stored("small", "code", 2, 1000, 100) for _ in range(MIN_PROFILED - 1)]
    profile = TrajectoryProfile(stored, fallback)
    assert profile.cost("big", "math") == JobCost(1.0, 300.0, 200.0)
    assert profile.cost("big", "code") == JobCost(4.0, 2000.0, 150.0)
    # Too few of its own: the domain's mean over every model.
    small_code = profile.cost("small", "code")
    assert small_code.calls == pytest.approx((5 * 4 + 4 * 2) / 9)
    # tokens per call: all tokens over all calls
    assert small_code.prompt_per_call == pytest.approx((5 * 4 * 2000 + 4 * 2 * 1000) / 28)
    # A domain no model has enough of: every stored trajectory's mean.
    assert profile.cost("big", "proofs").calls == pytest.approx((5 * 1 + 5 * 4 + 4 * 2) / 14)
    assert profile.basis() == "14 stored trajectories, per model and domain"
    # Nothing stored: the upper bound.
    empty = TrajectoryProfile([], fallback)
    assert empty.cost("big", "math") is fallback
    assert empty.basis().startswith("upper bound")
    # Fewer than MIN_PROFILED in all: still every stored trajectory's mean, not the bound.
    few = TrajectoryProfile([_stored("big", "code", 3, 10, 20)], fallback)
    assert few.cost("small", "math") == JobCost(3.0, 10.0, 20.0)
