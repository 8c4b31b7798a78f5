"""Faults of a distributed study: a coordinator and `tuner worker` agents as separate
processes on one database server, with a worker, a whole agent, the coordinator or the
server itself killed mid-study.

Every test ends with the same checks: the coordinator exits 0, the trial numbers are
exactly 0..N-1, every trial is COMPLETE, and the run log (one line per objective run to
its end) holds each trial's parameters exactly once: nothing lost, nothing run twice.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import SERVER_URLS, STUDIES, cli_env, empty_database, start_cli
from tuner import Storage, Trial, TrialState, list_workers
from tuner.errors import StudyNotFound

STUDY = "trivial"


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return result


def params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


class Cluster:
    """A coordinator and agents on one database, each in its own process group."""

    def __init__(self, url: str, tmp_path: Path, sleep: float) -> None:
        self.url = empty_database(url)
        self.storage = Storage(url)  # the schema exists before any process starts
        self.log = tmp_path / "runs.jsonl"
        self.env = dict(cli_env(), TUNER_TEST_SLEEP=str(sleep), TUNER_TEST_RUN_LOG=str(self.log))
        self.processes: list[subprocess.Popen[str]] = []
        self.agents: list[subprocess.Popen[str]] = []
        self._study_id: int | None = None

    def coordinator(self, trials: int, *extra: str) -> subprocess.Popen[str]:
        process = start_cli("run", str(STUDIES / "trivial.py"), "--storage", self.url,
                            "--trials", str(trials), "--workers", "0", "--strategy", "random",
                            "--seed", "7", *extra, env=self.env)
        self.processes.append(process)
        return process

    def agent(self, workers: int = 2, heartbeat: float = 1.0) -> subprocess.Popen[str]:
        process = start_cli("worker", "--storage", self.url, "--workers", str(workers),
                            "--heartbeat", str(heartbeat), env=self.env)
        self.processes.append(process)
        self.agents.append(process)
        return process

    @property
    def study_id(self) -> int:
        def created() -> int | None:
            try:
                return self.storage.get_study(STUDY).id
            except StudyNotFound:
                return None

        if self._study_id is None:
            self._study_id = wait_for(created, "the coordinator to create the study")
        return self._study_id

    def trials(self, *states: TrialState) -> list[Trial]:
        return self.storage.trials(self.study_id, states=states or None)

    def workers_of(self, agent: subprocess.Popen[str]) -> dict[int, int]:
        """{worker id: pid} of the agent's live worker processes (its process group)."""
        found = {}
        for worker in list_workers(self.storage):
            try:
                if os.getpgid(worker.pid) == agent.pid:
                    found[worker.id] = worker.pid
            except ProcessLookupError:
                pass
        return found

    def finish(self, coordinator: subprocess.Popen[str], timeout: float = 120) -> str:
        """Wait for the coordinator to end the study; its stderr."""
        _, stderr = coordinator.communicate(timeout=timeout)
        assert coordinator.returncode == 0, stderr
        return stderr

    def stop_agents(self) -> None:
        """SIGTERM to each agent's whole process group, as a service manager stops it:
        the agent stops cleanly though its workers die of the same signal."""
        running = [agent for agent in self.agents if agent.poll() is None]
        for agent in running:
            os.killpg(agent.pid, signal.SIGTERM)
        for agent in running:
            stdout, stderr = agent.communicate(timeout=30)
            assert agent.returncode == 0, stderr
            assert "in-flight trials went back to the queue" in stdout, stderr

    def every_trial_ran_once(self, n: int) -> tuple[dict[int, Trial], list[dict[str, Any]]]:
        """The end of every test: trials 0..n-1 COMPLETE, each run to its end once."""
        trials = self.trials()
        assert sorted(t.number for t in trials) == list(range(n))
        assert all(t.state == TrialState.COMPLETE for t in trials), [
            (t.number, t.state, t.error) for t in trials if t.state != TrialState.COMPLETE]
        runs = [json.loads(line) for line in self.log.read_text().splitlines()]
        assert Counter(params_key(r["params"]) for r in runs) == Counter(
            params_key(t.params) for t in trials)
        return {t.number: t for t in trials}, runs

    def close(self) -> None:
        for process in self.processes:
            try:  # the group: an agent's workers outlive it if it alone died
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait(timeout=30)
        self.storage.dispose()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(kind: str = "postgresql", *, sleep: float) -> Cluster:
        made.append(Cluster(SERVER_URLS[kind], tmp_path, sleep))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_a_worker_killed_mid_trial_has_its_trial_rerun_at_once(cluster):
    c = cluster(sleep=1.0)
    c.agent(workers=2)
    run = c.coordinator(12)

    def fresh_trial() -> tuple[Trial, int] | None:
        """A running trial that started under half a second ago, and its worker's pid."""
        now = c.storage.now()
        pids = {w.id: w.pid for w in list_workers(c.storage) if w.trial is not None}
        for trial in c.trials(TrialState.RUNNING):
            if trial.worker_id in pids and now - trial.started_at < 0.5:
                return trial, pids[trial.worker_id]
        return None

    victim, pid = wait_for(fresh_trial, "a worker to start a trial")
    os.kill(pid, signal.SIGKILL)
    killed_at = c.storage.now()
    assert len(c.trials(TrialState.COMPLETE)) < 12

    c.finish(run)
    c.stop_agents()
    trials, runs = c.every_trial_ran_once(12)
    rerun = trials[victim.number]
    assert rerun.retries == 1 and rerun.worker_id != victim.worker_id
    assert rerun.started_at - killed_at < 15  # the agent requeued it, not the 30 s lease
    assert sum(t.retries for t in trials.values()) == 1
    assert not [r for r in runs if r["pid"] == pid and r["params"] == victim.params]
    rerun_pid = next(w.pid for w in list_workers(c.storage, alive_only=False)
                     if w.id == rerun.worker_id)
    assert rerun_pid != pid
    everyone = list_workers(c.storage, alive_only=False)
    assert len(everyone) == 3  # two, and the one that replaced the killed one
    assert next(w for w in everyone if w.pid == pid).stopped_at is not None


