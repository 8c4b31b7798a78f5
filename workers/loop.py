"""The worker loop: claim a trial, run it, write the result, again.

Whoever starts the process (the local pool, a `tuner worker` agent, a thread in the
caller's process) runs this same loop against the database.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import random
import socket
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tuner.artifacts import Artifacts, best_models, resume_points
from tuner.checkpointing import CheckpointEvery
from tuner.definition import StudyDefinition, load_study_file
from tuner.early_stop import EarlyStop, early_stop_from_dict, read_curves
from tuner.errors import DefinitionError
from tuner.keras_tuner.errors import FailedTrialError, FatalError
from tuner.objectives import BUILT_IN_MEASURES
from tuner.space import Space
from tuner.states import TrialState
from tuner.storage import Storage, StudyRecord, Trial
from tuner.strategies import PBTSegment, trial_seed
from workers.live_models import LiveModels
from workers.outcome import CheckpointUnavailable, Outcome, TrialLost, run_objective

log = logging.getLogger(__name__)

_MAX_ERROR = 20_000  # characters of traceback kept per trial


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    heartbeat_interval: float = 5.0
    poll_interval: float = 0.01
    max_poll_interval: float = 0.5
    max_trials: int | None = None  # then exit, so a fresh process replaces this one
    max_memory_growth_mb: float | None = None  # likewise, past this growth of RSS


def rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Heartbeat:
    """Refreshes the worker's heartbeat from a thread while the main thread trains."""

    def __init__(self, storage: Storage, worker_id: int, interval: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(storage, worker_id, interval), daemon=True, name="heartbeat"
        )

    def _run(self, storage: Storage, worker_id: int, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                storage.heartbeat(worker_id)
            except Exception:  # a missed beat is not fatal; the lease has grace
                log.warning("heartbeat of worker %d failed", worker_id, exc_info=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class _StudyContext:
    """What a worker keeps per study it serves: loaded once per process."""

    record: StudyRecord
    definition: StudyDefinition
    data: Any = None
    data_error: str | None = None

    @functools.cached_property
    def space(self) -> Space:
        return Space.from_dict(self.record.space)

    def refresh(self, storage: Storage) -> None:
        """Re-read the study: its space grows as trials meet new parameters."""
        self.record = storage.study_by_id(self.record.id)
        self.__dict__.pop("space", None)


class Worker:
    """Claims and runs trials of one study (`study_name`) or, as an agent's worker, of any
    study whose file this host has."""

    def __init__(
        self, storage: Storage, study_name: str | None,
        definition: StudyDefinition | None = None, *,
        device: str = "cpu", options: WorkerOptions = WorkerOptions(),
        stop: Any = None,
    ) -> None:
        self.storage = storage
        self.device = device
        self.options = options
        self.stop = stop or threading.Event()
        self.worker_id: int | None = None
        self._contexts: dict[int, _StudyContext] = {}
        self._refused: set[int] = set()  # studies whose file this host lacks
        self._live = LiveModels()  # PBT members' models, trained on by their next segments
        # Each process's share of trials varies by ±25 %, so workers started together
        # are not all replaced together (a wave of interpreter start-ups).
        self._max_trials = (None if options.max_trials is None
                            else max(1, round(options.max_trials * random.uniform(0.75, 1.25))))
        self.study_id: int | None = None
        if study_name is not None:
            record = storage.get_study(study_name)
            self.study_id = record.id
            # A study this worker cannot run is an error at once, not one per trial.
            self._contexts[record.id] = self._context_for(record, definition)

    @staticmethod
    def _context_for(record: StudyRecord, definition: StudyDefinition | None) -> _StudyContext:
        if definition is None:
            definition = load_study_file(record.name, record.definition,
                                         record.settings.get("source"), record.definition_hash)
        return _StudyContext(record, definition)

    def _context(self, study_id: int) -> _StudyContext | None:
        """The study's definition and data; None (and the study refused) if this host
        cannot run it."""
        context = self._contexts.get(study_id)
        if context is None:
            record = self.storage.study_by_id(study_id)
            try:
                context = self._context_for(record, None)
            except DefinitionError as exc:
                log.warning("worker %s skips %s", self.worker_id, exc)
                self._refused.add(study_id)
                return None
            self._contexts[study_id] = context
        if context.data is None and context.data_error is None:
            self._load_data(context)
        return context

    @staticmethod
    def _load_data(context: _StudyContext) -> None:
        """Once per study and process; a failure fails each trial with its traceback."""
        if context.definition.load_data is None:  # an objective that needs no data
            return
        try:
            context.data = context.definition.load_data()
        except Exception:
            context.data_error = "load_data() failed:\n" + traceback.format_exc()

    def register(self) -> int:
        if self.worker_id is None:
            self.worker_id = self.storage.register_worker(
                host=socket.gethostname(), pid=os.getpid(), device=self.device,
                study_id=self.study_id,
            )
        return self.worker_id

    def run(self) -> int:
        """Run trials until stopped or due for replacement; returns how many ran."""
        worker_id = self.register()
        done = 0
        baseline = rss_mb()
        for study_id in self._contexts:  # the named study's data, before the first claim
            self._context(study_id)
        wait = self.options.poll_interval
        try:
            with Heartbeat(self.storage, worker_id, self.options.heartbeat_interval):
                while not self.stop.is_set():
                    trial = self.storage.claim_trial(self.study_id, worker_id,
                                                     exclude=self._refused,
                                                     prefer=self._live.members())
                    if trial is None:
                        self.stop.wait(wait)
                        wait = min(wait * 1.5, self.options.max_poll_interval)
                        continue
                    wait = self.options.poll_interval
                    context = self._context(trial.study_id)
                    if context is None:
                        self.storage.release_trial(trial.id, worker_id)
                        continue
                    self._run_one(context, trial, worker_id)
                    done += 1
                    if self._due_for_replacement(done, baseline):
                        break
        finally:
            self.storage.stop_worker(worker_id)
        return done

    def _due_for_replacement(self, done: int, baseline: float) -> bool:
        opts = self.options
        if opts.max_trials is not None and done >= self._max_trials:
            return True
        growth = rss_mb() - baseline
        if opts.max_memory_growth_mb is not None and growth > opts.max_memory_growth_mb:
            log.info("worker %s grew by %.0f MiB; making way for a fresh one",
                     self.worker_id, growth)
            return True
        return False

    def _early_stop(self, rule: EarlyStop | None, study: StudyRecord,
                    number: int) -> Callable[[int], bool] | None:
        """The study's rule for stopping trials early, asked after each epoch is stored."""
        if rule is None:
            return None

        def should_stop(epochs_done: int) -> bool:
            return rule.should_stop(number, epochs_done, read_curves(self.storage, study))

        return should_stop

    def _run_one(self, context: _StudyContext, trial: Trial, worker_id: int) -> None:
        if not set(trial.params) <= set(context.record.space):  # the space grew since
            context.refresh(self.storage)
        study, space = context.record, context.space
        attempts = 1 + study.settings.get("retries", 0)  # KerasTuner's max_retries_per_trial
        for attempt in range(1, attempts + 1):
            try:
                if context.data_error:
                    raise RuntimeError(context.data_error)
                outcome = self._train(context, study, space, trial, worker_id)
                break
            except TrialLost:
                log.warning("trial %d was taken from worker %d; result dropped",
                            trial.number, worker_id)
                return
            except CheckpointUnavailable as exc:  # the store may be back for the next try
                log.warning("trial %d goes back to the queue: %s", trial.number, exc)
                self.storage.release_trial(trial.id, worker_id, reason=str(exc),
                                           max_retries=study.settings.get("max_retries", 2))
                return
            except Exception as exc:
                final = isinstance(exc, (FailedTrialError, FatalError))
                if attempt < attempts and not final and self.storage.restart_trial(
                        trial.id, worker_id):
                    log.info("trial %d failed (%s); attempt %d of %d", trial.number, exc,
                             attempt + 1, attempts)
                    trial = replace(trial, checkpoint_epoch=None)  # it starts over
                    continue
                log.info("trial %d failed: %s", trial.number, exc)
                if self.storage.finish_trial(
                        trial.id, worker_id, TrialState.FAILED,
                        error=traceback.format_exc()[-_MAX_ERROR:],
                        attrs={"fatal": True} if isinstance(exc, FatalError) else None):
                    self._forget_checkpoints(study, trial)
                return
        if len(outcome.space) > len(space):
            self.storage.update_space(study.id, outcome.space.to_dict())
        if outcome.paused:  # waits at its rung, checkpoint kept, until promoted
            self.storage.pause_trial(trial.id, worker_id, value=outcome.value,
                                     best_epoch=outcome.best_epoch, attrs=outcome.attrs)
            return
        unmeasured = [n for n in study.measured if n not in (outcome.measures or {})]
        if outcome.value is None and not unmeasured or (
                outcome.value is not None and not math.isfinite(outcome.value)):
            finished = self.storage.finish_trial(
                trial.id, worker_id, TrialState.FAILED, params=outcome.params,
                error=f"no finite value of {study.metric!r} was reported"
                      + (f" (got {outcome.value})" if outcome.value is not None else ""),
            )
        elif unmeasured:  # the study file's mistake, not the trial's: it stops the study
            finished = self.storage.finish_trial(
                trial.id, worker_id, TrialState.FAILED, params=outcome.params,
                measures=outcome.measures, attrs={"fatal": True}, error=(
                    f"the study reads {', '.join(map(repr, unmeasured))}, which the trial did "
                    "not measure: name a metric of the epoch logs, a built-in measure ("
                    + ", ".join(BUILT_IN_MEASURES) + ") or one the study's measures() returns"))
        else:
            values = ([outcome.measures[o.name] for o in study.objectives]
                      if study.multi_objective and outcome.measures else None)
            finished = self.storage.finish_trial(
                trial.id, worker_id, TrialState.PRUNED if outcome.pruned else TrialState.COMPLETE,
                value=outcome.value, best_epoch=outcome.best_epoch, params=outcome.params,
                attrs=outcome.attrs, values=values, measures=outcome.measures,
            )
        if finished:  # a trial taken from this worker keeps them for its next attempt
            self._forget_checkpoints(study, trial)
        elif (segment := PBTSegment.of(trial)) is not None:
            # Its next attempt writes the checkpoint the member goes on from, not this model.
            self._live.take(study.id, segment.member)

    @staticmethod
    def _forget_checkpoints(study: StudyRecord, trial: Trial) -> None:
        """A finished trial resumes no more: its checkpoints go (its best weights stay)."""
        folder = study.settings.get("artifacts")
        if folder and CheckpointEvery.from_settings(study.settings) is not None:
            try:
                resume_points(folder, trial.number).remove()
            except Exception as exc:  # only disk space is at stake
                log.warning("could not delete the checkpoints of trial %d: %s",
                            trial.number, exc)

    def _train(self, context: _StudyContext, study: StudyRecord, space: Space, trial: Trial,
               worker_id: int) -> Outcome:
        seed = trial_seed(study.seed, trial.number)
        definition = context.definition
        measured = study.measured
        if definition.objective is not None:
            return run_objective(definition.objective, space, trial.params,
                                 metric=study.metric, seed=seed, measured=measured)
        from workers.resume import ResumePoint
        from workers.runner import SegmentRun, run_trial, run_tuner_trial

        def report(epoch: int, value: float | None, metrics: Any) -> bool:
            return self.storage.report_epoch(trial.id, worker_id, epoch, value, metrics)

        def grew(grown: Space) -> None:  # tell the coordinator now, not when the trial ends
            self.storage.update_space(study.id, grown.to_dict())

        folder = study.settings.get("artifacts")
        best = (best_models(folder), trial.number) if folder else None
        rule = early_stop_from_dict(study.settings.get("early_stop"))
        should_stop = self._early_stop(rule, study, trial.number)
        pbt = resume = None
        if (segment := PBTSegment.of(trial)) is not None:  # a stretch of a PBT member
            pbt = SegmentRun(trial.number, segment, Artifacts(study.settings["artifacts"]),
                             study.id, self._live)
        elif folder and (every := CheckpointEvery.from_settings(study.settings)) is not None:
            resume = ResumePoint(
                store=resume_points(folder, trial.number), every=every,
                epoch=trial.checkpoint_epoch,
                saved=lambda epoch: self.storage.checkpoint_trial(trial.id, worker_id, epoch),
                restart=lambda: self.storage.restart_trial(trial.id, worker_id),
                pauses=rule is not None and rule.promotion)
        if definition.run_trial is not None:  # a KerasTuner Tuner's trial
            return run_tuner_trial(
                definition, space, trial.params, number=trial.number, metric=study.metric,
                direction=study.direction, seed=seed, report=report, should_stop=should_stop,
                best=best, grew=grew, pbt=pbt, measured=measured)
        return run_trial(
            definition, context.data, space, trial.params, metric=study.metric,
            direction=study.direction, settings=study.settings, seed=seed, report=report,
            should_stop=should_stop, pbt=pbt, best=best, grew=grew, resume=resume,
            measured=measured,
        )
