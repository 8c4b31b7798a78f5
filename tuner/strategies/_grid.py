from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

from tuner.space import Space, canonical
from tuner.storage.records import Trial
from tuner.strategies.base import Strategy, fill, lacking


def _initial(values: Mapping[str, Any], space: Space) -> dict[str, Any]:
    """What a trial queued with `values` runs in `space`: the defaults of what it lacks."""
    return fill(values, space, lambda param: param.initial)


def _expansions(values: Mapping[str, Any], space: Space) -> Iterator[dict[str, Any]]:
    """The configurations of `space`'s grid that keep `values`, in grid order."""
    params = list(space)

    def expand(index: int, values: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if index == len(params):
            yield values
            return
        param = params[index]
        if param.name in values or not param.is_active(values):
            yield from expand(index + 1, values)
            return
        for value in param.grid():
            yield from expand(index + 1, {**values, param.name: value})

    return expand(0, dict(values))


class GridSearch(Strategy):
    """Every combination of a finite space once, in order; done when all were tried.

    What was tried is read from the study's trials, so a resumed grid skips them, and a
    space that grows (parameters met during a trial) extends the grid without repeats:
    a trial queued before is completed with its defaults or, if those were tried, the first
    expansion not tried yet; one already running keeps the defaults it meets, which the
    grid then does not propose again.
    """

    name = "grid"
    learns = False

    def check(self, space: Space) -> None:
        space.grid_size()  # a float without step fails here, before any trial runs

    def start(self, space: Space, *, direction: str, seed: int, trials: Sequence[Trial],
              settings: Mapping[str, Any] | None = None) -> None:
        super().start(space, direction=direction, seed=seed, trials=trials, settings=settings)
        self._tried = {canonical(space.active(t.params)) for t in trials}
        # Unfinished trials' values, and the defaults reserved for those that lack some.
        self._open = {t.number: dict(t.params) for t in trials if not t.state.is_finished()}
        self._reserved: dict[int, tuple[tuple[str, str], ...]] = {}
        self._space: Space | None = None

    def ask(self, number: int, space: Space) -> dict[str, Any] | None:
        if space != self._space:  # first call, or the space grew: walk the new grid
            self._space, self._pending = space.copy(), space.grid()
            for other, values in self._open.items():
                if not lacking(values, space):
                    continue
                key = canonical(_initial(values, space))  # what it runs unless completed
                if key not in self._tried:
                    self._tried.add(key)
                    self._reserved[other] = key
        for values in self._pending:
            key = canonical(values)
            if key not in self._tried:
                self._tried.add(key)
                self._open[number] = values
                return values
        return None

    def complete(self, number: int, params: Mapping[str, Any], space: Space) -> dict[str, Any]:
        # Its defaults first (what it runs if a worker claims it before these are stored),
        # then the grid's order; all tried: its defaults, a repeat nothing can avoid.
        if number in self._reserved:
            self._tried.discard(self._reserved.pop(number))
        initial = _initial(params, space)
        values = next((v for v in chain([initial], _expansions(params, space))
                       if canonical(v) not in self._tried), initial)
        self._tried.add(canonical(values))
        self._open[number] = values
        return values

    def tell(self, trial: Trial) -> None:
        self._open.pop(trial.number, None)
        self._reserved.pop(trial.number, None)
        # A trial may have met new parameters; its stored values are what it really ran.
        self._tried.add(canonical(trial.params))
