"""Worker processes on this host: the local pool of `tuner run`, and `tuner worker`'s.

Processes are spawned (never forked: TensorFlow does not survive a fork), each pinned
to its GPU with CUDA_VISIBLE_DEVICES. A process that exits after its share of trials
(or memory growth) is replaced; one that dies has its trial requeued at once.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
import tempfile
import threading
import time
import types
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.definition import StudyDefinition
from tuner.errors import DefinitionError, TunerError
from tuner.executors import Executor
from tuner.stdio import redirect_output, tail
from tuner.storage import Storage, StudyRecord
from workers.gpus import pin_device, slot_devices, visible_gpus
from workers.loop import WorkerOptions

log = logging.getLogger(__name__)

REPLACE_AFTER = WorkerOptions(max_trials=200, max_memory_growth_mb=2048)


def _worker_main(url: str, study: str | None, gpu: str | None, sharing: int, threads: int,
                 options: WorkerOptions, stop: Any, worker_id: Any, log_path: Path) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    redirect_output(log_path)
    pin_device(gpu, sharing=sharing, threads=threads)
    logging.basicConfig(level=logging.WARNING)
    from workers.loop import Worker

    storage = Storage(url)
    worker = Worker(storage, study, device="cpu" if gpu is None else f"gpu:{gpu}",
                    options=options, stop=stop)
    worker_id.value = worker.register()
    threading.Thread(target=_stop_when_orphaned, args=(stop,), daemon=True).start()
    worker.run()


def _stop_when_orphaned(stop: Any) -> None:
    """If the parent dies (even by SIGKILL), finish the current trial and exit."""
    parent = mp.parent_process()
    if parent is not None:
        mp.connection.wait([parent.sentinel])
        stop.set()


class StopFlag:
    """The stop signal shared with the worker processes. Not a multiprocessing.Event: its
    set() waits until every process sleeping in wait() wakes, so one killed there (SIGKILL,
    SIGTERM to the whole process group) would hang set() for ever. A bare shared byte has
    no lock for a dead process to hold; wait() polls it."""

    def __init__(self, ctx: Any) -> None:
        self._flag = ctx.RawValue("b", 0)

    def set(self) -> None:
        self._flag.value = 1

    def is_set(self) -> bool:
        return bool(self._flag.value)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.05 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(left, 0.05))
        return True


@contextlib.contextmanager
def _main_not_rerun() -> Iterator[None]:
    """Start processes that do not run the parent's script again.

    A spawned process imports the parent's `__main__` from its file (or module name), so a
    plain script without an `if __name__ == "__main__":` guard would start its search again
    in every worker. The workers need nothing from it (a study's code reaches them from its
    study file, or by value in a packaged definition): they are shown an empty `__main__`."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


@dataclass
class _Slot:
    gpu: str | None
    log_path: Path
    process: Any = None
    worker_id: Any = None


class WorkerProcesses:
    """One worker process per slot (a GPU id, or None for a CPU slot), serving `study`
    (a name) or any study: started, watched, replaced and stopped together."""

    def __init__(self, url: str, study: str | None, devices: list[str | None], *,
                 options: WorkerOptions = REPLACE_AFTER) -> None:
        self.url, self.study, self.options = url, study, options
        self.log_dir = Path(tempfile.gettempdir()) / f"tuner-workers-{os.getpid()}"
        self._slots = [_Slot(gpu, self.log_dir / f"slot-{i}.log")
                       for i, gpu in enumerate(devices)]
        self._sharing = Counter(devices)
        self._threads = max(1, (os.cpu_count() or 1) // max(1, len(devices)))
        self._ctx = mp.get_context("spawn")

    def __len__(self) -> int:
        return len(self._slots)

    def start(self, storage: Storage) -> None:
        self._storage = storage
        self._stop = StopFlag(self._ctx)
        self._failed_starts = 0
        for slot in self._slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        slot.worker_id = self._ctx.RawValue("i", 0)  # no lock a killed process could hold
        slot.process = self._ctx.Process(
            target=_worker_main, daemon=True, name="tuner-worker",
            args=(self.url, self.study, slot.gpu, self._sharing[slot.gpu], self._threads,
                  self.options, self._stop, slot.worker_id, slot.log_path),
        )
        with _main_not_rerun():
            slot.process.start()

    def check(self, *, max_retries: int) -> None:
        """Requeue what a dead process held and start its replacement."""
        for slot in self._slots:
            if slot.process.is_alive() or self._stop.is_set():
                continue
            code = slot.process.exitcode
            if not slot.worker_id.value:
                self._failed_starts += 1
                if self._failed_starts > 3 * len(self._slots):
                    raise TunerError(
                        f"worker processes keep dying before they start (exit code {code}). "
                        f"The end of {slot.log_path}:\n{tail(slot.log_path)}"
                    )
            elif code != 0:
                lost = self._storage.release_worker(
                    slot.worker_id.value, reason=f"worker process died (exit code {code})",
                    max_retries=max_retries,
                )
                log.warning("worker process %s died (exit %s); its trials %s were requeued. "
                            "Its log: %s", slot.process.pid, code, lost, slot.log_path)
            self._spawn(slot)

    def stop(self) -> None:
        """Stop every process at once; a trial in progress is not awaited (releasing
        `worker_ids` then requeues it)."""
        self._stop.set()
        for slot in self._slots:
            slot.process.terminate()
        for slot in self._slots:
            slot.process.join(timeout=30)

    def worker_ids(self) -> list[int]:
        """The workers the processes registered (each slot's latest), to release once
        stopped: a trial in progress goes back to the queue."""
        return [slot.worker_id.value for slot in self._slots
                if slot.worker_id is not None and slot.worker_id.value]


class LocalPool(Executor):
    """The worker processes `tuner run` starts for its study: one per visible GPU by
    default, else one."""

    def __init__(self, workers: int | None = None, *,
                 options: WorkerOptions = REPLACE_AFTER) -> None:
        gpus = visible_gpus()
        self.slots = workers if workers is not None else max(1, len(gpus))
        if self.slots < 1:
            raise ValueError(f"workers: {workers} must be at least 1")
        self._devices = slot_devices(self.slots, gpus)
        self.options = options

    def start(self, storage: Storage, study: StudyRecord, definition: StudyDefinition) -> None:
        if definition.path is None:
            raise DefinitionError(
                "worker processes import the study from its file; pass a study file path "
                "(or use the InProcess executor for a definition made in Python)"
            )
        self.processes = WorkerProcesses(storage.url, study.name, self._devices,
                                         options=self.options)
        self.processes.start(storage)

    @property
    def log_dir(self) -> Path:
        return self.processes.log_dir

    def check(self, *, max_retries: int) -> None:
        self.processes.check(max_retries=max_retries)

    def stop(self) -> None:
        self.processes.stop()

    def worker_ids(self) -> list[int]:
        processes = getattr(self, "processes", None)  # None: it never started
        return processes.worker_ids() if processes is not None else []
