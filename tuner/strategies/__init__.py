"""Search strategies, chosen by name (`grid`, `random`, `bayes`) or passed as objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tuner.strategies._bayes import Bayes
from tuner.strategies._grid import GridSearch
from tuner.strategies._pbt import PBT
from tuner.strategies._random import RandomSearch
from tuner.strategies.base import WAIT, Proposal, Strategy, trial_seed

STRATEGIES: dict[str, type[Strategy]] = {
    s.name: s for s in (GridSearch, RandomSearch, Bayes, PBT)
}


def make_strategy(strategy: str | Strategy, options: Mapping[str, Any] | None = None) -> Strategy:
    """A strategy by name, with the `options` a study stored (`Strategy.options()`)."""
    if isinstance(strategy, Strategy):
        return strategy
    options = dict(options or {})
    if strategy == "bayes-gp":
        strategy, options = "bayes", {**options, "sampler": "gp"}
    if strategy not in STRATEGIES:
        names = ", ".join([*STRATEGIES, "bayes-gp"])
        raise ValueError(f"strategy: unknown strategy {strategy!r} (choose from {names})")
    return STRATEGIES[strategy](**options)


def strategy_name(strategy: str | Strategy) -> str:
    if isinstance(strategy, str):
        return strategy
    return getattr(strategy, "name", type(strategy).__name__)


__all__ = [
    "PBT", "WAIT", "Bayes", "GridSearch", "Proposal", "RandomSearch", "STRATEGIES", "Strategy",
    "make_strategy", "strategy_name", "trial_seed",
]
