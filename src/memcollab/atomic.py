"""Write a file so that readers see the old file or the whole new one, never a part."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replace_when_done(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed onto `path` if the block succeeds.

    The temporary name holds the process id, so two writers never share one; it is removed
    if the block fails. The parent folder is created if missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data: Any) -> None:
    """`data` as indented JSON, written whole or not at all: a kill mid-write leaves the old
    file, never a cut-off one that every later reader fails on."""
    with replace_when_done(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
