"""KerasTuner's `Trial`, and what KerasTuner makes of the value a trial returns."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

from tuner.hyperparameters import HyperParameters

_STATUS = {"COMPLETE": "COMPLETED", "PRUNED": "STOPPED", "FAILED": "FAILED",
           "RUNNING": "RUNNING", "QUEUED": "IDLE"}


class Trial:
    """One configuration: `trial.hyperparameters`, `trial.trial_id`, and once it ran,
    `score`, `best_step` (the best epoch, counted from 0 as KerasTuner does) and `status`."""

    def __init__(self, trial_id: str, hyperparameters: HyperParameters, *,
                 status: str = "RUNNING", score: float | None = None,
                 best_step: int | None = None, message: str | None = None,
                 callbacks: Callable[[int], list[Any]] | None = None) -> None:
        self.trial_id, self.hyperparameters = trial_id, hyperparameters
        self.status, self.score, self.best_step, self.message = status, score, best_step, message
        self._callbacks = callbacks

    @classmethod
    def from_stored(cls, trial: Any, hyperparameters: HyperParameters) -> Trial:
        return cls(str(trial.number), hyperparameters, status=_STATUS[trial.state.value],
                   score=trial.value, best_step=trial.best_epoch, message=trial.error_summary)

    def callbacks(self, execution: int = 0) -> list[Any]:
        """The callbacks a fit of this trial needs (its epochs reported to the study, its
        best weights kept); `Tuner.run_trial` adds them to every execution's fit."""
        return self._callbacks(execution) if self._callbacks is not None else []

    def summary(self) -> None:
        """Print the trial as KerasTuner does."""
        print(f"Trial {self.trial_id} summary")
        print("Hyperparameters:")
        if self.hyperparameters.values:
            for name, value in self.hyperparameters.values.items():
                print(f"{name}:", value)
        else:
            print("default configuration")
        if self.score is not None:
            print(f"Score: {self.score}")
        if self.message is not None:
            print(self.message)

    def __repr__(self) -> str:
        return f"Trial({self.trial_id!r}, {self.hyperparameters.values}, score={self.score})"


def result_value(returned: Any, metric: str, sign: int) -> tuple[float | None, int | None]:
    """The objective's value in what `run_trial` (or `HyperModel.fit`) returned, and its
    epoch: a number is the value; a dict holds it under the objective's name; a History
    gives its best epoch's; a list (one per execution) gives the mean. None: nothing."""
    if returned is None:
        return None, None
    if isinstance(returned, (list, tuple)):
        values = [v for v, _ in (result_value(r, metric, sign) for r in returned)
                  if v is not None]
        if len(returned) == 1:
            return result_value(returned[0], metric, sign)
        return (sum(values) / len(values) if values else None), None
    if isinstance(returned, numbers.Real) or getattr(returned, "shape", None) == ():
        return float(returned), None
    if isinstance(returned, Mapping):
        if metric not in returned:
            raise KeyError(f"the objective {metric!r} is not among what the trial returned "
                           f"({', '.join(map(str, returned))})")
        return float(returned[metric]), None
    history = getattr(returned, "history", None)
    if isinstance(history, Mapping):
        if metric not in history:
            raise KeyError(f"the objective {metric!r} is not among the metrics fit logged "
                           f"({', '.join(history)}); name one of them as the objective")
        epochs = [(sign * float(v), -i, float(v), i) for i, v in enumerate(history[metric])
                  if math.isfinite(float(v))]
        if not epochs:
            return None, None
        _, _, value, epoch = max(epochs)
        return value, epoch
    raise TypeError(f"a trial returned {type(returned).__name__}: return a History, a number, "
                    "a dict of values, or a list of those (one per execution)")
