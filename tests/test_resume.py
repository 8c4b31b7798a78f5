"""A resumed study proposes from where it is: no strategy replays its start, whether the
study stopped cleanly or was killed (`kill -9`) mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import cli_env, run_cli, start_cli
from tuner import DefinitionError, InProcess, Study, TrialState
from tuner.errors import StudyExists
from tuner.processes import pid_alive
from tuner.space import canonical

CONTINUOUS = '''
import os, time
from tuner import Float, Space

metric = "score"
epochs = 4  # PBT: two segments of two epochs per member
space = Space(x=Float(0.0, 1.0, mutable=True), y=Float(-1.0, 1.0))

def objective(hp):
    time.sleep(float(os.environ.get("TUNER_TEST_SLEEP", "0")))
    return -(hp["x"] - 0.3) ** 2 - hp["y"] ** 2
'''
FINITE = '''
import os, time
from tuner import Choice, Int, Space

metric = "score"
space = Space(i=Int(0, 4), c=Choice(["a", "b", "c"]))  # 15 configurations

def objective(hp):
    time.sleep(float(os.environ.get("TUNER_TEST_SLEEP", "0")))
    return hp["i"] + len(hp["c"])
'''
# (strategy, study file, trials of the first run, trials in all); for PBT, trials are
# the population, each member running two segments.
CASES = {
    "random": (CONTINUOUS, 6, 12),
    "bayes": (CONTINUOUS, 6, 14),
    "bayes-gp": (CONTINUOUS, 6, 13),
    "pbt": (CONTINUOUS, 3, 6),
    "grid": (FINITE, 6, 15),
}


def study_file(folder: Path, strategy: str) -> Path:
    path = folder / "probe.py"
    path.write_text(CASES[strategy][0])
    return path


def assert_never_proposed_twice(study: Study, expected: int) -> None:
    trials = study.trials
    assert len(trials) == expected
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.error for t in trials]
    if study.record.strategy == "pbt":
        # A member's own next segment keeps its values by design; what must never repeat
        # is a member sampled afresh, or a segment of a member proposed twice.
        fresh = [canonical(t.params) for t in trials if t.attrs["generation"] == 0]
        segments = [(t.attrs["member"], t.attrs["generation"]) for t in trials]
        assert len(set(fresh)) == len(fresh), fresh
        assert len(set(segments)) == len(segments), segments
        return
    proposed = [canonical(t.params) for t in trials]
    repeats = {p for p in proposed if proposed.count(p) > 1}
    assert not repeats, f"proposed twice: {repeats}"


@pytest.mark.parametrize("strategy", list(CASES))
def test_a_study_resumed_after_a_clean_stop_never_repeats_a_configuration(
        strategy, sqlite_url, tmp_path):
    path = study_file(tmp_path, strategy)
    _, first, total = CASES[strategy]
    for trials in (first, total):  # a fresh Study and strategy each time, as a new process
        study = Study.create(definition=path, storage=sqlite_url, strategy=strategy, seed=3,
                             artifacts=str(tmp_path / "artifacts"), load_if_exists=True)
        study.optimize(trials=trials, executor=InProcess())
    segments = 2 if strategy == "pbt" else 1
    assert_never_proposed_twice(study, total * segments)


def finished(url: str) -> int:
    try:
        counts = Study.load("probe", storage=url).counts()
    except Exception:  # not created yet
        return 0
    return sum(counts[s] for s in (TrialState.COMPLETE, TrialState.FAILED))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", list(CASES))
def test_a_study_resumed_after_kill_9_never_repeats_a_configuration(
        strategy, sqlite_url, tmp_path):
    path = study_file(tmp_path, strategy)
    _, first, total = CASES[strategy]
    args = ["run", str(path), "--storage", sqlite_url, "--strategy", strategy, "--seed", "3",
            "--trials", str(total), "--workers", "1", "--artifacts", str(tmp_path / "a")]
    run = start_cli(*args, env=dict(cli_env(), TUNER_TEST_SLEEP="0.2"))
    deadline = time.monotonic() + 120
    while finished(sqlite_url) < first:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGKILL)  # coordinator and workers die at once
    run.communicate(timeout=60)

    resumed = start_cli(*args)
    _, stderr = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, stderr
    segments = 2 if strategy == "pbt" else 1
    assert_never_proposed_twice(Study.load("probe", storage=sqlite_url), total * segments)


def test_a_changed_study_file_is_refused_unless_allowed(sqlite_url, tmp_path):
    path = study_file(tmp_path, "random")
    Study.create(definition=path, storage=sqlite_url, strategy="random", seed=1).optimize(
        trials=2, executor=InProcess())
    stored = Study.load("probe", storage=sqlite_url).record
    path.write_text(CONTINUOUS.replace("Float(-1.0, 1.0)", "Float(-2.0, 2.0)"))
    with pytest.raises(StudyExists) as refused:
        Study.create(definition=path, storage=sqlite_url, load_if_exists=True)
    message = str(refused.value)
    assert "another study file" in message and "y Float(-1.0, 1.0) → Float(-2.0, 2.0)" in message
    assert "--allow-changed-file" in message
    assert Study.load("probe", storage=sqlite_url).record == stored  # nothing overwritten
    cli = run_cli("run", str(path), "--storage", sqlite_url, "--trials", "3")
    assert cli.returncode == 1 and "another study file" in cli.stderr
    assert "Traceback" not in cli.stderr

    with pytest.raises(DefinitionError, match="changed since the study last ran"):
        Study.load("probe", storage=sqlite_url).optimize(trials=3, executor=InProcess())

    allowed = run_cli("run", str(path), "--storage", sqlite_url, "--trials", "4",
                      "--workers", "1", "--allow-changed-file")
    assert allowed.returncode == 0, allowed.stderr
    study = Study.load("probe", storage=sqlite_url)
    assert study.record.definition_hash != stored.definition_hash
    assert study.space["y"].low == -2.0
    [change] = study.record.settings["file_changes"]
    assert change["hash"] == study.record.definition_hash and change["at"] > stored.created_at
    assert len(study.trials) == 4 and all(t.state == TrialState.COMPLETE for t in study.trials)


def test_a_running_study_cannot_be_deleted(sqlite_url, tmp_path):
    path = study_file(tmp_path, "random")
    args = ["run", str(path), "--storage", sqlite_url, "--trials", "6", "--workers", "1",
            "--strategy", "random"]
    run = start_cli(*args, env=dict(cli_env(), TUNER_TEST_SLEEP="0.5"))
    deadline = time.monotonic() + 120
    while finished(sqlite_url) < 1:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    refused = run_cli("delete", "probe", "--yes", "--storage", sqlite_url)
    assert refused.returncode == 1, refused.stdout
    assert "in use by its coordinator" in refused.stderr and "1 worker" in refused.stderr
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 0, stderr  # the run was not disturbed
    assert finished(sqlite_url) == 6
    deleted = run_cli("delete", "probe", "--yes", "--storage", sqlite_url)
    assert deleted.returncode == 0, deleted.stderr


def test_a_killed_process_left_as_a_zombie_counts_as_dead():
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        assert not pid_alive(child.pid)  # not reaped yet, but it runs nothing
        assert pid_alive(os.getpid())
    finally:
        child.wait()
