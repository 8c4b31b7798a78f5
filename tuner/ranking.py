"""The order of trials: best first (`rank`), or by a column or a parameter (`sort_trials`).
One rule for `Study.ranked`, `tuner trials`, the report and the dashboard's best-first view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tuner.states import TrialState
from tuner.storage import Trial


def rank(trials: list[Trial], sign: int) -> list[Trial]:
    """Best first: COMPLETE by value, then PRUNED by value, then the rest; ties by number.
    `sign`: the study's (+1 when maximizing)."""
    order = {TrialState.COMPLETE: 0, TrialState.PRUNED: 1}

    def key(t: Trial) -> tuple[int, int, float, int]:
        has_value = t.value is not None
        return (order.get(t.state, 2), 0 if has_value else 1,
                -sign * t.value if has_value else 0.0, t.number)  # type: ignore[operator]

    return sorted(trials, key=key)


#: what trials sort by besides "rank" and their parameters ("time" is the duration)
SORT_COLUMNS = ("number", "value", "duration", "time", "epochs", "retries", "best_epoch",
                "state")


def sort_trials(trials: list[Trial], sign: int, sort: str = "rank") -> list[Trial]:
    """Trials by `sort`: "rank" (best first, as `rank`), a column of `SORT_COLUMNS` (value:
    best first) or a parameter's name; trials without a value for it come last."""
    if sort == "rank":
        return rank(trials, sign)
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
