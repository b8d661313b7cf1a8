"""A utility gate's decision, stored with a memory, applied where the memory is served.

An experiment's development phase (experiment/gate.py) decides per (model, domain) whether
a memory helps, and keeps that decision as the namespace note `gate:CONDITION`:
`{"condition", "rule", "dev_tasks", "dev_tasks_sha256", "decisions": {model: {domain:
{"memory": bool, ...}}}}`. The note travels with an export, so a memory imported into a
service or handed to `memcollab memory solve` brings the decision along; `Memory.search`
applies it (`gate=True`, the default): a (model, domain) the gate said no to gets no
constraints. A model or domain the gate never saw is served ("undecided": there is no
evidence either way), and a namespace without a gate note is served as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from memcollab.errors import UserError

NOTE_PREFIX = "gate:"

Verdict = Literal["served", "withheld", "undecided"]


class GateNoteError(UserError):
    """A namespace's gate notes cannot decide a query (several disagree, none is named)."""


@dataclass(frozen=True)
class GateCheck:
    """What a namespace's gate note said for one (model, domain)."""

    verdict: Verdict
    condition: str
    """The condition whose note decided (the note's key without `gate:`)."""
    rule: str | None = None


def gate_notes(notes: Mapping[str, Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The gate notes among a namespace's notes: condition name -> note."""
    return {k[len(NOTE_PREFIX) :]: v for k, v in notes.items() if k.startswith(NOTE_PREFIX)}


def check_gate(
    notes: Mapping[str, Mapping[str, Any]],
    model: str | None,
    domain: str,
    condition: str | None = None,
) -> GateCheck | None:
    """The gate's verdict for `model` on `domain` from a namespace's notes; None when no
    gate note applies (none stored, or no model asked). `condition` picks one note; without
    it the namespace's only gate note decides, and several notes decide only where they
    agree (else GateNoteError names them)."""
    gates = gate_notes(notes)
    if condition is not None:
        if condition not in gates:
            held = ", ".join(sorted(gates)) or "none"
            raise GateNoteError(
                f"the namespace holds no utility gate of condition {condition!r} (it holds:"
                f" {held})",
                "name a condition the namespace holds, or leave the gate to its only note",
            )
        gates = {condition: gates[condition]}
    if not gates or model is None:
        return None
    checks = [_check(name, note, model, domain) for name, note in sorted(gates.items())]
    if len({c.verdict for c in checks}) > 1:
        said = "; ".join(f"{c.condition}: {c.verdict}" for c in checks)
        raise GateNoteError(
            f"the namespace's utility gates disagree for {model} on {domain} ({said})",
            "name the condition whose gate applies (Memory.search(gate=CONDITION); serve,"
            " mcp and solve: --gate-condition)",
        )
    return checks[0]


def _check(name: str, note: Mapping[str, Any], model: str, domain: str) -> GateCheck:
    rule = note.get("rule")
    decisions = note.get("decisions")
    per_domain = decisions.get(model) if isinstance(decisions, Mapping) else None
    verdict = per_domain.get(domain) if isinstance(per_domain, Mapping) else None
    if not isinstance(verdict, Mapping) or not isinstance(verdict.get("memory"), bool):
        return GateCheck("undecided", name, rule if isinstance(rule, str) else None)
    served: Verdict = "served" if verdict["memory"] else "withheld"
    return GateCheck(served, name, rule if isinstance(rule, str) else None)
