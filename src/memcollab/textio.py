"""Open a UTF-8 text file, gzip-compressed when its name ends in `.gz` (for JSONL exports)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import IO, cast


def open_text(path: Path, mode: str, name: Path | None = None) -> IO[str]:
    """`path` opened for text in `mode` ("r" or "w"); gzip when `name` (default `path`) ends in .gz.

    `name` lets a writer pick the format from the final name while it writes a temporary file.
    """
    if (name or path).suffix == ".gz":
        return cast(IO[str], gzip.open(path, mode + "t", encoding="utf-8"))
    return path.open(mode, encoding="utf-8")
