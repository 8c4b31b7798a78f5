"""Plain, immutable views of stored rows: what the storage hands out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tuner.objectives import (
    Constraint,
    Objective,
    is_feasible,
    measured_names,
    parse_constraints,
    sign_of,
)
from tuner.pareto import front_indices
from tuner.states import TrialState


@dataclass(frozen=True)
class StudyRecord:
    id: int
    name: str
    metric: str
    direction: str
    strategy: str
    seed: int
    space: dict[str, Any]
    settings: dict[str, Any]
    definition: str | None
    definition_hash: str | None
    created_at: float
    coordinator: str | None = None
    coordinator_beat_at: float | None = None

    @property
    def sign(self) -> int:
        return sign_of(self.direction)

    @property
    def objectives(self) -> tuple[Objective, ...]:
        """What the study is judged by: its metric, or the objectives its settings list."""
        stored = self.settings.get("objectives")
        if not stored:
            return (Objective(self.metric, self.direction),)
        return tuple(Objective(name, direction) for name, direction in stored)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def constraints(self) -> tuple[Constraint, ...]:
        return parse_constraints(self.settings.get("constraints"))

    @property
    def measured(self) -> list[str]:
        """The names each trial must measure: none for one objective and no constraint
        (the trial's value says it all)."""
        if not self.multi_objective and not self.constraints:
            return []
        return measured_names(self.objectives, self.constraints)

    def values_of(self, trial: Trial) -> tuple[float | None, ...] | None:
        """The trial's value of each objective (None where it has none)."""
        return values_of(trial)

    def signed(self, trial: Trial) -> tuple[float, ...] | None:
        """The trial's objective values signed so higher is better on each; None unless
        it has every one."""
        return signed(self.objectives, trial)

    def feasible(self, trial: Trial) -> bool:
        """Whether the trial keeps every constraint (all do when there are none)."""
        return is_feasible(trial.measures, self.constraints)

    def front(self, trials: Iterable[Trial]) -> list[Trial]:
        """The Pareto front: the completed feasible trials no other such trial dominates
        (at least as good on every objective, better on one), best first by the first
        objective. With one objective, the trials sharing the best value."""
        candidates = [t for t in trials if t.state == TrialState.COMPLETE
                      and self.feasible(t) and self.signed(t) is not None]
        points = [self.signed(t) for t in candidates]
        front = [candidates[i] for i in front_indices(points)]  # type: ignore[arg-type]
        return sorted(front, key=lambda t: (-self.signed(t)[0], t.number))  # type: ignore[index]


@dataclass(frozen=True)
class Trial:
    id: int
    number: int
    state: TrialState
    params: dict[str, Any]
    value: float | None = None
    best_epoch: int | None = None
    epochs: int = 0
    retries: int = 0
    worker_id: int | None = None
    error: str | None = None
    attrs: dict[str, Any] | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    study_id: int | None = None
    checkpoint_epoch: int | None = None  # the last epoch its resumable checkpoint holds
    values: list[float | None] | None = None  # each objective's, in the study's order
    measures: dict[str, Any] | None = None  # what it measured, for objectives and constraints

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def error_summary(self) -> str | None:
        """What went wrong, without the traceback: the exception's type and its whole
        message (which may span lines), or the whole text when it is not a traceback."""
        return error_summary(self.error)


@dataclass(frozen=True)
class StudySummary:
    study: StudyRecord
    counts: dict[TrialState, int] = field(default_factory=dict)
    best_value: float | None = None
    last_activity: float | None = None


@dataclass(frozen=True)
class WorkerRecord:
    id: int
    host: str
    pid: int
    device: str
    study_id: int | None
    started_at: float
    heartbeat_at: float
    stopped_at: float | None
    trials_done: int
    study: str | None = None  # the study of the trial it runs now, if any
    trial: int | None = None  # that trial's number

    def status(self, now: float, grace: float) -> str:
        """stopped (cleanly), live (heartbeat within `grace` seconds) or lost."""
        if self.stopped_at is not None:
            return "stopped"
        return "live" if now - self.heartbeat_at <= grace else "lost"


def values_of(trial: Trial) -> tuple[float | None, ...] | None:
    """A trial's value of each objective: its `values`, or its one `value`."""
    if trial.values is not None:
        return tuple(trial.values)
    return None if trial.value is None else (trial.value,)


def signed(objectives: tuple[Objective, ...], trial: Trial) -> tuple[float, ...] | None:
    """A trial's objective values signed so higher is better on each; None unless it has
    every one."""
    values = values_of(trial)
    if values is None or len(values) != len(objectives) or None in values:
        return None
    return tuple(o.sign * v for o, v in zip(objectives, values, strict=True))


def shown_epoch(index: int | None) -> int | None:
    """An epoch as users see it, counted from 1 as Keras prints "Epoch 1/20". The database
    keeps Keras's own 0-based index; every view (CLI, dashboard, API, exports, reports)
    shows this number, so "epoch 4" means the same everywhere."""
    return None if index is None else index + 1


def error_summary(error: str | None) -> str | None:
    """The part of a Python traceback after its last frame: `Type: message`, whole."""
    if not error:
        return error
    lines = error.strip().splitlines()
    frames = [i for i, line in enumerate(lines)
              if line.startswith(('  File "', "Traceback"))]
    if not frames:
        return error.strip()
    rest = lines[frames[-1] + 1:]
    while rest and rest[0].startswith("    "):  # the frame's source line and its carets
        rest = rest[1:]
    return "\n".join(rest).strip() or error.strip()


def trial_of(row: Any) -> Trial:
    """A trial from its row in the trials table."""
    data = dict(row._mapping)
    data["state"] = TrialState(data["state"])
    return Trial(**data)
