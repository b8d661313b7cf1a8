"""MemCollab memory: contrastive pairs, distilled constraints, taxonomy, store, retrieval."""

from memcollab.memory.build import BuildSummary, build_memory, pair_trajectories
from memcollab.memory.classify import Classifier, DomainClassifier, Label
from memcollab.memory.distill import Distiller, DistillResult, DistillStats
from memcollab.memory.pairs import Pair, PairingResult, make_pairs, own_pairs
from memcollab.memory.record import Constraint, MemoryRecord
from memcollab.memory.retrieve import Retrieved, Retriever
from memcollab.memory.store import MemoryStore, PostgresMemory, SQLiteMemory, open_memory
from memcollab.memory.taxonomy import Taxonomy, load_taxonomy

__all__ = [
    "BuildSummary",
    "Classifier",
    "Constraint",
    "DistillResult",
    "DistillStats",
    "Distiller",
    "DomainClassifier",
    "Label",
    "MemoryRecord",
    "MemoryStore",
    "Pair",
    "PairingResult",
    "PostgresMemory",
    "Retrieved",
    "Retriever",
    "SQLiteMemory",
    "Taxonomy",
    "build_memory",
    "load_taxonomy",
    "make_pairs",
    "open_memory",
    "own_pairs",
    "pair_trajectories",
]
