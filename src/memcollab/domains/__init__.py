"""Kinds of benchmark (`Domain`s) by name; math and code are built in."""

from memcollab.domains.base import (
    DOMAINS,
    Domain,
    Reaction,
    UnknownDomainError,
    agent_prompts,
    get_domain,
    python_blocks,
    register_domain,
)
from memcollab.domains.code_domain import CodeDomain
from memcollab.domains.math_domain import MathDomain

__all__ = [
    "DOMAINS",
    "CodeDomain",
    "Domain",
    "MathDomain",
    "Reaction",
    "UnknownDomainError",
    "agent_prompts",
    "get_domain",
    "python_blocks",
    "register_domain",
]
