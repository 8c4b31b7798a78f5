"""The statements of the trial queue and of the leases, in one place.

A trial's life: QUEUED (`enqueue`) -> RUNNING for one worker (`claim`) -> COMPLETE,
PRUNED or FAILED (`finish`), or back to QUEUED when its worker is lost (`requeue`), or
FAILED past its retries (`give_up`). Every statement that changes a RUNNING trial names
the trial's state and its worker (`owned`), so a worker that lost its lease changes
nothing. `queue.py` runs these, one short transaction per call. Times are the database's
(`db_now`), so hosts with skewed clocks agree on who is late.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql import Delete, Insert, Select, Update

from tuner.states import TrialState
from tuner.storage.clock import db_now
from tuner.storage.models import EPOCHS, STUDIES, TRIALS, WORKERS

QUEUED, RUNNING, PAUSED = (TrialState.QUEUED.value, TrialState.RUNNING.value,
                           TrialState.PAUSED.value)


# -- the queue ---------------------------------------------------------------------------
def enqueue(study_id: int, number: int, params: Mapping[str, Any],
            attrs: Mapping[str, Any] | None) -> Insert:
    """A new QUEUED trial; the unique (study, number) refuses a number already taken."""
    return TRIALS.insert().values(
        study_id=study_id, number=number, state=QUEUED, params=dict(params),
        queued_at=db_now(), epochs=0, retries=0, attrs=dict(attrs) if attrs else None)


def next_queued(study: int | Iterable[int] | None, exclude: Iterable[int] = (),
                prefer: Mapping[int, Iterable[int]] | None = None) -> Select:
    """The id of the lowest-numbered QUEUED trial of `study` (an id, several, or None for
    any study but those in `exclude`), row-locked, skipping the rows other claims hold.
    A segment of a PBT member in `prefer` (members by study) comes first: the worker
    holds that member's model."""
    query = sa.select(TRIALS.c.id).where(TRIALS.c.state == QUEUED)
    if isinstance(study, int):
        query = query.where(TRIALS.c.study_id == study)
    elif study is not None:
        query = query.where(TRIALS.c.study_id.in_(list(study)))
    if exclude:
        query = query.where(TRIALS.c.study_id.not_in(list(exclude)))
    order = [TRIALS.c.number, TRIALS.c.id]
    if prefer:
        member = TRIALS.c.attrs["member"].as_integer()
        held = sa.or_(*(sa.and_(TRIALS.c.study_id == study_id, member.in_(list(members)))
                        for study_id, members in prefer.items()))
        order.insert(0, sa.case((held, 0), else_=1))
    return query.order_by(*order).limit(1).with_for_update(skip_locked=True)


def claim(trial_id: Any, worker_id: int) -> Update:
    """The claim: QUEUED -> RUNNING for this worker. `trial_id` is an id or, where the
    database can run it as one atomic statement, the `next_queued` subquery itself."""
    return (TRIALS.update().where(TRIALS.c.id == trial_id)
            .values(state=RUNNING, worker_id=worker_id, started_at=db_now()))


def held(worker_id: int) -> Select:
    """The trial this worker runs now, if any."""
    return sa.select(TRIALS).where(TRIALS.c.worker_id == worker_id, TRIALS.c.state == RUNNING)


def update_queued(trial_id: int, params: Mapping[str, Any]) -> Update:
    """New values for a trial no worker has claimed yet."""
    return (TRIALS.update().where(TRIALS.c.id == trial_id, TRIALS.c.state == QUEUED)
            .values(params=dict(params)))


# -- a worker's trial ----------------------------------------------------------------------
def owned(trial_id: int, worker_id: int) -> sa.ColumnElement[bool]:
    """The trial is RUNNING and this worker's: the condition of every change a worker makes."""
    return sa.and_(TRIALS.c.id == trial_id, TRIALS.c.worker_id == worker_id,
                   TRIALS.c.state == RUNNING)


def count_epoch(trial_id: int, worker_id: int) -> Update:
    return TRIALS.update().where(owned(trial_id, worker_id)).values(epochs=TRIALS.c.epochs + 1)


def store_epoch(trial_id: int, epoch: int, value: float | None,
                metrics: Mapping[str, float | None]) -> Insert:
    """One epoch's row; its primary key (trial, epoch) refuses a second copy."""
    return EPOCHS.insert().values(trial_id=trial_id, epoch=epoch, value=value,
                                  metrics=dict(metrics))


def finish(trial_id: int, worker_id: int, values: Mapping[str, Any]) -> Update:
    """RUNNING -> a final state (in `values`), only while the trial is this worker's."""
    return TRIALS.update().where(owned(trial_id, worker_id)).values(**values)


def count_done(worker_id: int) -> Update:
    return (WORKERS.update().where(WORKERS.c.id == worker_id)
            .values(trials_done=WORKERS.c.trials_done + 1, heartbeat_at=db_now()))


def restart(trial_id: int, worker_id: int) -> Update:
    """The worker runs its trial again from the start (a retry after an error, or a
    checkpoint it cannot use)."""
    return (TRIALS.update().where(owned(trial_id, worker_id))
            .values(epochs=0, checkpoint_epoch=None))


def checkpointed(trial_id: int, worker_id: int, epoch: int) -> Update:
    """The trial's checkpoint now holds epochs up to `epoch`: a requeue keeps those."""
    return TRIALS.update().where(owned(trial_id, worker_id)).values(checkpoint_epoch=epoch)


