"""What a dry run can know before spending anything: which jobs the call cache already
answers, how fast each model runs, and so the wall time of each phase.

Calls the cache answers: a job's first model call is fixed by its task, model, agent
settings and sample index (no memory block: jobs with guidance are not checked, since their
guidance needs a built memory and labels), so the dry run asks the cache for it. A job whose
first call is there counts as replayed: the run that stored that call asked its later turns
too, unless it stopped in the middle of the job.

Speeds: a model's wall seconds per completion token at its batch width,
`sum(latency) / (batch width * sum(completion tokens))` over the calls the cache recorded
for that model. Prompt processing is folded in: a prefill slows the decoding steps of every
sequence beside it, of all models (their engines take turns on one thread), so it shows
in everyone's latency per completion token, not in its own call's. Fits that give prompt
tokens a cost of their own (per call, or pooled over 15-minute windows) predicted the
paper and v2 runs' parts no better (benchmarks/results/estimate/COMMAND.md). Without 20
recorded calls, the packaged models fall back to the same figure from the committed
paper run (13,783 calls, three models decoding 16 at once on 2 cores); any other model
has no speed, and its time shows as unknown.

Time of a phase: in train and eval every model runs at once, so the estimate is the
slowest model's time, and the sum over models bounds it from above if they share the
cores worse; the memory phase distils one memory after another, so it is the sum.
Measured on the tokens each part really used, with the speeds the cache held before it
(benchmarks/estimate_accuracy.py): 0.64x-1.45x the wall time of six v2 training parts
(the seventh ran on a crowded machine: 0.07x), 0.41x-2.80x of the paper run's phases;
most of the spread is other work on the shared cores. The projected tokens add their own
error where the jobs left differ from the stored ones (v2's MBPP training took 1.46x the
completion tokens projected from one mean over all stored trajectories; jobs are now
projected per model and domain: TrajectoryProfile).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from memcollab.collect import Job
from memcollab.errors import UserError
from memcollab.llm.base import Model
from memcollab.llm.cache import CallTimings, Gateway
from memcollab.trajectory import Trajectory

MIN_MEASURED_CALLS = 20
LABEL_TOKENS = 16  # the LLM classifier's reply budget (memory/classify.py)

# Wall seconds per completion token of the packaged models (by GGUF sha256) in the paper
# run: sum of latencies / (16 x completion tokens) over its committed calls
# (benchmarks/results/paper/calls), all three models decoding at once on 2 cores.
PAPER_RUN_SPEEDS: dict[str, float] = {
    "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046": 0.0704,  # 1.5B
    "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32": 0.0653,  # 0.5B
    "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818": 0.0561,  # 270M
}


@dataclass(frozen=True)
class ModelSpeed:
    """Wall seconds per completion token of one model, and where the figure comes from."""

    seconds_per_token: float
    basis: str

    def describe(self, name: str) -> str:
        return f"{name} {1 / self.seconds_per_token:.1f} tok/s ({self.basis})"


def cheap_identity(model: Model) -> str | None:
    """The model's call-cache identity when it is known without loading weights (a GGUF
    whose prompt format is still "auto" would have to load to learn it): else None."""
    if getattr(model, "prompt_format", None) == "auto":
        return None
    try:
        return model.identity()
    except (UserError, OSError):
        return None


def model_speed(model: Model, timings: Mapping[str, CallTimings]) -> ModelSpeed | None:
    """The speed of `model`: measured from the cache's recorded calls, else the packaged
    default, else None."""
    identity = cheap_identity(model)
    if identity is None:
        return None
    width = max(1, model.concurrency()[1])
    measured = timings.get(identity)
    if measured and measured.calls >= MIN_MEASURED_CALLS and measured.completion_tokens > 0:
        return ModelSpeed(
            measured.seconds / (width * measured.completion_tokens),
            f"measured: {measured.calls:,} cached calls",
        )
    for sha, rate in PAPER_RUN_SPEEDS.items():
        if sha in identity:
            return ModelSpeed(rate, "the paper run's speed on 2 cores")
    return None


class FirstCalls:
    """Asks the call cache for the first model call of jobs (see the module docstring)."""

    def __init__(self, gateway: Gateway) -> None:
        self.cache = gateway.cache
        self._identities: dict[int, str | None] = {}

    def answered(self, job: Job) -> bool:
        """Whether the cache holds this job's first call (never for a job with guidance)."""
        if self.cache is None or job.guide is not None:
            return False
        model = job.agent.client.model
        if id(model) not in self._identities:
            self._identities[id(model)] = cheap_identity(model)
        identity = self._identities[id(model)]
        if identity is None:
            return False
        request = job.agent.request(job.agent.first_messages(job.task), job.sample_index)
        return self.cache.get(request.cache_key(identity)) is not None


