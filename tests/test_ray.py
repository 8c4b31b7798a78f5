"""The Ray executor on a real Ray cluster of two nodes on this machine, each declaring two
logical GPUs: placement and packing, a study across the nodes on PostgreSQL, the study
code shipped to the nodes, a node lost mid-study, Ctrl-C and a killed coordinator.

Each trial of tests/studies/ray_probe.py logs its parameters, node, GPUs and the path its
file was loaded from; every study must end with each trial run to its end exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster

from tests.conftest import ROOT, SERVER_URLS, STUDIES, cli_env, empty_database
from tuner import CoordinatorOptions, Study, TrialState, TunerError
from tuner.definition import load_definition
from tuner.storage import Storage
from workers.loop import WorkerOptions
from workers.ray_cluster import RayExecutor

pytestmark = pytest.mark.slow
GPUS_PER_NODE = 2


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": GPUS_PER_NODE, "include_dashboard": False})
    cluster.add_node(num_cpus=2, num_gpus=GPUS_PER_NODE)
    cluster.wait_for_nodes()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


@pytest.fixture
def run_log(tmp_path, monkeypatch):
    """The probe's log; the executor passes TUNER_* variables on to the actors."""
    log = tmp_path / "runs.jsonl"
    monkeypatch.setenv("TUNER_TEST_RUN_LOG", str(log))
    monkeypatch.setenv("TUNER_TEST_SLEEP", "0")
    return log


def postgres() -> str:
    return empty_database(SERVER_URLS["postgresql"])


def runs(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def every_trial_ran_once(study: Study, log: Path, n: int) -> list[dict]:
    """Trials 0..n-1 all COMPLETE, each run once per attempt: an actor lost between its
    objective's last line and the trial's result leaves a run that did not count, and the
    trial runs again as a retry. Nothing else runs twice."""
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(n))
    assert all(t.state == TrialState.COMPLETE for t in trials), [
        (t.number, t.state, t.error) for t in trials if t.state != TrialState.COMPLETE]
    logged = runs(log)
    ran = Counter(json.dumps(r["params"], sort_keys=True) for r in logged)
    assert set(ran) == {json.dumps(t.params, sort_keys=True) for t in trials}
    for trial in trials:
        assert 1 <= ran[json.dumps(trial.params, sort_keys=True)] <= 1 + trial.retries, trial
    return logged


def started(executor: RayExecutor, url: str, study_file: Path = STUDIES / "ray_probe.py"):
    """Start the executor's actors for a fresh study; their info()."""
    definition = load_definition(study_file)
    study = Study.create(definition=definition, storage=url, strategy="random", seed=1)
    executor.start(study.storage, study.record, definition)
    return ray.get([a.info.remote() for a in executor.actors])


@pytest.mark.parametrize("kwargs, actors, per_gpu", [
    ({}, 2 * GPUS_PER_NODE, 1),
    ({"per_gpu": 2}, 4 * GPUS_PER_NODE, 2),
    ({"gpus_per_trial": 2}, 2, None),
])
def test_placement_follows_the_gpus_ray_gives(cluster, run_log, kwargs, actors, per_gpu):
    executor = RayExecutor(cluster.address, **kwargs)
    try:
        infos = started(executor, postgres())
        assert executor.slots == len(infos) == actors
        nodes = Counter(i["device"].split(":")[1] for i in infos)
        assert len(nodes) == 2  # both nodes used
        if per_gpu is None:  # each actor holds both GPUs of its node
            assert sorted(i["cuda_visible_devices"] for i in infos) == ["0,1", "0,1"]
        else:  # one GPU each, `per_gpu` actors per GPU of each node
            slots = Counter((i["device"].split(":")[1], i["cuda_visible_devices"]) for i in infos)
            assert all("," not in gpu for _, gpu in slots)
            assert set(slots.values()) == {per_gpu} and len(slots) == 2 * GPUS_PER_NODE
        assert all(i["device"].endswith("gpu" + i["cuda_visible_devices"]) for i in infos)
    finally:
        executor.stop()


