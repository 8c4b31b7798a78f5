"""This host's processes: whether one still runs, and what its dead workers held.

The database knows workers and coordinators by heartbeat; a process on this host can be
known dead at once, rather than after the lease's grace."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from tuner.storage import Storage


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    # A killed process whose parent died too stays a zombie where nothing reaps orphans
    # (a container whose first process is not an init): it runs nothing, so it is dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS), or it just went away
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def alive(host: str, pid: int) -> bool:
    """Whether process `pid` of `host` may still run: known only for this host."""
    return host != socket.gethostname() or pid_alive(pid)


def release_dead_local_workers(storage: Storage, *, max_retries: int) -> list[int]:
    """Requeue trials of this host's workers whose process is gone (a killed run), at
    once rather than after the lease's grace; returns the trial numbers."""
    numbers = []
    for worker in storage.workers(alive_only=True):
        if not alive(worker.host, worker.pid):
            numbers += storage.release_worker(worker.id, reason="worker process is gone",
                                              max_retries=max_retries)
    return numbers
