"""The path a user walks: `tuner run` with 2 local workers, then every read command."""

from __future__ import annotations

import csv
import io
import json

import pytest

from tests.conftest import STUDIES, run_cli
from tuner import Study, TrialState
from tuner.storage import Storage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """One real study, shared by the read-only tests below: 4 trials, 2 workers."""
    url = f"sqlite:///{tmp_path_factory.mktemp('e2e') / 'tuner.db'}"
    result = run_cli("run", str(STUDIES / "tiny.py"), "--storage", url, "--strategy", "bayes",
                     "--trials", "4", "--workers", "2", "--seed", "7")
    assert result.returncode == 0, result.stderr
    return url, result


def test_run_stores_every_trial_and_prints_a_ranking(finished_study):
    url, result = finished_study
    study = Study.load("tiny", storage=url)
    trials = study.trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(0.0 < t.value <= 1.0 and t.epochs >= 1 for t in trials)
    storage = Storage(url)
    epochs = storage.epochs(t.id for t in trials)
    for trial in trials:
        rows = epochs[trial.id]
        assert [r["epoch"] for r in rows] == list(range(trial.epochs))
        assert trial.value == max(r["value"] for r in rows)  # the best epoch's metric
        assert rows[trial.best_epoch]["value"] == trial.value
        assert set(trial.params) == {"units", "activation", "learning_rate"}
    workers = storage.workers()
    assert len(workers) == 2 and all(w.stopped_at is not None for w in workers)
    assert sum(w.trials_done for w in workers) == 4
    best = max(trials, key=lambda t: t.value)
    assert "Top 4 trials of tiny" in result.stdout
    rows = [[c.strip() for c in line.split("│")[1:-1]]
            for line in result.stdout.splitlines() if line.startswith("│")]
    assert rows[0][:2] == ["1", str(best.number)]  # rank 1 is the best trial


def test_trials_best_studies_export(finished_study, tmp_path):
    url, _ = finished_study
    study = Study.load("tiny", storage=url)
    ranked = study.ranked()
    assert ranked[0].value == study.best_value

    listing = run_cli("trials", "tiny", "--storage", url, "--top", "2")
    assert listing.returncode == 0
    body = [line for line in listing.stdout.splitlines() if line.startswith("│")]
    assert len(body) == 2 and body[0].split("│")[2].strip() == str(ranked[0].number)

    by_number = run_cli("trials", "tiny", "--storage", url, "--sort", "number",
                        "--state", "complete")
    numbers = [line.split("│")[1].strip() for line in by_number.stdout.splitlines()
               if line.startswith("│")]
    assert numbers == ["0", "1", "2", "3"]

    best = run_cli("best", "tiny", "--storage", url)
    assert best.returncode == 0
    assert f"#{ranked[0].number}" in best.stdout and "build_best_model()" in best.stdout
    for key, value in ranked[0].params.items():
        assert f"{key} = {value!r}" in best.stdout

    studies = run_cli("studies", "--storage", url)
    assert "tiny" in studies.stdout and "bayes" in studies.stdout

    as_json = json.loads(run_cli("export", "tiny", "--storage", url, "--format", "json").stdout)
    assert [t["number"] for t in as_json["trials"]] == [0, 1, 2, 3]
    assert all(len(t["epoch_metrics"]) == t["epochs"] for t in as_json["trials"])
    out = tmp_path / "trials.csv"
    assert run_cli("export", "tiny", "--storage", url, "--out", str(out)).returncode == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [float(r["value"]) for r in rows] == [t.value for t in study.trials]
    assert "params_units" in rows[0]


def test_best_model_rebuilds_from_the_database(finished_study):
    url, _ = finished_study
    study = Study.load("tiny", storage=url)
    model = study.build_best_model()
    assert model.layers[0].units == study.best_params["units"]


def test_resume_keeps_finished_trials_and_counts_them(finished_study):
    url, _ = finished_study
    before = {t.number: t.value for t in Study.load("tiny", storage=url).trials}
    result = run_cli("run", str(STUDIES / "tiny.py"), "--storage", url, "--trials", "5",
                     "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert "resuming with 4 trials done" in result.stdout
    after = Study.load("tiny", storage=url).trials
    assert len(after) == 5
    assert {t.number: t.value for t in after if t.number in before} == before


def test_best_exports_the_trained_model_of_any_strategy(finished_study, tmp_path):
    import keras

    url, _ = finished_study
    study = Study.load("tiny", storage=url)
    exported = run_cli("best", "tiny", "--storage", url, "--export", str(tmp_path / "m.keras"))
    assert exported.returncode == 0, exported.stderr
    (_, _), (x_val, y_val) = study.definition.load_data()
    for model in (keras.models.load_model(tmp_path / "m.keras"), study.load_model()):
        _, accuracy = model.evaluate(x_val, y_val, verbose=0)
        assert accuracy == pytest.approx(study.best_value, abs=1e-6)  # trained, at its best


def test_delete(finished_study):
    url, _ = finished_study
    refused = run_cli("delete", "tiny", "--storage", url)  # no terminal to confirm on
    assert refused.returncode != 0 and Study.load("tiny", storage=url)
    assert run_cli("delete", "tiny", "--storage", url, "--yes").returncode == 0
    gone = run_cli("trials", "tiny", "--storage", url)
    assert gone.returncode == 1 and "no study named 'tiny'" in gone.stderr


@pytest.mark.parametrize("args, message", [
    (["trials", "nope"], "no study named 'nope'"),
    (["best", "nope"], "no study named 'nope'"),
    (["run", str(STUDIES / "no_build_model.py")], "defines none of build_model(hp)"),
    (["run", "missing.py"], "does not exist"),
    (["studies", "--storage", "postgresql+psycopg://postgres@127.0.0.1:1/x"], "database error"),
    (["studies", "--storage", "bogus"], "is not a database URL"),
    (["trials", "x", "--sort", "colour"], "no study named"),
])
def test_user_errors_are_one_clear_message(args, message, sqlite_url):
    if "--storage" not in args:
        args = [*args, "--storage", sqlite_url]
    result = run_cli(*args, timeout=120)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_every_command_has_help():
    for command in ("run", "studies", "trials", "best", "export", "delete"):
        result = run_cli(command, "--help", timeout=60)
        assert result.returncode == 0 and "--storage" in result.stdout
