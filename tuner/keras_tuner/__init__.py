"""KerasTuner's API over this service: change `import keras_tuner` to

    import tuner.keras_tuner as keras_tuner

and a KerasTuner script runs unchanged, its trials and epochs stored in a SQL database
(`directory/project_name/tuner.db` by default), so `tuner trials`, `tuner dashboard` and
`tuner report` show them. Add what KerasTuner lacks as keyword arguments when wanted:
`workers=N`, `storage=URL`, `executor=`, `early_stop="asha"`, and the `PBT` tuner.
"""

from tuner.hyperparameters import HyperParameters
from tuner.keras_tuner import errors, oracles
from tuner.keras_tuner.hypermodel import HyperModel
from tuner.keras_tuner.objective import Objective
from tuner.keras_tuner.oracles import Oracle
from tuner.keras_tuner.trial import Trial
from tuner.keras_tuner.tuners import (
    PBT,
    BayesianOptimization,
    GridSearch,
    Hyperband,
    RandomSearch,
    Tuner,
)

__all__ = [
    "PBT", "BayesianOptimization", "GridSearch", "HyperModel", "HyperParameters", "Hyperband",
    "Objective", "Oracle", "RandomSearch", "Trial", "Tuner", "errors", "oracles",
]
