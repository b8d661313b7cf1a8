"""Fleet configuration: which models exist, how to reach them, their decoding defaults.

A fleet file is TOML:

    [defaults.decoding]          # optional, applies to every model
    max_tokens = 512

    [models.qwen-1.5b]
    provider = "llamacpp"        # llamacpp | openai | scripted | another registered one
    packaged = "qwen2.5-coder-1.5b"   # or: path = "/models/x.gguf"
    strength = 3                 # higher is stronger; a tie-break in pairing
    batch_width = 8              # sequences decoded together (default: measured per model)
    mmap = false                 # read the weights instead of mapping them (default true)

    [models.gpt]
    provider = "openai"
    model = "gpt-4o-mini"
    base_url = "http://127.0.0.1:8000/v1"   # else OPENAI_BASE_URL
    api_key_env = "MY_KEY"                  # else OPENAI_API_KEY

Without a file, the default fleet is the three packaged local models.

Providers. Each provider checks its own settings (`validate(spec)`, raising ValueError) and
builds the `Model` (`build(spec)`). Besides the built-in three, a provider comes from:

- `@register_provider("name", validate=check)` on a factory `(ModelSpec) -> Model`, in process;
- an entry point in the group `memcollab.providers` (name = the provider name), loaded the
  first time a fleet names it;
- a dotted path in the fleet file, `provider = "mypkg.mymodule:MyProvider"`.

An entry point or dotted path names either a provider (an object or class with
`build(spec)` and optionally `validate(spec)`; a class is instantiated without arguments)
or a plain factory function. Its own settings go in `[models.NAME.options]`.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from memcollab.errors import ConfigError, ModelNotFoundError
from memcollab.llm.base import Decoding, Model
from memcollab.llm.packaged import PACKAGED_MODELS

ENTRY_POINT_GROUP = "memcollab.providers"


class ModelSpec(BaseModel):
    """One model of a fleet, as written in the fleet file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    provider: str  # a registered name, an entry point name, or "package.module:object"
    strength: int = 0
    decoding: Decoding = Decoding()
    # llamacpp
    packaged: str | None = None
    path: str | None = None
    n_ctx: int = Field(default=4096, ge=256)
    n_threads: int | None = Field(default=None, ge=1)
    prompt_format: Literal["auto", "chat", "completion"] = "auto"
    engine: Literal["batch", "simple"] = "batch"
    batch_width: int | None = Field(default=None, ge=1, le=64)
    prefix_cache: bool | None = None
    repack_weights: bool | None = None
    mmap: bool | None = None  # false: read the weights instead (less resident memory)
    # openai
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    max_concurrency: int = Field(default=8, ge=1)
    max_retries: int = Field(default=4, ge=0)
    timeout_s: float = Field(default=120.0, gt=0)
    # scripted
    responses: list[str] | None = None
    rules: dict[str, str] | None = None  # substring of the request -> reply (first match)
    delay_s: float = Field(default=0.0, ge=0.0)
    # a provider from outside the package: its own settings, checked by its validate
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, name: str) -> str:
        try:
            find_provider(name)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return name

    @model_validator(mode="after")
    def _check_provider_settings(self) -> ModelSpec:
        try:
            find_provider(self.provider).validate(self)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        except (ValueError, AssertionError):
            raise
        except Exception as exc:  # noqa: BLE001 - a check that crashed: still one clear error
            raise ValueError(
                f"the settings check of provider {self.provider!r} failed:"
                f" {type(exc).__name__}: {exc}"
            ) from None
        return self


ProviderFactory = Callable[[ModelSpec], Model]
SettingsCheck = Callable[[ModelSpec], None]


def _accept(spec: ModelSpec) -> None:
    """The settings check of a provider that gave none."""


@dataclass(frozen=True)
class Provider:
    """A provider: `validate(spec)` raises ValueError on bad settings, `build(spec)` a Model."""

    name: str
    build: ProviderFactory
    validate: SettingsCheck = _accept


PROVIDERS: dict[str, Provider] = {}


def register_provider(
    name: str, *, validate: SettingsCheck | None = None
) -> Callable[[ProviderFactory], ProviderFactory]:
    """Register a factory that builds a `Model` from a `ModelSpec` of this provider.

    `validate(spec)` checks the spec's settings when the fleet is read, raising ValueError.
    """

    def wrap(factory: ProviderFactory) -> ProviderFactory:
        PROVIDERS[name] = Provider(name, factory, validate or _accept)
        return factory

    return wrap


