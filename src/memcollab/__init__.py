"""memcollab: cross-model memory collaboration for LLM agents (MemCollab, arXiv 2603.23234)."""

from memcollab.errors import MemcollabError, UserError
from memcollab.llm import (
    CallCache,
    ChatRequest,
    Completion,
    Decoding,
    Fleet,
    Gateway,
    Message,
    Model,
    ModelClient,
    ScriptedModel,
)

__version__ = "0.1.0"

__all__ = [
    "CallCache",
    "ChatRequest",
    "Completion",
    "Decoding",
    "Fleet",
    "Gateway",
    "MemcollabError",
    "Message",
    "Model",
    "ModelClient",
    "ScriptedModel",
    "UserError",
    "__version__",
]
