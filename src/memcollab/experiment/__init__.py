"""Experiments: named conditions, the runner, paired statistics and the report."""

from memcollab.experiment.conditions import (
    CONDITION_KINDS,
    Condition,
    MemoryRecipe,
    make_condition,
    register_condition,
)
from memcollab.experiment.config import ExperimentConfig, load_experiment, parse_experiment
from memcollab.experiment.runner import Experiment, ProgressEvent
from memcollab.experiment.stats import compare_paired, mcnemar_exact, paired_bootstrap_ci

__all__ = [
    "CONDITION_KINDS",
    "Condition",
    "Experiment",
    "ExperimentConfig",
    "MemoryRecipe",
    "ProgressEvent",
    "compare_paired",
    "load_experiment",
    "make_condition",
    "mcnemar_exact",
    "paired_bootstrap_ci",
    "parse_experiment",
    "register_condition",
]
