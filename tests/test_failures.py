"""Failing trials, interruptions and concurrent runs never lose or duplicate work."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from tests.conftest import STUDIES, cli_env, start_cli
from tuner import CoordinatorOptions, InProcess, Study, TooManyFailures, TrialState
from tuner.space import Choice, Space

pytestmark = pytest.mark.slow


def test_broken_trials_fail_with_their_error_and_the_study_goes_on(sqlite_url):
    study = Study.create(definition=STUDIES / "faults.py", storage=sqlite_url, strategy="grid")
    study.optimize(trials=10, executor=InProcess())  # the grid has 5 points: it ends there
    by_mode = {t.params["mode"]: t for t in study.trials}
    assert set(by_mode) == {"ok", "raise", "nan", "oom", "ok2"}
    assert by_mode["ok"].state == by_mode["ok2"].state == TrialState.COMPLETE
    for mode, needle in (("raise", "this configuration cannot be built"),
                         ("nan", "loss became nan"), ("oom", "OOM when allocating")):
        trial = by_mode[mode]
        assert trial.state == TrialState.FAILED, mode
        assert needle in trial.error and "Traceback" in trial.error, trial.error
    assert study.best_trial.params["mode"] in ("ok", "ok2")


def test_a_study_that_only_fails_stops_early(sqlite_url):
    from dataclasses import replace

    from tuner import load_definition

    always_broken = replace(load_definition(STUDIES / "faults.py"),
                            space=Space(mode=Choice(["raise"])), path=None, name="broken")
    study = Study.create(definition=always_broken, storage=sqlite_url, strategy="random")
    with pytest.raises(TooManyFailures, match="this configuration cannot be built"):
        study.optimize(trials=20, executor=InProcess(),
                       options=CoordinatorOptions(max_consecutive_failures=3))
    counts = study.counts()
    assert counts[TrialState.FAILED] >= 3 and counts[TrialState.RUNNING] == 0
    assert sum(counts.values()) < 20


def test_a_nan_result_fails_the_trial_and_errors_read_in_full(sqlite_url, tmp_path):
    path = tmp_path / "odd.py"
    path.write_text(
        "from tuner import Choice, Space\n"
        "metric = 'score'\n"
        "space = Space(mode=Choice(['nan', 'inf', 'multiline', 'ok']))\n"
        "def objective(hp):\n"
        "    if hp['mode'] == 'multiline':\n"
        "        raise ValueError(\"Data cardinality is ambiguous.\\n\"\n"
        "                         \"'x' sizes: 60\\n'y' sizes: 40\")\n"
        "    return {'nan': float('nan'), 'inf': float('inf'), 'ok': 1.0}[hp['mode']]\n")
    study = Study.create(definition=path, storage=sqlite_url, strategy="grid")
    study.optimize(trials=4, executor=InProcess())
    by_mode = {t.params["mode"]: t for t in study.trials}
    for mode in ("nan", "inf"):
        assert by_mode[mode].state == TrialState.FAILED and by_mode[mode].value is None
        assert "no finite value of 'score'" in by_mode[mode].error
    failed = by_mode["multiline"]
    assert failed.error.startswith("Traceback") and failed.error_summary == (
        "ValueError: Data cardinality is ambiguous.\n'x' sizes: 60\n'y' sizes: 40")
    assert study.best_trial.params["mode"] == "ok"


def wait_for(condition, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def complete(url: str) -> list:
    try:
        return [t for t in Study.load("tiny", storage=url).trials
                if t.state == TrialState.COMPLETE]
    except Exception:  # the study is not created yet
        return []


@pytest.mark.parametrize("how", ["ctrl-c", "kill"])
def test_interrupted_run_resumes_without_losing_work(how, sqlite_url):
    args = ["run", str(STUDIES / "tiny.py"), "--storage", sqlite_url, "--trials", "5",
            "--workers", "2", "--seed", "3", "--strategy", "random"]
    run = start_cli(*args)
    wait_for(lambda: len(complete(sqlite_url)) >= 1)
    if how == "ctrl-c":
        os.killpg(run.pid, signal.SIGINT)  # what a terminal sends to the foreground group
        _, stderr = run.communicate(timeout=60)
        assert run.returncode == 130, stderr
        assert "Resume with:" in stderr and "tuner run" in stderr
        assert Study.load("tiny", storage=sqlite_url).counts()[TrialState.RUNNING] == 0
    else:
        os.killpg(run.pid, signal.SIGKILL)  # the whole run dies at once, workers included
        run.communicate(timeout=60)
    kept = {t.number: t.value for t in complete(sqlite_url)}

    resumed = start_cli(*args)
    stdout, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr
    trials = Study.load("tiny", storage=sqlite_url).trials
    assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
    assert {n: v for n, v in ((t.number, t.value) for t in trials) if n in kept} == kept


def test_two_runs_on_one_study_never_run_a_trial_twice(sqlite_url, tmp_path):
    log = tmp_path / "builds.jsonl"
    env = dict(cli_env(), TUNER_TEST_BUILD_LOG=str(log))
    args = ["run", str(STUDIES / "tiny.py"), "--storage", sqlite_url, "--trials", "6",
            "--workers", "1", "--seed", "5", "--strategy", "random"]
    runs = [start_cli(*args, env=env) for _ in range(2)]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    study = Study.load("tiny", storage=sqlite_url)
    trials = study.trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    worker_pids = {w.pid for w in study.storage.workers()}
    builds = [json.loads(line) for line in log.read_text().splitlines()]
    trial_builds = [b for b in builds if b["pid"] in worker_pids]  # not the coordinators'
    assert len(trial_builds) == 6
    assert sorted(map(json.dumps, (b["params"] for b in trial_builds))) == sorted(
        json.dumps(t.params) for t in trials)


def test_kerastuner_build_model_with_conditional_scope_runs_unchanged(sqlite_url):
    study = Study.create(definition=STUDIES / "kerastuner_style.py", storage=sqlite_url,
                         strategy="random", seed=11)
    study.optimize(trials=6, executor=InProcess())
    trials = study.trials
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.error for t in trials]
    for trial in trials:
        p = trial.params
        if p["model_type"] == "shallow":
            assert "units" in p and "num_layers" not in p
        else:
            assert "units" not in p
            assert {f"units_{i}" for i in range(p["num_layers"])} <= set(p)
        assert {"dropout", "lr"} <= set(p)
    space = study.space
    assert space["units"].when == (("model_type", ("shallow",)),)
    assert space["units_0"].grid() == [8, 16, 32, 64]  # sampling="log" with step: a factor
    assert {t.params["model_type"] for t in trials} == {"shallow", "deep"}


def test_kerastuner_hypermodel_with_its_own_fit_runs_unchanged(sqlite_url):
    study = Study.create(definition=STUDIES / "kerastuner_hypermodel.py", storage=sqlite_url,
                         strategy="bayes", seed=2)
    study.optimize(trials=4, executor=InProcess())
    trials = study.trials
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.error for t in trials]
    assert all(t.params["batch_size"] in (32, 64) for t in trials)  # registered inside fit
    assert "batch_size" in study.space


def test_a_worker_process_killed_mid_trial_is_replaced_and_its_trial_rerun(sqlite_url):
    """What the kernel's OOM killer does to a worker: SIGKILL, no goodbye."""
    run = start_cli("run", str(STUDIES / "tiny.py"), "--storage", sqlite_url, "--trials", "3",
                    "--workers", "2", "--epochs", "30", "--strategy", "random")

    def running_trial():
        try:
            study = Study.load("tiny", storage=sqlite_url)
        except Exception:  # not created yet
            return None
        running = [t for t in study.trials if t.state == TrialState.RUNNING and t.epochs >= 1]
        return (study, running[0]) if running else None

    wait_for(lambda: running_trial() is not None)
    study, victim = running_trial()
    pid = next(w.pid for w in study.storage.workers() if w.id == victim.worker_id)
    os.kill(pid, signal.SIGKILL)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    trials = {t.number: t for t in study.trials}
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials.values())
    rerun = trials[victim.number]
    assert rerun.retries == 1 and rerun.worker_id != victim.worker_id
    killed = next(w for w in study.storage.workers() if w.id == victim.worker_id)
    assert killed.stopped_at is not None
    assert len(study.storage.workers()) == 3  # two at the start, one replacement


