"""A local mirror of the benchmark files' upstream forms, built from the shared copies:
what `memcollab data get` downloads, served by tests/support/http_files.py (no network)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from memcollab.tasks.data_get import DATASETS


def math_tar(rows: list[tuple[str, int, dict[str, str]]]) -> bytes:
    """A MATH-release-like archive: MATH/train/<subject>/<n>.json (plus a test file)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        members = [(f"MATH/train/{s}/{n}.json", row) for s, n, row in rows]
        members.append(("MATH/test/algebra/1.json", {"problem": "not a train row"}))
        for name, row in members:
            data = json.dumps(row).encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def math_tar_from(train_jsonl: Path) -> bytes:
    """A MATH.tar as the release lays it out, rebuilt from the shared math/train.jsonl."""
    rows = []
    for line in train_jsonl.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        _, subject, name = row["unique_id"].split("/")
        fields = {k: row[k] for k in ("problem", "level", "type", "solution")}
        rows.append((subject, int(name.removesuffix(".json")), fields))
    return math_tar(rows[::-1])  # the archive's order must not matter


def mirror_of(data_dir: Path) -> dict[str, bytes]:
    """URL path -> bytes for every file `data get all` fetches, from a filled data dir:
    GSM8K, MATH-500 and MBPP byte for byte, MATH train as the archive it converts."""
    served = {
        f"/{f.name}": (data_dir / f.name).read_bytes()
        for d in DATASETS.values()
        for f in d.files
        if f.convert is None
    }
    served["/math/MATH.tar"] = math_tar_from(data_dir / "math" / "train.jsonl")
    return served
