from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState as OptunaState

from tuner.errors import TunerError
from tuner.objectives import violations
from tuner.space import Bool, Choice, Fixed, Float, Int, Param, Space
from tuner.states import TrialState
from tuner.storage.records import Trial, values_of
from tuner.strategies.base import Strategy, fill, trial_seed

log = logging.getLogger(__name__)

_STATES = {
    TrialState.COMPLETE: OptunaState.COMPLETE,
    TrialState.PRUNED: OptunaState.PRUNED,
    TrialState.FAILED: OptunaState.FAIL,
}


def distribution(param: Param) -> BaseDistribution | None:
    """Optuna's distribution for a parameter; None for a constant."""
    if isinstance(param, Fixed):
        return None
    if isinstance(param, Int) and not (param.log and param.step):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step or 1)
    if isinstance(param, Float) and not (param.log and param.step):
        return FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, (Choice, Bool, Int, Float)):  # incl. KerasTuner's log-with-step grids
        return CategoricalDistribution(param.grid())
    raise TypeError(f"no distribution for {param!r}")


def suggest(otrial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, IntDistribution):
        return otrial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, FloatDistribution):
        return otrial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return otrial.suggest_categorical(name, dist.choices)


def suggested(otrial: optuna.Trial, param: Param) -> Any:
    """The parameter's value on an Optuna trial (a constant's own value)."""
    dist = distribution(param)
    return param.initial if dist is None else suggest(otrial, param.name, dist)


def _last_value(trial: Trial) -> dict[int, float]:
    """A pruned trial's best value, as the intermediate value of its last epoch."""
    if trial.state != TrialState.PRUNED or trial.value is None:
        return {}
    return {max(trial.epochs - 1, 0): trial.value}


_BROKEN = 1e30  # a constraint on what a trial never measured: broken, by a finite amount


