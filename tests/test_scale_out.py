"""Scaling out: `tuner worker` agents, claims across studies, the coordinator's lease."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

import tuner
from tests.conftest import STUDIES, cli_env, run_cli, start_cli, stored_trial
from tuner.states import TrialState
from tuner.storage import Storage
from tuner.storage.engine import ConnectionLost

TRIVIAL = str(STUDIES / "trivial.py")


# -- helpers ------------------------------------------------------------------------------
def wait_for(condition, timeout: float = 60.0, what: str = "a condition"):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return result


def finish(process: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Its output once it exits; it is killed (whole group) if it does not in time."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(process)
        out, err = process.communicate()
        pytest.fail(f"{process.args[3:5]} did not exit in {timeout} s:\n{out}\n{err}")


def kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def cleanup(processes: list[subprocess.Popen[str]]):
    """Leave no process behind, whatever the test's outcome."""
    try:
        yield processes
    finally:
        for process in processes:
            kill_group(process)
            with contextlib.suppress(Exception):
                process.communicate(timeout=10)


def run_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def as_json(params: dict) -> str:
    return json.dumps(params, sort_keys=True)


def study_id(storage: Storage, name: str) -> int | None:
    try:
        return storage.get_study(name).id
    except tuner.StudyNotFound:
        return None


def make_study(storage: Storage, name: str = "s"):
    return storage.create_study(
        name, metric="score", direction="maximize", strategy="random", seed=1,
        space={"x": {"type": "int", "low": 0, "high": 9}}, settings={},
    )


def register(storage: Storage, study: int | None = None) -> int:
    return storage.register_worker(host="test-host", pid=1, device="cpu", study_id=study)


# -- many workers, many trials, every database --------------------------------------------
def test_two_agents_of_eight_workers_run_a_thousand_trials_each_exactly_once(
        storage_url, tmp_path):
    log = tmp_path / "runs.jsonl"
    env = dict(cli_env(), TUNER_TEST_RUN_LOG=str(log))
    agent_args = ("worker", "--storage", storage_url, "--workers", "8", "--heartbeat", "1")
    with cleanup([start_cli(*agent_args, env=env) for _ in range(2)]) as processes:
        # Two "hosts" start at once on an empty database; every one of their 16 workers
        # is up before the trials come, so that each can take its share.
        storage = Storage(storage_url)
        wait_for(lambda: len(storage.workers(alive_only=True)) == 16, what="16 workers")
        started = time.monotonic()
        coordinator = start_cli("run", TRIVIAL, "--storage", storage_url, "--strategy",
                                "random", "--trials", "1000", "--workers", "0", "--seed", "1",
                                env=env)
        processes.append(coordinator)
        _, stderr = finish(coordinator, timeout=120)
        elapsed = time.monotonic() - started
        assert coordinator.returncode == 0, stderr

        study = storage.get_study("trivial")
        trials = storage.trials(study.id)
        assert [t.number for t in trials] == list(range(1000))
        assert {t.state for t in trials} == {TrialState.COMPLETE}
        assert {t.retries for t in trials} == {0}
        runs = run_log(log)
        assert len(runs) == 1000  # each trial ran once: none lost, none run twice
        assert Counter(as_json(r["params"]) for r in runs) == Counter(
            as_json(t.params) for t in trials)
        workers = storage.workers()
        assert len(workers) == 16 and {r["pid"] for r in runs} <= {w.pid for w in workers}
        # The work is spread: on 2 cores a worker may now and then find the queue empty
        # whenever it looks, but most of the 16 take a share.
        assert len({r["pid"] for r in runs}) >= 12
        ran = Counter(r["pid"] for r in runs)
        assert all(ran.get(w.pid, 0) == w.trials_done for w in workers)
        assert sum(w.trials_done for w in workers) == 1000

        first, second = processes[:2]
        os.killpg(first.pid, signal.SIGINT)  # Ctrl-C in its terminal
        second.send_signal(signal.SIGTERM)  # a service manager stopping it
        for agent in (first, second):
            _, stderr = finish(agent, timeout=60)
            assert agent.returncode == 0, stderr
        listing = run_cli("workers", "--storage", storage_url, timeout=60)
        assert listing.returncode == 0, listing.stderr
        assert "No live workers" in listing.stdout, listing.stdout
        assert all(w.stopped_at is not None for w in storage.workers())
        assert storage.counts(study.id)[TrialState.COMPLETE] == 1000
        storage.dispose()
    print(f"1000 trials on 16 workers in {elapsed:.1f} s")


