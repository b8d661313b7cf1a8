"""What the CLI shows while a model loads, and the times it reports (no model loaded)."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from memcollab import cli_common
from memcollab.cli_models import timing_note
from memcollab.llm import loading
from memcollab.llm.base import Completion, Usage
from memcollab.llm.loading import LoadEvent


def _completion(latency_s: float, cached: bool = False) -> Completion:
    return Completion(
        text="391",
        finish_reason="stop",
        usage=Usage(prompt_tokens=39, completion_tokens=16),
        latency_s=latency_s,
        model="m",
        cached=cached,
    )


def test_chat_reports_loading_and_generation_apart_and_the_wall_clock() -> None:
    # The case: 16.7 s on the clock, "1.9s" reported (generation only).
    note = timing_note(_completion(1.9), load_s=12.5, wall_s=14.6)
    assert note == "loading 12.5s, generation 1.9s (8.4 tok/s); 14.6s in all"


def test_a_warm_model_reports_no_loading() -> None:
    assert timing_note(_completion(2.0), 0.0, 2.1) == "generation 2.0s (8.0 tok/s); 2.1s in all"


def test_a_cached_answer_says_so() -> None:
    assert timing_note(_completion(3.0, cached=True), 0.0, 0.01) == "from the cache, 0.0s"


def test_a_load_gets_a_row_while_it_runs_and_a_line_with_its_time_after() -> None:
    out = io.StringIO()
    progress = Progress(console=Console(file=out, width=120))
    rows = cli_common.LoadingRows(progress)
    rows(LoadEvent("qwen", 1_120_000_000))
    assert [t.description for t in progress.tasks] == ["loading qwen (1.12 GB)"]
    rows(LoadEvent("qwen", 1_120_000_000, seconds=2.34))
    assert progress.tasks == []
    assert "loaded qwen (1.12 GB) in 2.3s" in out.getvalue()


def test_counting_progress_listens_only_while_it_is_live() -> None:
    progress = cli_common.counting_progress()
    with progress:
        loading.emit(LoadEvent("gemma", 250_000_000))
        assert any(t.description.startswith("loading gemma") for t in progress.tasks)
        loading.emit(LoadEvent("gemma", 250_000_000, seconds=0.5))
        assert not progress.tasks
    loading.emit(LoadEvent("late", 1))
    assert not progress.tasks


def test_spinner_collects_the_loads_of_its_block() -> None:
    with cli_common.spinner("thinking") as loads, loading.reporting("m", 10):
        pass
    assert [(e.name, e.done) for e in loads] == [("m", True)]
    loading.emit(LoadEvent("m", 10, seconds=1.0))  # after the block: not collected
    assert len(loads) == 1
