"""Re-judging a run: a stored verdict the current checker disagrees with is found, in the
library and through `memcollab recheck` (exit 1 on a disagreement, one error line on bad
input)."""

from pathlib import Path

from memcollab.collect import TrajectoryStore, collect
from memcollab.recheck import recheck, was_timeout
from tests.test_cli import assert_one_line_error, run_cli
from tests.test_collect import TASKS, _agents


def _run(tmp_path: Path) -> TrajectoryStore:
    store = TrajectoryStore.in_dir(tmp_path / "run")
    collect(_agents(), TASKS, store)
    return store


def _flip_one_verdict(store: TrajectoryStore) -> tuple[str, str, str, int]:
    """Store one right answer as if an older checker had called it wrong (a timeout)."""
    right = next(t for t in store if t.model == "right")
    stale = {"correct": False, "check": {"correct": False, "reason": "timeout"}}
    store.put(right.model_copy(update=stale), replace=True)
    return right.key()


def test_agreeing_run_has_no_disagreement(tmp_path: Path) -> None:
    store = _run(tmp_path)
    result = recheck(store, store.tasks())
    assert result.checked == {("math", "right"): 4, ("math", "wrong"): 4}
    assert result.disagreements == [] and sum(result.stored_timeouts.values()) == 0
    assert sum(recheck(store, store.tasks(), domain="code").checked.values()) == 0


def test_a_changed_verdict_is_reported_with_both_checks(tmp_path: Path) -> None:
    store = _run(tmp_path)
    key = _flip_one_verdict(store)
    result = recheck(store, store.tasks())
    assert [d.key for d in result.disagreements] == [key]
    (only,) = result.disagreements
    assert (only.stored, only.now) == (False, True)
    assert was_timeout(only.stored_details) and not was_timeout(only.now_details)
    assert result.stored_timeouts == {("math", "right"): 1}


def test_cli_exits_1_on_a_disagreement_and_0_without(tmp_path: Path) -> None:
    store = _run(tmp_path)
    clean = run_cli("recheck", str(tmp_path / "run"))
    assert clean.returncode == 0, clean.stderr
    assert "8 checked, 0 disagreements" in clean.stdout
    task_id = _flip_one_verdict(store)[0]
    changed = run_cli("recheck", str(tmp_path / "run"), "--domain", "math")
    assert changed.returncode == 1, changed.stderr
    assert "8 checked, 1 disagreements" in changed.stdout
    assert f"{task_id} right vanilla #0: stored False" in changed.stdout


def test_cli_bad_input_is_one_error_line(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("recheck", str(tmp_path)), "holds no trajectories")
    _run(tmp_path)
    assert_one_line_error(run_cli("recheck", str(tmp_path / "run"), "--domain", "x"), "'x'")
