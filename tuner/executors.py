"""Executors decide where worker processes live; the database stays the queue and the truth.

One small interface: `start` the workers of a study, `check` on them now and then
(requeue what a dead one held, start a replacement), `stop` them all; the coordinator
then releases the `worker_ids` they ran. `make_executor` chooses one from the options.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Any

from tuner.definition import StudyDefinition
from tuner.storage import Storage, StudyRecord


class Executor(ABC):
    #: how many trials run at once; the coordinator keeps that many in flight
    slots: int

    @abstractmethod
    def start(self, storage: Storage, study: StudyRecord, definition: StudyDefinition) -> None:
        ...

    def check(self, *, max_retries: int) -> None:  # noqa: B027 - optional hook
        """Notice dead workers: requeue (or fail, past `max_retries`) what they held."""

    @abstractmethod
    def stop(self) -> None:
        """Stop every worker (the coordinator then releases them: see `worker_ids`)."""

    def worker_ids(self) -> list[int]:
        """The workers this executor ran, as they stood when it stopped: the coordinator
        releases them, so their RUNNING trials go back to the queue."""
        return []


class InProcess(Executor):
    """Runs one worker in a thread of this process: for notebooks and definitions that
    are Python objects rather than files."""

    slots = 1
    _worker: Any = None

    def start(self, storage: Storage, study: StudyRecord, definition: StudyDefinition) -> None:
        from workers.loop import Worker

        self._stop = threading.Event()
        self._worker = Worker(storage, study.name, definition, stop=self._stop)
        self._worker.register()
        self._thread = threading.Thread(target=self._worker.run, daemon=True, name="worker")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def worker_ids(self) -> list[int]:
        if self._worker is None or self._worker.worker_id is None:  # not started
            return []
        return [self._worker.worker_id]


class NoWorkers(Executor):
    """Starts no worker: `tuner worker` agents on other hosts (or this one) run the trials."""

    slots = 0

    def start(self, storage: Storage, study: StudyRecord, definition: StudyDefinition) -> None:
        pass

    def stop(self) -> None:
        pass


def make_executor(workers: int | None = None, *, ray: str | None = None, per_gpu: int = 1,
                  gpus_per_trial: float | None = None, in_process: bool = False) -> Executor:
    """The executor `tuner run` and `Study.optimize` start for these options.

    With `ray` (an address: "auto", "ray://HOST:PORT" or "local"), worker actors on that
    Ray cluster: one per GPU slot (`per_gpu` share a GPU, or each gets `gpus_per_trial`
    GPUs), or `workers` one-CPU actors. Else none for workers=0 (`tuner worker` agents run
    the trials), one thread of this process for a definition that stays in it
    (`in_process`), or local worker processes: `workers`, by default one per visible GPU,
    else one. The worker side is imported only here, when chosen."""
    if ray is not None:
        from workers.ray_cluster import RayExecutor

        return RayExecutor(ray, per_gpu=per_gpu, gpus_per_trial=gpus_per_trial,
                           workers=workers)
    if workers == 0:
        return NoWorkers()
    if in_process:
        return InProcess()
    from workers.pool import LocalPool

    return LocalPool(workers)
