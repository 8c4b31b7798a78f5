"""KerasTuner's oracles: how a tuner proposes configurations and judges them.

Here an oracle names a strategy of this service (and, for Hyperband, an early-stopping
rule across trials) and reads the results from its tuner's study: the database holds the
trials, so `get_best_trials` is the study's ranking.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tuner.early_stop import EarlyStop, Hyperband
from tuner.early_stop._asha import log_ratio
from tuner.hyperparameters import HyperParameters
from tuner.keras_tuner.objective import create_objective
from tuner.space import Space
from tuner.strategies import PBT, Bayes, GridSearch, RandomSearch, Strategy

if TYPE_CHECKING:
    from tuner.keras_tuner.trial import Trial
    from tuner.keras_tuner.tuners import Tuner


class Oracle:
    def __init__(self, objective: Any = None, max_trials: int | None = None,
                 hyperparameters: HyperParameters | None = None, allow_new_entries: bool = True,
                 tune_new_entries: bool = True, seed: int | None = None,
                 max_retries_per_trial: int = 0, max_consecutive_failed_trials: int = 3) -> None:
        if max_trials is not None and max_trials < 1:
            raise ValueError(f"max_trials: {max_trials} must be at least 1")
        if max_retries_per_trial < 0 or max_consecutive_failed_trials < 1:
            raise ValueError("max_retries_per_trial must be >= 0, "
                             "max_consecutive_failed_trials >= 1")
        if hyperparameters is None and not (tune_new_entries and allow_new_entries):
            raise ValueError("tune_new_entries=False and allow_new_entries=False need the "
                             "space given as `hyperparameters`")
        self.objective = create_objective(objective)
        self.max_trials = max_trials
        self.hyperparameters = hyperparameters or HyperParameters()
        self.allow_new_entries, self.tune_new_entries = allow_new_entries, tune_new_entries
        self.seed = seed
        self.max_retries_per_trial = max_retries_per_trial
        self.max_consecutive_failed_trials = max_consecutive_failed_trials
        self.tuner: Tuner | None = None  # the tuner that reads results through it

    # -- what the study runs ------------------------------------------------------------
    def strategy(self) -> Strategy:
        raise NotImplementedError

    def early_stop(self) -> EarlyStop | None:
        return None

    def fit_overrides(self) -> dict[str, Any]:
        """What the oracle sets in every trial's fit arguments."""
        return {}

    def trial_budget(self, space: Space) -> int:
        return self.max_trials if self.max_trials is not None else 10

    def hp_options(self) -> dict[str, Any]:
        """How the user's `hyperparameters` shape the space (HyperParameters' options)."""
        if not len(self.hyperparameters.space):
            return {}
        return {"overrides": self.hyperparameters.space.to_dict(),
                "tune_new_entries": self.tune_new_entries,
                "allow_new_entries": self.allow_new_entries}

    # -- KerasTuner's reading methods -------------------------------------------------------
    def get_space(self) -> HyperParameters:
        return HyperParameters(self._tuner().space)

    def get_best_trials(self, num_trials: int = 1) -> list[Trial]:
        return self._tuner().best_trials(num_trials)

    def _tuner(self) -> Tuner:
        if self.tuner is None:
            raise RuntimeError("this oracle belongs to no tuner yet")
        return self.tuner


class RandomSearchOracle(Oracle):
    def strategy(self) -> Strategy:
        return RandomSearch()


class GridSearchOracle(Oracle):
    def strategy(self) -> Strategy:
        return GridSearch()

    def trial_budget(self, space: Space) -> int:
        """Every combination when `max_trials` is not set (KerasTuner's default)."""
        return self.max_trials if self.max_trials is not None else max(1, space.grid_size())


