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


def __getattr__(name: str) -> object:
    # `memcollab.Memory` without loading the memory stack (scikit-learn) on `import memcollab`.
    if name == "Memory":
        from memcollab.memory.api import Memory

        return Memory
    raise AttributeError(f"module 'memcollab' has no attribute {name!r}")


__all__ = [
    "CallCache",
    "ChatRequest",
    "Completion",
    "Decoding",
    "Fleet",
    "Gateway",
    "MemcollabError",
    "Memory",
    "Message",
    "Model",
    "ModelClient",
    "ScriptedModel",
    "UserError",
    "__version__",
]
