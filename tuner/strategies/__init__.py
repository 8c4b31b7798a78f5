"""Search strategies, chosen by name (`grid`, `random`, `bayes`, `nsga2`, `evolution`, ...)
or passed as objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tuner.strategies._bayes import NSGA2, Bayes
from tuner.strategies._evolution import Evolution
from tuner.strategies._grid import GridSearch
from tuner.strategies._pbt import PBT, PBTSegment
from tuner.strategies._random import RandomSearch
from tuner.strategies.base import WAIT, Proposal, Strategy, trial_seed

if TYPE_CHECKING:
    import optuna


class BayesGP(Bayes):
    """`bayes-gp`: Bayes with Optuna's Gaussian-process sampler by default."""

    name = "bayes-gp"

    def __init__(self, sampler: str | optuna.samplers.BaseSampler = "gp",
                 n_startup_trials: int = 10) -> None:
        super().__init__(sampler, n_startup_trials)


STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s for s in (GridSearch, RandomSearch, Bayes, BayesGP, NSGA2, Evolution, PBT)
}


def make_strategy(strategy: str | Strategy, options: Mapping[str, Any] | None = None) -> Strategy:
    """A strategy by name, with the `options` a study stored (`Strategy.options()`)."""
    if isinstance(strategy, Strategy):
        return strategy
    if strategy not in STRATEGIES:
        names = ", ".join(STRATEGIES)
        raise ValueError(f"strategy: unknown strategy {strategy!r} (choose from {names})")
    return STRATEGIES[strategy](**dict(options or {}))


def strategy_name(strategy: str | Strategy) -> str:
    if isinstance(strategy, str):
        return strategy
    return getattr(strategy, "name", type(strategy).__name__)


__all__ = [
    "NSGA2", "PBT", "WAIT", "Bayes", "BayesGP", "Evolution", "GridSearch", "PBTSegment",
    "Proposal", "RandomSearch", "STRATEGIES", "Strategy", "make_strategy", "strategy_name",
    "trial_seed",
]
