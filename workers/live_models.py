"""PBT members' models kept alive in a worker between their segments.

A member's next segment goes on training the model its last one left in this worker, rather
than building, compiling and tracing a new one and loading its checkpoint (most of a short
segment's cost). New values of mutable parameters are applied in place: the learning rate
on the optimizer, dropout rates on the layers (the traced functions are dropped so the next
fit sees them), the batch size on the next fit. Whatever else the new values change (an
architecture copied from another member) needs a fresh model, built as before.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the worker loop holds these without importing Keras for other studies
    import keras

MAX_MODELS = 32  # per worker: a population's members, several studies' at most
MAX_BYTES = 2**30  # their weights and optimizer state together, in host or device memory


@dataclass
class LiveModel:
    """A member's model as its segment `number` left it (equal to that segment's
    checkpoint), trained with `params`."""

    model: keras.Model
    params: dict[str, Any]
    number: int

    @functools.cached_property
    def size(self) -> int:
        """Bytes of weights and optimizer state, at 4 a number (float32; an estimate else)."""
        optimizer = getattr(self.model, "optimizer", None)
        variables = [*self.model.variables, *(optimizer.variables if optimizer else [])]
        return sum(4 * math.prod(v.shape) for v in variables)


class LiveModels:
    """The live models of one worker, by (study, member), the least recently used going
    first past `max_models` or `max_bytes`."""

    def __init__(self, max_models: int = MAX_MODELS, max_bytes: int = MAX_BYTES) -> None:
        self.max_models, self.max_bytes = max_models, max_bytes
        self._models: OrderedDict[tuple[int, int], LiveModel] = OrderedDict()

    def members(self) -> dict[int, list[int]]:
        """The members held, by study: the claims this worker prefers."""
        held: dict[int, list[int]] = {}
        for study, member in self._models:
            held.setdefault(study, []).append(member)
        return held

    def take(self, study: int, member: int) -> LiveModel | None:
        """The member's live model, now the caller's (kept again only once its segment
        succeeds: a failed or lost segment leaves a model in an unknown state)."""
        return self._models.pop((study, member), None)

    def keep(self, study: int, member: int, live: LiveModel) -> None:
        self._models[(study, member)] = live
        sizes = {key: held.size for key, held in self._models.items()}
        while len(self._models) > self.max_models or (
                len(self._models) > 1 and sum(sizes.values()) > self.max_bytes):
            oldest, _ = self._models.popitem(last=False)
            del sizes[oldest]


def model_for(live: LiveModel, params: Mapping[str, Any],
              build: Callable[[], keras.Model]) -> keras.Model:
    """The model that trains with `params`: `live`'s, the new values applied in place, if
    they change only what can change in place; else the one `build` makes for them (built
    anyway, once, to compare its configuration with the live one's)."""
    if dict(params) == live.params:
        return live.model
    fresh = build()
    changes = _differences(live.model, fresh)
    if changes is None:
        return fresh
    rates, learning_rate = changes
    for layer, rate in rates:
        layer.rate = rate
    if learning_rate is not None:
        live.model.optimizer.learning_rate = learning_rate
    if rates:  # traced with the old rates as constants
        live.model.train_function = live.model.test_function = None
        live.model.predict_function = None
    live.params = dict(params)
    return live.model


def _differences(model: keras.Model, fresh: keras.Model
                 ) -> tuple[list[tuple[keras.layers.Layer, float]], float | None] | None:
    """What differs between the live `model` and `fresh` (built for the new values): the
    Keras layers whose rate changes, the new learning rate; None if anything else differs
    or may differ unseen (a subclassed model's attributes, a custom layer's rate)."""
    ours, theirs = _layers(model), _layers(fresh)
    if ours is None or theirs is None or len(ours) != len(theirs):
        return None
    rates = []
    for layer, other in zip(ours, theirs, strict=True):
        if type(layer) is not type(other):
            return None
        old, new = _config(layer), _config(other)
        if old is None or new is None or _without(old, "rate") != _without(new, "rate"):
            return None
        if old.get("rate") != new.get("rate"):
            if not (_is_keras(layer) and hasattr(layer, "rate")):
                return None
            rates.append((layer, new["rate"]))
    optimizer = model.optimizer
    if optimizer is None or type(optimizer) is not type(fresh.optimizer):
        return None
    compiled = [_without(_compile_config(m) or {}, "optimizer") for m in (model, fresh)]
    old, new = optimizer.get_config(), fresh.optimizer.get_config()
    if compiled[0] != compiled[1] or _without(old, "learning_rate") != _without(
            new, "learning_rate"):
        return None
    learning_rate = None
    if old["learning_rate"] != new["learning_rate"]:
        import keras

        if not isinstance(getattr(optimizer, "_learning_rate", None), keras.Variable):
            return None  # a schedule, fixed when the optimizer was made
        learning_rate = new["learning_rate"]
    return rates, learning_rate


def _layers(model: keras.Model) -> list[keras.Layer] | None:
    """The layers of a Sequential or functional model (nested ones flattened): all that
    decides what it computes. None for a subclassed model, whose `call` may read anything."""
    if not (_is_keras(model) and type(model).__name__ in ("Sequential", "Functional")):
        return None
    leaves = []
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a model inside the model
            inner = _layers(layer)
            if inner is None:
                return None
            leaves.extend(inner)
        else:
            leaves.append(layer)
    return leaves


def _is_keras(layer: keras.Layer) -> bool:
    return type(layer).__module__.startswith("keras.")


def _config(layer: keras.Layer) -> dict[str, Any] | None:
    try:
        return layer.get_config()
    except NotImplementedError:  # a custom layer without a config: it cannot be compared
        return None


def _compile_config(model: keras.Model) -> dict[str, Any] | None:
    try:
        return model.get_compile_config()
    except (NotImplementedError, AttributeError):
        return None


def _without(config: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The config but its `key` and its name (names only count models and layers made)."""
    return {k: v for k, v in config.items() if k not in (key, "name")}