def find_provider(name: str) -> Provider:
    """The provider called `name`: registered, a dotted `module:object` path, or an entry point.

    Raises ConfigError naming the provider when it is unknown or cannot be loaded.
    """
    if name in PROVIDERS:
        return PROVIDERS[name]
    if ":" in name:
        return _load_dotted(name)
    points = list(_provider_entry_points())
    for point in points:
        if point.name == name:
            try:
                obj = point.load()
            except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported
                raise ConfigError(
                    f"provider {name!r}: entry point {point.name} = {point.value!r}"
                    f" (group {ENTRY_POINT_GROUP}) failed to load: {type(exc).__name__}: {exc}"
                ) from None
            PROVIDERS[name] = _as_provider(name, obj, f"entry point {point.value!r}")
            return PROVIDERS[name]
    known = sorted({*PROVIDERS, *(p.name for p in points)})
    raise ConfigError(
        f"unknown provider {name!r}; known: {', '.join(known)}",
        "add one with @register_provider(name), an entry point in the group"
        f" {ENTRY_POINT_GROUP!r}, or provider = 'package.module:object'",
    )


def _provider_entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    """The installed entry points of the providers group (tests replace this)."""
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def _load_dotted(path: str) -> Provider:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"provider {path!r}: a dotted provider is 'package.module:object'")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure of a plugin is reported
        raise ConfigError(
            f"provider {path!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}"
        ) from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"provider {path!r}: {module_name!r} has no {attr!r}") from None
    return _as_provider(path, obj, repr(path))


def _as_provider(name: str, obj: Any, where: str) -> Provider:
    """A Provider from a loaded object: one with `build` (a class is instantiated) or a factory."""
    if isinstance(obj, Provider):
        return obj
    if callable(getattr(obj, "build", None)):
        if isinstance(obj, type):
            try:
                obj = obj()
            except Exception as exc:  # noqa: BLE001 - whatever stops it, report it
                raise ConfigError(
                    f"provider {name!r}: cannot instantiate {where}: {type(exc).__name__}: {exc}"
                ) from None
        validate = getattr(obj, "validate", None)
        if validate is not None and not callable(validate):
            raise ConfigError(f"provider {name!r}: `validate` of {where} is not callable")
        return Provider(name, obj.build, validate or _accept)
    if callable(obj):
        return Provider(name, obj)
    raise ConfigError(
        f"provider {name!r}: {where} is not a provider (got {type(obj).__name__})",
        "name an object with build(spec) and optionally validate(spec), or a factory function",
    )


def _no_options(spec: ModelSpec) -> None:
    if spec.options:
        raise ValueError(
            f"a {spec.provider} model takes no `options` (they are for providers from outside)"
        )


def _check_llamacpp(spec: ModelSpec) -> None:
    if (spec.packaged is None) == (spec.path is None):
        raise ValueError("a llamacpp model needs exactly one of `packaged` or `path`")
    if spec.packaged is not None and spec.packaged not in PACKAGED_MODELS:
        raise ValueError(
            f"unknown packaged model {spec.packaged!r}; known: {', '.join(PACKAGED_MODELS)}"
        )
    _no_options(spec)


@register_provider("llamacpp", validate=_check_llamacpp)
def _build_llamacpp(spec: ModelSpec) -> Model:
    from memcollab.llm import packaged
    from memcollab.llm.llamacpp import LlamaCppModel

    # Engine settings the file leaves out take LlamaCppModel's defaults.
    given = {
        "batch_width": spec.batch_width,
        "prefix_cache": spec.prefix_cache,
        "repack_weights": spec.repack_weights,
        "mmap": spec.mmap,
    }
    engine_options: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    engine_options["engine"] = spec.engine
    if spec.packaged is not None:
        entry = packaged.get(spec.packaged)
        path = packaged.ensure_ready(entry)
        # The registry knows whether the GGUF has a chat template, so a cached call never
        # has to load the weights just to learn the prompt mode.
        known_format: Literal["chat", "completion"] = "chat" if entry.chat else "completion"
        return LlamaCppModel(
            spec.name,
            path,
            sha256=entry.sha256,
            n_ctx=spec.n_ctx,
            n_threads=spec.n_threads,
            prompt_format=known_format if spec.prompt_format == "auto" else spec.prompt_format,
            **{"batch_width": entry.batch_width, **engine_options},
        )
    assert spec.path is not None
    return LlamaCppModel(
        spec.name,
        spec.path,
        n_ctx=spec.n_ctx,
        n_threads=spec.n_threads,
        prompt_format=spec.prompt_format,
        **engine_options,
    )


def _check_openai(spec: ModelSpec) -> None:
    if not spec.model:
        raise ValueError("an openai model needs `model` (the name the server knows)")
    _no_options(spec)


