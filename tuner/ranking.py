"""The order of trials: best first (`rank`), or by a column or a parameter (`sort_trials`).
One rule for `Study.ranked`, `tuner trials`, the report and the dashboard's best-first view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tuner.objectives import violations
from tuner.pareto import nondominated_ranks
from tuner.states import TrialState
from tuner.storage import StudyRecord, Trial


def rank(trials: list[Trial], sign: int, study: StudyRecord | None = None) -> list[Trial]:
    """Best first: COMPLETE by value, then PRUNED by value, then the rest; ties by number.
    `sign`: the study's (+1 when maximizing). Given a `study` with several objectives or
    constraints, the COMPLETE feasible trials come by Pareto front (the front first, each
    front best first on the first objective), then the infeasible ones, least broken first."""
    if study is not None and study.measured:
        return _rank_by_fronts(trials, study)
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}

    def key(t: Trial) -> tuple[int, int, float, int]:
        has_value = t.value is not None
        return (order.get(t.state, 2), 0 if has_value else 1,
                -sign * t.value if has_value else 0.0, t.number)  # type: ignore[operator]

    return sorted(trials, key=key)


def _rank_by_fronts(trials: list[Trial], study: StudyRecord) -> list[Trial]:
    feasible = [t for t in trials if t.state == TrialState.COMPLETE and study.feasible(t)
                and study.signed(t) is not None]
    fronts = dict(zip((t.number for t in feasible),
                      nondominated_ranks([study.signed(t) for t in feasible]),  # type: ignore[misc]
                      strict=True))
    infeasible = [t for t in trials if t.state == TrialState.COMPLETE and t.number not in fronts]
    rest = rank([t for t in trials if t.state != TrialState.COMPLETE], study.sign)
    return (sorted(feasible, key=lambda t: (fronts[t.number], -study.signed(t)[0], t.number))  # type: ignore[index]
            + sorted(infeasible, key=lambda t: (sum(max(v, 0) for v in violations(
                t.measures, study.constraints)), t.number))
            + rest)


#: what trials sort by besides "rank" and their parameters ("time" is the duration)
SORT_COLUMNS = ("number", "value", "duration", "time", "epochs", "retries", "best_epoch",
                "state")


def sort_trials(trials: list[Trial], sign: int, sort: str = "rank",
                study: StudyRecord | None = None) -> list[Trial]:
    """Trials by `sort`: "rank" (best first, as `rank`), a column of `SORT_COLUMNS` (value:
    best first) or a parameter's name; trials without a value for it come last."""
    if sort == "rank":
        return rank(trials, sign, study)
    known = set(SORT_COLUMNS) | {p for t in trials for p in t.params}
    if sort not in known:
        raise ValueError(f"sort: unknown column {sort!r} (choose from rank, "
                         f"{', '.join(sorted(known))})")
    return sorted(trials, key=_sort_key(sort, sign))


def _sort_key(column: str, sign: int) -> Callable[[Trial], Any]:
    def key(trial: Trial) -> tuple[int, Any]:
        if column in ("number", "epochs", "retries", "best_epoch"):
            value = getattr(trial, column)
        elif column == "value":
            value = None if trial.value is None else -sign * trial.value
        elif column in ("duration", "time"):
            value = trial.duration
        elif column == "state":
            value = trial.state.value
        else:
            value = trial.params.get(column)
        return (value is None, value if value is not None else 0)
    return key
