"""Search spaces: typed parameters, conditions, validation, sampling and grids.

A `Space` is an ordered set of named parameters. A parameter may carry a condition
(`when={"layers": [3, 4]}`): it exists only while its parents hold one of the listed
values, and an inactive parameter never appears in a trial's values. Parents come
before their children, so walking the space in order always knows the parents first.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from tuner.errors import SpaceError

Condition = tuple[tuple[str, tuple[Any, ...]], ...]


def _conditions(when: Mapping[str, Sequence[Any]] | Condition | None) -> Condition:
    if not when:
        return ()
    items = when.items() if isinstance(when, Mapping) else when
    return tuple((str(parent), as_values(values)) for parent, values in items)


def as_values(values: Any) -> tuple[Any, ...]:
    """Parent values as a tuple; a single value is a list of one, as in KerasTuner."""
    if isinstance(values, (list, tuple, set, frozenset, range)):
        return tuple(values)
    return (values,)


@dataclass(frozen=True)
class Param:
    """Base of every parameter. `name` is filled in by the `Space` that holds it."""

    name: str = field(default="", kw_only=True)
    when: Condition = field(default=(), kw_only=True)
    # May change while a model trains (learning rate, dropout, batch size...): PBT explores it.
    mutable: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "when", _conditions(self.when))

    # Overridden by each kind.
    kind = "param"

    @property
    def initial(self) -> Any:
        """The value used before anything is searched (KerasTuner's default)."""
        raise NotImplementedError

    def grid(self) -> list[Any]:
        """The finite list of values this parameter takes in a grid search."""
        raise NotImplementedError

    def sample(self, rng: np.random.Generator) -> Any:
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        raise NotImplementedError

    def validate(self) -> None:
        pass

    def is_active(self, values: Mapping[str, Any]) -> bool:
        return all(parent in values and values[parent] in allowed for parent, allowed in self.when)

    def to_dict(self) -> dict[str, Any]:
        data = {
            k: v for k, v in self.__dict__.items()
            if k not in ("name", "when", "mutable") and v is not None
        }
        if self.mutable:
            data["mutable"] = True
        data["type"] = self.kind
        if self.when:
            data["when"] = {parent: list(values) for parent, values in self.when}
        return data

    def _fail(self, problem: str) -> SpaceError:
        return SpaceError(f"parameter {self.name!r}: {problem}")


def _log_steps(low: float, high: float, step: float) -> list[float]:
    """KerasTuner's meaning of `step` under log sampling: a factor between values."""
    values, value = [], low
    while value <= high * (1 + 1e-12):
        values.append(value)
        value *= step
    return values


@dataclass(frozen=True)
class Int(Param):
    """An integer in [low, high], both included; `step` spaces the values (a factor if `log`)."""

    low: int
    high: int
    step: int | None = None
    log: bool = False
    default: int | None = field(default=None, kw_only=True)
    kind = "int"

    @property
    def initial(self) -> int:
        return self.low if self.default is None else self.default

    def validate(self) -> None:
        for label, v in (("low", self.low), ("high", self.high)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise self._fail(f"{label}={v!r} must be an integer")
        if self.low > self.high:
            raise self._fail(f"low={self.low} is greater than high={self.high}")
        if self.log and self.low <= 0:
            raise self._fail(f"log sampling needs low > 0, got low={self.low}")
        if self.step is not None and (self.step < 1 or (self.log and self.step < 2)):
            raise self._fail(f"step={self.step} must be >= 1 (>= 2 with log)")
        if self.default is not None and not self.contains(self.default):
            raise self._fail(f"default={self.default!r} is not in the range")

    def grid(self) -> list[int]:
        if self.log and self.step:
            return [int(round(v)) for v in _log_steps(self.low, self.high, self.step)]
        return list(range(self.low, self.high + 1, self.step or 1))

    def sample(self, rng: np.random.Generator) -> int:
        if self.step or not self.log:
            values = self.grid()
            return values[int(rng.integers(len(values)))]
        value = math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1)))
        return min(int(value), self.high)

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            return False
        return value in self.grid() if self.step else self.low <= value <= self.high


@dataclass(frozen=True)
class Float(Param):
    """A float in [low, high]; `step` makes it discrete (a factor if `log`)."""

    low: float
    high: float
    step: float | None = None
    log: bool = False
    default: float | None = field(default=None, kw_only=True)
    kind = "float"

    @property
    def initial(self) -> float:
        return float(self.low if self.default is None else self.default)

    def validate(self) -> None:
        for label, v in (("low", self.low), ("high", self.high)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise self._fail(f"{label}={v!r} must be a finite number")
        if self.low > self.high:
            raise self._fail(f"low={self.low} is greater than high={self.high}")
        if self.log and self.low <= 0:
            raise self._fail(f"log sampling needs low > 0, got low={self.low}")
        if self.step is not None and (self.step <= 0 or (self.log and self.step <= 1)):
            raise self._fail(f"step={self.step} must be > 0 (> 1 with log)")
        if self.default is not None and not self.contains(self.default):
            raise self._fail(f"default={self.default!r} is not in the range")

    def grid(self) -> list[float]:
        if self.step is None:
            raise self._fail("a float needs a step for grid search (or use Choice)")
        if self.log:
            return _log_steps(self.low, self.high, self.step)
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(count)]

    def sample(self, rng: np.random.Generator) -> float:
        if self.step is not None:
            values = self.grid()
            return values[int(rng.integers(len(values)))]
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.step is not None:
            return any(math.isclose(value, v, rel_tol=1e-9, abs_tol=1e-12) for v in self.grid())
        return self.low - 1e-12 <= value <= self.high + 1e-12


@dataclass(frozen=True)
class Choice(Param):
    """One of a list of values (numbers, strings or booleans)."""

    values: tuple[Any, ...]
    ordered: bool | None = None
    default: Any = field(default=None, kw_only=True)
    kind = "choice"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "values", tuple(self.values))

    @property
    def initial(self) -> Any:
        return self.values[0] if self.default is None else self.default

    def validate(self) -> None:
        if not self.values:
            raise self._fail("a choice needs at least one value")
        if len(set(map(repr, self.values))) != len(self.values):
            raise self._fail(f"values {list(self.values)} contain duplicates")
        for value in self.values:
            if not isinstance(value, (bool, int, float, str)):
                raise self._fail(f"value {value!r} must be a number, a string or a boolean")
        if self.default is not None and not self.contains(self.default):
            raise self._fail(f"default={self.default!r} is not one of {list(self.values)}")

    def grid(self) -> list[Any]:
        return list(self.values)

    def sample(self, rng: np.random.Generator) -> Any:
        return self.values[int(rng.integers(len(self.values)))]

    def contains(self, value: Any) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["values"] = list(self.values)
        return data


@dataclass(frozen=True)
class Bool(Param):
    """True or False."""

    default: bool = field(default=False, kw_only=True)
    kind = "bool"

    @property
    def initial(self) -> bool:
        return self.default

    def grid(self) -> list[bool]:
        return [False, True]

    def sample(self, rng: np.random.Generator) -> bool:
        return bool(rng.integers(2))

    def contains(self, value: Any) -> bool:
        return isinstance(value, bool)


@dataclass(frozen=True)
class Fixed(Param):
    """A constant: recorded with every trial, never searched."""

    value: Any
    kind = "fixed"

    @property
    def initial(self) -> Any:
        return self.value

    def validate(self) -> None:
        if not isinstance(self.value, (bool, int, float, str)):
            raise self._fail(f"value {self.value!r} must be a number, a string or a boolean")

    def grid(self) -> list[Any]:
        return [self.value]

    def sample(self, rng: np.random.Generator) -> Any:
        return self.value

    def contains(self, value: Any) -> bool:
        return value == self.value


_KINDS: dict[str, type[Param]] = {k.kind: k for k in (Int, Float, Choice, Bool, Fixed)}


def param_from_dict(name: str, data: Mapping[str, Any]) -> Param:
    data = dict(data)
    kind = _KINDS[data.pop("type")]
    if "values" in data:
        data["values"] = tuple(data["values"])
    when = data.pop("when", None)
    return kind(**data, name=name, when=_conditions(when))


class Space:
    """An ordered, validated collection of parameters.

    >>> Space(layers=Int(1, 3), units_3=Int(32, 256, when={"layers": [3]}))
    """

    def __init__(self, params: Mapping[str, Param] | None = None, /, **kwargs: Param) -> None:
        self._params: dict[str, Param] = {}
        for name, param in {**(params or {}), **kwargs}.items():
            self.add(name, param)

    # -- building -------------------------------------------------------------------
    def add(self, name: str, param: Param) -> Param:
        """Add a parameter; adding an identical one again is a no-op, a different one an error."""
        if not isinstance(param, Param):
            raise SpaceError(f"parameter {name!r}: {param!r} is not a parameter (Int, Float, ...)")
        param = replace(param, name=name)
        known = self._params.get(name)
        if known is not None:
            if known != param:
                raise SpaceError(
                    f"parameter {name!r} is defined twice with different ranges: "
                    f"{describe(known)} and {describe(param)}"
                )
            return known
        param.validate()
        for parent, allowed in param.when:
            parent_param = self._params.get(parent)
            if parent_param is None:
                raise param._fail(f"its condition names {parent!r}, which is not defined before it")
            bad = [v for v in allowed if not parent_param.contains(v)]
            if not allowed or bad:
                raise param._fail(f"condition values {bad or '[]'} are not values of {parent!r}")
        self._params[name] = param
        return param

    # -- reading --------------------------------------------------------------------
    def __iter__(self) -> Iterator[Param]:
        return iter(self._params.values())

    def __len__(self) -> int:
        return len(self._params)

    @property
    def names(self) -> list[str]:
        return list(self._params)

    def __contains__(self, name: object) -> bool:
        return name in self._params

    def __getitem__(self, name: str) -> Param:
        return self._params[name]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self._params == other._params

    def __repr__(self) -> str:
        return "Space(" + ", ".join(f"{n}={describe(p)}" for n, p in self._params.items()) + ")"

    def copy(self) -> Space:
        return Space(self._params)

    def active(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Drop the values of parameters that are unknown or inactive."""
        kept: dict[str, Any] = {}
        for param in self:
            if param.name in values and param.is_active(kept):
                kept[param.name] = values[param.name]
        return kept

    # -- searching ------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in self:
            if param.is_active(values):
                values[param.name] = param.sample(rng)
        return values

    def defaults(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in self:
            if param.is_active(values):
                values[param.name] = param.initial
        return values

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every distinct combination of active values, in a stable order."""
        grids = {param.name: param.grid() for param in self}  # fails early on a float without step
        params = list(self)

        def expand(index: int, values: dict[str, Any]) -> Iterator[dict[str, Any]]:
            if index == len(params):
                yield dict(values)
                return
            param = params[index]
            if not param.is_active(values):
                yield from expand(index + 1, values)
                return
            for value in grids[param.name]:
                values[param.name] = value
                yield from expand(index + 1, values)
            del values[param.name]

        return expand(0, {})

    def grid_size(self) -> int:
        return sum(1 for _ in self.grid())

    # -- storing --------------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: param.to_dict() for name, param in self._params.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> Space:
        return cls({name: param_from_dict(name, spec) for name, spec in data.items()})


def describe(param: Param) -> str:
    """A short human form, e.g. `Int(32, 512, log)` or `Choice(['relu', 'tanh'])`."""
    if isinstance(param, (Int, Float)):
        extras = [f"step={param.step}"] if param.step is not None else []
        extras += ["log"] if param.log else []
        text = f"{type(param).__name__}({', '.join(map(str, [param.low, param.high, *extras]))})"
    elif isinstance(param, Choice):
        text = f"Choice({list(param.values)})"
    elif isinstance(param, Fixed):
        text = f"Fixed({param.value!r})"
    else:
        text = "Bool()"
    if param.mutable:
        text = f"{text[:-1]}{'' if text.endswith('()') else ', '}mutable)"
    if param.when:
        text += " when " + " and ".join(f"{p} in {list(v)}" for p, v in param.when)
    return text


def canonical(values: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """A hashable key of a configuration, equal for equal configurations."""
    return tuple(sorted((k, repr(v)) for k, v in values.items()))


__all__ = ["Bool", "Choice", "Fixed", "Float", "Int", "Param", "Space", "canonical", "describe"]