def forget_epochs(trial_id: int) -> Delete:
    return EPOCHS.delete().where(EPOCHS.c.trial_id == trial_id)


def forget_unsaved_epochs(trial_id: int) -> Delete:
    """The epochs past the trial's checkpoint (all of them without one): a requeued trial
    trains them again."""
    saved = (sa.select(sa.func.coalesce(TRIALS.c.checkpoint_epoch, -1))
             .where(TRIALS.c.id == trial_id).scalar_subquery())
    return EPOCHS.delete().where(EPOCHS.c.trial_id == trial_id, EPOCHS.c.epoch > saved)


# -- early stopping by promotion -----------------------------------------------------------
def pause(trial_id: int, worker_id: int, value: float | None, best_epoch: int | None,
          attrs: Mapping[str, Any] | None) -> Update:
    """RUNNING -> PAUSED at a rung: no worker holds it; its epochs and checkpoint stay."""
    values = dict(state=PAUSED, worker_id=None, value=value, best_epoch=best_epoch)
    return (TRIALS.update().where(owned(trial_id, worker_id))
            .values(**values, **({"attrs": dict(attrs)} if attrs else {})))


def promote(study_id: int, numbers: Iterable[int]) -> Update:
    """PAUSED -> QUEUED: it resumes from its checkpoint on whichever worker claims it."""
    return (TRIALS.update()
            .where(TRIALS.c.study_id == study_id, TRIALS.c.number.in_(list(numbers)),
                   TRIALS.c.state == PAUSED)
            .values(state=QUEUED, started_at=None))


def prune_paused(study_id: int) -> Update:
    """PAUSED -> PRUNED: the budget is spent and no rung will promote them now."""
    return (TRIALS.update().where(TRIALS.c.study_id == study_id, TRIALS.c.state == PAUSED)
            .values(state=TrialState.PRUNED.value, finished_at=db_now()))


# -- lost workers ------------------------------------------------------------------------
def lost(study_id: int, grace: float) -> Select:
    """Ids of the study's RUNNING trials whose worker stopped or has not heartbeat within
    `grace` seconds."""
    stale = sa.select(WORKERS.c.id).where(
        sa.or_(WORKERS.c.stopped_at.is_not(None), WORKERS.c.heartbeat_at < db_now() - grace))
    return sa.select(TRIALS.c.id).where(
        TRIALS.c.study_id == study_id, TRIALS.c.state == RUNNING,
        sa.or_(TRIALS.c.worker_id.is_(None), TRIALS.c.worker_id.in_(stale)))


def running_on(worker_id: int) -> Select:
    return sa.select(TRIALS.c.id).where(TRIALS.c.worker_id == worker_id,
                                        TRIALS.c.state == RUNNING)


def requeue(trial_id: int, *, retry: bool) -> Update:
    """RUNNING -> QUEUED, for any worker, keeping the epochs its checkpoint holds; a crash
    counts as a retry, a clean stop does not."""
    return (TRIALS.update().where(TRIALS.c.id == trial_id, TRIALS.c.state == RUNNING)
            .values(state=QUEUED, worker_id=None, started_at=None,
                    epochs=sa.func.coalesce(TRIALS.c.checkpoint_epoch + 1, 0),
                    retries=TRIALS.c.retries + (1 if retry else 0)))


def give_up(trial_id: int, error: str) -> Update:
    """RUNNING -> FAILED: lost too often."""
    return (TRIALS.update().where(TRIALS.c.id == trial_id, TRIALS.c.state == RUNNING)
            .values(state=TrialState.FAILED.value, finished_at=db_now(), error=error))


# -- workers -------------------------------------------------------------------------------
def register_worker(*, host: str, pid: int, device: str, study_id: int | None) -> Insert:
    return WORKERS.insert().values(host=host, pid=pid, device=device, study_id=study_id,
                                   started_at=db_now(), heartbeat_at=db_now(), trials_done=0)


def heartbeat(worker_id: int) -> Update:
    return WORKERS.update().where(WORKERS.c.id == worker_id).values(heartbeat_at=db_now())


def stop_worker(worker_id: int) -> Update:
    return (WORKERS.update().where(WORKERS.c.id == worker_id, WORKERS.c.stopped_at.is_(None))
            .values(stopped_at=db_now()))


def live_workers(study_id: int, grace: float) -> Select:
    """How many live workers may take this study's trials (its own, and any-study agents)."""
    return sa.select(sa.func.count()).where(
        WORKERS.c.stopped_at.is_(None), WORKERS.c.heartbeat_at >= db_now() - grace,
        sa.or_(WORKERS.c.study_id.is_(None), WORKERS.c.study_id == study_id))


# -- the coordinator's lease -----------------------------------------------------------------
def take_lease(study_id: int, owner: str, grace: float) -> Update:
    """The study's one coordinator: taken when free, renewed by its holder, or taken over
    once the holder has not renewed it within `grace` seconds."""
    return (STUDIES.update()
            .where(STUDIES.c.id == study_id,
                   sa.or_(STUDIES.c.coordinator.is_(None), STUDIES.c.coordinator == owner,
                          STUDIES.c.coordinator_beat_at < db_now() - grace))
            .values(coordinator=owner, coordinator_beat_at=db_now()))


def release_lease(study_id: int, owner: str) -> Update:
    return (STUDIES.update().where(STUDIES.c.id == study_id, STUDIES.c.coordinator == owner)
            .values(coordinator=None, coordinator_beat_at=None))
