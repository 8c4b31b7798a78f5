"""What the dashboard and the report show of a study's objectives and constraints: each
trial's verdict, its point, and the Pareto front, as plain data each view draws its way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tuner import analysis
from tuner.objectives import Objective
from tuner.states import TrialState
from tuner.storage.records import StudyRecord, Trial


def judged(study: StudyRecord) -> bool:
    """Whether views show more than the one value: several objectives, or constraints."""
    return study.multi_objective or bool(study.constraints)


def label(objective: Objective) -> str:
    return f"{objective.name} ({objective.direction})"


def broken(study: StudyRecord, trial: Trial) -> list[str]:
    """The constraints the trial breaks, as text (`params <= 5e+04`); a constraint it never
    measured counts as broken, as it does for the front."""
    return [str(c) for c in study.constraints
            if c.violation((trial.measures or {}).get(c.name)) > 0]


def verdict(study: StudyRecord, trial: Trial) -> str | None:
    """"feasible", "breaks ..." or None: no constraint, or nothing measured yet (a queued,
    running or failed trial is not judged)."""
    if not study.constraints or (trial.measures is None and trial.state != TrialState.COMPLETE):
        return None
    failed = broken(study, trial)
    return "breaks " + "; ".join(failed) if failed else "feasible"


@dataclass(frozen=True)
class Point:
    number: int
    values: tuple[float, ...]  # as measured, one per objective
    feasible: bool
    front: bool
    broken: tuple[str, ...]
    finished_at: float | None


def points(study: StudyRecord, trials: Sequence[Trial]) -> list[Point]:
    """Every completed trial with a value for each objective, feasible or not, in number
    order, marked whether it is on the front."""
    on_front = {t.number for t in study.front(trials)}
    out = []
    for trial in sorted(trials, key=lambda t: t.number):
        values = study.values_of(trial)
        if (trial.state != TrialState.COMPLETE or study.signed(trial) is None
                or values is None):
            continue
        failed = broken(study, trial)
        out.append(Point(trial.number, tuple(values), not failed,  # type: ignore[arg-type]
                         trial.number in on_front, tuple(failed), trial.finished_at))
    return out


def hypervolume(study: StudyRecord,
                trials: Sequence[Trial]) -> tuple[list[analysis.HypervolumePoint],
                                                  tuple[float, ...] | None]:
    """The hypervolume after each completed feasible trial, and its reference point as
    measured (unsigned, one value per objective): each objective's worst value."""
    reference = analysis.reference_point(study, trials)
    if reference is None:
        return [], None
    shown = tuple(o.sign * r for o, r in zip(study.objectives, reference, strict=True))
    return analysis.hypervolume_history(study, trials, reference), shown
