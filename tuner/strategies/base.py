"""The strategy interface: propose configurations (`ask`), learn from results (`tell`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from tuner.objectives import Objective, parse_constraints, sign_of
from tuner.space import Param, Space
from tuner.storage.records import Trial


def trial_seed(seed: int, number: int) -> int:
    """A seed for trial `number` of a study seeded with `seed`: the same in any process."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0] % (2**31 - 1))


def lacking(params: Mapping[str, Any], space: Space) -> bool:
    """Whether `params` has no value for a parameter of `space` that it makes active."""
    return any(p.name not in params and p.is_active(params) for p in space)


def fill(params: Mapping[str, Any], space: Space,
         value: Callable[[Param], Any]) -> dict[str, Any]:
    """`params` plus `value(param)` for each active parameter of `space` it lacks, walked in
    order (parents first), so a new value may make further parameters active."""
    values = dict(params)
    for param in space:
        if param.name not in values and param.is_active(values):
            values[param.name] = value(param)
    return values


def sample_missing(params: Mapping[str, Any], space: Space,
                   rng: np.random.Generator) -> dict[str, Any]:
    """`params` completed with draws from `rng`. The whole space is drawn, in order, and new
    parameters come after those they grew from: for `params` drawn by this same generator
    from the smaller space, the result is what drawing the grown space gives."""
    drawn = space.sample(rng)
    return fill(params, space, lambda p: drawn[p.name] if p.name in drawn else p.sample(rng))


@dataclass(frozen=True)
class Proposal:
    """A configuration plus what the strategy wants recorded on the trial (its `attrs`)."""

    params: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)


class _Wait:
    def __repr__(self) -> str:
        return "WAIT"


#: `ask`'s answer when nothing can start now but more will once running trials finish.
WAIT: Any = _Wait()


class Strategy(ABC):
    """Proposes configurations for a study.

    The coordinator calls `start` once with the study's history (finished trials and
    those still in flight), so a resumed or restarted study picks up where it was;
    then `ask` for each new trial, `complete` for each queued trial the space outgrew,
    and `tell` as each trial finishes.
    """

    name: ClassVar[str]
    #: whether results shape later proposals; one that does not may be queued far ahead
    learns: ClassVar[bool] = True
    #: whether it can search a study with several objectives or with constraints
    multi_objective: ClassVar[bool] = True

    def options(self) -> dict[str, Any]:
        """The constructor arguments that make this strategy, stored with the study so a
        resume (`make_strategy(name, options)`) runs the same one."""
        return {}

    def check(self, space: Space) -> None:  # noqa: B027 - optional hook
        """Raise a `ValueError` or `SpaceError` if this strategy cannot search `space`: called
        before a study is created, so a refused run leaves nothing in the database."""

    def start(self, space: Space, *, direction: str, seed: int, trials: Sequence[Trial],
              settings: Mapping[str, Any] | None = None) -> None:
        self.check(space)
        self.direction = direction
        self.seed = seed
        self.settings = dict(settings or {})
        stored = self.settings.get("objectives")
        self.objectives = (tuple(Objective(n, d) for n, d in stored) if stored
                           else (Objective("value", direction),))
        self.constraints = parse_constraints(self.settings.get("constraints"))

    @property
    def sign(self) -> int:
        """+1 when maximizing, -1 when minimizing, once started: multiply to always maximize."""
        return sign_of(self.direction)

    def trial_budget(self, requested: int) -> int:
        """How many trials `optimize(trials=requested)` means for this strategy."""
        return requested

    @abstractmethod
    def ask(self, number: int, space: Space) -> dict[str, Any] | Proposal | None:
        """Trial `number`'s parameters (or a `Proposal`); `WAIT` if nothing can start
        until running trials finish; None when the strategy has nothing more to try."""

    def complete(self, number: int, params: Mapping[str, Any], space: Space) -> dict[str, Any]:
        """The values for trial `number`, queued with `params` before the space grew to
        `space` (parameters met while trials ran): `params` plus values for the active
        parameters it lacks. The coordinator stores them if the trial is still queued; by
        default they are the parameters' defaults, what a worker would use."""
        return fill(params, space, lambda param: param.initial)

    def tell(self, trial: Trial) -> None:  # noqa: B027 - optional hook
        """Learn from a finished trial."""