class Bayes(Strategy):
    """Bayesian optimisation with Optuna's samplers, owned by the coordinator.

    `sampler="tpe"` (default) is multivariate TPE over conditional groups with a
    constant liar, so trials still running steer new proposals away from their points;
    `sampler="gp"` is Optuna's Gaussian-process sampler (needs PyTorch). Any Optuna
    sampler object works too. With several objectives both model each (MOTPE, or one GP
    per objective with expected hypervolume improvement); with constraints, both sample
    where the constraints are likely kept (each trial's constraint values, <= 0 where
    kept, are set on its Optuna trial).
    """

    name = "bayes"
    samplers: tuple[str, ...] = ("tpe", "gp")

    def __init__(self, sampler: str | optuna.samplers.BaseSampler = "tpe",
                 n_startup_trials: int = 10) -> None:
        if isinstance(sampler, str) and sampler not in self.samplers:
            raise ValueError(f"sampler: {sampler!r} must be "
                             + ", ".join(map(repr, self.samplers)) + " or an Optuna sampler")
        self.sampler = sampler
        self.n_startup_trials = n_startup_trials

    def options(self) -> dict[str, Any]:
        if not isinstance(self.sampler, str):
            return {"n_startup_trials": self.n_startup_trials}  # an object is not storable
        return {"sampler": self.sampler, "n_startup_trials": self.n_startup_trials}

    def _make_sampler(self, seed: int, resumed: bool) -> optuna.samplers.BaseSampler:
        if not isinstance(self.sampler, str):
            if resumed:  # its seeded generator would replay the study's first proposals
                self.sampler.reseed_rng()
            return self.sampler
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if self.sampler == "tpe":
                return optuna.samplers.TPESampler(
                    seed=seed, multivariate=True, group=True, constant_liar=True,
                    n_startup_trials=self.n_startup_trials,
                )
            try:
                import torch  # noqa: F401
            except ImportError:
                raise TunerError(
                    "the GP sampler needs PyTorch: pip install 'keras-tuner-service[gp]'"
                ) from None
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=self.n_startup_trials)

    def _violations(self, trial: Trial) -> dict[str, float]:
        """The trial's constraint values as Optuna takes them: <= 0 where kept."""
        return {c.name: min(v, _BROKEN) for c, v in zip(
            self.constraints, violations(trial.measures, self.constraints), strict=True)}

    def _result(self, trial: Trial) -> list[float] | None:
        """The trial's value of each objective, as Optuna is told it; None if it lacks one."""
        values = values_of(trial)
        if values is None or len(values) != len(self.objectives) or None in values:
            return None
        return list(values)  # type: ignore[arg-type]

    def start(self, space: Space, *, direction: str, seed: int, trials: Sequence[Trial],
              settings: Mapping[str, Any] | None = None) -> None:
        super().start(space, direction=direction, seed=seed, trials=trials, settings=settings)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # The sampler's generator is seeded from where the study is (its next trial number),
        # not from its start: a resumed study must not replay its first random proposals.
        first = max((t.number for t in trials), default=-1) + 1
        sampler = self._make_sampler(trial_seed(seed, first), resumed=first > 0)
        self._study = optuna.create_study(
            directions=[o.direction for o in self.objectives], sampler=sampler)
        self._running: dict[int, optuna.Trial] = {}
        primed = 0
        for trial in trials:
            params = space.active(trial.params)
            dists = {n: d for n in params if (d := distribution(space[n])) is not None}
            params = {n: params[n] for n in dists}
            try:
                if trial.state.is_finished():
                    state = _STATES[trial.state]
                    values = self._result(trial)
                    if state == OptunaState.COMPLETE and values is None:
                        state = OptunaState.FAIL  # a NaN result is stored as NULL
                    judged = state in (OptunaState.COMPLETE, OptunaState.PRUNED)
                    self._study.add_trial(optuna.trial.create_trial(
                        params=params, distributions=dists, state=state,
                        values=values if state == OptunaState.COMPLETE else None,
                        intermediate_values=self._intermediate(trial),
                        constraints=self._violations(trial) if judged and self.constraints
                        else None,
                    ))
                else:  # still in flight: keep it as a running point for the constant liar
                    self._study.enqueue_trial(params, skip_if_exists=False)
                    self._running[trial.number] = self._suggest(self._study.ask(), space)[0]
                primed += 1
            except ValueError as exc:  # the space changed since that trial ran
                log.warning("trial %d left out of the sampler's history: %s", trial.number, exc)
        log.debug("bayes primed with %d of %d trials", primed, len(trials))

    def _suggest(self, otrial: optuna.Trial, space: Space) -> tuple[optuna.Trial, dict[str, Any]]:
        return otrial, fill({}, space, lambda param: suggested(otrial, param))

    def ask(self, number: int, space: Space) -> dict[str, Any]:
        otrial, values = self._suggest(self._study.ask(), space)
        self._running[number] = otrial
        return values

    def complete(self, number: int, params: Mapping[str, Any], space: Space) -> dict[str, Any]:
        otrial = self._running.get(number)
        if otrial is None:  # not a trial of this sampler's (left out of its history)
            return super().complete(number, params, space)
        # On the trial's own Optuna trial, so the sampler learns them with its result.
        return fill(params, space, lambda param: suggested(otrial, param))

    def _intermediate(self, trial: Trial) -> dict[int, float]:
        # Optuna takes intermediate values of single-objective studies only.
        return _last_value(trial) if len(self.objectives) == 1 else {}

    def tell(self, trial: Trial) -> None:
        otrial = self._running.pop(trial.number, None)
        if otrial is None:
            return
        for name, value in self._violations(trial).items():  # read by the sampler
            otrial.set_constraint(name, value)
        values = self._result(trial)
        if trial.state == TrialState.COMPLETE and values is not None:
            self._study.tell(otrial, values)
        elif trial.state == TrialState.PRUNED:
            # Optuna's samplers rank a pruned trial by its last reported value and step.
            for step, value in self._intermediate(trial).items():
                otrial.report(value, step)
            self._study.tell(otrial, state=OptunaState.PRUNED)
        else:
            self._study.tell(otrial, state=OptunaState.FAIL)


class NSGA2(Bayes):
    """`nsga2`: Optuna's NSGA-II sampler (Deb et al. 2002), constraint-aware: generations
    of `population_size` trials, parents chosen by non-dominated rank and crowding,
    uniform crossover and mutation. The default population is smaller than Optuna's 50
    so that a budget of a few dozen Keras trials still sees several generations."""

    name = "nsga2"
    samplers = ("nsga2",)

    def __init__(self, sampler: str | optuna.samplers.BaseSampler = "nsga2",
                 population_size: int = 10) -> None:
        if population_size < 2:
            raise ValueError(f"population_size: {population_size} must be at least 2")
        super().__init__(sampler)
        self.population_size = population_size

    def options(self) -> dict[str, Any]:
        return {"population_size": self.population_size}

    def _make_sampler(self, seed: int, resumed: bool) -> optuna.samplers.BaseSampler:
        if not isinstance(self.sampler, str):
            return super()._make_sampler(seed, resumed)
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=self.population_size)