def test_workers_train_on_the_pytorch_backend(sqlite_url, tmp_path):
    """The same study file on KERAS_BACKEND=torch: workers inherit the backend."""
    log = tmp_path / "builds.jsonl"
    env = dict(cli_env(), KERAS_BACKEND="torch", TUNER_TEST_BUILD_LOG=str(log))
    run = start_cli("run", str(STUDIES / "tiny.py"), "--storage", sqlite_url, "--trials", "3",
                    "--workers", "2", "--strategy", "random", "--seed", "1", env=env)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    trials = Study.load("tiny", storage=sqlite_url).trials
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    assert max(t.value for t in trials) > 0.5  # it really learned (chance is 0.1), on torch
    backends = {json.loads(line)["backend"] for line in log.read_text().splitlines()}
    assert backends == {"torch"}


def test_a_trial_killed_mid_training_resumes_from_its_checkpoint(sqlite_url, tmp_path):
    """A worker SIGKILLed at epoch k: the next attempt goes on from its last checkpoint
    (here every epoch), on the curve the first one stored, each epoch stored once."""
    builds = tmp_path / "builds.jsonl"
    env = {**cli_env(), "TUNER_TEST_BUILD_LOG": str(builds)}
    run = start_cli("run", str(STUDIES / "slow_epochs.py"), "--storage", sqlite_url,
                    "--trials", "2", "--workers", "2", "--strategy", "random",
                    "--checkpoint-every", "1 epoch", env=env)

    def checkpointed_trial():
        try:
            study = Study.load("slow_epochs", storage=sqlite_url)
        except Exception:  # not created yet
            return None
        running = [t for t in study.trials if t.state == TrialState.RUNNING
                   and t.checkpoint_epoch is not None and t.checkpoint_epoch >= 3]
        return (study, running[0]) if running else None

    wait_for(checkpointed_trial)
    study, victim = checkpointed_trial()
    pid = next(w.pid for w in study.storage.workers() if w.id == victim.worker_id)
    os.kill(pid, signal.SIGKILL)
    killed_at = study.storage.trials(study.record.id, numbers=[victim.number])[0].epochs
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    rerun = study.storage.trials(study.record.id, numbers=[victim.number])[0]
    assert rerun.state == TrialState.COMPLETE and rerun.retries == 1
    assert rerun.attrs["resumed_at_epoch"] >= killed_at - 1  # at most one epoch again
    curve = [e["epoch"] for e in study.storage.epochs([rerun.id])[rerun.id]]
    assert curve == list(range(len(curve))) and rerun.epochs == len(curve)
    built = [json.loads(line)["params"] for line in builds.read_text().splitlines()]
    assert built.count(rerun.params) == 2  # built again to load the checkpoint into
    resume = tmp_path / "tuner-artifacts" / "slow_epochs" / "resume"
    assert not (resume / f"trial-{rerun.number}").exists()  # a finished trial's go


