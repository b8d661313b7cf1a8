"""Tasks, dataset loaders, answer checkers and the sandbox for model-written code."""

from memcollab.tasks.task import Domain, Task

__all__ = ["Domain", "Task"]
