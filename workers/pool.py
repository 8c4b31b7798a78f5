"""The local pool: one worker process per slot on this host.

Processes are spawned (never forked: TensorFlow does not survive a fork), each pinned
to its GPU with CUDA_VISIBLE_DEVICES. A process that exits after its share of trials
(or memory growth) is replaced; one that dies has its trial requeued at once.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuner.definition import StudyDefinition
from tuner.errors import DefinitionError, TunerError
from tuner.executors import Executor
from tuner.stdio import redirect_output, tail
from tuner.storage import Storage, StudyRecord
from workers.gpus import slot_devices, visible_gpus
from workers.loop import WorkerOptions

log = logging.getLogger(__name__)


def _worker_main(url: str, study: str, gpu: str | None, threads: int, options: WorkerOptions,
                 stop: Any, worker_id: Any, log_path: Path) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    redirect_output(log_path)
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu if gpu is not None else ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if gpu is None:  # share the cores instead of every process using all of them
        for var in ("TF_NUM_INTRAOP_THREADS", "OMP_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))
    logging.basicConfig(level=logging.WARNING)
    from workers.loop import Worker

    storage = Storage(url)
    worker = Worker(storage, study, device="cpu" if gpu is None else f"gpu:{gpu}",
                    options=options, stop=stop)
    worker_id.value = worker.register()
    threading.Thread(target=_stop_when_orphaned, args=(stop,), daemon=True).start()
    worker.run()


def _stop_when_orphaned(stop: Any) -> None:
    """If the coordinator dies (even by SIGKILL), finish the current trial and exit."""
    parent = mp.parent_process()
    if parent is not None:
        mp.connection.wait([parent.sentinel])
        stop.set()


@dataclass
class _Slot:
    gpu: str | None
    log_path: Path
    process: Any = None
    worker_id: Any = None


class LocalPool(Executor):
    def __init__(self, workers: int | None = None, *,
                 options: WorkerOptions = WorkerOptions(max_trials=200,
                                                        max_memory_growth_mb=2048)) -> None:
        gpus = visible_gpus()
        self.slots = workers if workers is not None else max(1, len(gpus))
        if self.slots < 1:
            raise ValueError(f"workers: {workers} must be at least 1")
        self.log_dir = Path(tempfile.gettempdir()) / f"tuner-workers-{os.getpid()}"
        self._slots = [_Slot(gpu, self.log_dir / f"slot-{i}.log")
                       for i, gpu in enumerate(slot_devices(self.slots, gpus))]
        self._threads = max(1, (os.cpu_count() or 1) // self.slots)
        self.options = options
        self._ctx = mp.get_context("spawn")

    def start(self, storage: Storage, study: StudyRecord, definition: StudyDefinition) -> None:
        if definition.path is None:
            raise DefinitionError(
                "worker processes import the study from its file; pass a study file path "
                "(or use the InProcess executor for a definition made in Python)"
            )
        self._storage, self._study = storage, study
        self._stop = self._ctx.Event()
        self._failed_starts = 0
        for slot in self._slots:
            self._spawn(slot)

    def _spawn(self, slot: _Slot) -> None:
        slot.worker_id = self._ctx.Value("i", 0)
        slot.process = self._ctx.Process(
            target=_worker_main, daemon=True, name="tuner-worker",
            args=(self._storage.url, self._study.name, slot.gpu, self._threads, self.options,
                  self._stop, slot.worker_id, slot.log_path),
        )
        slot.process.start()

    def check(self, *, max_retries: int) -> None:
        for slot in self._slots:
            if slot.process.is_alive() or self._stop.is_set():
                continue
            code = slot.process.exitcode
            if not slot.worker_id.value:
                self._failed_starts += 1
                if self._failed_starts > 3 * self.slots:
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
        self._stop.set()
        for slot in self._slots:
            slot.process.terminate()  # a trial in progress is requeued below, not awaited
        for slot in self._slots:
            slot.process.join(timeout=30)
            if slot.worker_id.value:
                self._storage.release_worker(slot.worker_id.value, reason="stopped")