@register_provider("openai", validate=_check_openai)
def _build_openai(spec: ModelSpec) -> Model:
    from memcollab.llm.openai_compat import OpenAIModel

    assert spec.model is not None
    return OpenAIModel(
        spec.name,
        spec.model,
        base_url=spec.base_url,
        api_key_env=spec.api_key_env,
        max_concurrency=spec.max_concurrency,
        max_retries=spec.max_retries,
        timeout_s=spec.timeout_s,
    )


def _check_scripted(spec: ModelSpec) -> None:
    if not (spec.responses or spec.rules):
        raise ValueError("a scripted model needs a non-empty `responses` list or `rules`")
    _no_options(spec)


@register_provider("scripted", validate=_check_scripted)
def _build_scripted(spec: ModelSpec) -> Model:
    from memcollab.llm.scripted import ScriptedModel, rule_responder

    if spec.rules:
        responder = rule_responder(spec.rules, spec.responses or [])
        return ScriptedModel(responder, name=spec.name, delay_s=spec.delay_s)
    return ScriptedModel(spec.responses or [], name=spec.name, cycle=True, delay_s=spec.delay_s)


class Fleet:
    """The named models a run may use, in the order the file lists them."""

    def __init__(self, specs: list[ModelSpec], source: str = "default fleet") -> None:
        self.specs = {s.name: s for s in specs}
        self.source = source
        self._built: dict[str, Model] = {}

    @classmethod
    def default(cls) -> Fleet:
        """The three packaged local models, strongest first."""
        specs = [
            ModelSpec(name=m.name, provider="llamacpp", packaged=m.name, strength=m.strength)
            for m in sorted(PACKAGED_MODELS.values(), key=lambda m: -m.strength)
        ]
        return cls(specs)

    @classmethod
    def load(cls, path: str | Path | None) -> Fleet:
        """Read a fleet file; `None` gives the default fleet. Raises ConfigError on bad input."""
        if path is None:
            return cls.default()
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"fleet file not found: {path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read fleet file {path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> Fleet:
        """Build a fleet from the parsed TOML structure."""
        unknown = set(data) - {"models", "defaults"}
        if unknown:
            raise ConfigError(
                f"{source}: unknown top-level key(s) {sorted(unknown)}",
                "a fleet file has [defaults] and [models.NAME] tables",
            )
        models = data.get("models")
        if not isinstance(models, dict) or not models:
            raise ConfigError(f"{source}: no models", "add at least one [models.NAME] table")
        defaults = data.get("defaults", {})
        if not isinstance(defaults, dict) or set(defaults) - {"decoding"}:
            raise ConfigError(f"{source}: [defaults] may only hold a [defaults.decoding] table")
        default_decoding = defaults.get("decoding", {})
        specs = []
        for name, entry in models.items():
            if not isinstance(entry, dict):
                raise ConfigError(f"{source}: models.{name} must be a table")
            merged = dict(entry)
            merged["decoding"] = {**default_decoding, **entry.get("decoding", {})}
            try:
                specs.append(ModelSpec(name=name, **merged))
            except ValidationError as exc:
                raise ConfigError(f"{source}: models.{name}: {_first_error(exc)}") from None
            except TypeError as exc:
                raise ConfigError(f"{source}: models.{name}: {exc}") from None
        return cls(specs, source=source)

    def names(self) -> list[str]:
        return list(self.specs)

    def spec(self, name: str) -> ModelSpec:
        """The spec of `name`; raises ModelNotFoundError naming the known models."""
        try:
            return self.specs[name]
        except KeyError:
            raise ModelNotFoundError(
                f"no model called {name!r} in the {self.source}",
                f"known models: {', '.join(self.specs)}",
            ) from None

    def strongest(self) -> str:
        """The fleet's strongest model (the default distiller)."""
        return strongest(self.names(), lambda n: self.spec(n).strength)

    def model(self, name: str) -> Model:
        """The built model called `name` (built once, then reused)."""
        spec = self.spec(name)
        if name not in self._built:
            model = find_provider(spec.provider).build(spec)
            if not isinstance(model, Model):
                raise ConfigError(
                    f"provider {spec.provider!r} returned {type(model).__name__} for model"
                    f" {name!r}, not a Model"
                )
            self._built[name] = model
        return self._built[name]


def strongest(names: Iterable[str], strength: Callable[[str], int]) -> str:
    """The strongest of `names` (ties: the alphabetically last name, a fixed rule)."""
    return max(names, key=lambda n: (strength(n), n))


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg
