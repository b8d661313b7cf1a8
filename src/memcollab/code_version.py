"""Which code ran: the package version and, when it runs from a git checkout, the commit
and whether its files differed from it. An experiment part records this, so a run split
over days says which code made each part (a later commit could change what a phase does)."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import memcollab


@lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """`{"version": ..., "commit": sha or None, "dirty": bool or None, "source": folder}`.

    `commit` is None outside a git checkout (an installed wheel) or without git; `dirty`
    says whether tracked files of the package folder differ from the commit."""
    source = Path(memcollab.__file__).resolve().parent
    out: dict[str, Any] = {
        "version": memcollab.__version__,
        "commit": None,
        "dirty": None,
        "source": str(source),
    }
    commit = _git(source, "rev-parse", "HEAD")
    if commit is not None:
        out["commit"] = commit
        status = _git(source, "status", "--porcelain", "--untracked-files=no", "--", ".")
        out["dirty"] = None if status is None else bool(status)
    return out


def _git(folder: Path, *args: str) -> str | None:
    """git's stripped output in `folder`, or None when git is missing or refuses."""
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
