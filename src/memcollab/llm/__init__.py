"""The model layer: one protocol for every backend, a call cache, and fleet configuration."""

from memcollab.llm.base import (
    ChatRequest,
    Completion,
    Decoding,
    Message,
    Model,
    Usage,
    assistant,
    system,
    user,
)
from memcollab.llm.cache import CallCache, Gateway, ModelClient, ModelStats
from memcollab.llm.fleet import (
    PROVIDERS,
    Fleet,
    ModelSpec,
    Provider,
    find_provider,
    register_provider,
)
from memcollab.llm.scripted import ScriptedModel

__all__ = [
    "PROVIDERS",
    "CallCache",
    "ChatRequest",
    "Completion",
    "Decoding",
    "Fleet",
    "Gateway",
    "Message",
    "Model",
    "ModelClient",
    "ModelSpec",
    "ModelStats",
    "Provider",
    "ScriptedModel",
    "Usage",
    "assistant",
    "find_provider",
    "register_provider",
    "system",
    "user",
]
