"""Hyperparameter search for Keras models, with a SQL database behind every study.

    from tuner import Study, Space, Int, Float, Choice
"""

from tuner.coordinator import CoordinatorOptions, Interrupted, Progress, TooManyFailures
from tuner.definition import StudyDefinition, load_definition
from tuner.errors import DefinitionError, SpaceError, StorageError, StudyNotFound, TunerError
from tuner.executors import Executor, InProcess, NoWorkers
from tuner.hyperparameters import HyperParameters
from tuner.space import Bool, Choice, Fixed, Float, Int, Space
from tuner.states import TrialState
from tuner.storage import Storage, Trial
from tuner.strategies import PBT, Bayes, GridSearch, RandomSearch, Strategy
from tuner.study import Study, list_workers

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name == "RayExecutor":  # lives with the workers; Ray itself loads only when used
        from workers.ray_cluster import RayExecutor

        return RayExecutor
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")


__all__ = [
    "Bayes", "Bool", "Choice", "CoordinatorOptions", "DefinitionError", "Executor", "Fixed",
    "Float", "GridSearch", "HyperParameters", "InProcess", "Int", "Interrupted", "NoWorkers",
    "PBT", "Progress", "RandomSearch", "RayExecutor", "Space", "SpaceError", "Storage",
    "StorageError", "Strategy", "Study", "StudyDefinition", "StudyNotFound", "TooManyFailures",
    "Trial", "TrialState", "TunerError", "list_workers", "load_definition",
]
