"""The strategy interface: propose configurations (`ask`), learn from results (`tell`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from tuner.space import Space
from tuner.storage.records import Trial


def trial_seed(seed: int, number: int) -> int:
    """A seed for trial `number` of a study seeded with `seed`: the same in any process."""
    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0] % (2**31 - 1))


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
    then `ask` for each new trial and `tell` as each trial finishes.
    """

    name: ClassVar[str]
    #: whether results shape later proposals; one that does not may be queued far ahead
    learns: ClassVar[bool] = True

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

    def trial_budget(self, requested: int) -> int:
        """How many trials `optimize(trials=requested)` means for this strategy."""
        return requested

    @abstractmethod
    def ask(self, number: int, space: Space) -> dict[str, Any] | Proposal | None:
        """Trial `number`'s parameters (or a `Proposal`); `WAIT` if nothing can start
        until running trials finish; None when the strategy has nothing more to try."""

    def tell(self, trial: Trial) -> None:  # noqa: B027 - optional hook
        """Learn from a finished trial."""
