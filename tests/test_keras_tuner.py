"""KerasTuner code with one changed line, `import tuner.keras_tuner as keras_tuner`: the
usage of KerasTuner's guides (getting started, tailoring the space, failed trials,
TensorBoard), on small offline data, every trial stored in the study's database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
from keras import layers
from sklearn.datasets import load_digits

import tuner.keras_tuner as keras_tuner
from tests.conftest import ROOT, cli_env, run_cli
from tuner import Study, TrialState

pytestmark = pytest.mark.slow

X, Y = load_digits(return_X_y=True)
X = (X / 16.0).astype("float32")
X_TRAIN, Y_TRAIN, X_VAL, Y_VAL = X[:600], Y[:600], X[600:900], Y[600:900]


def build_model(hp):
    model = keras.Sequential([layers.Input(shape=(64,))])
    model.add(layers.Dense(hp.Int("units", 16, 64, step=16),
                           activation=hp.Choice("activation", ["relu", "tanh"])))
    if hp.Boolean("dropout"):
        model.add(layers.Dropout(0.25))
    model.add(layers.Dense(10, activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-3, 1e-2, sampling="log")),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_getting_started(tmp_path, capsys):
    assert build_model(keras_tuner.HyperParameters()).layers[0].units == 16  # defaults
    tuner = keras_tuner.RandomSearch(
        hypermodel=build_model, objective="val_accuracy", max_trials=3,
        executions_per_trial=2, overwrite=True, directory=tmp_path, project_name="hello")
    tuner.search_space_summary()
    summary = capsys.readouterr().out
    assert "Default search space size: 4" in summary and "units (Int)" in summary
    assert "'min_value': 16, 'max_value': 64, 'step': 16" in summary

    tuner.search(X_TRAIN, Y_TRAIN, epochs=2, validation_data=(X_VAL, Y_VAL))
    progress = capsys.readouterr().out  # as `tuner run` shows it: a line per trial here
    assert [line.split()[:3] for line in progress.splitlines()] == [
        ["trial", str(n), "COMPLETE"] for n in range(3)]
    study = Study.load("hello", storage=f"sqlite:///{tmp_path / 'hello' / 'tuner.db'}")
    trials = study.trials
    assert len(trials) == 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for trial in trials:  # the value is the mean of the executions' best epochs
        executions = trial.attrs["executions"]
        assert len(executions) == 2 and all(len(e) == 2 for e in executions)
        bests = [max(epoch["val_accuracy"] for epoch in e) for e in executions]
        assert trial.value == pytest.approx(sum(bests) / 2)
        assert len(study.storage.epochs([trial.id])[trial.id]) == 2  # the first one's, live

    models = tuner.get_best_models(num_models=2)
    assert len(models) == 2 and all(isinstance(m, keras.Model) for m in models)
    best_hps = tuner.get_best_hyperparameters(5)
    assert len(best_hps) == 3 and best_hps[0].values == study.best_trial.params
    assert tuner.hypermodel.build(best_hps[0]).layers[0].units == best_hps[0].get("units")
    assert [t.trial_id for t in tuner.oracle.get_best_trials(3)] == [
        str(t.number) for t in study.ranked()]
    tuner.results_summary()
    results = capsys.readouterr().out
    assert results.startswith("Results summary")
    assert 'Objective(name="val_accuracy", direction="max")' in results
    assert f"Trial {study.best_trial.number} summary" in results
    assert f"Score: {study.best_trial.value}" in results


def test_best_model_is_the_trained_one_at_its_best_epoch(tmp_path):
    tuner = keras_tuner.BayesianOptimization(
        build_model, objective="val_accuracy", max_trials=2, directory=tmp_path,
        project_name="best", seed=3)
    tuner.search(X_TRAIN, Y_TRAIN, epochs=3, validation_data=(X_VAL, Y_VAL))
    best = tuner.oracle.get_best_trials(1)[0]
    _, accuracy = tuner.get_best_models(1)[0].evaluate(X_VAL, Y_VAL, verbose=0)
    assert accuracy == pytest.approx(best.score, abs=1e-6)

    # `tuner best --export` saves that model, without retraining
    url = f"sqlite:///{tmp_path / 'best' / 'tuner.db'}"
    exported = run_cli("best", "best", "--storage", url, "--export", str(tmp_path / "m.keras"))
    assert exported.returncode == 0, exported.stderr
    _, again = keras.models.load_model(tmp_path / "m.keras").evaluate(X_VAL, Y_VAL, verbose=0)
    assert again == pytest.approx(best.score, abs=1e-6)


def test_resume_keeps_finished_trials_and_a_new_tuner_reads_the_project(tmp_path):
    def make(max_trials):
        return keras_tuner.RandomSearch(build_model, objective="val_accuracy",
                                        max_trials=max_trials, directory=tmp_path,
                                        project_name="resumed", seed=5)

    make(2).search(X_TRAIN, Y_TRAIN, epochs=1, validation_data=(X_VAL, Y_VAL))
    url = f"sqlite:///{tmp_path / 'resumed' / 'tuner.db'}"
    first = {t.number: t.value for t in Study.load("resumed", storage=url).trials}
    make(4).search(X_TRAIN, Y_TRAIN, epochs=1, validation_data=(X_VAL, Y_VAL))
    trials = Study.load("resumed", storage=url).trials
    assert len(trials) == 4 and {t.number: t.value for t in trials[:2]} == first
    reread = make(4)  # no search: the project's results as stored
    assert reread.get_best_hyperparameters()[0].values == Study.load(
        "resumed", storage=url).best_trial.params
    assert reread.remaining_trials == 0


def build_regressor(hp):
    model = keras.Sequential([layers.Input(shape=(10,)),
                              layers.Dense(hp.Int("units", 8, 32, step=8), activation="relu"),
                              layers.Dense(1)])
    model.compile(optimizer="adam", loss="mean_squared_error",
                  metrics=[keras.metrics.MeanAbsoluteError()])
    return model


def test_an_objective_to_minimize_and_values_returned_by_fit(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.random((100, 10)), rng.random((100, 1))
    validation = (rng.random((20, 10)), rng.random((20, 1)))
    tuner = keras_tuner.RandomSearch(
        build_regressor, objective=keras_tuner.Objective("val_mean_absolute_error", "min"),
        max_trials=3, overwrite=True, directory=tmp_path, project_name="mae")
    tuner.search(x, y, epochs=2, validation_data=validation)
    study = tuner.study
    assert study.direction == "minimize"
    assert study.best_value == min(t.value for t in study.trials)

    class ReturnsAValue(keras_tuner.HyperModel):
        def build(self, hp):
            return build_regressor(hp)

        def fit(self, hp, model, x, y, validation_data, **kwargs):
            model.fit(x, y, **kwargs)
            x_val, y_val = validation_data
            error = float(np.mean(np.abs(model.predict(x_val, verbose=0) - y_val)))
            return {"metric_a": -error, "metric_b": error} if hp.Boolean("as_dict") else error

    for objective in (None, keras_tuner.Objective("metric_a", "max")):
        name = "value" if objective is None else "dict"
        tuner = keras_tuner.RandomSearch(ReturnsAValue(), objective=objective, max_trials=2,
                                         overwrite=True, directory=tmp_path, project_name=name,
                                         hyperparameters=_fixed("as_dict", objective is not None))
        tuner.search(x=x, y=y, validation_data=validation, epochs=1)
        trials = tuner.study.trials
        assert all(t.state == TrialState.COMPLETE for t in trials), [t.error for t in trials]
        expected = "minimize" if objective is None else "maximize"
        assert tuner.study.direction == expected and all(
            (t.value > 0) == (objective is None) for t in trials)


def _fixed(name, value):
    hp = keras_tuner.HyperParameters()
    hp.Fixed(name, value)
    return hp


def test_tune_anything_by_overriding_run_trial(tmp_path):
    class MyTuner(keras_tuner.RandomSearch):
        def run_trial(self, trial, *args, **kwargs):
            x = trial.hyperparameters.Float("x", min_value=-1.0, max_value=1.0)
            time.sleep(0.2)  # some work: an instant trial could outrun the coordinator
            return x * x + 1

    tuner = MyTuner(max_trials=12, overwrite=True, directory=tmp_path, project_name="any")
    tuner.search()
    best = tuner.get_best_hyperparameters()[0].get("x")
    values = [t.params["x"] for t in tuner.study.trials]
    # x is met inside the first trial, which runs its default (as under KerasTuner); the
    # trials queued meanwhile get values for it, except one a worker took first.
    assert len(values) == 12 and values.count(-1.0) <= 2 and len(set(values)) >= 11
    assert abs(best) == min(abs(v) for v in values)


def test_tailoring_the_search_space(tmp_path, capsys):
    hp = keras_tuner.HyperParameters()
    hp.Choice("lr", [1e-3, 3e-3])  # overrides the model's Float of the same name
    tuner = keras_tuner.RandomSearch(build_model, hyperparameters=hp, tune_new_entries=False,
                                     objective="val_accuracy", max_trials=3, overwrite=True,
                                     directory=tmp_path, project_name="few")
    tuner.search_space_summary()
    assert "Default search space size: 1" in capsys.readouterr().out
    tuner.search(X_TRAIN, Y_TRAIN, epochs=1, validation_data=(X_VAL, Y_VAL))
    for trial in tuner.study.trials:  # only lr was tuned; the rest kept their defaults
        assert trial.params == {"lr": trial.params["lr"]} and trial.params["lr"] in (1e-3, 3e-3)

    fixed = keras_tuner.HyperParameters()
    fixed.Fixed("lr", 1e-3)
    tuner = keras_tuner.RandomSearch(build_model, hyperparameters=fixed, objective="val_loss",
                                     max_trials=2, overwrite=True, directory=tmp_path,
                                     project_name="fix", optimizer=keras.optimizers.Adam(1e-3),
                                     loss="sparse_categorical_crossentropy")
    tuner.search(X_TRAIN, Y_TRAIN, epochs=1, validation_data=(X_VAL, Y_VAL))
    assert all(t.params["lr"] == 1e-3 and "units" in t.params for t in tuner.study.trials)
    assert tuner.get_best_models()[0].loss == "sparse_categorical_crossentropy"

    with pytest.raises(ValueError, match="allow_new_entries=False"):  # as KerasTuner: at once
        keras_tuner.RandomSearch(build_model, hyperparameters=_fixed("lr", 1e-3),
                                 allow_new_entries=False, objective="val_accuracy",
                                 directory=tmp_path, project_name="strict")


def too_large(kind):
    def build(hp):
        model = keras.Sequential([layers.Input(shape=(20,)),
                                  layers.Dense(hp.Int("units_1", 10, 40, step=10)),
                                  layers.Dense(hp.Int("units_2", 10, 20, step=10)),
                                  layers.Dense(1)])
        model.compile(loss="mse")
        if model.count_params() > 1200:
            with open(os.environ["TUNER_TEST_ATTEMPTS"], "a") as log:
                log.write(f"{hp['units_1']},{hp['units_2']}\n")
            raise kind(f"Model too large! It contains {model.count_params()} params.")
        return model
    return build


@pytest.mark.parametrize("kind, attempts", [(ValueError, 4),
                                            (keras_tuner.errors.FailedTrialError, 1)])
def test_failed_trials_are_retried_unless_marked_failed(kind, attempts, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_TEST_ATTEMPTS", str(tmp_path / "attempts"))
    rng = np.random.default_rng(1)
    tuner = keras_tuner.GridSearch(hypermodel=too_large(kind), objective="val_loss",
                                   overwrite=True, max_retries_per_trial=3,
                                   max_consecutive_failed_trials=8, directory=tmp_path,
                                   project_name="failing")
    tuner.search(x=rng.random((50, 20)), y=rng.random((50, 1)),
                 validation_data=(rng.random((20, 20)), rng.random((20, 1))), epochs=1)
    trials = tuner.study.trials
    failed = [t for t in trials if t.state == TrialState.FAILED]
    large = [(u1, u2) for u1 in (10, 20, 30, 40) for u2 in (10, 20)
             if 21 * u1 + (u1 + 1) * u2 + u2 + 1 > 1200]
    assert len(trials) == 8 and len(failed) == len(large) == 3  # the grid: 4 x 2
    assert all("Model too large!" in t.error_summary for t in failed)
    lines = (tmp_path / "attempts").read_text().splitlines()
    assert len(lines) == attempts * len(failed)


def test_a_fatal_error_ends_the_search(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNER_TEST_ATTEMPTS", str(tmp_path / "attempts"))
    rng = np.random.default_rng(2)
    tuner = keras_tuner.GridSearch(hypermodel=too_large(keras_tuner.errors.FatalError),
                                   objective="val_loss", overwrite=True,
                                   max_retries_per_trial=3, max_consecutive_failed_trials=8,
                                   directory=tmp_path, project_name="fatal")
    with pytest.raises(keras_tuner.errors.FatalError, match="Model too large!"):
        tuner.search(x=rng.random((50, 20)), y=rng.random((50, 1)),
                     validation_data=(rng.random((20, 20)), rng.random((20, 1))), epochs=1)
    attempts = (tmp_path / "attempts").read_text().splitlines()
    assert len(attempts) == len(set(attempts)) >= 1  # never retried
    ran = [t for t in tuner.study.trials if t.state.is_finished()]
    assert len(ran) < 8  # stopped: not the whole grid


def test_a_tensorboard_callback_writes_one_folder_per_trial(tmp_path):
    logs = tmp_path / "tb_logs"
    tuner = keras_tuner.RandomSearch(build_model, max_trials=2, overwrite=True,
                                     objective="val_accuracy", directory=tmp_path / "tb")
    tuner.search(X_TRAIN, Y_TRAIN, validation_split=0.2, epochs=1,
                 callbacks=[keras.callbacks.TensorBoard(str(logs))])
    numbers = {str(t.number) for t in tuner.study.trials}
    assert {p.name for p in logs.iterdir()} == numbers
    for number in numbers:
        assert any((logs / number / "execution0").rglob("events.out.tfevents.*"))
    assert tuner.project_dir == os.path.join(str(tmp_path / "tb"), "untitled_project")


NOTEBOOK = textwrap.dedent('''
    # A notebook's cells as one script: everything lives in __main__, no main guard.
    import os, sys
    import keras, numpy as np
    from sklearn.datasets import load_digits
    import tuner.keras_tuner as keras_tuner

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")

    class Seen(keras.callbacks.Callback):  # a custom callback, defined here
        def on_train_end(self, logs=None):
            with open(os.environ["SEEN"], "a") as out:
                out.write("callback\\n")

    def build(hp):
        return keras.Sequential([keras.Input(shape=(64,)),
                                 keras.layers.Dense(hp.Int("units", 8, 32, step=8),
                                                    activation="relu"),
                                 keras.layers.Dense(10, activation="softmax")])

    class Digits(keras_tuner.HyperModel):
        def build(self, hp):
            model = build(hp)
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                          metrics=["accuracy"])
            return model

        def fit(self, hp, model, x, y, **kwargs):
            with open(os.environ["SEEN"], "a") as out:  # how each trial got its data
                out.write(f"{os.getpid()} {type(x).__name__} {id(x)}\\n")
            return model.fit(x, y, **kwargs)

    tuner = keras_tuner.RandomSearch(Digits(), objective="val_accuracy", max_trials=6,
                                     directory=sys.argv[1], project_name="notebook",
                                     workers=2, overwrite=True)
    tuner.search(x[:1200], y[:1200], epochs=1, validation_data=(x[1200:], y[1200:]),
                 callbacks=[Seen()])
    print("best", tuner.get_best_hyperparameters()[0].values)
''')


def test_a_notebook_style_script_runs_on_two_workers(tmp_path):
    script, seen = tmp_path / "notebook.py", tmp_path / "seen.txt"
    script.write_text(NOTEBOOK)
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=tmp_path,
                            env=dict(cli_env(), SEEN=str(seen), PYTHONPATH=str(ROOT)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("best {") == 1  # the script ran once: no worker re-ran it
    study = Study.load("notebook", storage=f"sqlite:///{tmp_path / 'notebook' / 'tuner.db'}")
    trials = study.trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    workers = {w.pid for w in study.storage.workers()}
    assert len(workers) == 2 and os.getpid() not in workers
    lines = seen.read_text().splitlines()
    assert lines.count("callback") == 6  # the custom callback ran in every trial
    fits = [line.split() for line in lines if line != "callback"]
    assert {pid for pid, _, _ in fits} <= {str(p) for p in workers}
    assert {kind for _, kind, _ in fits} == {"memmap"}  # the array, mapped from the project
    for pid in {pid for pid, _, _ in fits}:  # ... and loaded once by each worker
        assert len({ident for p, _, ident in fits if p == pid}) == 1
    assert len(list((tmp_path / "notebook").rglob("array-*.npy"))) >= 1


def test_inputs_that_cannot_leave_the_process_run_here(tmp_path, caplog):
    def batches():
        while True:
            yield X_TRAIN[:64], Y_TRAIN[:64]

    tuner = keras_tuner.RandomSearch(build_model, objective="accuracy", max_trials=2,
                                     workers=2, overwrite=True, directory=tmp_path,
                                     project_name="generator")
    tuner.search(batches(), steps_per_epoch=2, epochs=1)
    assert [t.state for t in tuner.study.trials] == [TrialState.COMPLETE] * 2
    said = [r.getMessage() for r in caplog.records if "cannot go to other" in r.getMessage()]
    assert len(said) == 1 and "run in this process" in said[0]
    assert {w.pid for w in tuner.study.storage.workers()} == {os.getpid()}


def test_pbt_tuner_trains_a_population(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-3, 1e-2, sampling="log")
    tuner = keras_tuner.PBT(build_model, objective="val_accuracy", population=3, interval=1,
                            mutable=["lr"], hyperparameters=hp, directory=tmp_path,
                            project_name="pbt", seed=4)
    tuner.search(X_TRAIN, Y_TRAIN, epochs=2, validation_data=(X_VAL, Y_VAL))
    trials = tuner.study.trials
    assert len(trials) == 6 and all(t.state == TrialState.COMPLETE for t in trials)
    best = tuner.oracle.get_best_trials(1)[0]
    _, accuracy = tuner.get_best_models()[0].evaluate(X_VAL, Y_VAL, verbose=0)
    assert accuracy == pytest.approx(best.score, abs=1e-6)


def test_the_cli_reads_a_tuners_project(tmp_path):
    tuner = keras_tuner.RandomSearch(build_model, objective="val_accuracy", max_trials=2,
                                     directory=tmp_path, project_name="seen [by] cli")
    tuner.search(X_TRAIN, Y_TRAIN, epochs=1, validation_data=(X_VAL, Y_VAL))
    url = f"sqlite:///{tmp_path / 'seen [by] cli' / 'tuner.db'}"
    listing = run_cli("trials", "seen [by] cli", "--storage", url)
    assert listing.returncode == 0 and listing.stdout.count("COMPLETE") == 2
    exported = json.loads(run_cli("export", "seen [by] cli", "--storage", url,
                                  "--format", "json").stdout)
    assert [t["value"] for t in exported["trials"]] == [t.value for t in tuner.study.trials]


PLAIN_SCRIPT = textwrap.dedent('''
    # The README's Python example as a plain script: no `if __name__ == "__main__":`.
    import os, sys, time
    from tuner import Float, Space, Study, StudyDefinition

    def objective(hp):  # defined here, in __main__
        time.sleep(float(os.environ["TUNER_TEST_SLEEP"]))  # long enough for both workers
        return -(hp["x"] - 0.3) ** 2

    in_python = StudyDefinition(objective=objective, space=Space(x=Float(0.0, 1.0)),
                                metric="score", name="in_python")
    for definition in (sys.argv[2], in_python):
        study = Study.create(definition=definition, storage=sys.argv[1], strategy="random")
        study.optimize(trials=6, workers=2)
    print("script finished in", os.getpid())
''')


def test_a_plain_script_without_a_main_guard_runs_on_two_workers(tmp_path):
    script, url = tmp_path / "plain.py", f"sqlite:///{tmp_path / 'tuner.db'}"
    script.write_text(PLAIN_SCRIPT)
    result = subprocess.run([sys.executable, str(script), url, str(ROOT / "tests" / "studies" /
                                                                  "trivial.py")],
                            cwd=tmp_path, env=dict(cli_env(), TUNER_TEST_SLEEP="0.5"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("script finished") == 1
    script_pid = int(result.stdout.split("script finished in")[1])
    for name in ("trivial", "in_python"):
        study = Study.load(name, storage=url)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
        started = {w.id: w.pid for w in study.storage.workers() if w.study_id == study.record.id}
        assert len(set(started.values())) == 2 and script_pid not in started.values(), name
        assert {t.worker_id for t in study.trials} <= set(started)  # the trials ran there
