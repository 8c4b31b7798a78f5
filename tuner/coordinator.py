"""The coordinator: keeps the workers fed with trials until the budget is spent.

It asks the strategy for configurations, writes them as QUEUED trials, tells the
strategy each result, requeues trials whose worker was lost, and reports progress.
It never trains anything and holds no lock while workers train.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tuner.definition import StudyDefinition
from tuner.errors import TunerError
from tuner.executors import Executor
from tuner.space import Space
from tuner.states import FINISHED, TrialState
from tuner.storage import Storage, StudyRecord, Trial
from tuner.strategies import WAIT, Proposal, Strategy

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class CoordinatorOptions:
    poll_interval: float = 0.05
    lease_grace: float = 30.0  # seconds without heartbeat before a trial is requeued
    max_retries: int = 2  # requeues of a lost trial before it is FAILED
    max_consecutive_failures: int = 10  # then the study stops: something is broken
    queue_ahead: int = 1  # trials queued beyond the slots, so no worker waits for one


@dataclass(frozen=True)
class Progress:
    study: StudyRecord
    counts: dict[TrialState, int]
    budget: int
    best: Trial | None
    elapsed: float
    finished: list[Trial] = field(default_factory=list)  # since the previous report

    @property
    def done(self) -> int:
        return sum(self.counts[s] for s in FINISHED)


class Interrupted(TunerError):
    """The run was stopped (Ctrl-C); in-flight trials were requeued for a resume."""


class TooManyFailures(TunerError):
    """Trials keep failing in a row; the study stops rather than burn its budget."""


class Coordinator:
    def __init__(
        self, storage: Storage, study: StudyRecord, strategy: Strategy, executor: Executor, *,
        budget: int, options: CoordinatorOptions = CoordinatorOptions(),
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.storage, self.study, self.strategy = storage, study, strategy
        self.executor, self.budget, self.options = executor, budget, options
        self.on_progress = on_progress or (lambda progress: None)

    def run(self, definition: StudyDefinition) -> Progress:
        """Run the study to its budget (or until the strategy is exhausted)."""
        storage, study = self.storage, self.study
        started = time.monotonic()
        storage.release_dead_local_workers(socket.gethostname(),
                                           max_retries=self.options.max_retries)
        storage.requeue_lost(study.id, grace=self.options.lease_grace,
                             max_retries=self.options.max_retries)
        history = storage.trials(study.id)
        space = Space.from_dict(study.space)
        self.strategy.start(space, direction=study.direction, seed=study.seed, trials=history,
                            settings=study.settings)
        budget = self.budget = self.strategy.trial_budget(self.budget)
        in_flight = {t.number for t in history if not t.state.is_finished()}
        failures_in_row = 0
        exhausted = False
        best = storage.best_trial(study)

        self.executor.start(storage, study, definition)
        try:
            while True:
                # Count first, collect second: every trial the counts call finished is then
                # told to the strategy before the budget can end the run.
                counts = storage.counts(study.id)
                finished = self._collect(in_flight)
                for trial in finished:
                    self.strategy.tell(trial)
                    failures_in_row = failures_in_row + 1 if trial.state == TrialState.FAILED else 0
                if finished:  # results change the best, and may have grown the space
                    space = Space.from_dict(storage.study_by_id(study.id).space)
                    best = storage.best_trial(study)
                progress = Progress(study, counts, budget, best,
                                    time.monotonic() - started, finished)
                self.on_progress(progress)
                # Every trial of a small budget failing is as telling as a long run of them.
                if failures_in_row >= min(self.options.max_consecutive_failures, budget):
                    raise TooManyFailures(
                        f"the last {failures_in_row} trials failed; stopping the study. "
                        f"Last error:\n{_last_line(finished[-1].error)}"
                    )
                if progress.done >= budget or (exhausted and not in_flight):
                    return progress
                exhausted = exhausted or self._top_up(counts, in_flight, space)
                self.executor.check(max_retries=self.options.max_retries)
                storage.requeue_lost(study.id, grace=self.options.lease_grace,
                                     max_retries=self.options.max_retries)
                time.sleep(self.options.poll_interval)
        except KeyboardInterrupt:
            raise Interrupted(
                f"interrupted; in-flight trials {sorted(in_flight)} go back to the queue"
            ) from None
        finally:
            self.executor.stop()

    def _collect(self, in_flight: set[int]) -> list[Trial]:
        """The trials of ours that finished since the last look."""
        if not in_flight:
            return []
        trials = self.storage.trials(self.study.id, states=FINISHED, numbers=in_flight)
        in_flight.difference_update(t.number for t in trials)
        return trials

    def _top_up(self, counts: dict[TrialState, int], in_flight: set[int], space: Space) -> bool:
        """Queue new trials up to the slots; True once the strategy has nothing left."""
        target = self.executor.slots + self.options.queue_ahead
        queued_or_running = counts[TrialState.QUEUED] + counts[TrialState.RUNNING]
        for _ in range(max(0, target - queued_or_running)):
            number = self.storage.next_number(self.study.id)
            proposal = self.strategy.ask(number, space)
            if proposal is None:
                return True
            if proposal is WAIT:  # more once running trials finish
                return False
            if not isinstance(proposal, Proposal):
                proposal = Proposal(proposal)
            trial = self.storage.enqueue_trial(self.study.id, number, proposal.params,
                                               budget=self.budget, attrs=proposal.attrs)
            if trial is None:  # budget spent, or another coordinator took the number
                return False
            in_flight.add(trial.number)
        return False


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no error text)"
