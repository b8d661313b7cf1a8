from pathlib import Path

import pytest

from memcollab.errors import ConfigError, ModelNotFoundError
from memcollab.llm import fleet as fleet_module
from memcollab.llm.base import ChatRequest, Model, user
from memcollab.llm.fleet import Fleet, ModelSpec, register_provider
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


# --- providers registered from outside the package ---------------------------------


@pytest.fixture
def providers(monkeypatch: pytest.MonkeyPatch) -> dict[str, fleet_module.Provider]:
    """A private copy of the registry and no installed entry points, undone after the test."""
    registry = dict(fleet_module.PROVIDERS)
    monkeypatch.setattr(fleet_module, "PROVIDERS", registry)
    monkeypatch.setattr(fleet_module, "_provider_entry_points", lambda: [])
    return registry


def _reply(model: Model) -> str:
    return model.complete(ChatRequest(messages=(user("hi"),))).text


def _check_greeting(spec: ModelSpec) -> None:
    if spec.options.get("greeting") not in ("hello", "hi"):
        raise ValueError("a greeter needs options.greeting = 'hello' or 'hi'")


def test_registered_provider_checks_its_own_settings(
    tmp_path: Path, providers: dict[str, fleet_module.Provider]
) -> None:
    @register_provider("greeter", validate=_check_greeting)
    def build(spec: ModelSpec) -> Model:
        return ScriptedModel([spec.options["greeting"]], name=spec.name, cycle=True)

    good = '[models.g]\nprovider = "greeter"\n[models.g.options]\ngreeting = "hi"\n'
    model = Fleet.load(_write(tmp_path, good)).model("g")
    assert isinstance(model, ScriptedModel) and _reply(model) == "hi"
    bad = '[models.g]\nprovider = "greeter"\n[models.g.options]\ngreeting = "yo"\n'
    with pytest.raises(ConfigError, match=r"models\.g: a greeter needs options\.greeting"):
        Fleet.load(_write(tmp_path, bad))


def test_registrations_in_a_test_do_not_leak() -> None:
    assert "greeter" not in fleet_module.PROVIDERS
    assert set(fleet_module.PROVIDERS) == {"llamacpp", "openai", "scripted"}


def test_dotted_path_provider_class(tmp_path: Path, providers: dict) -> None:
    text = (
        '[models.s]\nprovider = "tests.support.providers:ShoutProvider"\n'
        '[models.s.options]\nword = "hey"\n'
    )
    assert _reply(Fleet.load(_write(tmp_path, text)).model("s")) == "HEY"
    bad = '[models.s]\nprovider = "tests.support.providers:ShoutProvider"\n'
    with pytest.raises(ConfigError, match="a shout model needs options.word"):
        Fleet.load(_write(tmp_path, bad))
    assert "tests.support.providers:ShoutProvider" not in providers


