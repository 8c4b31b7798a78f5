"""What a study is judged by: one objective or several, and constraints on what a trial
measures. A study file says

    metric = ["val_accuracy", "params"]
    direction = ["maximize", "minimize"]          # optional, inferred from each name
    constraints = {"params": ("<=", 50_000), "latency_ms": ("<=", 2.0)}
    def measures(model, data): return {...}       # optional, after training

An objective or a constraint names a metric of the epoch logs, a measure built in (below,
computed by the worker once the model is built, so early stopping sees them from the first
epoch) or one that `measures` returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

BUILT_IN_MEASURES = {
    "params": "trainable parameters",
    "latency_ms": "median predict time of one batch on the worker's device, after warm-up",
    "model_bytes": "bytes of the model's weights (their sizes times their dtypes')",
}
DIRECTIONS = ("maximize", "minimize")
OPERATORS = ("<=", ">=")


def infer_direction(metric: str) -> str:
    """Losses, errors and the built-in measures go down, everything else up (as KerasTuner
    infers it for metrics)."""
    lowered = metric.lower()
    if metric in BUILT_IN_MEASURES or any(w in lowered for w in ("loss", "error", "mse", "mae")):
        return "minimize"
    return "maximize"


def sign_of(direction: str) -> int:
    """+1 when maximizing, -1 when minimizing: multiply to always maximize."""
    return 1 if direction == "maximize" else -1


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str

    @property
    def sign(self) -> int:
        return sign_of(self.direction)


@dataclass(frozen=True)
class Constraint:
    """`name op bound`, e.g. params <= 50000: a trial that breaks it is infeasible."""

    name: str
    op: str
    bound: float

    def violation(self, value: float | None) -> float:
        """How far `value` is beyond the bound (Optuna's convention: <= 0 is feasible);
        a value never measured breaks it."""
        if value is None or not math.isfinite(value):
            return math.inf
        return value - self.bound if self.op == "<=" else self.bound - value

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.bound:g}"


def _names(value: Any, what: str) -> list[str]:
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not names:
        raise ValueError(f"{what}={value!r} must be a name or a list of names")
    for name in names:
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            raise ValueError(f"{what}: {name!r} must be a name of 1 to 200 characters")
    return list(names)


def parse_objectives(metric: Any, direction: Any = "") -> tuple[Objective, ...]:
    """The objectives `metric` (a name or a list) and `direction` (one, a list of as many,
    or empty: inferred from each name) declare."""
    names = _names(metric, "metric")
    if len(set(names)) != len(names):
        raise ValueError(f"metric={names!r} names an objective twice")
    if not direction:
        directions = [infer_direction(n) for n in names]
    elif isinstance(direction, str):
        if len(names) > 1:
            raise ValueError(f"direction={direction!r}: give one direction per metric "
                             f"({len(names)}), as a list")
        directions = [direction]
    elif isinstance(direction, (list, tuple)):
        directions = list(direction)
        if len(directions) != len(names):
            raise ValueError(f"direction={directions!r} has {len(directions)} entries for "
                             f"{len(names)} metrics {names!r}")
    else:
        raise ValueError(f"direction={direction!r} must be 'maximize', 'minimize' or a list")
    for d in directions:
        if d not in DIRECTIONS:
            raise ValueError(f"direction={d!r} must be 'maximize' or 'minimize'")
    return tuple(Objective(n, d) for n, d in zip(names, directions, strict=True))


def parse_constraints(constraints: Any) -> tuple[Constraint, ...]:
    """`{"params": ("<=", 50_000), ...}` (or stored `[["params", "<=", 50000], ...]`)."""
    if not constraints:
        return ()
    if isinstance(constraints, Mapping):
        items = [(name, *spec) if isinstance(spec, (list, tuple)) else (name, spec)
                 for name, spec in constraints.items()]
    elif isinstance(constraints, (list, tuple)):
        items = [tuple(c) if isinstance(c, (list, tuple)) else (c,) for c in constraints]
    else:
        raise ValueError(f"constraints={constraints!r} must be a dict like "
                         "{'params': ('<=', 50000)}")
    out = []
    for item in items:
        if (len(item) != 3 or not isinstance(item[0], str) or not item[0]
                or item[1] not in OPERATORS or isinstance(item[2], bool)
                or not isinstance(item[2], (int, float)) or not math.isfinite(item[2])):
            raise ValueError(f"constraint {item!r} must read name: (op, bound) with op "
                             "'<=' or '>=' and a finite number")
        out.append(Constraint(item[0], item[1], float(item[2])))
    if len({c.name for c in out}) != len(out):
        raise ValueError("constraints: one constraint per name")
    return tuple(out)


def to_settings(objectives: Sequence[Objective],
                constraints: Sequence[Constraint]) -> dict[str, Any]:
    """What a study stores of them in its settings: nothing for one plain objective, so a
    single-objective study is stored as it always was."""
    out: dict[str, Any] = {}
    if len(objectives) > 1:
        out["objectives"] = [[o.name, o.direction] for o in objectives]
    if constraints:
        out["constraints"] = [[c.name, c.op, c.bound] for c in constraints]
    return out


def measured_names(objectives: Sequence[Objective],
                   constraints: Sequence[Constraint]) -> list[str]:
    """Every name a trial must report: the objectives', then the constraints' (once each)."""
    names = [o.name for o in objectives]
    return names + [c.name for c in constraints if c.name not in names]


def violations(measures: Mapping[str, Any] | None,
               constraints: Sequence[Constraint]) -> list[float]:
    measures = measures or {}
    return [c.violation(measures.get(c.name)) for c in constraints]


def is_feasible(measures: Mapping[str, Any] | None, constraints: Sequence[Constraint]) -> bool:
    return all(v <= 0 for v in violations(measures, constraints))
