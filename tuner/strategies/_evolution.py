"""Regularized (aging) evolution (Real et al. 2019, "Regularized Evolution for Image
Classifier Architecture Search"), asynchronous.

Until `population` trials have finished with a result, configurations are drawn at random.
From then on the population is the `population` most recently finished complete trials:
each new result retires the oldest member, whatever its score, so a lucky early trial
cannot steer the search for ever. A proposal draws `sample_size` members at random, takes
the best of them (the tournament) and mutates it: one parameter gets another value, and
the parameters that change makes active or inactive follow. No proposal waits for a
running trial, so any number of workers stay busy.

Several objectives rank as NSGA-II does (front, then crowding, over the population);
with constraints, a feasible member beats an infeasible one, and of two infeasible ones
the smaller total violation wins (Deb's constraint domination). Each child records the
member it came from (`attrs["parent"]`) and the parameter it changed (`attrs["mutated"]`).
Everything is read from the study's trials, so a resumed study goes on from its database.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tuner.objectives import is_feasible, violations
from tuner.pareto import selection_order
from tuner.space import Fixed, Float, Int, Param, Space
from tuner.states import TrialState
from tuner.storage.records import Trial, signed
from tuner.strategies.base import Proposal, Strategy, sample_missing, trial_seed

#: draws of a continuous value before settling for one equal to the old (a point range)
_TRIES = 16


def varies(param: Param) -> bool:
    """Whether a mutation can give `param` another value: not a constant, more than one
    value to take."""
    if isinstance(param, Fixed):
        return False
    if isinstance(param, (Int, Float)) and param.step is None:
        return param.high > param.low
    return len(param.grid()) > 1


def same(a: Any, b: Any) -> bool:
    """Equal values of one type (a choice may hold both 1 and True); floats up to rounding,
    as a stepped grid computes them."""
    if type(a) is not type(b):
        return False
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) if isinstance(a, float) else a == b


def new_value(param: Param, value: Any, rng: np.random.Generator) -> Any:
    """A value of `param` other than `value`: another of its values for a discrete one
    (uniformly), a fresh draw for a continuous one (or a log-scaled integer, keeping its
    scale)."""
    continuous = isinstance(param, Float) or (isinstance(param, Int) and param.log)
    if continuous and param.step is None:
        for _ in range(_TRIES):
            drawn = param.sample(rng)
            if not same(drawn, value):
                return drawn
        if isinstance(param, Float):
            return drawn  # a range this narrow has nothing else to give
    if isinstance(param, Int) and param.step is None:  # every integer of the range, unlisted
        others = param.high - param.low + (0 if param.low <= value <= param.high else 1)
        drawn = param.low + int(rng.integers(others))
        return drawn + 1 if param.low <= value <= drawn else drawn
    others = [v for v in param.grid() if not same(v, value)]
    return others[int(rng.integers(len(others)))]


def mutate(params: Mapping[str, Any], space: Space,
           rng: np.random.Generator) -> tuple[dict[str, Any], str | None]:
    """`params` with one varying active parameter changed, and the name of that parameter
    (None when none varies: then a fresh draw). Walked in order like `fill`, parents first:
    a value the change makes inactive is dropped, a newly active parameter is drawn."""
    current = space.active(params)  # values of parameters since removed do not count
    names = [p.name for p in space if p.name in current and varies(p)]
    if not names:
        return space.sample(rng), None
    name = names[int(rng.integers(len(names)))]
    changed = {**current, name: new_value(space[name], current[name], rng)}
    child: dict[str, Any] = {}
    for param in space:
        if param.is_active(child):
            child[param.name] = (changed[param.name] if param.name in changed
                                 else param.sample(rng))
    return child, name


class Evolution(Strategy):
    """Aging evolution: a population of the `population` latest results; each proposal
    mutates the best of `sample_size` members drawn at random."""

    name = "evolution"

    def __init__(self, population: int = 10, sample_size: int = 3) -> None:
        for label, value in (("population", population), ("sample_size", sample_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{label}: {value!r} must be an integer")
        if population < 2:
            raise ValueError(f"population: {population} must be at least 2 (a tournament "
                             "needs members to choose between)")
        if not 1 <= sample_size <= population:
            raise ValueError(f"sample_size: {sample_size} must be between 1 and the "
                             f"population ({population})")
        self.population = int(population)
        self.sample_size = int(sample_size)

    def options(self) -> dict[str, Any]:
        return {"population": self.population, "sample_size": self.sample_size}

    def start(self, space: Space, *, direction: str, seed: int, trials: Sequence[Trial],
              settings: Mapping[str, Any] | None = None) -> None:
        super().start(space, direction=direction, seed=seed, trials=trials, settings=settings)
        # The latest members, oldest first, keyed by when they finished; rebuilt from the
        # history, so a resumed study breeds from the population its database holds.
        self._members: list[tuple[tuple[float, int], Trial]] = []
        for trial in trials:
            self.tell(trial)

    @property
    def members(self) -> list[Trial]:
        """The population, oldest first."""
        return [trial for _, trial in self._members]

    def _usable(self, trial: Trial) -> bool:
        point = signed(self.objectives, trial)
        return (trial.state == TrialState.COMPLETE and point is not None
                and all(math.isfinite(x) for x in point))

    def tell(self, trial: Trial) -> None:
        if not self._usable(trial) or any(t.number == trial.number for t in self.members):
            return
        finished = math.inf if trial.finished_at is None else trial.finished_at
        bisect.insort(self._members, ((finished, trial.number), trial), key=lambda m: m[0])
        del self._members[:-self.population]  # aging: the oldest leave

    def ask(self, number: int, space: Space) -> dict[str, Any] | Proposal:
        rng = np.random.default_rng(trial_seed(self.seed, number))
        members = self.members
        if len(members) < self.population:  # as random search draws trial `number`
            return space.sample(rng)
        rank = self.ranks(members)
        drawn = rng.choice(len(members), size=self.sample_size, replace=False)
        winner = members[min(drawn.tolist(), key=lambda i: rank[i])]
        params, mutated = mutate(winner.params, space, rng)
        return Proposal(params, {"parent": winner.number, "mutated": mutated})

    def ranks(self, members: Sequence[Trial]) -> list[int]:
        """Each member's place, 0 the best: feasible ones first, by value (one objective)
        or by front and crowding among the feasible (several); then infeasible ones by
        total violation, then as their objectives order them."""
        feasible = [i for i, t in enumerate(members)
                    if is_feasible(t.measures, self.constraints)]
        infeasible = sorted(set(range(len(members))) - set(feasible))
        order = [feasible[k] for k in self._order([members[i] for i in feasible])]
        by_objectives = self._order([members[i] for i in infeasible])
        place = {infeasible[k]: p for p, k in enumerate(by_objectives)}
        order += sorted(infeasible, key=lambda i: (self._violation(members[i]), place[i]))
        rank = [0] * len(members)
        for position, i in enumerate(order):
            rank[i] = position
        return rank

    def _order(self, trials: Sequence[Trial]) -> list[int]:
        """Indices of `trials`, best first by their objectives: by value (a tie to the
        younger, fresher member) or, with several, by front and then crowding."""
        points = [signed(self.objectives, t) or () for t in trials]
        if len(self.objectives) == 1:
            return sorted(range(len(trials)), key=lambda i: (-points[i][0], -trials[i].number))
        return selection_order(points)

    def _violation(self, trial: Trial) -> float:
        return sum(max(v, 0.0) for v in violations(trial.measures, self.constraints))

    def complete(self, number: int, params: Mapping[str, Any], space: Space) -> dict[str, Any]:
        # Drawn, as the parameters a mutation makes active are, from the trial's own
        # generator: the same values whenever the coordinator learns of the new ones.
        return sample_missing(params, space, np.random.default_rng(trial_seed(self.seed, number)))
