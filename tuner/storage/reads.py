"""The read side: what the views (CLI, dashboard, reports, the Python API) ask of the
database. Each call is one read transaction; pages, filters and sorts run in SQL, so a
view's cost does not grow with the study."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func

from tuner.errors import StudyNotFound
from tuner.states import TrialState
from tuner.storage.engine import Database, retrying, safe_url
from tuner.storage.models import EPOCHS, STUDIES, TRIALS, WORKERS
from tuner.storage.records import StudyRecord, StudySummary, Trial, WorkerRecord, trial_of


class Reads(Database):
    @retrying
    def get_study(self, name: str) -> StudyRecord:
        with self._tx() as conn:
            row = conn.execute(sa.select(STUDIES).where(STUDIES.c.name == name)).first()
            if row is None:
                known = conn.execute(sa.select(STUDIES.c.name).order_by(STUDIES.c.id)).scalars()
                names = ", ".join(known) or "none"
                raise StudyNotFound(
                    f"no study named {name!r} in {safe_url(self.url)} (studies there: {names})"
                )
        return StudyRecord(**row._mapping)

    @retrying
    def study_by_id(self, study_id: int) -> StudyRecord:
        with self._tx() as conn:
            row = conn.execute(sa.select(STUDIES).where(STUDIES.c.id == study_id)).first()
        if row is None:
            raise StudyNotFound(f"no study with id {study_id} in {safe_url(self.url)}")
        return StudyRecord(**row._mapping)

    @retrying
    def find_study(self, name: str) -> StudyRecord | None:
        """The study of that name, or None."""
        with self._tx() as conn:
            row = conn.execute(sa.select(STUDIES).where(STUDIES.c.name == name)).first()
        return None if row is None else StudyRecord(**row._mapping)

    @retrying
    def list_studies(self, study_id: int | None = None) -> list[StudySummary]:
        """Every study (or the one with `study_id`) with its trials by state, best value
        and last activity."""
        def only(query: Any, column: Any) -> Any:
            return query if study_id is None else query.where(column == study_id)

        with self._tx() as conn:
            rows = conn.execute(only(sa.select(STUDIES), STUDIES.c.id).order_by(STUDIES.c.id)).all()
            counts = conn.execute(
                only(sa.select(TRIALS.c.study_id, TRIALS.c.state, func.count()), TRIALS.c.study_id)
                .group_by(TRIALS.c.study_id, TRIALS.c.state)
            ).all()
            activity = dict(
                conn.execute(
                    only(sa.select(
                        TRIALS.c.study_id,
                        func.max(func.coalesce(TRIALS.c.finished_at, TRIALS.c.started_at,
                                               TRIALS.c.queued_at)),
                    ), TRIALS.c.study_id).group_by(TRIALS.c.study_id)
                ).all()
            )
            best = {}
            for direction, agg in (("maximize", func.max), ("minimize", func.min)):
                best.update(
                    conn.execute(
                        only(sa.select(TRIALS.c.study_id, agg(TRIALS.c.value)), TRIALS.c.study_id)
                        .join(STUDIES, STUDIES.c.id == TRIALS.c.study_id)
                        .where(STUDIES.c.direction == direction,
                               TRIALS.c.state == TrialState.COMPLETE.value)
                        .group_by(TRIALS.c.study_id)
                    ).all()
                )
        by_study: dict[int, dict[TrialState, int]] = {}
        for study_id, state, count in counts:
            by_study.setdefault(study_id, {})[TrialState(state)] = count
        return [
            StudySummary(
                study=StudyRecord(**row._mapping),
                counts=by_study.get(row.id, {}),
                best_value=best.get(row.id),
                last_activity=activity.get(row.id),
            )
            for row in rows
        ]

    @retrying
    def counts(self, study_id: int, *,
               states: Iterable[TrialState] | None = None) -> dict[TrialState, int]:
        """Trials by state (of `states` only, when given: an index range, however large
        the study)."""
        query = sa.select(TRIALS.c.state, func.count()).where(TRIALS.c.study_id == study_id)
        if states is not None:
            states = [TrialState(s) for s in states]
            query = query.where(TRIALS.c.state.in_([s.value for s in states]))
        with self._tx() as conn:
            rows = conn.execute(query.group_by(TRIALS.c.state)).all()
        counts = {state: 0 for state in (states if states is not None else TrialState)}
        counts.update({TrialState(state): n for state, n in rows})
        return counts

    @retrying
    def trials(
        self, study_id: int, *, states: Iterable[TrialState] | None = None,
        numbers: Iterable[int] | None = None,
    ) -> list[Trial]:
        query = sa.select(TRIALS).where(TRIALS.c.study_id == study_id)
        if states is not None:
            query = query.where(TRIALS.c.state.in_([TrialState(s).value for s in states]))
        if numbers is not None:
            query = query.where(TRIALS.c.number.in_(list(numbers)))
        with self._tx() as conn:
            rows = conn.execute(query.order_by(TRIALS.c.number)).all()
        return [trial_of(row) for row in rows]

    @retrying
    def trials_by_id(self, ids: Iterable[int]) -> list[Trial]:
        """These trials, looked up by primary key only: the cost does not grow with the
        study (a polling loop's query)."""
        ids = list(ids)
        if not ids:
            return []
        with self._tx() as conn:
            rows = conn.execute(sa.select(TRIALS).where(TRIALS.c.id.in_(ids))).all()
        return sorted((trial_of(row) for row in rows), key=lambda t: t.number)

    @retrying
    def trial_page(
        self, study_id: int, *, sort: str = "number", descending: bool = False,
        states: Iterable[TrialState] | None = None, filters: Iterable[TrialFilter] = (),
        numeric: Iterable[str] = (), offset: int = 0, limit: int = 50,
    ) -> tuple[int, list[Trial]]:
        """One page of the study's trials, filtered and sorted in the database (so a page
        costs an index range and a top-N sort, not the whole study), and how many match.
        `sort` and a filter's `field` are a column (number, value, epochs, duration) or a
        parameter's name; `numeric` names the parameters compared as numbers."""
        numeric = set(numeric)
        where = [TRIALS.c.study_id == study_id]
        if states is not None:
            where.append(TRIALS.c.state.in_([TrialState(s).value for s in states]))
        for f in filters:
            where.append(_compare(_trial_field(f.field, numeric), f.op, f.value))
        key = _trial_field(sort, numeric)
        order = [key.desc() if descending else key.asc()]
        if sort != "number":  # ties, and missing values last whichever the direction
            order = [key.is_(None).asc(), *order, TRIALS.c.number.asc()]
        with self._tx() as conn:
            total = conn.execute(sa.select(func.count()).select_from(TRIALS).where(*where)).scalar()
            # Sort the ids alone, then read the page's rows: a deep page does not sort
            # (and spill to disk) whole rows.
            ids = conn.execute(
                sa.select(TRIALS.c.id).where(*where).order_by(*order).offset(offset).limit(limit)
            ).scalars().all()
            rows = conn.execute(sa.select(TRIALS).where(TRIALS.c.id.in_(ids))).all() if ids else []
        by_id = {row.id: row for row in rows}
        return int(total or 0), [trial_of(by_id[i]) for i in ids if i in by_id]

    @retrying
    def recent_trials(self, study_id: int, *, states: Iterable[TrialState],
                      limit: int) -> list[Trial]:
        """The `limit` highest-numbered trials in these states, in number order."""
        query = (sa.select(TRIALS)
                 .where(TRIALS.c.study_id == study_id,
                        TRIALS.c.state.in_([TrialState(s).value for s in states]))
                 .order_by(TRIALS.c.number.desc()).limit(limit))
        with self._tx() as conn:
            rows = conn.execute(query).all()
        return [trial_of(row) for row in reversed(rows)]

    @retrying
    def finished_values(self, study_id: int) -> list[tuple[int, float, float]]:
        """(number, finished_at, value) of every completed trial with a value, in the order
        they finished: the study's history, without loading whole rows."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(TRIALS.c.number, TRIALS.c.finished_at, TRIALS.c.value)
                .where(TRIALS.c.study_id == study_id,
                       TRIALS.c.state == TrialState.COMPLETE.value, TRIALS.c.value.is_not(None))
                .order_by(TRIALS.c.finished_at, TRIALS.c.number)
            ).all()
        return [tuple(row) for row in rows]

    @retrying
    def curves(self, study_id: int, metrics: Sequence[str] = ()
               ) -> tuple[dict[int, list[Any]], frozenset[int]]:
        """Per-epoch values of the study's trials but the failed ones (a queued trial has
        epochs when it was promoted or requeued with a checkpoint), by trial number, and the
        numbers of those that are finished: what early stopping reads. With `metrics`, each
        epoch gives the tuple of those metrics its row holds (several objectives) instead."""
        live = [s.value for s in TrialState if s != TrialState.FAILED]
        column = EPOCHS.c.metrics if metrics else EPOCHS.c.value
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(TRIALS.c.number, TRIALS.c.state, column)
                .join(EPOCHS, EPOCHS.c.trial_id == TRIALS.c.id)
                .where(TRIALS.c.study_id == study_id, TRIALS.c.state.in_(live))
                .order_by(TRIALS.c.number, EPOCHS.c.epoch)
            ).all()
        values: dict[int, list[Any]] = {}
        finished = set()
        ended = (TrialState.COMPLETE.value, TrialState.PRUNED.value)
        for number, state, value in rows:
            if metrics:
                value = tuple((value or {}).get(name) for name in metrics)
            values.setdefault(number, []).append(value)
            if state in ended:
                finished.add(number)
        return values, frozenset(finished)

    @retrying
    def best_trial(self, study: StudyRecord) -> Trial | None:
        """The COMPLETE trial with the best value; with several objectives or constraints,
        the Pareto front's best on the first objective (`StudyRecord.front`)."""
        if study.measured:
            front = study.front(self.trials(study.id, states={TrialState.COMPLETE}))
            return front[0] if front else None
        order = TRIALS.c.value.desc() if study.sign > 0 else TRIALS.c.value.asc()
        with self._tx() as conn:
            row = conn.execute(
                sa.select(TRIALS)
                .where(TRIALS.c.study_id == study.id, TRIALS.c.state == TrialState.COMPLETE.value,
                       TRIALS.c.value.is_not(None))
                .order_by(order, TRIALS.c.number)
                .limit(1)
            ).first()
        return None if row is None else trial_of(row)

    @retrying
    def epochs(self, trial_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
        """Per-epoch metrics of these trials: {trial_id: [{epoch, value, metrics}, ...]}."""
        ids = list(trial_ids)
        result: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        with self._tx() as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    sa.select(EPOCHS).where(EPOCHS.c.trial_id.in_(ids[start:start + 500]))
                    .order_by(EPOCHS.c.trial_id, EPOCHS.c.epoch)
                ).all()
                for row in rows:
                    result[row.trial_id].append(
                        {"epoch": row.epoch, "value": row.value, "metrics": row.metrics}
                    )
        return result

    @retrying
    def workers(self, *, alive_only: bool = False) -> list[WorkerRecord]:
        """Workers with the study and number of the trial each runs now (if any)."""
        running = TRIALS.c.state == TrialState.RUNNING.value
        query = (
            sa.select(WORKERS, STUDIES.c.name.label("study"), TRIALS.c.number.label("trial"))
            .outerjoin(TRIALS, sa.and_(TRIALS.c.worker_id == WORKERS.c.id, running))
            .outerjoin(STUDIES, STUDIES.c.id == TRIALS.c.study_id)
            .order_by(WORKERS.c.id)
        )
        if alive_only:
            query = query.where(WORKERS.c.stopped_at.is_(None))
        with self._tx() as conn:
            return [WorkerRecord(**row._mapping) for row in conn.execute(query).all()]


@dataclass(frozen=True)
class TrialFilter:
    """`field op value`, e.g. value >= 0.9 or units = 64 (a column or a parameter)."""
    field: str
    op: str
    value: float | str


_COLUMNS = {"number": TRIALS.c.number, "value": TRIALS.c.value, "epochs": TRIALS.c.epochs,
            "duration": TRIALS.c.finished_at - TRIALS.c.started_at}
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def _trial_field(field: str, numeric: set[str]) -> Any:
    if field in _COLUMNS:
        return _COLUMNS[field]
    element = TRIALS.c.params[field]  # JSON path: the same on SQLite, PostgreSQL and MySQL
    return element.as_float() if field in numeric else element.as_string()


def _compare(column: Any, op: str, value: float | str) -> Any:
    if op not in _OPS:
        raise ValueError(f"unknown comparison {op!r} (use one of {' '.join(_OPS)})")
    return _OPS[op](column, value)
