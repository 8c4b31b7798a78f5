from __future__ import annotations

import statistics
from dataclasses import dataclass

from tuner.early_stop.base import Curves, EarlyStop, best_so_far


@dataclass(frozen=True)
class MedianStop(EarlyStop):
    """The median stopping rule: stop a trial whose best value so far is worse than the
    median of the other trials' best values over the same number of epochs.

    Only trials that reached that many epochs (or finished) count, and nothing is
    stopped before `warmup_epochs` epochs or while fewer than `min_trials` compare.
    """

    warmup_epochs: int = 2
    min_trials: int = 4
    name = "median"

    def __post_init__(self) -> None:
        if self.warmup_epochs < 1 or self.min_trials < 1:
            raise ValueError("warmup_epochs and min_trials must be at least 1")

    def should_stop(self, number: int, epochs_done: int, curves: Curves) -> bool:
        if epochs_done < self.warmup_epochs:
            return False
        others = [
            best_so_far(curve, epochs_done)
            for other, curve in curves.values.items()
            if other != number and (len(curve) >= epochs_done or other in curves.finished)
        ]
        others = [v for v in others if v is not None]
        if len(others) < self.min_trials:
            return False
        mine = best_so_far(curves.values.get(number, ()), epochs_done)
        return mine is None or mine < statistics.median(others)
