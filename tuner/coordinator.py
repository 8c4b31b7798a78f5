"""The coordinator: keeps the workers fed with trials until the budget is spent.

It asks the strategy for configurations, writes them as QUEUED trials, tells the
strategy each result, requeues trials whose worker was lost, and reports progress.
It never trains anything and holds no lock while workers train.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tuner.artifacts import KeptModels, best_models
from tuner.definition import StudyDefinition
from tuner.early_stop import EarlyStop, early_stop_from_dict, read_curves
from tuner.errors import StudyNotFound, TunerError
from tuner.executors import Executor
from tuner.processes import alive, release_dead_local_workers
from tuner.space import Space
from tuner.states import FINISHED, UNFINISHED, TrialState
from tuner.storage import LEASE_GRACE, Storage, StudyRecord, Trial, WorkerRecord, safe_url
from tuner.strategies import WAIT, Proposal, Strategy
from tuner.strategies.base import lacking

log = logging.getLogger(__name__)
WAITING = UNFINISHED | {TrialState.PAUSED}  # trials with more to do, shown as progress


@dataclass(frozen=True, kw_only=True)
class CoordinatorOptions:
    poll_interval: float = 0.05
    lease_grace: float = LEASE_GRACE  # seconds without heartbeat before a trial is requeued
    max_retries: int = 2  # requeues of a lost trial before it is FAILED
    max_consecutive_failures: int = 10  # then the study stops: something is broken
    # Trials queued beyond the workers, so none waits for one: 1 for a strategy that
    # learns from each result, two rounds (at least 16) for one that does not (None:
    # that choice).
    queue_ahead: int | None = None
    housekeeping_interval: float = 1.0  # renew the lease, sweep lost trials, count workers
    keep_models: int = 10  # trials whose best weights are kept (the best ones)


@dataclass(frozen=True)
class Progress:
    study: StudyRecord
    counts: dict[TrialState, int]
    budget: int
    front: list[Trial]  # the Pareto front so far (one objective: the trials sharing the best)
    elapsed: float
    trial: Trial | None = None  # the trial whose end this reports (None: a periodic report)

    @property
    def best(self) -> Trial | None:
        """The best trial so far (several objectives: the front's best on the first)."""
        return self.front[0] if self.front else None

    @property
    def done(self) -> int:
        return sum(self.counts[s] for s in FINISHED)


class Interrupted(TunerError):
    """The run was stopped (Ctrl-C); in-flight trials were requeued for a resume."""


class TooManyFailures(TunerError):
    """Trials keep failing in a row; the study stops rather than burn its budget."""


class StudyStopped(TunerError):
    """A trial failed with an error that stops the whole study (KerasTuner's FatalError)."""


class Coordinator:
    """Runs a study to its budget: the one active coordinator of that study, by a lease
    in its row; a second one waits, and takes over when the first stops or dies."""

    def __init__(
        self, storage: Storage, study: StudyRecord, strategy: Strategy, executor: Executor, *,
        budget: int, options: CoordinatorOptions = CoordinatorOptions(),
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.storage, self.study, self.strategy = storage, study, strategy
        self.executor, self.budget, self.options = executor, budget, options
        self.on_progress = on_progress or (lambda progress: None)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._hinted = False  # told the user no worker serves the study

    def run(self, definition: StudyDefinition) -> Progress:
        """Run the study to its budget (or until the strategy is exhausted)."""
        try:
            self._acquire_lease()
        except KeyboardInterrupt:
            raise Interrupted("interrupted while waiting for the other coordinator") from None
        try:
            return self._run(definition)
        finally:
            self.storage.release_coordinator(self.study.id, self.owner)

    def _acquire_lease(self) -> None:
        """Wait until this is the study's one coordinator; a dead one on this host (a
        killed run) is replaced at once, one elsewhere once its lease expires."""
        told = False
        while (holder := self._try_lease()) is not None:
            host, pid, _ = (holder.split(":") + ["", ""])[:3]
            if pid.isdigit() and not alive(host, int(pid)):
                self.storage.release_coordinator(self.study.id, holder)
                continue
            if not told:
                log.warning("study %r is coordinated by %s; waiting until it stops (or its "
                            "lease of %.0f s runs out)", self.study.name, holder,
                            self.options.lease_grace)
                told = True
            time.sleep(self.options.housekeeping_interval)

    def _try_lease(self) -> str | None:
        return self.storage.acquire_coordinator(self.study.id, self.owner,
                                                grace=self.options.lease_grace)

    def _run(self, definition: StudyDefinition) -> Progress:
        storage, study, options = self.storage, self.study, self.options
        started = time.monotonic()
        # What views judge the study's workers live or lost by (`lease_graces`), and how
        # often a worker may give back a trial it cannot run now.
        storage.update_settings(study.id, {"lease_grace": options.lease_grace,
                                           "max_retries": options.max_retries})
        if definition.path is not None:  # the copy every worker must match
            storage.update_definition(study.id, definition.path, definition.source_hash)
        release_dead_local_workers(storage, max_retries=options.max_retries)
        storage.requeue_lost(study.id, grace=options.lease_grace, max_retries=options.max_retries)
        history = storage.trials(study.id)
        space = Space.from_dict(study.space)
        self.strategy.start(space, direction=study.direction, seed=study.seed, trials=history,
                            settings=study.settings)
        budget = self.budget = self.strategy.trial_budget(self.budget)
        in_flight = {t.number: t.id for t in history if t.state in UNFINISHED}
        self._complete_queued(in_flight, space)  # queued before the space last grew
        # Finished trials are counted as they are collected: no query grows with the study.
        finished_counts = Counter(t.state for t in history if t.state.is_finished())
        artifacts = study.settings.get("artifacts")
        # With several objectives or constraints any finished trial may join the front
        # later, or the best by value may be infeasible: every trial's weights stay.
        kept = (KeptModels(best_models(artifacts), options.keep_models, study.sign, history)
                if artifacts and not study.measured else None)
        front = study.front(history)
        self._next_number = max((t.number for t in history), default=-1) + 1
        failures_in_row = 0
        exhausted = False
        workers_seen = 0
        housekeeping = 0.0
        pause = options.poll_interval

        rule = early_stop_from_dict(study.settings.get("early_stop"))
        promoting = rule if rule is not None and rule.promotion else None
        try:
            self.executor.start(storage, study, definition)
        except BaseException:
            self._release_workers()  # any that a refused start registered (it stopped them)
            raise
        try:
            while True:
                # Finished trials count once told to the strategy, so the budget never ends
                # the run before the strategy has heard of every trial it counts.
                finished = self._collect(in_flight)
                due = time.monotonic() >= housekeeping
                if promoting is not None and (finished or due or not in_flight):
                    self._promote(promoting, in_flight, budget, exhausted)
                unfinished = storage.counts(study.id, states=WAITING)
                # Trials grow the space as they meet parameters, and workers store it then:
                # queued trials need values for them, and a grid may have more to try.
                if finished or due:
                    grown = Space.from_dict(storage.study_by_id(study.id).space)
                    if grown != space:
                        space, exhausted = grown, False
                        self._complete_queued(in_flight, space)
                for trial in finished:  # one report per trial: each with its own counts
                    self.strategy.tell(trial)
                    finished_counts[trial.state] += 1
                    failures_in_row = failures_in_row + 1 if trial.state == TrialState.FAILED else 0
                    front = study.front([*front, trial])
                    if kept is not None:
                        kept.note(trial)
                    progress = self._report(unfinished, finished_counts, front, started, trial)
                    if (trial.attrs or {}).get("fatal"):
                        raise StudyStopped(f"trial {trial.number} stopped the study: "
                                           f"{trial.error_summary}")
                if not finished:
                    progress = self._report(unfinished, finished_counts, front, started, None)
                # Every trial of a small budget failing is as telling as a long run of them.
                if failures_in_row >= min(options.max_consecutive_failures, budget):
                    raise TooManyFailures(
                        f"the last {failures_in_row} trials failed; stopping the study. "
                        f"Last error: {finished[-1].error_summary or '(no error text)'}"
                    )
                if progress.done >= budget or (exhausted and not in_flight):
                    return progress
                if due:
                    housekeeping = time.monotonic() + options.housekeeping_interval
                    workers_seen = self._housekeeping()
                slots = max(self.executor.slots, workers_seen)
                queued = self._top_up(in_flight, space, slots)
                exhausted = exhausted or queued is None
                self.executor.check(max_retries=options.max_retries)
                # Busy workers are fed at once; a quiet study is polled ever more gently.
                pause = (options.poll_interval / 10 if finished or queued
                         else min(2 * pause, options.poll_interval))
                time.sleep(pause)
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted; in-flight trials {sorted(in_flight)} go back to the queue"
            ) from None
        finally:
            self.executor.stop()
            self._release_workers()

    def _release_workers(self) -> None:
        """Release the workers the executor ran (now stopped): their RUNNING trials go back
        to the queue. Those that died or were replaced were released as they went."""
        for worker_id in self.executor.worker_ids():
            self.storage.release_worker(worker_id, reason="stopped")

    def _report(self, unfinished: dict[TrialState, int], finished: Counter[TrialState],
                front: list[Trial], started: float, trial: Trial | None) -> Progress:
        counts = {**{s: 0 for s in TrialState}, **finished, **unfinished}
        progress = Progress(self.study, counts, self.budget, front, time.monotonic() - started,
                            trial)
        self.on_progress(progress)
        return progress

    def _housekeeping(self) -> int:
        """Renew the lease, requeue lost trials, count the live workers (for the queue)."""
        options, study = self.options, self.study
        holder = self._try_lease()
        if holder is not None:
            raise TunerError(f"coordinator {holder} took over study {study.name!r} "
                             "(this one missed its lease); stopping this one")
        self.storage.requeue_lost(study.id, grace=options.lease_grace,
                                  max_retries=options.max_retries)
        live = self.storage.active_workers(study.id, grace=options.lease_grace)
        if live == 0 and self.executor.slots == 0 and not self._hinted:
            self._hinted = True
            log.warning("no worker is serving study %r; start one on a GPU host with "
                        "`tuner worker --storage %s`", study.name, safe_url(self.storage.url))
        return live

    def _complete_queued(self, in_flight: dict[int, int], space: Space) -> None:
        """Give our queued trials values for the parameters `space` gained since they were
        queued; their workers would run those at their defaults."""
        for trial in self.storage.trials_by_id(in_flight.values()):  # by key: the queue only
            if trial.state == TrialState.QUEUED and lacking(trial.params, space):
                params = self.strategy.complete(trial.number, trial.params, space)
                if not self.storage.update_queued_params(trial.id, params):
                    log.debug("trial %d was claimed before it was completed", trial.number)

    def _collect(self, in_flight: dict[int, int]) -> list[Trial]:
        """The trials of ours that finished since the last look (those paused at a rung
        leave the flight too, unannounced: they finish later, or are promoted)."""
        if not in_flight:
            return []
        # By primary key alone: a filter on the study or state would walk the index
        # entries of every finished trial, and those grow with the study.
        trials = [t for t in self.storage.trials_by_id(in_flight.values())
                  if t.state.is_finished() or t.state == TrialState.PAUSED]
        for trial in trials:
            del in_flight[trial.number]
        return [t for t in trials if t.state.is_finished()]

    def _promote(self, rule: EarlyStop, in_flight: dict[int, int], budget: int,
                 exhausted: bool) -> None:
        """Queue again the paused trials the rule promotes by the curves as they are now;
        once no trial is left to start or run, prune those no rung will promote."""
        paused = self.storage.trials(self.study.id, states=[TrialState.PAUSED])
        if not paused:
            return
        curves = read_curves(self.storage, self.study)
        numbers = rule.promotions({t.number: t.epochs for t in paused}, curves)
        for trial in self.storage.promote_trials(self.study.id, numbers):
            in_flight[trial.number] = trial.id
            log.info("trial %d promoted at epoch %d", trial.number, trial.epochs)
        if not in_flight and (exhausted or self._next_number >= budget):
            self.storage.prune_paused(self.study.id)
            in_flight.update((t.number, t.id) for t in paused)  # collected as PRUNED

    def _top_up(self, in_flight: dict[int, int], space: Space, slots: int) -> int | None:
        """Queue new trials up to the workers plus a margin; returns how many were
        queued, or None once the strategy has nothing left. What is in flight is what this
        coordinator queued and has not collected yet (a trial finished since counts until
        then), so the queue never overshoots while results arrive."""
        ahead = self.options.queue_ahead
        if ahead is None:
            ahead = 1 if self.strategy.learns else max(16, 2 * slots)
        target = slots + ahead
        proposals: list[tuple[int, Proposal]] = []
        exhausted = False
        for _ in range(max(0, target - len(in_flight))):
            number = self._next_number + len(proposals)
            if number >= self.budget:
                break
            proposal = self.strategy.ask(number, space)
            if proposal is None:
                exhausted = True
                break
            if proposal is WAIT:  # more once running trials finish
                break
            proposals.append((number, proposal if isinstance(proposal, Proposal)
                              else Proposal(proposal)))
        ids = self.storage.enqueue_trials(self.study.id, [
            (number, p.params, p.attrs) for number, p in proposals]) if proposals else []
        if proposals and not ids:
            # A number is taken: by an attempt of ours whose acknowledgement was lost, or
            # by another coordinator. Look again, and track whatever holds the numbers.
            self._next_number = self.storage.next_number(self.study.id)
            in_flight.update((t.number, t.id) for t in self.storage.trials(
                self.study.id, states=UNFINISHED))
            return 0
        self._next_number += len(proposals)
        in_flight.update(zip((number for number, _ in proposals), ids, strict=True))
        return None if exhausted and not proposals else len(proposals)


def lease_graces(storage: Storage, workers: Iterable[WorkerRecord]) -> dict[int, float]:
    """The lease grace each worker (by id) is judged live or lost by: the one the
    coordinator of its study (the one it serves, else that of the trial it runs) last ran
    with, else the default."""
    by_study: dict[int | str, float] = {}
    graces = {}
    for worker in workers:
        study = worker.study_id if worker.study_id is not None else worker.study
        if study is not None and study not in by_study:
            try:
                record = (storage.study_by_id(study) if isinstance(study, int)
                          else storage.get_study(study))
            except StudyNotFound:  # deleted meanwhile
                by_study[study] = LEASE_GRACE
            else:
                by_study[study] = record.settings.get("lease_grace", LEASE_GRACE)
        graces[worker.id] = LEASE_GRACE if study is None else by_study[study]
    return graces

