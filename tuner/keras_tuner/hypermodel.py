"""KerasTuner's `HyperModel`: `build(hp)` makes a model, `fit(hp, model, ...)` trains it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class HyperModel:
    def __init__(self, name: str | None = None, tunable: bool = True) -> None:
        self.name, self.tunable = name, tunable

    def build(self, hp: Any) -> Any:
        """A compiled Keras model for the hyperparameters `hp`."""
        raise NotImplementedError

    def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        """Train `model`: `model.fit(*args, **kwargs)`, where they are what `search()` was
        given plus the tuner's callbacks. Override to tune training too (and return the
        History, a value, or a dict of values)."""
        return model.fit(*args, **kwargs)


class _FunctionModel(HyperModel):
    """A plain `build_model(hp)` function as a HyperModel."""

    def __init__(self, build: Callable[[Any], Any]) -> None:
        super().__init__(name=getattr(build, "__name__", None))
        self._build = build

    def build(self, hp: Any) -> Any:
        return self._build(hp)


def as_hypermodel(hypermodel: Any) -> Any:
    """What a tuner was given as its model: a HyperModel (ours or KerasTuner's, anything with
    `build` and `fit`), a build function, or None (a `run_trial` that builds none)."""
    if hypermodel is None or (hasattr(hypermodel, "build") and hasattr(hypermodel, "fit")):
        return hypermodel
    if callable(hypermodel):
        return _FunctionModel(hypermodel)
    raise ValueError(f"hypermodel: {hypermodel!r} is neither a HyperModel nor a function "
                     "of hp returning a model")