# -- the storage's side of scaling out, every database ------------------------------------
def test_claims_across_studies_skip_excluded_ones(storage_url):
    storage = Storage(storage_url)
    a, b, c = (make_study(storage, name) for name in "abc")
    for study in (a, b, c):
        storage.enqueue_trial(study.id, 0, {"x": 0})
    storage.enqueue_trial(a.id, 1, {"x": 1})
    wid = register(storage)

    def claim(study=None, exclude=()):
        trial = storage.claim_trial(study, wid, exclude=exclude)
        return None if trial is None else (trial.study_id, trial.number)

    assert claim(exclude={a.id, b.id}) == (c.id, 0)
    assert claim(exclude={a.id}) == (b.id, 0)
    assert claim(exclude={a.id}) is None  # only a's trials are left
    assert claim([b.id, c.id]) is None
    assert claim([a.id, c.id]) == (a.id, 0)
    assert claim() == (a.id, 1)
    assert claim() is None
    assert all(storage.counts(s.id)[TrialState.RUNNING] == len(storage.trials(s.id))
               for s in (a, b, c))


def test_a_retried_claim_returns_the_trial_the_worker_holds(storage_url, monkeypatch):
    storage = Storage(storage_url)
    study = make_study(storage)
    for n in range(3):
        storage.enqueue_trial(study.id, n, {"x": n})
    wid = register(storage, study.id)
    held = storage.claim_trial(study.id, wid)
    assert storage.claim_trial(study.id, wid, retry=True).id == held.id
    assert storage.counts(study.id)[TrialState.RUNNING] == 1

    # A claim that commits but whose acknowledgement is lost is retried: it must hand back
    # the trial it took, not take a second one.
    other = register(storage, study.id)
    real_tx, lost = storage._tx, []

    @contextlib.contextmanager
    def acknowledgement_lost(write: bool = False):
        with real_tx(write) as conn:
            yield conn
        if write and not lost:
            lost.append(True)
            raise ConnectionLost("the connection dropped after the commit")

    monkeypatch.setattr(storage, "_tx", acknowledgement_lost)
    taken = storage.claim_trial(study.id, other)
    assert lost and taken.number == 1 and taken.worker_id == other
    assert storage.counts(study.id)[TrialState.RUNNING] == 2
    assert storage.counts(study.id)[TrialState.QUEUED] == 1


def test_release_trial_requeues_without_counting_a_retry(storage_url):
    storage = Storage(storage_url)
    study = make_study(storage)
    storage.enqueue_trial(study.id, 0, {"x": 1})
    wid, other = register(storage), register(storage)
    trial = storage.claim_trial(None, wid)
    storage.release_trial(trial.id, other)  # not its trial: nothing happens
    assert stored_trial(storage, trial.id).state == TrialState.RUNNING
    storage.release_trial(trial.id, wid)
    after = stored_trial(storage, trial.id)
    assert (after.state, after.retries, after.worker_id, after.started_at) == (
        TrialState.QUEUED, 0, None, None)
    assert storage.claim_trial(None, other).id == trial.id


