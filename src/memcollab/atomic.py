"""Write a file so that readers see the old file or the whole new one, never a part."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
