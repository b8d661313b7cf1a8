"""Providers defined outside memcollab, for the fleet tests (dotted paths and entry points)."""

from __future__ import annotations

from memcollab.llm.base import Model
from memcollab.llm.fleet import ModelSpec
from memcollab.llm.scripted import ScriptedModel


class ShoutProvider:
    """Replies with `options.word` in upper case; refuses a fleet entry without a word."""

    def validate(self, spec: ModelSpec) -> None:
        word = spec.options.get("word")
        if not isinstance(word, str) or not word:
            raise ValueError("a shout model needs options.word (a non-empty string)")

    def build(self, spec: ModelSpec) -> Model:
        return ScriptedModel([str(spec.options["word"]).upper()], name=spec.name, cycle=True)


def echo_factory(spec: ModelSpec) -> Model:
    """A plain factory without a settings check."""
    return ScriptedModel(["echo"], name=spec.name, cycle=True)


def not_a_model(spec: ModelSpec) -> object:
    """A factory whose result is not a Model."""
    return 42


NOT_A_PROVIDER = 42