def test_a_killed_agent_loses_its_trials_to_the_lease_and_another_agent(cluster):
    c = cluster(sleep=1.5)
    victim, survivor = c.agent(workers=2, heartbeat=0.5), c.agent(workers=2, heartbeat=0.5)
    run = c.coordinator(12, "--lease-grace", "3")

    def both_mid_trial() -> dict[int, int] | None:
        """The victim's workers, once both run a trial with 0.4 s or more to go, and more
        trials than theirs remain."""
        mine = c.workers_of(victim)
        now = c.storage.now()
        ages = [now - t.started_at for t in c.trials(TrialState.RUNNING) if t.worker_id in mine]
        done = len(c.trials(TrialState.COMPLETE))
        return mine if len(ages) == 2 and max(ages) < 1.1 and done < 12 - 4 else None

    victim_workers = wait_for(both_mid_trial, "the agent's workers to run trials")
    os.killpg(victim.pid, signal.SIGKILL)  # the agent and its workers, without a word
    killed_at = c.storage.now()
    victim.communicate(timeout=30)
    held = {t.number for t in c.trials(TrialState.RUNNING) if t.worker_id in victim_workers}
    assert len(held) == 2
    assert len(c.trials(TrialState.COMPLETE)) + len(held) < 12  # more work remained

    c.finish(run)
    survivors = set(c.workers_of(survivor))
    c.stop_agents()
    trials, runs = c.every_trial_ran_once(12)
    for number in held:
        assert trials[number].retries == 1 and trials[number].worker_id in survivors
        assert trials[number].started_at - killed_at > 1  # by the lease (3 s), not sooner
    assert all(t.retries == 0 for n, t in trials.items() if n not in held)
    assert len(survivors) == 2 and {t.worker_id for t in trials.values()} <= (
        survivors | set(victim_workers))
    victim_pids = set(victim_workers.values())
    assert not {params_key(r["params"]) for r in runs if r["pid"] in victim_pids} & {
        params_key(trials[n].params) for n in held}


