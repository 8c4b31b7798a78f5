"""Workers as Ray actors: the cluster a team already runs places them on its GPU slots,
restarts them when they die and ships the study's folder to every node.

Each actor runs the same claim / heartbeat / run loop as `tuner worker`, against the same
database; Ray only decides where. A trial whose actor dies (its node lost) goes back to
the queue through its lease, as with any worker.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from tuner.definition import StudyDefinition, load_study_file
from tuner.errors import DefinitionError, TunerError
from tuner.executors import Executor
from tuner.storage import Storage, StudyRecord, safe_url
from workers.gpus import share_device
from workers.loop import WorkerOptions
from workers.pool import REPLACE_AFTER

log = logging.getLogger(__name__)

START_TIMEOUT = 120  # seconds for the actors to start: a new node may have to come up
INSTALL_HINT = 'Ray is not installed: pip install ".[ray]" (or pip install "ray[default]")'
# The coordinator's settings for Keras and for the study reach every actor.
_PASSED_ENV_PREFIXES = ("KERAS_", "TUNER_", "TF_CPP_MIN_LOG_LEVEL")
# Never shipped with the study's folder: databases, checkpoints, environments.
_EXCLUDES = [".git", ".venv", "__pycache__", "*.db", "*.db-wal", "*.db-shm", "tuner-artifacts"]


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise TunerError(INSTALL_HINT) from None
    return ray


class TrialActor:
    """One worker in a Ray actor. It starts working as soon as it exists, so an actor
    that Ray restarts on another node simply carries on with the queue."""

    def __init__(self, url: str, study: str, file_name: str, per_gpu: int,
                 options: WorkerOptions) -> None:
        import ray

        gpus = [str(g) for g in ray.get_gpu_ids()]  # Ray set CUDA_VISIBLE_DEVICES to these
        share_device(bool(gpus), sharing=per_gpu, threads=1)
        logging.basicConfig(level=logging.WARNING)
        from workers.loop import Worker

        node = ray.get_runtime_context().get_node_id()[:8]
        self.device = f"ray:{node}:" + (f"gpu{','.join(gpus)}" if gpus else "cpu")
        storage = Storage(url)
        record = storage.get_study(study)
        self.stop_flag = threading.Event()
        self.worker = Worker(storage, study, _shipped_definition(record, file_name),
                             device=self.device, options=options, stop=self.stop_flag)
        self.worker_id = self.worker.register()
        threading.Thread(target=self._work, daemon=True, name="tuner-worker").start()

    def _work(self) -> None:
        self.worker.run()
        if not self.stop_flag.is_set():
            # Its share of trials is done (or its memory grew): a fresh process is
            # what the pool would start, and exiting is how Ray is asked for one.
            self.worker.storage.release_worker(self.worker_id, reason="replaced")
            os._exit(1)

    def info(self) -> dict[str, Any]:
        return {"worker_id": self.worker_id, "device": self.device,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "pid": os.getpid()}

    def stop(self) -> int:
        self.stop_flag.set()
        return self.worker_id


def _shipped_definition(record: StudyRecord, file_name: str) -> StudyDefinition:
    """The study file from the folder Ray shipped (this process's working directory),
    else where the coordinator has it; the hash check against the coordinator's copy
    applies either way."""
    shipped = Path.cwd() / file_name
    path = str(shipped) if shipped.is_file() else record.definition
    return load_study_file(record.name, path, record.settings.get("source"),
                           record.definition_hash)


class RayExecutor(Executor):
    """Worker actors on a Ray cluster: one per GPU slot it offers (`per_gpu` actors share
    a GPU through fractional GPUs; `gpus_per_trial` gives each several), or `workers`
    actors of one CPU each on a cluster without GPUs.

    `address`: "auto" (the cluster this host belongs to), "ray://head:10001", or "local"
    (start Ray on this machine)."""

    def __init__(self, address: str = "auto", *, per_gpu: int = 1,
                 gpus_per_trial: float | None = None, workers: int | None = None,
                 options: WorkerOptions = REPLACE_AFTER) -> None:
        if per_gpu < 1:
            raise ValueError(f"per_gpu: {per_gpu} must be at least 1")
        if gpus_per_trial is not None and gpus_per_trial <= 0:
            raise ValueError(f"gpus_per_trial: {gpus_per_trial} must be positive")
        if per_gpu > 1 and gpus_per_trial is not None:
            raise ValueError("per_gpu and gpus_per_trial exclude each other")
        self.address, self.per_gpu, self.gpus_per_trial = address, per_gpu, gpus_per_trial
        self.workers, self.options = workers, options
        self.actors: list[Any] = []
        self._worker_ids: list[int] = []  # those the actors ran when stopped
        self.slots = 0
        self._ray = import_ray()
        self._started_ray = False

    def _connect(self, folder: Path) -> None:
        """Join the cluster (or start Ray here), shipping the study's folder as every
        actor's working directory. Ray accepts a local folder only when the job starts:
        a caller who ran ray.init itself ships it with its own runtime_env."""
        ray = self._ray
        if ray.is_initialized():
            return
        runtime_env = {"working_dir": str(folder), "excludes": _EXCLUDES,
                       "env_vars": {k: v for k, v in os.environ.items()
                                    if k.startswith(_PASSED_ENV_PREFIXES)}}
        try:
            ray.init(address=self.address,  # "local" always starts a new instance
                     namespace="tuner", runtime_env=runtime_env, log_to_driver=False,
                     logging_level=logging.WARNING, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise TunerError(f"cannot connect to the Ray cluster at {self.address!r}: {exc}") \
                from None
        self._started_ray = True

    def _plan(self) -> tuple[int, float]:
        """(actors, GPUs of each) from what the cluster offers."""
        resources = self._ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus and self.workers is None:
            if self.gpus_per_trial is not None:
                return int(gpus // self.gpus_per_trial), self.gpus_per_trial
            return gpus * self.per_gpu, 1 / self.per_gpu
        cpus = int(resources.get("CPU", 1))
        return max(1, self.workers if self.workers is not None else cpus), 0.0

    def nodes(self) -> list[dict[str, Any]]:
        return [n for n in self._ray.nodes() if n.get("Alive")]

    def start(self, storage: Storage, study: StudyRecord, definition: StudyDefinition) -> None:
        ray = self._ray
        self._worker_ids = []
        if definition.path is None:
            raise DefinitionError("Ray actors import the study from its file; pass a file path")
        url = make_url(storage.url)
        if url.get_backend_name() == "sqlite" and url.database:
            # Actors run in the shipped folder: give them the file's full path.
            url = url.set(database=str(Path(url.database).resolve()))
        self._connect(Path(definition.path).parent)
        if url.get_backend_name() == "sqlite" and len(self.nodes()) > 1:
            self.stop()
            raise TunerError(
                f"{safe_url(storage.url)} is a SQLite file, which the nodes of a Ray cluster "
                "do not share: use PostgreSQL or MySQL (e.g. postgresql+psycopg://host/db), "
                "or --ray local on one machine")
        self.slots, gpus_each = self._plan()
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if not gpus_each and self.slots > cpus:
            self.stop()
            raise TunerError(f"{self.slots} one-CPU workers do not fit on the Ray cluster at "
                             f"{self.address!r}: it offers {cpus} CPUs")
        # Restarted without limit (a lost node, a replaced process); a call to an actor
        # that is restarting waits for the new one, so stop() reaches every live worker.
        actor = ray.remote(TrialActor).options(
            num_cpus=0 if gpus_each else 1, num_gpus=gpus_each, max_restarts=-1,
            max_task_retries=-1, max_concurrency=4)
        self.actors = [
            actor.remote(url.render_as_string(hide_password=False), study.name,
                         Path(definition.path).name, self.per_gpu, self.options)
            for _ in range(self.slots)
        ]
        # Wait until they work, so that a study file they cannot load is one clear error.
        try:
            infos = ray.get([a.info.remote() for a in self.actors], timeout=START_TIMEOUT)
        except ray.exceptions.RayActorError as exc:
            self.stop()
            raise TunerError(f"the Ray workers could not start: {_cause(exc)}") from None
        except ray.exceptions.GetTimeoutError:
            self.stop()
            raise TunerError(f"the Ray workers did not start within {START_TIMEOUT} s: "
                             "the cluster has no room for them (see `ray status`)") from None
        log.info("ray workers: %s", infos)

    def check(self, *, max_retries: int) -> None:
        """Nothing to do: Ray restarts lost actors, and their trials come back to the
        queue through their leases."""

    def stop(self) -> None:
        """Stop every actor (releasing `worker_ids` then requeues their RUNNING trials)."""
        ray = self._ray
        if self.actors:
            ready, _ = ray.wait([a.stop.remote() for a in self.actors],
                                num_returns=len(self.actors), timeout=5)
            for ref in ready:
                try:
                    self._worker_ids.append(ray.get(ref))
                except ray.exceptions.RayError:
                    pass
            for actor in self.actors:
                ray.kill(actor, no_restart=True)
        self.actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False

    def worker_ids(self) -> list[int]:
        return list(self._worker_ids)


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    errors = [line for line in text if "Error" in line]
    return (errors or text or [type(exc).__name__])[-1][:500]