def test_the_coordinator_lease_is_held_renewed_refused_taken_over_and_released(storage_url):
    storage = Storage(storage_url)
    study = make_study(storage).id
    assert storage.acquire_coordinator(study, "a", grace=0.5) is None
    time.sleep(0.3)
    assert storage.acquire_coordinator(study, "a", grace=0.5) is None  # renewed
    time.sleep(0.3)  # 0.6 s since taken, 0.3 s since renewed
    assert storage.acquire_coordinator(study, "b", grace=0.5) == "a"
    assert storage.study_by_id(study).coordinator == "a"
    time.sleep(0.7)  # "a" stopped renewing: its lease runs out
    assert storage.acquire_coordinator(study, "b", grace=0.5) is None
    assert storage.acquire_coordinator(study, "a", grace=0.5) == "b"
    storage.release_coordinator(study, "a")  # not the holder: nothing happens
    assert storage.acquire_coordinator(study, "c", grace=30) == "b"
    storage.release_coordinator(study, "b")
    assert storage.study_by_id(study).coordinator is None
    assert storage.acquire_coordinator(study, "c", grace=30) is None


def test_active_workers_counts_live_workers_that_may_serve_the_study(storage_url):
    storage = Storage(storage_url)
    study, other = make_study(storage, "s").id, make_study(storage, "other").id
    own, anyone = register(storage, study), register(storage, None)
    stopped = register(storage, study)
    storage.stop_worker(stopped)
    register(storage, other)
    assert storage.active_workers(study, grace=30) == 2
    assert storage.active_workers(other, grace=30) == 2  # its own and the any-study one
    time.sleep(0.3)
    assert storage.active_workers(study, grace=0.2) == 0  # no heartbeat for 0.3 s
    storage.heartbeat(own)
    assert storage.active_workers(study, grace=0.2) == 1
    storage.heartbeat(anyone)
    assert storage.active_workers(study, grace=0.2) == 2


def test_workers_report_the_study_and_number_of_the_trial_they_run(storage_url):
    storage = Storage(storage_url)
    make_study(storage, "alpha")
    beta = make_study(storage, "beta")
    storage.enqueue_trial(beta.id, 3, {"x": 3})
    busy, idle = register(storage), register(storage)
    trial = storage.claim_trial(None, busy)
    running = {w.id: (w.study, w.trial) for w in storage.workers()}
    assert running == {busy: ("beta", 3), idle: (None, None)}
    storage.finish_trial(trial.id, busy, TrialState.COMPLETE, value=1.0)
    finished = {w.id: (w.study, w.trial, w.trials_done) for w in storage.workers()}
    assert finished == {busy: (None, None, 1), idle: (None, None, 0)}


def test_a_worker_prefers_the_segments_of_the_pbt_members_it_holds(storage_url):
    storage = Storage(storage_url)
    pbt, other = make_study(storage, "pbt"), make_study(storage, "other")
    storage.enqueue_trial(other.id, 0, {"x": 0}, attrs={"member": 3})
    for number, member in enumerate([0, 1, 2]):
        storage.enqueue_trial(pbt.id, number, {"x": number}, attrs={"member": member})
    storage.enqueue_trial(pbt.id, 3, {"x": 3})  # not a segment
    worker = register(storage)

    def claim(prefer):
        return storage.claim_trial(None, worker, prefer=prefer).number

    assert claim({pbt.id: [2, 5]}) == 2  # ahead of lower numbers
    assert claim({pbt.id: [3]}) == 0  # member 3 of another study is not held: in order
    assert claim({other.id: [3]}) == 0  # the other study's
    assert claim({pbt.id: [4]}) == 1  # none held queued: a worker never idles for it
    assert claim(None) == 3


