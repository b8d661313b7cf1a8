from pathlib import Path

import pytest

from memcollab.errors import ConfigError, ModelNotFoundError
from memcollab.llm.base import ChatRequest, user
from memcollab.llm.fleet import Fleet
from memcollab.llm.scripted import ScriptedModel

FLEET = """
[defaults.decoding]
max_tokens = 64
temperature = 0.0

[models.strong]
provider = "llamacpp"
packaged = "qwen2.5-coder-1.5b"
strength = 3

[models.local-file]
provider = "llamacpp"
path = "/models/custom.gguf"
n_ctx = 2048
[models.local-file.decoding]
max_tokens = 128

[models.remote]
provider = "openai"
model = "gpt-4o-mini"
base_url = "http://127.0.0.1:9/v1"

[models.echo]
provider = "scripted"
responses = ["hello"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def test_parses_models_and_merges_decoding_defaults(tmp_path: Path) -> None:
    fleet = Fleet.load(_write(tmp_path, FLEET))
    assert fleet.names() == ["strong", "local-file", "remote", "echo"]
    assert fleet.spec("strong").decoding.max_tokens == 64
    assert fleet.spec("local-file").decoding.max_tokens == 128
    assert fleet.spec("local-file").n_ctx == 2048
    assert fleet.spec("strong").strength == 3
    model = fleet.model("echo")
    assert isinstance(model, ScriptedModel)
    assert fleet.model("echo") is model  # built once
    assert model.complete(ChatRequest(messages=(user("hi"),))).text == "hello"


def test_remote_model_identity_names_endpoint_and_model(tmp_path: Path) -> None:
    remote = Fleet.load(_write(tmp_path, FLEET)).model("remote")
    assert remote.identity() == "openai:http://127.0.0.1:9/v1:gpt-4o-mini"
    assert remote.concurrency() == ("openai:http://127.0.0.1:9/v1", 8)


def test_default_fleet_is_the_three_packaged_models_strongest_first() -> None:
    fleet = Fleet.default()
    assert fleet.names() == ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "gemma3-270m"]
    assert [fleet.spec(n).strength for n in fleet.names()] == [3, 2, 1]
    assert Fleet.load(None).names() == fleet.names()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[models.a\nprovider = 'x'", "not valid TOML"),
        ("[models.a]\nprovider = 'hf'", "models.a: provider"),
        ("[models.a]\nprovider = 'llamacpp'", "exactly one of `packaged` or `path`"),
        ("[models.a]\nprovider = 'llamacpp'\npackaged = 'llama-70b'", "unknown packaged model"),
        ("[models.a]\nprovider = 'openai'", "needs `model`"),
        ("[models.a]\nprovider = 'openai'\nmodel = 'm'\ntemprature = 1", "temprature"),
        (
            "[models.a]\nprovider = 'openai'\nmodel='m'\n[models.a.decoding]\ntemperature=-1",
            "decoding.temperature",
        ),
        ("title = 'x'", "unknown top-level key"),
        ("", "no models"),
    ],
)
def test_bad_fleet_files_give_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Fleet.load(_write(tmp_path, text))
    assert message in str(info.value)
    assert "\n" not in str(info.value).strip()


def test_missing_fleet_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fleet file not found"):
        Fleet.load(tmp_path / "nope.toml")


def test_unknown_model_name_lists_known_ones(tmp_path: Path) -> None:
    fleet = Fleet.load(_write(tmp_path, FLEET))
    with pytest.raises(ModelNotFoundError, match="known models: strong, local-file"):
        fleet.spec("weak")


def test_engine_settings_reach_the_llamacpp_model(tmp_path: Path) -> None:
    from memcollab.llm import packaged
    from memcollab.llm.llamacpp import DEFAULT_BATCH_WIDTH, LlamaCppModel

    fleet = Fleet.load(
        _write(
            tmp_path,
            """
[models.wide]
provider = "llamacpp"
path = "/models/custom.gguf"
batch_width = 12
prefix_cache = false
repack_weights = false

[models.plain]
provider = "llamacpp"
path = "/models/custom.gguf"
engine = "simple"
""",
        )
    )
    wide = fleet.model("wide")
    assert isinstance(wide, LlamaCppModel)
    assert (wide.batch_width, wide.prefix_cache, wide.repack_weights) == (12, False, False)
    key, limit = wide.concurrency()
    assert key.startswith("llamacpp:engine:") and limit == 12
    plain = fleet.model("plain")
    assert isinstance(plain, LlamaCppModel)
    assert plain.concurrency() == ("llamacpp:local-cpu", 1)
    assert plain.batch_width == DEFAULT_BATCH_WIDTH
    # A packaged model takes the width measured for it unless the file sets one.
    default = Fleet.default()
    for name in default.names():
        assert default.spec(name).batch_width is None
    assert {m.batch_width for m in packaged.PACKAGED_MODELS.values()} <= set(range(1, 65))


@pytest.mark.parametrize(
    "entry, message",
    [
        ("batch_width = 0", "batch_width"),
        ('engine = "turbo"', "engine"),
    ],
)
def test_bad_engine_settings_are_one_clear_error(tmp_path: Path, entry: str, message: str) -> None:
    text = f'[models.m]\nprovider = "llamacpp"\npath = "/x.gguf"\n{entry}\n'
    with pytest.raises(ConfigError, match=message):
        Fleet.load(_write(tmp_path, text))
