"""MemCollab memory: contrastive pairs, distilled constraints, taxonomy, store, retrieval."""

from memcollab.memory.record import Constraint, MemoryRecord

__all__ = ["Constraint", "MemoryRecord"]
