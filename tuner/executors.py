"""Executors decide where worker processes live; the database stays the queue and the truth.

One small interface: `start` the workers of a study, `check` on them now and then
(requeue what a dead one held, start a replacement), `stop` them all.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod

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
        """Stop every worker; their RUNNING trials go back to the queue."""


class InProcess(Executor):
    """Runs one worker in a thread of this process: for notebooks and definitions that
    are Python objects rather than files."""

    slots = 1

    def start(self, storage: Storage, study: StudyRecord, definition: StudyDefinition) -> None:
        from workers.loop import Worker

        self._stop = threading.Event()
        self._storage = storage
        self._worker = Worker(storage, study.name, definition, stop=self._stop)
        self._worker.register()
        self._thread = threading.Thread(target=self._worker.run, daemon=True, name="worker")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._worker.worker_id is not None:
            self._storage.release_worker(self._worker.worker_id, reason="stopped")


class NoWorkers(Executor):
    """Starts no worker: `tuner worker` agents on other hosts (or this one) run the trials."""

    slots = 0

    def start(self, storage: Storage, study: StudyRecord, definition: StudyDefinition) -> None:
        pass

    def stop(self) -> None:
        pass


def local_pool(workers: int | None = None) -> Executor:
    """The local process pool (imported lazily: it lives on the worker side)."""
    from workers.pool import LocalPool

    return LocalPool(workers)
