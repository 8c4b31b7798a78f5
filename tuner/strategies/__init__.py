"""Search strategies, chosen by name (`grid`, `random`, `bayes`) or passed as objects."""

from __future__ import annotations

from tuner.strategies._bayes import Bayes
from tuner.strategies._grid import GridSearch
from tuner.strategies._pbt import PBT
from tuner.strategies._random import RandomSearch
from tuner.strategies.base import WAIT, Proposal, Strategy, trial_seed

STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s for s in (GridSearch, RandomSearch, Bayes, PBT)
}


def make_strategy(strategy: str | Strategy) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    if strategy == "bayes-gp":
        return Bayes(sampler="gp")
    try:
        return STRATEGIES[strategy]()
    except KeyError:
        names = ", ".join([*STRATEGIES, "bayes-gp"])
        raise ValueError(f"strategy: unknown strategy {strategy!r} (choose from {names})") from None


def strategy_name(strategy: str | Strategy) -> str:
    if isinstance(strategy, str):
        return strategy
    return getattr(strategy, "name", type(strategy).__name__)


__all__ = [
    "PBT", "WAIT", "Bayes", "GridSearch", "Proposal", "RandomSearch", "STRATEGIES", "Strategy",
    "make_strategy", "strategy_name", "trial_seed",
]
