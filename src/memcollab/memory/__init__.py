"""MemCollab memory: contrastive pairs, distilled constraints, taxonomy, store, retrieval.

`Memory` (memory/api.py) is the one front door; the rest is exported for extensions.
"""

from memcollab.memory.api import Memory
from memcollab.memory.build import BuildEvent, BuildSummary, build_memory
from memcollab.memory.classify import Classifier, DomainClassifier, Label
from memcollab.memory.distill import Distiller, DistillResult, DistillStats
from memcollab.memory.guidance import Guidance, Labeller, LabelLike
from memcollab.memory.pairs import (
    PAIRING_RULES,
    Pair,
    PairingResult,
    PairingRule,
    make_pairs,
    own_pairs,
    pair_by_rule,
    register_pairing,
)
from memcollab.memory.poison import PoisonError, PoisonVerdict, screen_record
from memcollab.memory.record import Constraint, MemoryRecord
from memcollab.memory.retrieve import STRATEGIES, Hit, Retrieved, Retriever, register_strategy
from memcollab.memory.store import (
    BACKENDS,
    MemoryStore,
    PostgresMemory,
    SQLiteMemory,
    open_memory,
    register_backend,
)
from memcollab.memory.taxonomy import Taxonomy, load_taxonomy
from memcollab.memory.utility import Estimate, UtilityPolicy, Withheld

__all__ = [
    "BACKENDS",
    "PAIRING_RULES",
    "STRATEGIES",
    "BuildEvent",
    "BuildSummary",
    "Classifier",
    "Constraint",
    "DistillResult",
    "DistillStats",
    "Distiller",
    "DomainClassifier",
    "Estimate",
    "Guidance",
    "Hit",
    "Label",
    "LabelLike",
    "Labeller",
    "Memory",
    "MemoryRecord",
    "MemoryStore",
    "Pair",
    "PairingResult",
    "PairingRule",
    "PoisonError",
    "PoisonVerdict",
    "PostgresMemory",
    "Retrieved",
    "Retriever",
    "SQLiteMemory",
    "Taxonomy",
    "UtilityPolicy",
    "Withheld",
    "build_memory",
    "load_taxonomy",
    "make_pairs",
    "open_memory",
    "own_pairs",
    "pair_by_rule",
    "register_backend",
    "register_pairing",
    "register_strategy",
    "screen_record",
]
