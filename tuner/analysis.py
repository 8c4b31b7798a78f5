"""What the dashboard and the reports show, computed from stored trials: the best-so-far
history, parameter importance and PBT lineage. Plain data; each view draws it its own way."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tuner import pareto
from tuner.space import Space
from tuner.states import TrialState
from tuner.storage.records import StudyRecord, Trial
from tuner.strategies import PBTSegment

log = logging.getLogger(__name__)

# fANOVA on the latest 500 trials with a smaller forest: about a second on 2 cores, with
# the ranking of the default forest on 2,000 trials (which takes 40 s).
IMPORTANCE_TRIALS = 500
_FOREST = {"n_trees": 16, "max_depth": 16}


@dataclass(frozen=True)
class HistoryPoint:
    number: int
    finished_at: float
    value: float
    best: float  # the best value among this trial and all that finished before it


def history(study: StudyRecord,
            finished: Iterable[tuple[int, float, float]]) -> list[HistoryPoint]:
    """Completed trials as `Storage.finished_values` gives them, (number, finished_at,
    value) in the order they finished, each with the best value so far."""
    points: list[HistoryPoint] = []
    best = -math.inf
    for number, finished_at, value in finished:
        best = max(best, study.sign * value)
        points.append(HistoryPoint(number, finished_at, value, study.sign * best))
    return points


def improvements(points: Sequence[HistoryPoint]) -> list[HistoryPoint]:
    """The points where the best changed, and the last: the whole step curve, in few points."""
    kept = [p for i, p in enumerate(points) if i == 0 or p.best != points[i - 1].best]
    if points and kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


def importance(study: StudyRecord, trials: Sequence[Trial],
               limit: int = IMPORTANCE_TRIALS) -> dict[str, float]:
    """Optuna's fANOVA importance of each parameter for the metric, most important first;
    empty while there is too little to go on (fewer than two completed trials, say)."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    from tuner.strategies._bayes import distribution

    space = Space.from_dict(study.space)
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    done = sorted(done, key=lambda t: t.number)[-limit:]
    frozen = []
    for trial in done:
        params = space.active(trial.params)
        dists = {n: d for n in params if n in space and (d := distribution(space[n])) is not None}
        try:
            frozen.append(optuna.trial.create_trial(
                params={n: params[n] for n in dists}, distributions=dists, value=trial.value))
        except ValueError:  # the space changed since this trial ran
            continue
    if len(frozen) < 2:
        return {}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ostudy = optuna.create_study(direction=study.direction)
    ostudy.add_trials(frozen)
    try:
        evaluator = FanovaImportanceEvaluator(**_FOREST, seed=0)
        result = get_param_importances(ostudy, evaluator=evaluator)
    except (RuntimeError, ValueError) as exc:  # e.g. no parameter varies yet
        log.debug("no importance for %s: %s", study.name, exc)
        return {}
    return {name: float(value) for name, value in result.items()}


@dataclass(frozen=True)
class LineageRow:
    """One PBT trial: a member's stretch of epochs, and where its weights came from."""
    number: int
    member: int
    generation: int
    start: int
    epochs: int
    restored_from: int | None  # the trial whose checkpoint it continued
    copied_from: int | None  # the member it exploited, if it did
    value: float | None
    params: Mapping[str, Any]


def lineage(trials: Sequence[Trial]) -> list[LineageRow]:
    """Every PBT segment, in trial order; empty for other strategies."""
    rows = []
    for t in sorted(trials, key=lambda t: t.number):
        segment = PBTSegment.of(t)
        if segment is None:
            continue
        rows.append(LineageRow(
            number=t.number, member=segment.member, generation=segment.generation,
            start=segment.start, epochs=segment.epochs,
            restored_from=segment.restore, copied_from=segment.copied_from,
            value=t.value, params=t.params,
        ))
    return rows


def schedule(trials: Sequence[Trial], trial: Trial) -> list[Trial]:
    """The trials whose checkpoints led to `trial`, oldest first: under PBT, the
    hyperparameter schedule that produced its model; just `trial` otherwise."""
    by_number = {t.number: t for t in trials}
    chain = [trial]
    while (segment := PBTSegment.of(chain[-1])) is not None and segment.restore is not None:
        if segment.restore not in by_number or len(chain) > len(by_number):
            break
        chain.append(by_number[segment.restore])
    return chain[::-1]


def explored(study: StudyRecord) -> list[str]:
    """The parameters PBT explores: those its options name, else those marked mutable."""
    named = (study.settings.get("strategy_options") or {}).get("mutable")
    if named is not None:
        return list(named)
    return [p.name for p in Space.from_dict(study.space) if p.mutable]


def schedule_rows(study: StudyRecord, chain: Sequence[Trial]) -> list[list[Any]]:
    """A schedule (see `schedule`) as table rows: the epochs of each stretch, counted from
    1 as Keras prints them, its trial, member and the member it copied, the values of the
    `explored` parameters and the value reached."""
    names = explored(study)
    rows = []
    for trial in chain:
        segment = PBTSegment.of(trial)
        start, epochs = (segment.start, segment.epochs) if segment else (0, trial.epochs)
        rows.append([f"{start + 1}–{start + epochs}", trial.number,
                     segment and segment.member, segment and segment.copied_from,
                     *(trial.params.get(n) for n in names), trial.value])
    return rows


def reference_point(study: StudyRecord, trials: Iterable[Trial]) -> tuple[float, ...] | None:
    """Where hypervolume is measured from, signed: each objective's worst value among the
    study's completed feasible trials (so every such trial but the worst adds volume)."""
    points = [p for t in trials if t.state == TrialState.COMPLETE and study.feasible(t)
              and (p := study.signed(t)) is not None]
    if not points:
        return None
    return tuple(min(axis) for axis in zip(*points, strict=True))


@dataclass(frozen=True)
class HypervolumePoint:
    number: int
    finished_at: float
    hypervolume: float  # of the front of this trial and all that finished before it


def hypervolume_history(study: StudyRecord, trials: Sequence[Trial],
                        reference: Sequence[float] | None = None) -> list[HypervolumePoint]:
    """The hypervolume of the front of the completed feasible trials so far, after each one
    finished (in the order they finished), from `reference` (signed; by default
    `reference_point`)."""
    reference = reference if reference is not None else reference_point(study, trials)
    done = sorted((t for t in trials if t.state == TrialState.COMPLETE and study.feasible(t)
                   and study.signed(t) is not None and t.finished_at is not None),
                  key=lambda t: (t.finished_at, t.number))
    if reference is None:
        return []
    out, front = [], []
    for trial in done:
        front = pareto.front_of([*front, study.signed(trial)])  # type: ignore[list-item]
        out.append(HypervolumePoint(trial.number, trial.finished_at,  # type: ignore[arg-type]
                                    pareto.hypervolume(front, reference)))
    return out
