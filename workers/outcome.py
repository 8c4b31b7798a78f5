"""What running a trial yields, and the Keras-free path: a plain `objective(hp)`."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tuner.hyperparameters import HyperParameters
from tuner.space import Space


class TrialLost(Exception):
    """The worker's lease on the trial was taken away while it trained."""


class CheckpointUnavailable(Exception):
    """The artifact store could not be read: the trial goes back to the queue, retried."""


@dataclass
class Outcome:
    value: float | None
    best_epoch: int | None
    params: dict[str, Any]
    space: Space = field(default_factory=Space)
    pruned: bool = False
    paused: bool = False  # at a rung, checkpointed, until the coordinator promotes it
    attrs: dict[str, Any] | None = None  # recorded on the trial (each execution's curve)
    measures: dict[str, float] | None = None  # what the study's objectives and constraints read


def run_objective(objective: Callable[[Any], Any], space: Space, params: Mapping[str, Any], *,
                  metric: str, seed: int, measured: Sequence[str] = ()) -> Outcome:
    """Call a study's `objective(hp)`: it returns the metric's value, or a mapping holding
    it (and whatever else the study's objectives and constraints, `measured`, read), or
    the values of `measured` in order. Nothing is imported beyond the
    objective's own needs, so such trials cost little."""
    random.seed(seed)
    hp = HyperParameters(space, params)
    returned = objective(hp)
    names = list(measured) or [metric]
    if isinstance(returned, (list, tuple)):
        if len(returned) != len(names):
            raise ValueError(f"objective returned {len(returned)} values for {names!r}")
        returned = dict(zip(names, returned, strict=False))
    if isinstance(returned, Mapping):
        if not measured and metric not in returned:
            raise KeyError(f"objective returned {sorted(returned)}, without {metric!r}")
        # What it lacks of several objectives or constraints, the worker says (and stops).
        measures = {n: float(returned[n]) for n in names if n in returned}
        value = measures.get(metric)
    else:
        value = float(returned)
        measures = {metric: value}
    return Outcome(value=value, best_epoch=None, params=dict(hp.values),
                   space=hp.space, measures=measures if measured else None)
