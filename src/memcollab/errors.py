"""Named errors. A `UserError` is a problem the user can fix; the CLI prints it as one line."""

from __future__ import annotations


class MemcollabError(Exception):
    """Base class of every error memcollab raises on purpose."""


class UserError(MemcollabError):
    """A problem in the user's input or environment, with the fix in the message.

    The CLI prints these as a single line and exits non-zero, without a traceback.
    """

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} ({fix})" if fix else problem)


class ConfigError(UserError):
    """A fleet or configuration file that cannot be used."""


class ModelNotFoundError(UserError):
    """A model name that the fleet does not know, or weights that do not exist."""


class ModelUnavailableError(UserError):
    """A model that is known but cannot run here: missing package or weights."""


class EndpointError(UserError):
    """A remote endpoint that cannot be reached, refuses the key, or does not serve the model."""


class ContextOverflowError(UserError):
    """A prompt longer than the model's context window."""