def test_dotted_path_factory(tmp_path: Path, providers: dict) -> None:
    text = '[models.e]\nprovider = "tests.support.providers:echo_factory"\n'
    assert _reply(Fleet.load(_write(tmp_path, text)).model("e")) == "echo"


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        (
            "tests.support.no_such_module:X",
            "provider 'tests.support.no_such_module:X': cannot import"
            " 'tests.support.no_such_module': ModuleNotFoundError",
        ),
        (
            "tests.support.providers:Missing",
            "provider 'tests.support.providers:Missing': 'tests.support.providers'"
            " has no 'Missing'",
        ),
        (
            "tests.support.providers:NOT_A_PROVIDER",
            "'tests.support.providers:NOT_A_PROVIDER' is not a provider (got int)",
        ),
        ("tests.support.providers:", "a dotted provider is 'package.module:object'"),
    ],
)
def test_bad_dotted_path_is_one_clear_error(
    tmp_path: Path, providers: dict, provider: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Fleet.load(_write(tmp_path, f'[models.a]\nprovider = "{provider}"\n'))
    assert message in str(info.value)
    assert "models.a: provider: " in str(info.value)
    assert "\n" not in str(info.value).strip()


def test_factory_that_builds_no_model_is_one_clear_error(tmp_path: Path, providers: dict) -> None:
    text = '[models.a]\nprovider = "tests.support.providers:not_a_model"\n'
    fleet = Fleet.load(_write(tmp_path, text))
    with pytest.raises(ConfigError, match="returned int for model 'a', not a Model"):
        fleet.model("a")


class _EntryPoint:
    def __init__(self, name: str, value: str, target: object) -> None:
        self.name, self.value, self._target = name, value, target
        self.loads = 0

    def load(self) -> object:
        self.loads += 1
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


def test_entry_point_provider_is_loaded_lazily_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, providers: dict
) -> None:
    from tests.support.providers import ShoutProvider

    point = _EntryPoint("shout", "tests.support.providers:ShoutProvider", ShoutProvider)
    broken = _EntryPoint("broken", "nowhere:X", ImportError("No module named 'nowhere'"))
    monkeypatch.setattr(fleet_module, "_provider_entry_points", lambda: [broken, point])
    Fleet.load(_write(tmp_path, FLEET))  # built-in providers never read entry points
    assert point.loads == 0
    text = '[models.s]\nprovider = "shout"\n[models.s.options]\nword = "ok"\n'
    fleet = Fleet.load(_write(tmp_path, text))
    assert _reply(fleet.model("s")) == "OK"
    assert point.loads == 1 and broken.loads == 0  # loaded once, then registered
    assert "shout" in providers
    with pytest.raises(ConfigError, match="a shout model needs options.word"):
        Fleet.load(_write(tmp_path, '[models.s]\nprovider = "shout"\n'))


def test_entry_point_that_fails_to_import_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, providers: dict
) -> None:
    broken = _EntryPoint("broken", "nowhere:X", ImportError("No module named 'nowhere'"))
    monkeypatch.setattr(fleet_module, "_provider_entry_points", lambda: [broken])
    with pytest.raises(ConfigError) as info:
        Fleet.load(_write(tmp_path, '[models.a]\nprovider = "broken"\n'))
    text = str(info.value)
    assert "models.a: provider: provider 'broken': entry point broken = 'nowhere:X'" in text
    assert "failed to load: ImportError: No module named 'nowhere'" in text
    assert "\n" not in text.strip()


def test_unknown_provider_lists_known_ones_and_how_to_add_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, providers: dict
) -> None:
    point = _EntryPoint("shout", "tests.support.providers:ShoutProvider", object())
    monkeypatch.setattr(fleet_module, "_provider_entry_points", lambda: [point])
    with pytest.raises(ConfigError) as info:
        Fleet.load(_write(tmp_path, '[models.a]\nprovider = "hf"\n'))
    text = str(info.value)
    assert (
        "models.a: provider: unknown provider 'hf'; known: llamacpp, openai, scripted, shout"
        in (text)
    )
    assert "@register_provider" in text and "memcollab.providers" in text
    assert "package.module:object" in text
    assert point.loads == 0


def test_settings_check_that_crashes_is_one_clear_error(tmp_path: Path, providers: dict) -> None:
    def check(spec: ModelSpec) -> None:
        spec.options["missing"]

    register_provider("fragile", validate=check)(lambda spec: ScriptedModel(["x"]))
    with pytest.raises(ConfigError, match="settings check of provider 'fragile' failed: KeyError"):
        Fleet.load(_write(tmp_path, '[models.a]\nprovider = "fragile"\n'))


def test_builtin_providers_refuse_options(tmp_path: Path) -> None:
    text = '[models.a]\nprovider = "scripted"\nresponses = ["x"]\n[models.a.options]\nk = 1\n'
    with pytest.raises(ConfigError, match="a scripted model takes no `options`"):
        Fleet.load(_write(tmp_path, text))
