"""Fleet configuration: which models exist, how to reach them, their decoding defaults.

A fleet file is TOML:

    [defaults.decoding]          # optional, applies to every model
    max_tokens = 512

    [models.qwen-1.5b]
    provider = "llamacpp"        # llamacpp | openai | scripted
    packaged = "qwen2.5-coder-1.5b"   # or: path = "/models/x.gguf"
    strength = 3                 # higher is stronger; a tie-break in pairing
    batch_width = 8              # sequences decoded together (default: measured per model)

    [models.gpt]
    provider = "openai"
    model = "gpt-4o-mini"
    base_url = "http://127.0.0.1:8000/v1"   # else OPENAI_BASE_URL
    api_key_env = "MY_KEY"                  # else OPENAI_API_KEY

Without a file, the default fleet is the three packaged local models.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from memcollab.errors import ConfigError, ModelNotFoundError
from memcollab.llm.base import Decoding, Model
from memcollab.llm.packaged import PACKAGED_MODELS


class ModelSpec(BaseModel):
    """One model of a fleet, as written in the fleet file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    provider: Literal["llamacpp", "openai", "scripted"]
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

    @model_validator(mode="after")
    def _check_provider_fields(self) -> ModelSpec:
        if self.provider == "llamacpp":
            if (self.packaged is None) == (self.path is None):
                raise ValueError("a llamacpp model needs exactly one of `packaged` or `path`")
            if self.packaged is not None and self.packaged not in PACKAGED_MODELS:
                raise ValueError(
                    f"unknown packaged model {self.packaged!r}; known: {', '.join(PACKAGED_MODELS)}"
                )
        elif self.provider == "openai" and not self.model:
            raise ValueError("an openai model needs `model` (the name the server knows)")
        elif self.provider == "scripted" and not (self.responses or self.rules):
            raise ValueError("a scripted model needs a non-empty `responses` list or `rules`")
        return self


ProviderFactory = Callable[[ModelSpec], Model]
PROVIDERS: dict[str, ProviderFactory] = {}


def register_provider(name: str) -> Callable[[ProviderFactory], ProviderFactory]:
    """Register a factory that builds a `Model` from a `ModelSpec` of this provider."""

    def wrap(factory: ProviderFactory) -> ProviderFactory:
        PROVIDERS[name] = factory
        return factory

    return wrap


@register_provider("llamacpp")
def _build_llamacpp(spec: ModelSpec) -> Model:
    from memcollab.llm import packaged
    from memcollab.llm.llamacpp import LlamaCppModel

    # Engine settings the file leaves out take LlamaCppModel's defaults.
    given = {
        "batch_width": spec.batch_width,
        "prefix_cache": spec.prefix_cache,
        "repack_weights": spec.repack_weights,
    }
    engine_options: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    engine_options["engine"] = spec.engine
    if spec.packaged is not None:
        entry = packaged.get(spec.packaged)
        path = packaged.ensure_ready(entry)
        # The registry knows whether the GGUF has a chat template, so a cached call never
        # has to load the weights just to learn the prompt mode.
        known_format = "chat" if entry.chat else "completion"
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


@register_provider("openai")
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


@register_provider("scripted")
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
            self._built[name] = PROVIDERS[spec.provider](spec)
        return self._built[name]


def strongest(names: Iterable[str], strength: Callable[[str], int]) -> str:
    """The strongest of `names` (ties: the alphabetically last name, a fixed rule)."""
    return max(names, key=lambda n: (strength(n), n))


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg
