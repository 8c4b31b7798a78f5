"""Define-by-run parameters with KerasTuner's `HyperParameters` interface.

A `build_model(hp)` written for KerasTuner runs unchanged: `hp.Int/Float/Choice/Boolean/
Fixed` register a parameter on first call and return its value for this trial;
`parent_name/parent_values` and `hp.conditional_scope` make it conditional, and an
inactive parameter returns None and stays out of `hp.values`. A parameter first met
during a trial takes its default there and joins the study's space for later trials.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from tuner.errors import SpaceError
from tuner.space import Bool, Choice, Fixed, Float, Int, Param, Space, as_values

_SAMPLINGS = {"linear": False, "log": True}


def _is_log(name: str, sampling: str | None) -> bool:
    key = (sampling or "linear").lower()
    if key not in _SAMPLINGS:
        raise SpaceError(f"parameter {name!r}: sampling={sampling!r} must be 'linear' or 'log'")
    return _SAMPLINGS[key]


class HyperParameters:
    """The `hp` object handed to `build_model(hp)`.

    `space` holds every parameter seen so far (the study's space plus new ones);
    `values` the active values of this trial.
    """

    def __init__(self, space: Space | None = None, values: Mapping[str, Any] | None = None, *,
                 overrides: Mapping[str, Mapping[str, Any]] | None = None,
                 tune_new_entries: bool = True, allow_new_entries: bool = True):
        """`overrides` (a `Space.to_dict()`): definitions that win over what the model
        declares under the same name (KerasTuner's `hyperparameters=`). A parameter not
        in `overrides` takes its default and is not searched unless `tune_new_entries`,
        and is an error unless `allow_new_entries` (both about names `overrides` lacks)."""
        self.space = space.copy() if space is not None else Space()
        self._overrides = Space.from_dict(overrides or {})
        self._tune_new = tune_new_entries or not overrides
        self._allow_new = allow_new_entries or not overrides
        values = dict(values or {})
        # Only active values, as under KerasTuner; names the space does not know yet stay.
        self.values: dict[str, Any] = {
            **{k: v for k, v in values.items() if k not in self.space},
            **self.space.active(values),
        }
        self._conditions: list[tuple[str, tuple[Any, ...]]] = []
        self._name_scopes: list[str] = []

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> HyperParameters:
        """An `hp` that answers with these values, e.g. to rebuild the best model."""
        return cls(values=values)

    # -- scopes ---------------------------------------------------------------------
    @contextlib.contextmanager
    def conditional_scope(self, parent_name: str, parent_values: Any) -> Iterator[None]:
        """Parameters created inside exist only while `parent_name` is in `parent_values`."""
        parent_name = self._full_name(parent_name)
        if parent_name not in self.space:
            raise SpaceError(f"conditional scope: parameter {parent_name!r} is not defined")
        self._conditions.append((parent_name, as_values(parent_values)))
        try:
            yield
        finally:
            self._conditions.pop()

    @contextlib.contextmanager
    def name_scope(self, name: str) -> Iterator[None]:
        self._name_scopes.append(name)
        try:
            yield
        finally:
            self._name_scopes.pop()

    def _full_name(self, name: str) -> str:
        return "/".join([*self._name_scopes, name])

    # -- the KerasTuner methods --------------------------------------------------------
    def Int(self, name: str, min_value: int, max_value: int, step: int | None = None,
            sampling: str = "linear", default: int | None = None,
            parent_name: str | None = None, parent_values: Any = None) -> int | None:
        log = _is_log(name, sampling)
        return self._retrieve(Int(min_value, max_value, step, log, default=default),
                              name, parent_name, parent_values)

    def Float(self, name: str, min_value: float, max_value: float, step: float | None = None,
              sampling: str = "linear", default: float | None = None,
              parent_name: str | None = None, parent_values: Any = None,
              ) -> float | None:
        log = _is_log(name, sampling)
        return self._retrieve(Float(min_value, max_value, step, log, default=default),
                              name, parent_name, parent_values)

    def Choice(self, name: str, values: Sequence[Any], ordered: bool | None = None,
               default: Any = None, parent_name: str | None = None,
               parent_values: Sequence[Any] | None = None) -> Any:
        return self._retrieve(Choice(tuple(values), ordered, default=default),
                              name, parent_name, parent_values)

    def Boolean(self, name: str, default: bool = False, parent_name: str | None = None,
                parent_values: Sequence[Any] | None = None) -> bool | None:
        return self._retrieve(Bool(default=default), name, parent_name, parent_values)

    def Fixed(self, name: str, value: Any, parent_name: str | None = None,
              parent_values: Sequence[Any] | None = None) -> Any:
        return self._retrieve(Fixed(value), name, parent_name, parent_values)

    def _retrieve(self, param: Param, name: str, parent_name: str | None,
                  parent_values: Sequence[Any] | None) -> Any:
        conditions = list(self._conditions)
        if parent_name is not None:
            if parent_values is None:
                raise SpaceError(f"parameter {name!r}: parent_name needs parent_values")
            conditions.append((self._full_name(parent_name), as_values(parent_values)))
        full = self._full_name(name)
        if full in self._overrides:
            param = self._overrides[full]
        elif full not in self.space and self._overrides and not self._allow_new:
            raise SpaceError(f"parameter {full!r} is not among the tuner's hyperparameters, "
                             "and allow_new_entries=False")
        elif full not in self.space and not self._tune_new:
            return param.initial  # not searched, so not part of the space (as KerasTuner)
        param = self.space.add(full, type(param)(**{**param.__dict__, "name": full,
                                                    "when": tuple(conditions)}))
        if not param.is_active(self.values):
            self.values.pop(full, None)
            return None
        if full not in self.values:
            self.values[full] = param.initial
        return self.values[full]

    # -- reading --------------------------------------------------------------------
    def get(self, name: str) -> Any:
        full = self._full_name(name)
        if full in self.values:
            return self.values[full]
        if full in self.space:
            raise ValueError(f"{full} is currently inactive.")
        raise KeyError(f"{full} does not exist.")

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._full_name(name) in self.values

    def is_active(self, name: str | Param) -> bool:
        param = name if isinstance(name, Param) else self.space[self._full_name(name)]
        return param.is_active(self.values)

    def __repr__(self) -> str:
        return f"HyperParameters({self.values})"
