"""The trial queue and the life of a trial: enqueue, claim, report, finish, requeue; the
workers' rows and the coordinator's lease. The statements themselves are in `queries.py`."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import func
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tuner.errors import StudyNotFound
from tuner.states import TrialState
from tuner.storage import queries
from tuner.storage.clock import db_now
from tuner.storage.engine import Database, retrying
from tuner.storage.models import STUDIES, TRIALS
from tuner.storage.records import Trial, trial_of

#: (number, params, attrs) of a trial to queue
Entry = tuple[int, Mapping[str, Any], Mapping[str, Any] | None]


def _finite(value: float | None) -> float | None:
    """NaN and infinities are not storable everywhere (MySQL, JSON): store them as NULL."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class TrialQueue(Database):
    # -- the coordinator's side ----------------------------------------------------------
    @retrying
    def next_number(self, study_id: int) -> int:
        with self._tx() as conn:
            last = conn.execute(
                sa.select(func.max(TRIALS.c.number)).where(TRIALS.c.study_id == study_id)
            ).scalar()
        return 0 if last is None else last + 1

    def enqueue_trial(
        self, study_id: int, number: int, params: Mapping[str, Any], *,
        budget: int | None = None, attrs: Mapping[str, Any] | None = None,
    ) -> Trial | None:
        """Queue trial `number`; None if it is past the budget (numbers run 0, 1, ...) or
        taken (by another coordinator, or by an earlier attempt of this one whose
        acknowledgement a dropped connection lost)."""
        if budget is not None and number >= budget:
            return None
        attrs = dict(attrs) if attrs else None
        ids = self.enqueue_trials(study_id, [(number, params, attrs)])
        if not ids:
            return None
        return Trial(id=ids[0], number=number, state=TrialState.QUEUED, params=dict(params),
                     attrs=attrs, study_id=study_id)

    @retrying
    def enqueue_trials(self, study_id: int, entries: Iterable[Entry]) -> list[int]:
        """Queue (number, params, attrs) trials in one transaction: their ids, or none of
        them (an empty list) if any number is taken."""
        ids = []
        try:
            with self._tx(write=True) as conn:
                for number, params, attrs in entries:
                    statement = queries.enqueue(study_id, number, params, attrs)
                    ids.append(conn.execute(statement).inserted_primary_key[0])
        except IntegrityError:
            return []
        return ids

    @retrying
    def update_queued_params(self, trial_id: int, params: Mapping[str, Any]) -> bool:
        """Replace a QUEUED trial's values (completed for parameters met since it was queued);
        False if a worker claimed it meanwhile: a trial keeps the values it was claimed with."""
        with self._tx(write=True) as conn:
            return bool(conn.execute(queries.update_queued(trial_id, params)).rowcount)

    @retrying
    def requeue_lost(self, study_id: int, *, grace: float, max_retries: int) -> list[int]:
        """Requeue RUNNING trials whose worker stopped or stopped heartbeating; returns numbers."""
        with self._tx(write=True) as conn:
            lost = conn.execute(queries.lost(study_id, grace)).scalars().all()
            return self._requeue(conn, lost, "its worker stopped heartbeating", max_retries)

    @retrying
    def release_worker(
        self, worker_id: int, *, reason: str, max_retries: int | None = None
    ) -> list[int]:
        """Mark a worker stopped and requeue its RUNNING trials; a retry is counted when
        `max_retries` is given (a crash), not for a clean stop such as Ctrl-C."""
        with self._tx(write=True) as conn:
            conn.execute(queries.stop_worker(worker_id))
            ids = conn.execute(queries.running_on(worker_id)).scalars().all()
            return self._requeue(conn, ids, reason, max_retries)

    @staticmethod
    def _requeue(
        conn: Connection, ids: Iterable[int], reason: str, max_retries: int | None
    ) -> list[int]:
        numbers = []
        for trial_id in ids:
            row = conn.execute(
                sa.select(TRIALS.c.number, TRIALS.c.retries).where(TRIALS.c.id == trial_id)
            ).one()
            if max_retries is not None and row.retries >= max_retries:
                conn.execute(queries.give_up(
                    trial_id, f"{reason}; gave up after {row.retries + 1} attempts"))
            else:
                conn.execute(queries.requeue(trial_id, retry=max_retries is not None))
                conn.execute(queries.forget_unsaved_epochs(trial_id))
            numbers.append(row.number)
        return numbers

    # -- the worker's side ---------------------------------------------------------------
    @retrying
    def claim_trial(
        self, study: int | Iterable[int] | None, worker_id: int, *,
        exclude: Iterable[int] = (), prefer: Mapping[int, Iterable[int]] | None = None,
        retry: bool = False,
    ) -> Trial | None:
        """Atomically take a QUEUED trial for this worker: the lowest-numbered of `study`
        (an id, several, or None for any study but those in `exclude`), a segment of the
        PBT members in `prefer` (by study) first."""
        next_queued = queries.next_queued(study, exclude, prefer)
        with self._tx(write=True) as conn:
            if retry:  # the attempt that failed may have committed: never hold two trials
                held = conn.execute(queries.held(worker_id)).first()
                if held is not None:
                    return trial_of(held)
            if self.engine.dialect.update_returning and self.engine.dialect.name != "mysql":
                # One statement: the subquery's row lock (or SQLite's write lock) makes it atomic.
                row = conn.execute(
                    queries.claim(next_queued.scalar_subquery(), worker_id)
                    .returning(*TRIALS.c)
                ).first()
            else:
                # MySQL/MariaDB: lock the row (skipping rows others hold), then take it.
                trial_id = conn.execute(next_queued).scalar()
                if trial_id is None:
                    return None
                conn.execute(queries.claim(trial_id, worker_id))
                row = conn.execute(sa.select(TRIALS).where(TRIALS.c.id == trial_id)).one()
        return None if row is None else trial_of(row)

    @retrying
    def release_trial(self, trial_id: int, worker_id: int, *, reason: str = "released",
                      max_retries: int | None = None) -> None:
        """Give back a claimed trial this worker cannot run: uncounted as a retry (its
        study file is not here), or counted when `max_retries` is given (its checkpoint
        cannot be read now), and FAILED with `reason` past them."""
        with self._tx(write=True) as conn:
            owned = conn.execute(
                sa.select(TRIALS.c.id).where(TRIALS.c.id == trial_id,
                                             TRIALS.c.worker_id == worker_id)
            ).scalars().all()
            self._requeue(conn, owned, reason, max_retries)

    @retrying
    def report_epoch(
        self, trial_id: int, worker_id: int, epoch: int, value: float | None,
        metrics: Mapping[str, float],
    ) -> bool:
        """Store one epoch's metrics (`epoch` counts from the trial's first epoch, or from
        where its checkpoint left off); False when the trial is no longer this worker's."""
        clean = {k: _finite(v) for k, v in metrics.items()}
        try:
            with self._tx(write=True) as conn:
                owned = conn.execute(queries.count_epoch(trial_id, worker_id)).rowcount
                if owned:
                    conn.execute(queries.store_epoch(trial_id, epoch, _finite(value), clean))
            return bool(owned)
        except IntegrityError:  # stored by an attempt whose acknowledgement was lost
            return True

    @retrying
    def finish_trial(
        self, trial_id: int, worker_id: int, state: TrialState, *,
        value: float | None = None, best_epoch: int | None = None,
        params: Mapping[str, Any] | None = None, error: str | None = None,
        attrs: Mapping[str, Any] | None = None, values: Sequence[float | None] | None = None,
        measures: Mapping[str, float] | None = None,
    ) -> bool:
        """RUNNING -> COMPLETE | PRUNED | FAILED, only if this worker still holds the trial;
        `attrs` are added to the trial's. `values` are its value of each objective, in the
        study's order, `measures` what its objectives and constraints read (NaN and
        infinities are kept as nothing)."""
        if not state.is_finished():
            raise ValueError(f"state: {state} is not a final state")
        row: dict[str, Any] = dict(
            state=state.value, value=_finite(value), best_epoch=best_epoch, error=error,
            finished_at=db_now(),
        )
        if values is not None:
            row["values"] = [_finite(v) for v in values]
        if measures is not None:
            row["measures"] = {k: _finite(v) for k, v in measures.items()}
        if params is not None:
            row["params"] = dict(params)
        with self._tx(write=True) as conn:
            if attrs:
                row["attrs"] = self._merged_attrs(conn, trial_id, attrs)
            done = conn.execute(queries.finish(trial_id, worker_id, row)).rowcount
            if done:
                conn.execute(queries.count_done(worker_id))
        return bool(done)

    @retrying
    def checkpoint_trial(self, trial_id: int, worker_id: int, epoch: int) -> bool:
        """Record that the trial's checkpoint holds its epochs up to `epoch` (call it once
        the checkpoint is wholly written); False when the trial is no longer this worker's."""
        with self._tx(write=True) as conn:
            return bool(conn.execute(queries.checkpointed(trial_id, worker_id, epoch)).rowcount)

    @retrying
    def pause_trial(self, trial_id: int, worker_id: int, *, value: float | None = None,
                    best_epoch: int | None = None,
                    attrs: Mapping[str, Any] | None = None) -> bool:
        """RUNNING -> PAUSED at a rung (its checkpoint saved), only if this worker still
        holds the trial; `value` is its best so far, `attrs` are added to the trial's."""
        with self._tx(write=True) as conn:
            merged = self._merged_attrs(conn, trial_id, attrs)
            return bool(conn.execute(queries.pause(
                trial_id, worker_id, _finite(value), best_epoch, merged)).rowcount)

    @staticmethod
    def _merged_attrs(conn: Connection, trial_id: int,
                      attrs: Mapping[str, Any] | None) -> dict[str, Any] | None:
        """The trial's attrs with `attrs` added (None: nothing to add)."""
        if not attrs:
            return None
        stored = conn.execute(sa.select(TRIALS.c.attrs).where(TRIALS.c.id == trial_id)).scalar()
        return {**(stored or {}), **attrs}

    @retrying
    def promote_trials(self, study_id: int, numbers: Iterable[int]) -> list[Trial]:
        """PAUSED -> QUEUED for these trials of the study: those promoted (a trial not
        PAUSED any more is left as it is)."""
        numbers = list(numbers)
        if not numbers:
            return []
        with self._tx(write=True) as conn:
            conn.execute(queries.promote(study_id, numbers))
            rows = conn.execute(sa.select(TRIALS).where(
                TRIALS.c.study_id == study_id, TRIALS.c.number.in_(numbers),
                TRIALS.c.state == TrialState.QUEUED.value)).all()
        return [trial_of(row) for row in rows]

    @retrying
    def prune_paused(self, study_id: int) -> int:
        """PAUSED -> PRUNED for every paused trial of the study; how many."""
        with self._tx(write=True) as conn:
            return conn.execute(queries.prune_paused(study_id)).rowcount

    @retrying
    def restart_trial(self, trial_id: int, worker_id: int) -> bool:
        """Forget the epochs (and the checkpoint) of a RUNNING trial this worker runs again
        from its start (a retry after an error, or a checkpoint it cannot use); False when
        the trial is no longer this worker's."""
        with self._tx(write=True) as conn:
            owned = conn.execute(queries.restart(trial_id, worker_id)).rowcount
            if owned:
                conn.execute(queries.forget_epochs(trial_id))
        return bool(owned)

    # -- workers -------------------------------------------------------------------------
    @retrying
    def register_worker(self, *, host: str, pid: int, device: str, study_id: int | None) -> int:
        with self._tx(write=True) as conn:
            statement = queries.register_worker(host=host, pid=pid, device=device,
                                                study_id=study_id)
            return conn.execute(statement).inserted_primary_key[0]

    @retrying
    def heartbeat(self, worker_id: int) -> None:
        with self._tx(write=True) as conn:
            conn.execute(queries.heartbeat(worker_id))

    @retrying
    def stop_worker(self, worker_id: int) -> None:
        with self._tx(write=True) as conn:
            conn.execute(queries.stop_worker(worker_id))

    @retrying
    def active_workers(self, study_id: int, *, grace: float) -> int:
        """Live workers that may take this study's trials (its own, and any-study agents)."""
        with self._tx() as conn:
            return conn.execute(queries.live_workers(study_id, grace)).scalar_one()

    # -- the coordinator's lease -----------------------------------------------------------
    @retrying
    def acquire_coordinator(self, study_id: int, owner: str, *, grace: float) -> str | None:
        """Take (or renew) the study's coordinator lease for `owner`. Returns None when
        `owner` holds it, else the holder: one active coordinator per study."""
        with self._tx(write=True) as conn:
            if conn.execute(queries.take_lease(study_id, owner, grace)).rowcount:
                return None
            holder = conn.execute(
                sa.select(STUDIES.c.coordinator).where(STUDIES.c.id == study_id)
            ).first()
        if holder is None:
            raise StudyNotFound(f"the study with id {study_id} was deleted")
        return holder.coordinator

    @retrying
    def release_coordinator(self, study_id: int, owner: str) -> None:
        with self._tx(write=True) as conn:
            conn.execute(queries.release_lease(study_id, owner))
