"""Any OpenAI-compatible chat endpoint (vLLM, SGLang, Ollama, llama.cpp server, hosted APIs).

Uses the official `openai` SDK, whose client retries 429, 5xx, timeouts and connection
errors with exponential backoff; we set how many times. Base URL and key come from the
fleet entry, else from OPENAI_BASE_URL / OPENAI_API_KEY.
"""

from __future__ import annotations

import os
import time
from typing import Any

import openai

from memcollab.errors import ConfigError, ContextOverflowError, EndpointError
from memcollab.llm.base import ChatRequest, Completion, Usage

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIModel:
    """A model served behind an OpenAI-compatible `/v1/chat/completions` endpoint."""

    def __init__(
        self,
        name: str,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        max_retries: int = 4,
        timeout_s: float = 120.0,
    ) -> None:
        self.name = name
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip(
            "/"
        )
        key = api_key
        if key is None and api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(
                    f"model {name!r}: environment variable {api_key_env} is not set",
                    f"export {api_key_env}=... or remove api_key_env to use OPENAI_API_KEY",
                )
        key = key or os.environ.get("OPENAI_API_KEY")
        if not key:
            if self.base_url == DEFAULT_BASE_URL:
                raise ConfigError(
                    f"model {name!r}: no API key for {self.base_url}",
                    "export OPENAI_API_KEY=... (or set api_key_env in the fleet file)",
                )
            key = "no-key"  # local servers (vLLM, Ollama, llama.cpp) usually accept any key
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self._client = openai.OpenAI(
            base_url=self.base_url, api_key=key, max_retries=max_retries, timeout=timeout_s
        )

    def identity(self) -> str:
        return f"openai:{self.base_url}:{self.model}"

    def concurrency(self) -> tuple[str, int]:
        return f"openai:{self.base_url}", self.max_concurrency

    def complete(self, request: ChatRequest) -> Completion:
        params = request.decoding
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [m.model_dump() for m in request.messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.stop:
            kwargs["stop"] = list(params.stop)
        seed = request.effective_seed()
        if seed is not None:
            kwargs["seed"] = seed
        started = time.perf_counter()
        try:
            response = self._client.chat.completions.create(**kwargs)
        except openai.AuthenticationError:
            raise EndpointError(
                f"{self.base_url} refused the API key for model {self.name!r}",
                "check OPENAI_API_KEY (or api_key_env in the fleet file)",
            ) from None
        except openai.PermissionDeniedError:
            raise EndpointError(
                f"{self.base_url} denied access to {self.model!r}", "check the key's permissions"
            ) from None
        except openai.NotFoundError:
            raise EndpointError(
                f"{self.base_url} does not serve a model called {self.model!r}",
                "check `model` in the fleet file against the server's /v1/models",
            ) from None
        except openai.APIConnectionError:
            raise EndpointError(
                f"cannot reach {self.base_url} (after {self.max_retries} retries)",
                "is the server running? check base_url or OPENAI_BASE_URL",
            ) from None
        except openai.BadRequestError as exc:
            if "context" in str(exc).lower():
                raise ContextOverflowError(f"{self.name}: {exc.message}") from None
            raise EndpointError(f"{self.base_url} rejected the request: {exc.message}") from None
        except openai.APIStatusError as exc:
            raise EndpointError(
                f"{self.base_url} answered HTTP {exc.status_code} after {self.max_retries}"
                f" retries: {exc.message}"
            ) from None
        choice = response.choices[0]
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason or "stop",
            usage=Usage(
                prompt_tokens=usage.prompt_tokens if usage else 0,
                completion_tokens=usage.completion_tokens if usage else 0,
            ),
            latency_s=time.perf_counter() - started,
            model=self.name,
        )
