"""parts.jsonl read back (experiment/parts.py): a missing file, blank lines, a last line cut
off mid-write, a damaged line; label counters summed over parts; one part written whole."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from memcollab.errors import UserError
from memcollab.experiment.parts import (
    PhaseLabels,
    append_part,
    phase_entry,
    read_parts,
    summed_labels,
    write_label_stats,
)
from memcollab.experiment.report import parts_table


def _part(started: float, **phases: dict) -> dict:
    return {"started": started, "phases": phases, "finished": True, "wall_s": 60.0}


def _write(folder: Path, text: str) -> Path:
    (folder / "parts.jsonl").write_text(text, encoding="utf-8")
    return folder


def test_missing_file_reads_as_no_parts(tmp_path: Path) -> None:
    assert read_parts(tmp_path) == []
    assert parts_table(tmp_path) is None  # the report leaves the section out


def test_blank_lines_are_skipped_by_runner_and_report_alike(tmp_path: Path) -> None:
    one, two = _part(0.0), _part(3600.0)
    _write(tmp_path, json.dumps(one) + "\n\n   \n" + json.dumps(two) + "\n")
    assert read_parts(tmp_path) == [one, two]
    table = parts_table(tmp_path)  # read the file with json.loads per line before
    assert table is not None
    assert "| 1 | 1970-01-01 00:00 |" in table and "| 2 | 1970-01-01 01:00 |" in table


def test_cut_off_last_line_is_skipped(tmp_path: Path) -> None:
    whole = _part(0.0, train={"computed": 3, "seconds": 60.0})
    cut = json.dumps(_part(60.0, eval={"computed": 9}))[:25]  # killed while writing it
    _write(tmp_path, json.dumps(whole) + "\n" + cut)
    assert read_parts(tmp_path) == [whole]
    table = parts_table(tmp_path)
    assert table is not None and "| 1 |" in table and "| 2 |" not in table


def test_last_line_without_newline_that_parses_is_kept(tmp_path: Path) -> None:
    one, two = _part(0.0), _part(60.0)
    _write(tmp_path, json.dumps(one) + "\n" + json.dumps(two))  # e.g. edited by hand
    assert read_parts(tmp_path) == [one, two]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        # damaged, not the last line
        ('{"started": 0.0, "pha\n' + json.dumps(_part(60.0)) + "\n", ":1 is not a JSON line"),
        # the last line, but ended by its newline: not a write cut off by a kill
        (json.dumps(_part(0.0)) + '\n{"started": 0.0, "pha\n', ":2 is not a JSON line"),
        (json.dumps(_part(0.0)) + "\n[1, 2]\n", ":2 is not a JSON object"),
    ],
)
def test_a_damaged_line_is_one_clear_error(tmp_path: Path, text: str, error: str) -> None:
    _write(tmp_path, text)
    with pytest.raises(UserError, match="parts.jsonl" + error):
        read_parts(tmp_path)


def test_label_counters_are_summed_over_parts(tmp_path: Path) -> None:
    labels_1 = {"trained": {"math": {"classifications": 4, "abstained": 1}}}
    labels_2 = {
        "trained": {"math": {"classifications": 2}, "code": {"classifications": 5}},
        "llm:m": {"math": {"classifications": 7}},
    }
    lines = [
        _part(0.0, eval={"computed": 1, "labels": labels_1}),
        _part(1.0, train={"computed": 8}),  # no eval phase: adds nothing
        _part(2.0, eval={"computed": 0}),  # eval without labels (failed before labelling)
        _part(3.0, dev={"labels": labels_1}, eval={"computed": 2, "labels": labels_2}),
    ]
    _write(tmp_path, "".join(json.dumps(x) + "\n" for x in lines))
    expected = {
        "trained": {"math": {"classifications": 6, "abstained": 1}, "code": {"classifications": 5}},
        "llm:m": {"math": {"classifications": 7}},
    }
    assert summed_labels(read_parts(tmp_path), "eval") == expected
    write_label_stats(tmp_path, "eval")
    assert json.loads((tmp_path / "eval_classifier_stats.json").read_text()) == expected
    write_label_stats(tmp_path, "dev")
    assert json.loads((tmp_path / "dev_classifier_stats.json").read_text()) == labels_1


def test_a_part_is_appended_whole_with_its_phase_entries(tmp_path: Path) -> None:
    labels = PhaseLabels()
    assert labels.counters() is None  # a phase that labels nothing: no `labels` key
    train = phase_entry(5, time.perf_counter(), (2, 1), (10, 4), None, labels.counters())
    labels.follow(lambda: {"trained": {"math": {"classifications": 3}}})
    stopped = phase_entry(
        1, time.perf_counter(), (10, 4), (12, 4), {"interrupted": True}, labels.counters()
    )
    part = {"started": time.time(), "phases": {"train": train, "eval": stopped}, "finished": False}
    append_part(tmp_path, part)
    append_part(tmp_path, dict(part))
    assert list(train) == ["computed", "seconds", "model_calls", "replayed_calls"]
    assert (train["computed"], train["model_calls"], train["replayed_calls"]) == (5, 8, 3)
    assert list(stopped) == [*train, "interrupted", "labels"]
    assert stopped["labels"] == {"trained": {"math": {"classifications": 3}}}
    read = read_parts(tmp_path)
    assert len(read) == 2 and read[0] == part  # `ended` and `wall_s` were set on `part`
    assert list(read[0]) == ["started", "phases", "finished", "ended", "wall_s"]


def test_a_part_appended_after_a_cut_off_line_is_not_glued_onto_it(tmp_path: Path) -> None:
    whole = _part(0.0, train={"computed": 3, "seconds": 60.0})
    cut = json.dumps(_part(60.0, eval={"computed": 9}))[:25]
    _write(tmp_path, json.dumps(whole) + "\n" + cut)
    later = {"started": time.time(), "phases": {}, "finished": True}
    append_part(tmp_path, later)
    assert read_parts(tmp_path) == [whole, later]  # the fragment is gone, nothing else
    # A last line that parses but lost its newline is kept and ended, not dropped.
    _write(tmp_path, json.dumps(whole))
    again = {"started": time.time(), "phases": {}, "finished": False}
    append_part(tmp_path, again)
    assert read_parts(tmp_path) == [whole, again]