def test_processes_opening_a_new_database_at_once_all_find_the_schema(storage_url, tmp_path):
    """Agents and a coordinator started together on an empty database: one creates the
    tables, the others wait for it, then use them."""
    script = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from tuner.storage import Storage
        folder, url, name = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
        (folder / f"ready-{name}").touch()
        while not (folder / "go").exists():
            time.sleep(0.005)
        Storage(url).register_worker(host=name, pid=1, device="cpu", study_id=None)
    """)
    with cleanup([subprocess.Popen([sys.executable, "-c", script, str(tmp_path), storage_url,
                                    f"p{i}"], stderr=subprocess.PIPE, text=True,
                                   start_new_session=True) for i in range(6)]) as processes:
        wait_for(lambda: len(list(tmp_path.glob("ready-*"))) == 6, what="six processes")
        (tmp_path / "go").touch()  # all at once
        errors = [finish(p, timeout=60)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 6, "\n".join(errors)
    assert sorted(w.host for w in Storage(storage_url).workers()) == [f"p{i}" for i in range(6)]


# -- coordinators and agents, on SQLite ---------------------------------------------------
def test_a_second_coordinator_waits_for_the_first(sqlite_url, tmp_path):
    log = tmp_path / "runs.jsonl"
    env = dict(cli_env(), TUNER_TEST_RUN_LOG=str(log), TUNER_TEST_SLEEP="0.05")
    args = ("run", TRIVIAL, "--storage", sqlite_url, "--strategy", "random", "--trials", "40",
            "--workers", "2", "--seed", "2")
    with cleanup([start_cli(*args, env=env)]) as processes:
        first = processes[0]
        storage = Storage(sqlite_url)
        wait_for(lambda: study_id(storage, "trivial") is not None
                 and storage.get_study("trivial").coordinator, what="the first's lease")
        holder = storage.get_study("trivial").coordinator
        assert f":{first.pid}:" in holder
        processes.append(second := start_cli(*args, env=env))
        _, first_err = finish(first, timeout=120)
        _, second_err = finish(second, timeout=120)
        assert first.returncode == 0, first_err
        assert second.returncode == 0, second_err
    assert "is coordinated by" not in first_err
    assert f"study 'trivial' is coordinated by {holder}; waiting" in second_err
    trials = storage.trials(storage.get_study("trivial").id)
    assert [t.number for t in trials] == list(range(40))
    assert {t.state for t in trials} == {TrialState.COMPLETE}
    runs = run_log(log)
    assert len(runs) == 40
    assert Counter(as_json(r["params"]) for r in runs) == Counter(
        as_json(t.params) for t in trials)
    assert storage.get_study("trivial").coordinator is None  # both gave the lease back


def test_a_study_file_that_differs_from_the_coordinators_copy_is_refused(sqlite_url,
                                                                          tmp_path):
    copy = tmp_path / "drifted.py"
    shutil.copy(STUDIES / "trivial.py", copy)
    log = tmp_path / "runs.jsonl"
    env = dict(cli_env(), TUNER_TEST_RUN_LOG=str(log))
    created = run_cli("run", str(copy), "--storage", sqlite_url, "--strategy", "random",
                      "--trials", "1", "--workers", "1", timeout=120)
    assert created.returncode == 0, created.stderr
    with copy.open("a") as out:
        out.write("# edited after the run\n")

    with cleanup([start_cli("worker", "--study", "drifted", "--storage", sqlite_url,
                            "--gpus", "none", env=env)]) as processes:
        agent = processes[0]
        _, stderr = finish(agent, timeout=60)
    assert agent.returncode == 1, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "differs from the coordinator's copy" in lines[0], stderr

    # An agent serving every study skips it: the trial goes back, uncounted, and never runs.
    storage = Storage(sqlite_url)
    study = storage.get_study("drifted")
    queued = storage.enqueue_trial(study.id, 1, {"i": 1, "x": 0.5})
    (temp := tmp_path / "tmp").mkdir()  # where the agent keeps its workers' logs
    with cleanup([start_cli("worker", "--storage", sqlite_url, "--gpus", "none",
                            env=dict(env, TMPDIR=str(temp)))]) as processes:
        agent = processes[0]
        slot_log = temp / f"tuner-workers-{agent.pid}" / "slot-0.log"
        wait_for(lambda: slot_log.exists()
                 and "differs from the coordinator's copy" in slot_log.read_text(),
                 what="the worker's warning")
        time.sleep(1)  # time enough to claim it again, were it not refused
        agent.send_signal(signal.SIGINT)
        _, stderr = finish(agent, timeout=60)
        assert agent.returncode == 0, stderr
    after = stored_trial(storage, queued.id)
    assert (after.state, after.retries) == (TrialState.QUEUED, 0)
    assert not log.exists()  # no trial ran in the agent's workers


def test_tuner_workers_lists_the_agents_workers_and_their_trials(sqlite_url):
    env = dict(cli_env(), TUNER_TEST_SLEEP="2")
    with cleanup([
        start_cli("run", TRIVIAL, "--storage", sqlite_url, "--strategy", "random",
                  "--trials", "6", "--workers", "0", env=env),
        start_cli("worker", "--storage", sqlite_url, "--workers", "2", "--heartbeat", "1",
                  env=env),
    ]) as processes:
        coordinator, agent = processes
        storage = Storage(sqlite_url)
        wait_for(lambda: [w.trial for w in storage.workers(alive_only=True)].count(None) == 0
                 and len(storage.workers(alive_only=True)) == 2, what="two busy workers")
        listing = run_cli("workers", "--storage", sqlite_url, timeout=60)
        api = tuner.list_workers(sqlite_url)
        assert listing.returncode == 0, listing.stderr
        assert len(api) == 2 and {w.study for w in api} == {"trivial"}

        study = storage.get_study("trivial")
        by_id = {w.id: w for w in storage.workers()}
        rows = [cells for line in listing.stdout.splitlines()
                if len(cells := [cell.strip() for cell in line.split("│")[1:-1]]) == 8]
        assert len(rows) == 2, listing.stdout
        for worker_id, _host, pid, device, state, running, _beat, _done in rows:
            assert (device, state) == ("cpu", "live")
            worker = by_id[int(worker_id)]
            assert worker.pid == int(pid)
            match = re.fullmatch(r"trivial #(\d+)", running)
            assert match, listing.stdout
            [trial] = storage.trials(study.id, numbers=[int(match[1])])
            assert trial.worker_id == worker.id  # the trial shown is that worker's
        assert {int(r[0]) for r in rows} == {w.id for w in api}
        for worker in api:
            [trial] = storage.trials(study.id, numbers=[worker.trial])
            assert trial.worker_id == worker.id

        _, stderr = finish(coordinator, timeout=60)
        assert coordinator.returncode == 0, stderr
        agent.send_signal(signal.SIGINT)
        _, stderr = finish(agent, timeout=60)
        assert agent.returncode == 0, stderr


def test_a_coordinator_without_workers_says_how_to_start_one(sqlite_url):
    with cleanup([start_cli("run", TRIVIAL, "--storage", sqlite_url, "--strategy", "random",
                            "--trials", "3", "--workers", "0")]) as processes:
        coordinator = processes[0]
        storage = Storage(sqlite_url)
        # Trials are queued right after the workers are counted and the hint is given.
        wait_for(lambda: study_id(storage, "trivial") is not None
                 and storage.counts(study_id(storage, "trivial"))[TrialState.QUEUED] > 0,
                 timeout=30, what="queued trials")
        os.killpg(coordinator.pid, signal.SIGINT)
        _, stderr = finish(coordinator, timeout=30)
    assert coordinator.returncode == 130, stderr
    assert f"`tuner worker --storage {sqlite_url}`" in stderr
    resume = stderr[stderr.index("Resume with:"):]
    assert "tuner run" in resume and "--workers 0" in resume
    counts = storage.counts(storage.get_study("trivial").id)
    assert counts[TrialState.RUNNING] == counts[TrialState.COMPLETE] == 0

