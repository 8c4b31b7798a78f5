from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tuner.space import Space, canonical
from tuner.storage.records import Trial
from tuner.strategies.base import Strategy


class GridSearch(Strategy):
    """Every combination of a finite space once, in order; done when all were tried.

    What was tried is read from the study's trials, so a resumed grid skips them, and a
    space that grows (parameters met during a trial) extends the grid without repeats.
    """

    name = "grid"
    learns = False

    def check(self, space: Space) -> None:
        space.grid_size()  # a float without step fails here, before any trial runs

    def start(self, space: Space, *, direction: str, seed: int, trials: Sequence[Trial],
              settings: Mapping[str, Any] | None = None) -> None:
        super().start(space, direction=direction, seed=seed, trials=trials, settings=settings)
        self._tried = {canonical(space.active(t.params)) for t in trials}
        self._space: Space | None = None

    def ask(self, number: int, space: Space) -> dict[str, Any] | None:
        if space != self._space:  # first call, or the space grew: walk the new grid
            self._space, self._pending = space.copy(), space.grid()
        for values in self._pending:
            key = canonical(values)
            if key not in self._tried:
                self._tried.add(key)
                return values
        return None

    def tell(self, trial: Trial) -> None:
        # A trial may have met new parameters; its stored values are what it really ran.
        self._tried.add(canonical(trial.params))
