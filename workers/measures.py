"""The measures built into every study (`tuner.objectives.BUILT_IN_MEASURES`), taken from a
trial's model on the worker that trains it, and what a study's own `measures` adds."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import keras
import numpy as np

from tuner.objectives import BUILT_IN_MEASURES


def params(model: keras.Model) -> int:
    """Trainable parameters, as `model.summary()` counts them."""
    return int(sum(math.prod(w.shape) for w in model.trainable_weights))


def model_bytes(model: keras.Model) -> int:
    """The bytes of the model's weights (each one's size times its dtype's), what its saved
    weights hold. Not a saved file's size: HDF5's layout and metadata make that vary by a
    third for the same weights, with the optimizer's state or without."""
    return int(sum(np.asarray(w).nbytes for w in model.get_weights()))


def latency_ms(model: keras.Model, batch: Any, *, warmup: int = 3, repeats: int = 15) -> float:
    """The median wall time of `predict_on_batch` on one batch, after `warmup` calls (the
    first traces and compiles the predict function)."""
    for _ in range(warmup):
        model.predict_on_batch(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict_on_batch(batch)  # returns NumPy: the work is done when it returns
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def input_batch(model: keras.Model, size: int) -> Any:
    """A batch of zeros shaped like the model's inputs, for a trial whose data the worker
    does not hold (a KerasTuner `run_trial` fits on its own)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError("latency_ms needs a batch of input: the model declares no inputs "
                         "(give it a keras.Input)")
    arrays = [np.zeros((size, *(d or 1 for d in tensor.shape[1:])),
                       dtype=keras.backend.standardize_dtype(tensor.dtype)) for tensor in inputs]
    return arrays[0] if len(arrays) == 1 else arrays


_MEASURES: dict[str, Callable[[keras.Model, Callable[[], Any]], float]] = {
    "params": lambda model, batch: params(model),
    "model_bytes": lambda model, batch: model_bytes(model),
    "latency_ms": lambda model, batch: latency_ms(model, batch()),
}
assert set(_MEASURES) == set(BUILT_IN_MEASURES)


def built_in(model: keras.Model, names: Iterable[str],
             batch: Callable[[], Any]) -> dict[str, float]:
    """The built-in measures among `names`; `batch()` gives an input batch for latency."""
    return {name: float(_MEASURES[name](model, batch)) for name in names if name in _MEASURES}


def users(measures: Callable[[Any, Any], Any] | None, model: keras.Model,
          data: Any) -> dict[str, float]:
    """What a study's own `measures(model, data)` returns, checked to be named numbers."""
    if measures is None:
        return {}
    returned = measures(model, data)
    if not isinstance(returned, Mapping) or not all(
            isinstance(k, str) and isinstance(v, (int, float, np.number))
            for k, v in returned.items()):
        raise TypeError(f"measures(model, data) must return {{name: number}}, got {returned!r}")
    return {k: float(v) for k, v in returned.items()}