def test_a_killed_coordinator_restarted_on_the_same_host_takes_over_at_once(cluster):
    c = cluster(sleep=0.5)
    c.agent(workers=2)
    c.agent(workers=2)
    first = c.coordinator(24)
    wait_for(lambda: len(c.trials(TrialState.COMPLETE)) >= 4, "trials to complete")
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate(timeout=30)
    unfinished = c.trials(TrialState.QUEUED, TrialState.RUNNING)
    assert unfinished and len(c.trials(TrialState.COMPLETE)) < 24
    assert c.storage.study_by_id(c.study_id).coordinator.startswith(
        f"{socket.gethostname()}:{first.pid}:")  # the dead one still holds the lease

    started = time.monotonic()
    second = c.coordinator(24)  # the default lease grace: 30 s
    wait_for(lambda: (c.storage.study_by_id(c.study_id).coordinator or "").startswith(
        f"{socket.gethostname()}:{second.pid}:"), "the new coordinator to take the lease", 20)
    assert time.monotonic() - started < 15
    stderr = c.finish(second)
    assert "is coordinated by" not in stderr  # it did not wait for the dead one's lease
    c.stop_agents()
    trials, _ = c.every_trial_ran_once(24)
    assert all(t.retries == 0 for t in trials.values())  # the workers never noticed


# -- the database server restarted mid-study ----------------------------------------------
def _ready(kind: str) -> bool:
    command = (["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"] if kind == "postgresql"
               else ["mariadb-admin", "--protocol=tcp", "-h127.0.0.1", "-uroot", "status"])
    return subprocess.run(command, capture_output=True, timeout=30).returncode == 0


def _mariadbd_running() -> bool:
    return subprocess.run(["pgrep", "-x", "mariadbd"], capture_output=True).returncode == 0


def _pg_cluster(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0]
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action],
                   check=True, capture_output=True, timeout=60)


def _stop_server(kind: str) -> None:
    if kind == "postgresql":
        _pg_cluster("stop")
    else:
        subprocess.run(["mariadb-admin", "--protocol=tcp", "-h127.0.0.1", "-uroot", "shutdown"],
                       check=True, capture_output=True, timeout=60)
        wait_for(lambda: not _mariadbd_running(), "mariadbd to exit")
    assert not _ready(kind)


def _start_server(kind: str) -> None:
    if _ready(kind):
        return
    if kind == "postgresql":
        _pg_cluster("start")
    else:
        wait_for(lambda: not _mariadbd_running(), "mariadbd to exit")  # else no new one
        subprocess.run(["start-stop-daemon", "--start", "--oknodo", "--background",
                        "--exec", "/usr/sbin/mariadbd", "--", "--user=mysql"],
                       check=True, capture_output=True, timeout=60)
    wait_for(lambda: _ready(kind), f"{kind} to accept connections again")


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_study_survives_a_restart_of_the_database_server(kind, cluster):
    tool = {"postgresql": "pg_ctlcluster", "mariadb": "start-stop-daemon"}[kind]
    if os.geteuid() != 0 or shutil.which(tool) is None:
        pytest.skip(f"restarting {kind} needs root and {tool}")
    if make_url(SERVER_URLS[kind]).host not in ("127.0.0.1", "localhost"):
        pytest.skip(f"{kind} is not on this host")
    n = 60
    c = cluster(kind, sleep=0.2)
    for _ in range(2):
        c.agent(workers=2)
    run = c.coordinator(n)
    wait_for(lambda: len(c.trials(TrialState.COMPLETE)) >= 8, "trials to complete")
    try:
        _stop_server(kind)
        time.sleep(3)  # down for a while, not a blip
    finally:
        _start_server(kind)
    left = c.trials(TrialState.QUEUED, TrialState.RUNNING)
    assert left and len(c.trials(TrialState.COMPLETE)) < n  # the outage hit mid-study

    stderr = c.finish(run)
    assert "retrying for up to" in stderr  # the coordinator did see the server go
    c.stop_agents()
    trials, _ = c.every_trial_ran_once(n)
    assert all(t.retries == 0 for t in trials.values())  # no lease ran out for it
    assert len(list_workers(c.storage, alive_only=False)) == 4  # no worker process died