def test_a_study_across_two_nodes_runs_every_trial_once(cluster, run_log):
    url = postgres()
    study = Study.create(definition=STUDIES / "ray_probe.py", storage=url, strategy="random",
                         seed=3)
    study.optimize(trials=120, executor=RayExecutor(cluster.address))
    logged = every_trial_ran_once(study, run_log, 120)
    assert len({r["node"] for r in logged}) == 2  # both nodes ran trials
    devices = {w.device for w in Storage(url).workers()}
    assert len(devices) == 2 * GPUS_PER_NODE  # the workers show node and GPU
    assert all(w.stopped_at is not None for w in Storage(url).workers())  # all released
    assert not ray.is_initialized()  # the executor disconnects when done


def study_in_a_folder(tmp_path: Path) -> Study:
    """A study whose file is a copy in a folder of its own: tmp_path/project/probe.py."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(STUDIES / "ray_probe.py", project / "probe.py")
    return Study.create(definition=project / "probe.py", storage=postgres(), strategy="random",
                        seed=4)


def test_the_study_folder_is_shipped_to_the_nodes(cluster, run_log, tmp_path):
    study = study_in_a_folder(tmp_path)
    original = tmp_path / "project" / "probe.py"
    project = original.parent
    executor = RayExecutor(cluster.address, gpus_per_trial=2)
    os.rename(original, project / "moved.py.txt")  # nowhere on the hosts any more...
    with pytest.raises(TunerError, match="could not start"):
        study.optimize(trials=4, executor=executor)  # ...and Ray ships the folder as it is
    os.rename(project / "moved.py.txt", original)
    study.optimize(trials=6, executor=RayExecutor(cluster.address, gpus_per_trial=2))
    logged = every_trial_ran_once(study, run_log, 6)
    files = {r["file"] for r in logged}
    assert str(original) not in files  # loaded from the shipped copy...
    assert all(f.endswith("/probe.py") and "runtime_resources" in f for f in files), files


def test_a_changed_study_file_is_refused_on_the_nodes(cluster, run_log, tmp_path):
    study = study_in_a_folder(tmp_path)
    file = tmp_path / "project" / "probe.py"
    file.write_text(file.read_text() + "\n# changed\n")
    definition = study.definition  # the coordinator's copy, hashed when it was created
    executor = RayExecutor(cluster.address, gpus_per_trial=2)
    with pytest.raises(TunerError, match="differs from the coordinator's copy"):
        executor.start(study.storage, study.record, definition)


def test_replaced_actors_leave_no_worker_behind(cluster, run_log):
    """Actors whose process is replaced after its share of trials (Ray restarts them),
    and, at the end, every worker row is stopped: none shows as lost for ever."""
    url = postgres()
    study = Study.create(definition=STUDIES / "ray_probe.py", storage=url, strategy="random",
                         seed=8)
    executor = RayExecutor(cluster.address, workers=2, options=WorkerOptions(max_trials=8))
    study.optimize(trials=60, executor=executor)
    every_trial_ran_once(study, run_log, 60)
    workers = Storage(url).workers()
    assert len(workers) > 2  # replaced along the way
    assert all(w.stopped_at is not None for w in workers), [
        (w.id, w.trials_done) for w in workers if w.stopped_at is None]


def test_more_cpu_workers_than_the_cluster_has_is_one_clear_error(cluster, run_log):
    study = Study.create(definition=STUDIES / "ray_probe.py", storage=postgres(), seed=1)
    with pytest.raises(TunerError, match="do not fit on the Ray cluster"):
        study.optimize(trials=2, executor=RayExecutor(cluster.address, workers=99))
    assert not ray.is_initialized()


def test_sqlite_is_refused_on_a_cluster_of_several_nodes(cluster, run_log, sqlite_url):
    study = Study.create(definition=STUDIES / "ray_probe.py", storage=sqlite_url, seed=1)
    with pytest.raises(TunerError, match="SQLite file, which the nodes of a Ray cluster do not"):
        study.optimize(trials=2, executor=RayExecutor(cluster.address))
    assert not ray.is_initialized()


def test_a_lost_node_s_trials_complete_elsewhere(run_log, monkeypatch):
    """A cluster of its own: its second node is removed mid-study."""
    monkeypatch.setenv("TUNER_TEST_SLEEP", "0.3")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "num_gpus": GPUS_PER_NODE, "include_dashboard": False})
    doomed = cluster.add_node(num_cpus=2, num_gpus=GPUS_PER_NODE)
    cluster.wait_for_nodes()
    try:
        url = postgres()
        study = Study.create(definition=STUDIES / "ray_probe.py", storage=url,
                             strategy="random", seed=5)
        done = threading.Event()
        failure: list[BaseException] = []

        def optimize() -> None:
            try:
                study.optimize(trials=40, executor=RayExecutor(cluster.address),
                               options=CoordinatorOptions(lease_grace=3))
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=optimize, daemon=True).start()
        doomed_node = doomed.node_id
        deadline = time.monotonic() + 120
        while not any(r["node"] == doomed_node for r in runs(run_log)):
            assert time.monotonic() < deadline, "the second node ran nothing"
            time.sleep(0.1)
        cluster.remove_node(doomed)  # its raylet and actors die mid-trial
        assert done.wait(180), "the study did not finish after the node was lost"
        assert not failure, failure
        every_trial_ran_once(study, run_log, 40)
        retried = [t for t in study.trials if t.retries]
        assert retried, "no trial was running on the lost node"
        assert all(t.retries == 1 for t in retried)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", *args], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def test_ctrl_c_and_a_killed_coordinator(cluster, run_log):
    """Ctrl-C stops the actors and requeues their trials; a SIGKILLed coordinator's
    actors die with it, and a rerun finishes the study with no trial twice."""
    url = postgres()
    env = dict(cli_env(), TUNER_TEST_RUN_LOG=str(run_log), TUNER_TEST_SLEEP="0.5")
    args = ["run", str(STUDIES / "ray_probe.py"), "--storage", url, "--ray", cluster.address,
            "--trials", "30", "--strategy", "random", "--seed", "6", "--lease-grace", "3"]
    storage = Storage(url)

    def running() -> int:
        try:
            return storage.counts(storage.get_study("ray_probe").id)[TrialState.RUNNING]
        except Exception:  # noqa: BLE001 - not created yet
            return 0

    first = _cli(*args, env=env)
    deadline = time.monotonic() + 120
    while running() < 2:
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGINT)
    stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 130, stderr
    assert "--ray" in stderr  # the resume command keeps it
    study_id = storage.get_study("ray_probe").id
    assert storage.counts(study_id)[TrialState.RUNNING] == 0  # requeued at once
    assert all(w.stopped_at is not None for w in storage.workers())

    second = _cli(*args, env=env)
    deadline = time.monotonic() + 120
    while running() < 2:
        assert time.monotonic() < deadline and second.poll() is None, second.communicate()
        time.sleep(0.1)
    os.killpg(second.pid, signal.SIGKILL)
    second.communicate(timeout=60)

    third = _cli(*args, env=env)
    stdout, stderr = third.communicate(timeout=240)
    assert third.returncode == 0, stderr
    every_trial_ran_once(Study.load("ray_probe", storage=url), run_log, 30)


def test_without_ray_the_cli_says_how_to_install_it(tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from tuner.cli import main; "
            f"sys.argv = ['tuner', 'run', {str(STUDIES / 'ray_probe.py')!r}, '--storage', "
            f"'sqlite:///{tmp_path}/t.db', '--ray', 'local']; main()")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cli_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert 'pip install ".[ray]"' in result.stderr and "Traceback" not in result.stderr


def test_ray_local_with_sqlite(run_log, sqlite_url):
    result = subprocess.run(
        [sys.executable, "-m", "tuner.cli", "run", str(STUDIES / "ray_probe.py"), "--storage",
         sqlite_url, "--ray", "local", "--workers", "2", "--trials", "12", "--strategy",
         "random"], cwd=ROOT, env=dict(cli_env(), TUNER_TEST_RUN_LOG=str(run_log)),
        capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    study = Study.load("ray_probe", storage=sqlite_url)
    logged = every_trial_ran_once(study, run_log, 12)
    actors = {w.pid for w in study.storage.workers() if w.device.startswith("ray:")}
    assert len(actors) == 2  # two one-CPU actors (which one ran a trial is Ray's to say)
    assert {r["pid"] for r in logged} <= actors
