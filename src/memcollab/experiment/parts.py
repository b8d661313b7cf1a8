"""parts.jsonl: one line per invocation ("part") of an experiment run, and reading it back.

A part's line: `started`, `phases` (per phase run: `computed`, `seconds`, `model_calls`,
`replayed_calls`; `interrupted` or `failed` for the phase a part ended in; `labels`, the
labellers' counters of a dev or eval phase), `finished`, `code` (the commit it ran),
`ended` and `wall_s`. `<phase>_classifier_stats.json` sums the `labels` over every line.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from memcollab.atomic import write_json
from memcollab.code_version import code_version
from memcollab.errors import UserError

PARTS_FILE = "parts.jsonl"


class PhaseLabels:
    """Where a dev or eval phase tells its parts line how to read its labellers' counters.

    `run` makes one per phase and passes it in; the phase calls `follow` once its
    labellers exist. The counters are read when the phase ends, whether it returned,
    was stopped or failed, so the labels a part asked for are counted either way."""

    def __init__(self) -> None:
        self._read: Callable[[], dict[str, Any]] | None = None

    def follow(self, read: Callable[[], dict[str, Any]]) -> None:
        """Read the counters with `read` when the phase ends."""
        self._read = read

    def counters(self) -> dict[str, Any] | None:
        """The counters now; None for a phase that labels nothing (or failed before)."""
        return self._read() if self._read is not None else None


def start_part() -> dict[str, Any]:
    """A new part: when it started and which code runs it; phases are added as they end."""
    return {"started": time.time(), "phases": {}, "finished": False, "code": code_version()}


def phase_entry(
    computed: int,
    began: float,
    calls: tuple[int, int],
    now: tuple[int, int],
    ended: Mapping[str, Any] | None = None,
    labels: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One phase's entry: what it computed, how long (since `began`, a perf_counter), the
    model calls and cache hits since `calls` (`now`: the counts at its end), how it
    `ended` if it did not return (`interrupted` or `failed`), and its `labels` counters."""
    entry: dict[str, Any] = {
        "computed": computed,
        "seconds": round(time.perf_counter() - began, 1),
        "model_calls": now[0] - calls[0],
        "replayed_calls": now[1] - calls[1],
        **(ended or {}),
    }
    if labels is not None:
        entry["labels"] = labels
    return entry


def append_part(folder: Path, part: dict[str, Any]) -> None:
    """Set `part`'s `ended` and `wall_s`, and append it as one line to parts.jsonl."""
    part["ended"] = time.time()
    part["wall_s"] = round(part["ended"] - part["started"], 1)
    path = folder / PARTS_FILE
    _drop_cut_off_tail(path)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(part) + "\n")


def _drop_cut_off_tail(path: Path) -> None:
    """Before appending: a last line without its newline is a write a kill cut off. If it
    parses it is kept and ended; if not (a fragment, never a part's line) it is removed,
    so the next line is not glued onto it. Nothing else in the file changes."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    start = data.rfind(b"\n") + 1
    try:
        json.loads(data[start:])
    except (json.JSONDecodeError, UnicodeDecodeError):
        with path.open("r+b") as fh:
            fh.truncate(start)
        return
    with path.open("ab") as fh:
        fh.write(b"\n")


def read_parts(folder: Path) -> list[dict[str, Any]]:
    """Every part's line in `folder`/parts.jsonl, oldest first; none without the file.

    Blank lines are skipped. A last line cut off before its newline that does not parse
    (a process killed while writing it) is skipped: like a part killed before it wrote,
    it has no line. Any other line that is not a JSON object is a UserError."""
    path = folder / PARTS_FILE
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    parts = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            part = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and not text.endswith("\n"):
                break  # cut off mid-write
            raise UserError(
                f"{path}:{number} is not a JSON line ({exc})",
                "fix or remove that line",
            ) from exc
        if not isinstance(part, dict):
            raise UserError(f"{path}:{number} is not a JSON object", "fix or remove that line")
        parts.append(part)
    return parts


def summed_labels(parts: Sequence[Mapping[str, Any]], phase: str) -> dict[str, Any]:
    """The `labels` counters of `phase` summed over `parts` (a part that did not run it,
    or that labelled nothing in it, adds nothing)."""
    counters = [
        part["phases"][phase]["labels"]
        for part in parts
        if "labels" in part.get("phases", {}).get(phase, {})
    ]
    return _sum_counters(counters)


def write_label_stats(folder: Path, phase: str) -> None:
    """`<phase>_classifier_stats.json`: the labellers' counters summed over every part's
    line in parts.jsonl, so a run split into parts counts all of its labels (a part
    killed by SIGKILL writes no line: its labels are missing from the sum)."""
    write_json(folder / f"{phase}_classifier_stats.json", summed_labels(read_parts(folder), phase))


def _sum_counters(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Nested counters (labeller -> domain -> counter -> number) added key by key."""
    total: dict[str, Any] = {}
    for item in items:
        for key, value in item.items():
            if isinstance(value, Mapping):
                total[key] = _sum_counters([total.get(key, {}), value])
            else:
                total[key] = total.get(key, 0) + value
    return total