class BayesianOptimizationOracle(Oracle):
    """Optuna's multivariate TPE (`sampler="gp"`: its Gaussian process) after
    `num_initial_points` random trials. KerasTuner's `alpha` and `beta` tune its own GP:
    they are accepted for compatibility and not used."""

    def __init__(self, objective: Any = None, max_trials: int = 10,
                 num_initial_points: int | None = None, alpha: float = 1e-4, beta: float = 2.6,
                 seed: int | None = None, hyperparameters: HyperParameters | None = None,
                 allow_new_entries: bool = True, tune_new_entries: bool = True,
                 max_retries_per_trial: int = 0, max_consecutive_failed_trials: int = 3,
                 sampler: str = "tpe") -> None:
        super().__init__(objective, max_trials, hyperparameters, allow_new_entries,
                         tune_new_entries, seed, max_retries_per_trial,
                         max_consecutive_failed_trials)
        self.num_initial_points, self.alpha, self.beta = num_initial_points, alpha, beta
        self.sampler = sampler

    def strategy(self) -> Strategy:
        startup = self.num_initial_points if self.num_initial_points is not None else 10
        return Bayes(sampler=self.sampler, n_startup_trials=startup)


class HyperbandOracle(Oracle):
    """Hyperband as asynchronous successive halving in brackets (this service's `hyperband`
    rule): every trial may train `max_epochs`, and is stopped at a rung unless it is among
    the best 1/`factor` there. The trials are those of `hyperband_iterations` rounds of
    Hyperband's brackets."""

    def __init__(self, objective: Any = None, max_epochs: int = 100, factor: int = 3,
                 hyperband_iterations: int = 1, seed: int | None = None,
                 hyperparameters: HyperParameters | None = None,
                 allow_new_entries: bool = True, tune_new_entries: bool = True,
                 max_retries_per_trial: int = 0, max_consecutive_failed_trials: int = 3) -> None:
        super().__init__(objective, None, hyperparameters, allow_new_entries, tune_new_entries,
                         seed, max_retries_per_trial, max_consecutive_failed_trials)
        if max_epochs < 1 or factor < 2 or hyperband_iterations < 1:
            raise ValueError("max_epochs must be >= 1, factor >= 2, hyperband_iterations >= 1")
        self.max_epochs, self.factor = max_epochs, factor
        self.hyperband_iterations = hyperband_iterations

    def strategy(self) -> Strategy:
        return RandomSearch()

    def early_stop(self) -> EarlyStop:
        return Hyperband(min_epochs=1, reduction_factor=self.factor)

    def fit_overrides(self) -> dict[str, Any]:
        return {"epochs": self.max_epochs}

    def trial_budget(self, space: Space) -> int:
        s_max = log_ratio(self.max_epochs, 1, self.factor)
        per_round = sum(math.ceil((s_max + 1) / (s + 1) * self.factor**s)
                        for s in range(s_max + 1))
        return self.hyperband_iterations * per_round


class PBTOracle(Oracle):
    """Population-based training (this service's `PBT` strategy): `population` members
    (by default `max_trials`), each trained `epochs` (as search() gives them) in stretches
    of `interval` epochs; a member in the bottom `quantile` copies one of the top and
    explores the `mutable` parameters (by default those marked mutable)."""

    def __init__(self, objective: Any = None, population: int | None = None,
                 max_trials: int = 10, interval: int = 2, quantile: float = 0.25,
                 resample_probability: float = 0.25, mutable: list[str] | None = None,
                 seed: int | None = None, hyperparameters: HyperParameters | None = None,
                 allow_new_entries: bool = True, tune_new_entries: bool = True,
                 max_retries_per_trial: int = 0, max_consecutive_failed_trials: int = 3) -> None:
        super().__init__(objective, population or max_trials, hyperparameters,
                         allow_new_entries, tune_new_entries, seed, max_retries_per_trial,
                         max_consecutive_failed_trials)
        self.pbt = PBT(population=population or max_trials, interval=interval,
                       quantile=quantile, resample_probability=resample_probability,
                       mutable=mutable)

    def strategy(self) -> Strategy:
        return self.pbt
