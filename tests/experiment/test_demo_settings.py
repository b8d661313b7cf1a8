"""The demo's engine settings (issue 29: peak memory at most 4 GB) and that they stay the
demo's: the packaged fleet that experiments use keeps its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from memcollab.experiment.demo import DEMO_MODEL_SETTINGS, demo_fleet
from memcollab.llm import packaged
from memcollab.llm.fleet import Fleet, ModelSpec
from memcollab.llm.llamacpp import LlamaCppModel


@pytest.fixture
def no_assembly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a packaged model needs its assembled file: a stand-in here."""
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"gguf")
    monkeypatch.setattr(packaged, "ensure_ready", lambda entry, directory=None: fake)


def test_every_demo_model_gets_the_small_engine_settings(no_assembly: None) -> None:
    fleet = demo_fleet()
    assert fleet.names() == Fleet.default().names()
    for name in fleet.names():
        model = fleet.model(name)
        assert isinstance(model, LlamaCppModel)
        assert (model.batch_width, model.n_ctx, model.mmap) == (4, 2048, False)
        assert model.prefix_cache  # kept: turn 2 reuses turn 1's KV


def test_the_demo_kv_cache_is_a_fraction_of_the_packaged_one(no_assembly: None) -> None:
    # KV cells per engine = n_ctx x (width + prefix slots); this is what filled 7.9 GB.
    def cells(model: LlamaCppModel) -> int:
        return model.n_ctx * 2 * model.batch_width

    demo, default = demo_fleet(), Fleet.default()
    for name in demo.names():
        small, big = demo.model(name), default.model(name)
        assert isinstance(small, LlamaCppModel) and isinstance(big, LlamaCppModel)
        assert cells(small) * 8 <= cells(big)


def test_experiments_keep_the_packaged_settings(no_assembly: None) -> None:
    fleet = Fleet.default()
    for name in fleet.names():
        model = fleet.model(name)
        assert isinstance(model, LlamaCppModel)
        assert model.batch_width == packaged.get(name).batch_width
        assert (model.n_ctx, model.mmap) == (4096, True)


def test_demo_and_default_models_share_call_cache_identities(no_assembly: None) -> None:
    # Width 4 still pads decode batches to the four-row kernel, and mmap does not change
    # the numbers: a call answered for the demo is the same call for the packaged fleet.
    demo, default = demo_fleet(), Fleet.default()
    for name in demo.names():
        assert demo.model(name).identity() == default.model(name).identity()


def test_the_settings_are_engine_settings_a_fleet_file_accepts() -> None:
    assert set(DEMO_MODEL_SETTINGS) <= set(ModelSpec.model_fields)