def test_a_checkpoint_of_another_model_is_refused_and_the_trial_starts_over(
        sqlite_url, tmp_path):
    """The study file changed the model between a crash and the resume: the requeued
    trial's checkpoint does not fit, so it starts again from epoch 1 rather than crash."""
    study_file = tmp_path / "slow_epochs.py"
    study_file.write_text((STUDIES / "slow_epochs.py").read_text())
    args = ["run", str(study_file), "--storage", sqlite_url, "--trials", "1", "--workers", "1",
            "--strategy", "random", "--checkpoint-every", "1 epoch"]
    run = start_cli(*args)

    def checkpointed() -> bool:
        try:
            trials = Study.load("slow_epochs", storage=sqlite_url).trials
        except Exception:  # not created yet
            return False
        return any((t.checkpoint_epoch or 0) >= 2 for t in trials)

    wait_for(checkpointed)
    os.killpg(run.pid, signal.SIGKILL)  # the whole run dies, its trial mid-training
    run.communicate(timeout=60)
    study_file.write_text(study_file.read_text().replace("Dense(16,", "Dense(24,"))

    resumed = start_cli(*args, "--allow-changed-file")
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr
    (trial,) = Study.load("slow_epochs", storage=sqlite_url).trials
    assert trial.state == TrialState.COMPLETE and "resumed_at_epoch" not in (trial.attrs or {})
    curve = [e["epoch"] for e in Study.load("slow_epochs", storage=sqlite_url).storage.epochs(
        [trial.id])[trial.id]]
    assert curve == list(range(len(curve)))  # from the first epoch again, each stored once
