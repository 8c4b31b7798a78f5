from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tuner.early_stop._asha import asha_should_stop, log_ratio
from tuner.early_stop.base import Curves, EarlyStop


def bracket_weights(min_epochs: int, max_epochs: int, reduction_factor: int) -> list[float]:
    """Hyperband's brackets, most aggressive first: bracket s halves s times, starting at
    max_epochs / eta^s epochs, and gets ceil((s_max+1)/(s+1) * eta^s) of the trials."""
    s_max = log_ratio(max_epochs, min_epochs, reduction_factor)
    sizes = [math.ceil((s_max + 1) / (s + 1) * reduction_factor**s) for s in range(s_max, -1, -1)]
    total = sum(sizes)
    return [size / total for size in sizes]


def bracket_of(number: int, seed: int, weights: list[float]) -> int:
    """A trial's bracket, drawn from its number and the study seed: the same everywhere."""
    rng = np.random.default_rng([seed, number, 0x4B])
    return int(rng.choice(len(weights), p=weights))


@dataclass(frozen=True)
class Hyperband(EarlyStop):
    """Hyperband (Li et al. 2017): trials are spread over brackets of successive halving
    that start at different epoch counts, hedging between stopping early and late.
    Each bracket runs asynchronous successive halving among its own trials."""

    min_epochs: int = 1
    reduction_factor: int = 3
    promotion: bool = False  # pause at a rung and resume when promoted
    name = "hyperband"

    def __post_init__(self) -> None:
        if self.min_epochs < 1 or self.reduction_factor < 2:
            raise ValueError("min_epochs must be >= 1 and reduction_factor >= 2")

    def should_stop(self, number: int, epochs_done: int, curves: Curves) -> bool:
        weights = bracket_weights(self.min_epochs, curves.max_epochs, self.reduction_factor)
        bracket = bracket_of(number, curves.seed, weights)
        start = self.min_epochs * self.reduction_factor**bracket
        members = [n for n in curves.values if bracket_of(n, curves.seed, weights) == bracket]
        return asha_should_stop(number, epochs_done, curves, min_epochs=start,
                                reduction_factor=self.reduction_factor, members=members)