def phase_seconds(
    tokens_by_model: Mapping[str, float],
    speeds: Mapping[str, ModelSpeed | None],
    *,
    side_by_side: bool,
) -> tuple[float | None, float | None]:
    """(estimate, upper bound) of a phase's wall seconds; (None, None) when a model that has
    work left has no known speed."""
    times = []
    for model, tokens in tokens_by_model.items():
        if tokens <= 0:
            continue
        speed = speeds.get(model)
        if speed is None:
            return None, None
        times.append(tokens * speed.seconds_per_token)
    if not times:
        return 0.0, 0.0
    return (max(times) if side_by_side else sum(times)), sum(times)


MIN_PROFILED = 5  # stored trajectories a (model, domain) needs before its own means are used


@dataclass(frozen=True)
class JobCost:
    """Mean model calls of a job and tokens per call."""

    calls: float
    prompt_per_call: float | None
    completion_per_call: float


class TrajectoryProfile:
    """What a job will cost, projected from stored trajectories of the same model and
    domain (code jobs make several calls with long repair prompts, math jobs about one):
    that (model, domain)'s means with at least MIN_PROFILED trajectories, else the
    domain's over every model, else every stored trajectory's, else `fallback` (the upper
    bound: max turns x max tokens). Measured on the v2 run (benchmarks/estimate_accuracy.py):
    one mean over all stored trajectories projected 975 calls for its first MBPP part,
    which made 2,644."""

    def __init__(self, trajectories: Iterable[Trajectory], fallback: JobCost) -> None:
        self.fallback = fallback
        groups: dict[tuple[str | None, str | None], list[Trajectory]] = {}
        self.count = 0
        for t in trajectories:
            self.count += 1
            for key in ((t.model, t.domain), (None, t.domain), (None, None)):
                groups.setdefault(key, []).append(t)
        self._costs = {k: _mean_cost(ts) for k, ts in groups.items() if len(ts) >= MIN_PROFILED}
        if self.count and (None, None) not in self._costs:
            self._costs[(None, None)] = _mean_cost(groups[(None, None)])

    def cost(self, model: str, domain: str) -> JobCost:
        """The projected cost of one job of `model` on a task of `domain`."""
        for key in ((model, domain), (None, domain), (None, None)):
            if key in self._costs:
                return self._costs[key]
        return self.fallback

    def basis(self) -> str:
        """What the projection rests on, for the plan's footnote."""
        if not self.count:
            return "upper bound: max turns x max tokens"
        return f"{self.count} stored trajectories, per model and domain"


def _mean_cost(trajectories: Sequence[Trajectory]) -> JobCost:
    """Mean calls per job, and tokens per call as total tokens over total calls, so that
    calls x tokens per call is the mean tokens of a job (longer jobs also have longer
    turns: a mean of per-trajectory ratios undercounted the v2 run's 1.5B code jobs 1.46x)."""
    n = len(trajectories)
    # a live repair loop's re-asked reply is one more call (Trajectory.resampled)
    calls = sum(max(t.turns + t.resampled, 1) for t in trajectories)
    return JobCost(
        calls / n,
        sum(t.prompt_tokens for t in trajectories) / calls,
        sum(t.completion_tokens for t in trajectories) / calls,
    )


def format_seconds(seconds: float | None) -> str:
    """`~12 min`, `~3.4 h`, `0` or `?`."""
    if seconds is None:
        return "?"
    if seconds < 1:
        return "0"
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 5400:
        return f"~{seconds / 60:.0f} min"
    return f"~{seconds / 3600:.1f} h"


def cache_timings(gateway: Gateway) -> dict[str, CallTimings]:
    """The timings of the gateway's call cache (none without a cache)."""
    return gateway.cache.timings() if gateway.cache is not None else {}


def prompt_tokens_per_call(
    models: Iterable[Model], timings: Mapping[str, CallTimings]
) -> float | None:
    """Mean prompt tokens of the cache's recorded calls of these models (None: no calls)."""
    calls = tokens = 0
    for model in models:
        identity = cheap_identity(model)
        if identity is not None and identity in timings:
            calls += timings[identity].calls
            tokens += timings[identity].prompt_tokens
    return tokens / calls if calls else None
