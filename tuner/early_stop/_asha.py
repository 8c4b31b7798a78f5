from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from tuner.early_stop.base import Curves, EarlyStop, best_so_far
from tuner.pareto import selection_order


def rungs(min_epochs: int, reduction_factor: int, max_epochs: int) -> list[int]:
    """Epoch counts at which successive halving judges a trial: r, r*eta, r*eta^2, ... < max."""
    out, epochs = [], min_epochs
    while epochs < max_epochs:
        out.append(epochs)
        epochs *= reduction_factor
    return out


def promotable(value: float | None, rivals: Iterable[float | None], reduction_factor: int) -> bool:
    """Asynchronous successive halving's test at one rung: is `value` within the top
    1/eta of the values that reached this rung so far (itself included)? With fewer than
    eta values, only the best so far goes on (as in Li et al. 2018 and Optuna)."""
    if value is None:
        return False
    ranked = sorted([v for v in rivals if v is not None] + [value], reverse=True)
    keep = max(1, len(ranked) // reduction_factor)
    return value >= ranked[keep - 1]


def promotable_by_fronts(point: Sequence[float] | None,
                         rivals: Iterable[Sequence[float] | None], reduction_factor: int) -> bool:
    """Multi-objective ASHA's test at one rung (Schmucker et al. 2021): is `point` among
    the top 1/eta of the points that reached this rung (itself included), ranked as NSGA-II
    ranks them: by non-dominated front, then by crowding distance within a front?"""
    if point is None:
        return False
    points = [p for p in rivals if p is not None] + [point]
    keep = max(1, len(points) // reduction_factor)
    return len(points) - 1 in selection_order(points)[:keep]


def asha_should_stop(number: int, epochs_done: int, curves: Curves, *, min_epochs: int,
                     reduction_factor: int, members: Iterable[int] | None = None) -> bool:
    """Stop at a rung unless promotable among `members` (all trials by default); with
    several objectives, by Pareto fronts of the objectives at the rung's epoch."""
    if epochs_done not in rungs(min_epochs, reduction_factor, curves.max_epochs):
        return False
    pool = set(curves.values) if members is None else set(members)
    if curves.vectors is not None:
        vectors = curves.vectors
        at_rung = [vectors[n][epochs_done - 1] for n in pool
                   if n != number and n in vectors and len(vectors[n]) >= epochs_done]
        mine = vectors.get(number, ())
        point = mine[epochs_done - 1] if len(mine) >= epochs_done else None
        return not promotable_by_fronts(point, at_rung, reduction_factor)
    rivals = [best_so_far(curves.values[n], epochs_done) for n in pool
              if n != number and n in curves.values and len(curves.values[n]) >= epochs_done]
    mine = best_so_far(curves.values.get(number, ()), epochs_done)
    return not promotable(mine, rivals, reduction_factor)


@dataclass(frozen=True)
class ASHA(EarlyStop):
    """Asynchronous successive halving (Li et al. 2018): at epochs r, r*eta, r*eta^2, ...
    a trial goes on only if it is in the top 1/eta of the trials that reached that rung.
    It is stopped for good, or, with `promotion`, paused there with its checkpoint until
    later arrivals rank it among the top 1/eta (the paper's promotion type)."""

    min_epochs: int = 1
    reduction_factor: int = 3
    max_epochs: int | None = None  # the study's epochs unless set
    promotion: bool = False  # pause at a rung and resume when promoted
    name = "asha"

    def __post_init__(self) -> None:
        if self.min_epochs < 1 or self.reduction_factor < 2:
            raise ValueError("min_epochs must be >= 1 and reduction_factor >= 2")

    def should_stop(self, number: int, epochs_done: int, curves: Curves) -> bool:
        if self.max_epochs is not None:
            curves = replace(curves, max_epochs=self.max_epochs)
        return asha_should_stop(number, epochs_done, curves, min_epochs=self.min_epochs,
                                reduction_factor=self.reduction_factor)


def log_ratio(high: int, low: int, base: int) -> int:
    """floor(log_base(high / low)), exactly for integers."""
    count = 0
    while low * base ** (count + 1) <= high:
        count += 1
    return count

