"""`tuner worker`: an agent that turns this host's GPUs (or cores) into workers of a
shared database.

It starts one worker process per GPU slot, keeps them alive, and on Ctrl-C or SIGTERM
stops them and puts their in-flight trials back in the queue for other workers.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from tuner.definition import load_study_file
from tuner.storage import Storage
from workers.gpus import choose_gpus, slot_devices
from workers.loop import WorkerOptions
from workers.pool import REPLACE_AFTER, WorkerProcesses

log = logging.getLogger(__name__)


def agent_devices(gpus: str, per_gpu: int, workers: int | None) -> list[str | None]:
    """The slots: `per_gpu` per chosen GPU, or `workers` CPU slots (default 1) if none."""
    if per_gpu < 1:
        raise ValueError(f"--per-gpu: {per_gpu} must be at least 1")
    found = choose_gpus(gpus)
    if found:
        return slot_devices(len(found) * per_gpu, found)
    return slot_devices(workers or 1, [])


def run_agent(
    url: str, *, study: str | None = None, devices: list[str | None],
    options: WorkerOptions = REPLACE_AFTER, max_retries: int = 2,
    on_start: Callable[[WorkerProcesses], None] | None = None,
) -> None:
    """Run worker processes until Ctrl-C or SIGTERM; a named study must be runnable here."""
    storage = Storage(url)
    if study is not None:  # refuse at once a study this host cannot run
        record = storage.get_study(study)
        load_study_file(record.name, record.definition, record.settings.get("source"),
                        record.definition_hash)
    processes = WorkerProcesses(url, study, devices, options=options)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    processes.start(storage)
    try:
        if on_start is not None:
            on_start(processes)
        while not stop.wait(0.5):
            processes.check(max_retries=max_retries)
    finally:
        processes.stop()
        for worker_id in processes.worker_ids():  # their trials go back to the queue
            storage.release_worker(worker_id, reason="stopped")
        for sig, handler in previous.items():
            signal.signal(sig, handler)
