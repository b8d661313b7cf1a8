"""TEMPORARY: record statuses until the memory layer's own API lands (Memory.status,
Memory.release, Memory.add(status=...)). Until then "quarantined" is a flag whose reason
starts with QUARANTINE (withheld from retrieval like every flag). Removed at the merge."""

from __future__ import annotations

from typing import Any

QUARANTINE = "quarantined: "


def status_of(memory: Any, record_id: str) -> str:
    if hasattr(memory, "status"):
        return str(memory.status(record_id))
    reason = memory.store.flagged().get(record_id)
    if reason is None:
        return "active"
    return "quarantined" if reason.startswith(QUARANTINE) else "flagged"


def add_with_status(memory: Any, record: Any, status: str, reason: str, actor: str) -> bool:
    if status == "active":
        return bool(memory.add(record, screen=False))
    try:
        return bool(memory.add(record, screen=False, status=status, reason=reason, actor=actor))
    except TypeError:
        created = bool(memory.store.add(record))
        if created:
            memory.store.flag(record.id, QUARANTINE + reason, actor)
        return created


def release(memory: Any, record_id: str, reason: str, actor: str) -> bool:
    if hasattr(memory, "release"):
        return bool(memory.release(record_id, reason, actor))
    if status_of(memory, record_id) != "quarantined":
        return False
    return bool(memory.store.unflag(record_id, reason, actor))
