"""Resumable, verified downloads: the transfer half of `memcollab data get`.

`fetch(url, dest, sha256=...)` writes `dest` through `dest.part`: an interrupted transfer
leaves the `.part` file, and the next call asks the server for the rest with an HTTP Range
request (a server that ignores Range sends the whole file and the transfer restarts). The
finished file is checked against its pinned sha256 before it is renamed into place; a
mismatch deletes it and raises one `DownloadError`. Nothing here prints: progress goes to an
`on_event` callback.

Why urllib and not httpx: a handful of static files need only a GET with a Range header and
a streamed read, which the standard library does; urllib also reads `file://` URLs, so an
air-gapped mirror can be a plain folder, and no new dependency is needed.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from memcollab.errors import UserError

CHUNK = 1 << 16
USER_AGENT = "memcollab-data-get"

Status = Literal["start", "progress", "resume", "restart", "present", "verify", "convert", "done"]


@dataclass(frozen=True)
class DownloadEvent:
    """One step of a file's download: `done` bytes of `total` (None when unknown)."""

    name: str
    status: Status
    done: int = 0
    total: int | None = None


OnEvent = Callable[[DownloadEvent], None]


class DownloadError(UserError):
    """A file that could not be downloaded or did not match its pinned hash."""


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def part_path(dest: Path) -> Path:
    """Where the unfinished download of `dest` is kept."""
    return dest.with_name(dest.name + ".part")


def fetch(
    url: str,
    dest: Path,
    *,
    sha256: str | None,
    size: int | None = None,
    name: str | None = None,
    on_event: OnEvent | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `dest` (resuming `dest.part`), check it, and rename it into place.

    `sha256` None means the file is not pinned (the caller checks what it makes of it).
    A `dest` already present with the pinned hash (or any `dest`, when unpinned) is kept.
    """
    emit = on_event or (lambda event: None)
    label = name or dest.name
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        emit(DownloadEvent(label, "present", dest.stat().st_size, dest.stat().st_size))
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    _transfer(url, part, size, label, emit, timeout)
    got = part.stat().st_size
    emit(DownloadEvent(label, "verify", got, got))
    if size is not None and got != size:
        part.unlink()
        raise DownloadError(
            f"{url} gave {got:,} bytes, expected {size:,} (pinned); the download was deleted",
            "the source changed or the mirror serves another file",
        )
    if sha256 is not None:
        actual = sha256_file(part)
        if actual != sha256:
            part.unlink()
            raise DownloadError(
                f"{url} has sha256 {actual[:16]}..., expected {sha256[:16]}... (pinned);"
                " the download was deleted",
                "the source changed or the mirror serves another file",
            )
    os.replace(part, dest)
    emit(DownloadEvent(label, "done", got, got))
    return dest


def _transfer(
    url: str, part: Path, size: int | None, label: str, emit: OnEvent, timeout: float
) -> None:
    """Bring `part` to the whole file: continue it with a Range request, else start over."""
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:  # longer than the pinned file: cannot be resumed
        part.unlink()
        have = 0
    if size is not None and have == size:
        return  # complete already; the caller verifies it
    for attempt in range(2):
        headers = {"User-Agent": USER_AGENT}
        if have:
            headers["Range"] = f"bytes={have}-"
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have and attempt == 0:  # the .part is no prefix of it
                part.unlink()
                have = 0
                continue
            raise DownloadError(
                f"{url}: HTTP {exc.code} {exc.reason}",
                "check the URL, or pass --mirror URL (MEMCOLLAB_DATA_MIRROR)",
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DownloadError(
                f"cannot reach {url}: {reason}",
                "check the network, or pass --mirror URL (MEMCOLLAB_DATA_MIRROR)",
            ) from None
        with response:
            status = getattr(response, "status", None) or 200
            resumed = bool(have) and status == 206 and _continues(response, have)
            if have and not resumed:
                emit(DownloadEvent(label, "restart", 0, size))
                have = 0
            elif resumed:
                emit(DownloadEvent(label, "resume", have, size))
            else:
                emit(DownloadEvent(label, "start", 0, size))
            total = size
            length = response.headers.get("Content-Length")
            if total is None and length and length.isdigit():
                total = have + int(length)
            _stream(url, response, part, have, total, label, emit)
        return


def _continues(response: object, have: int) -> bool:
    """Whether a 206 answer starts where the partial file ends."""
    headers = getattr(response, "headers", {})
    content_range = headers.get("Content-Range", "") if headers else ""
    return content_range.startswith(f"bytes {have}-")


def _stream(
    url: str,
    response: object,
    part: Path,
    have: int,
    total: int | None,
    label: str,
    emit: OnEvent,
) -> None:
    done = have
    try:
        with part.open("ab" if have else "wb") as out:
            while True:
                block = response.read(CHUNK)  # type: ignore[attr-defined]
                if not block:
                    break
                out.write(block)
                done += len(block)
                emit(DownloadEvent(label, "progress", done, total))
    except (OSError, http.client.HTTPException) as exc:  # socket timeouts are OSErrors
        raise DownloadError(
            f"the download of {url} stopped at {done:,} bytes: {exc or type(exc).__name__}",
            f"run the same command again to resume from {part}",
        ) from None
    if total is not None and done < total:  # the server closed the connection early
        raise DownloadError(
            f"the download of {url} stopped at {done:,} of {total:,} bytes",
            f"run the same command again to resume from {part}",
        )
