"""Studies with several objectives and constraints: what each strategy stores, the front,
the measures the worker takes, multi-objective ASHA, the CLI's views and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import STUDIES, run_cli
from tuner import InProcess, Study, TrialState
from tuner.coordinator import StudyStopped
from tuner.definition import StudyDefinition
from tuner.early_stop import ASHA
from tuner.early_stop._asha import promotable_by_fronts
from tuner.early_stop.base import Curves
from tuner.errors import DefinitionError
from tuner.pareto import dominates, hypervolume
from tuner.storage import Storage


def brute_front(study, trials):
    """The non-dominated feasible completed trials, by the definition, pair by pair."""
    done = [t for t in trials if t.state == TrialState.COMPLETE and study.record.feasible(t)]
    signed = {t.number: [o.sign * v for o, v in zip(study.objectives, t.values, strict=True)]
              for t in done}
    return {a.number for a in done
            if not any(dominates(signed[b.number], signed[a.number]) for b in done)}


@pytest.mark.parametrize("strategy", ["bayes", "nsga2", "evolution", "random", "grid"])
def test_toy_front_is_the_non_dominated_set(strategy, storage_url):
    study = Study.create(definition=STUDIES / "toy_pareto.py", storage=storage_url,
                         strategy=strategy, seed=3)
    study.optimize(trials=24, executor=InProcess(), show_progress=False)
    trials = study.trials
    assert len(trials) == 24 and all(t.state == TrialState.COMPLETE for t in trials)
    for t in trials:  # each objective's value, in the study's order
        x = t.params["x"] + (t.params["by"] if t.params["shift"] == "some" else 0.0)
        assert t.values == pytest.approx([x * x, (x - 2) ** 2])
        assert t.value == t.values[0]
    front = {t.number for t in study.best_trials}
    assert front and front == brute_front(study, trials)


def test_bayes_and_nsga2_beat_random_on_hypervolume(sqlite_url):
    """The multi-objective samplers learn: more hypervolume than random draws, same budget."""
    reached = {}
    for strategy in ("random", "bayes", "nsga2"):
        study = Study.create(f"toy-{strategy}", definition=STUDIES / "toy_pareto.py",
                             storage=sqlite_url, strategy=strategy, seed=5)
        study.optimize(trials=40, executor=InProcess(), show_progress=False)
        points = [[-v for v in t.values] for t in study.best_trials]
        reached[strategy] = hypervolume(points, [-16.0, -16.0])
    assert reached["bayes"] > reached["random"]
    assert reached["nsga2"] >= reached["random"] * 0.98


def test_constraints_keep_infeasible_trials_out_of_the_front(sqlite_url, monkeypatch):
    monkeypatch.setenv("TUNER_TEST_CONSTRAINED", "1.0")
    study = Study.create(definition=STUDIES / "toy_pareto.py", storage=sqlite_url,
                         strategy="bayes", seed=2)
    study.optimize(trials=20, executor=InProcess(), show_progress=False)
    trials = study.trials
    infeasible = [t for t in trials if t.measures["f2"] > 1.0]
    assert infeasible and all(t.state == TrialState.COMPLETE for t in infeasible)  # kept
    front = study.best_trials
    assert front and all(t.measures["f2"] <= 1.0 for t in front)
    assert {t.number for t in front} == brute_front(study, trials)
    # Optuna's sampler was told each trial's constraint values (<= 0: kept).
    from tuner.strategies import Bayes
    bayes = Bayes()
    bayes.start(study.space, direction="minimize", seed=2, trials=trials,
                settings=study.record.settings)
    told = {t.number: t.constraints for t in bayes._study.trials}
    assert [told[i]["f2"] > 0 for i in range(len(trials))] == [
        t.measures["f2"] > 1.0 for t in trials]
    # The CLI says which constraint a trial breaks.
    shown = run_cli("trials", "toy_pareto", "--storage", sqlite_url)
    assert shown.returncode == 0 and "breaks f2 <= 1" in shown.stdout


def test_digits_accuracy_against_size_measures_agree_with_keras(tmp_path):
    """A real two-objective Keras study: params, latency_ms and model_bytes as the worker
    measured them, checked on the trained model the study hands back."""
    from workers.measures import latency_ms

    url = f"sqlite:///{tmp_path / 'tuner.db'}"
    definition = StudyDefinition(**{
        **_file_options(STUDIES / "digits_pareto.py"),
        "objectives": ["val_accuracy", "params", "latency_ms"],
        "constraints": {"model_bytes": ("<=", 10**7), "depth": ("<=", 3)},
        "measures": lambda model, data: {"depth": len(model.layers),
                                         "val_rows": len(data[1][0])},
    })
    study = Study.create("sizes", definition=definition, storage=url, strategy="random",
                         seed=4, artifacts=str(tmp_path / "artifacts"))
    study.optimize(trials=3, executor=InProcess(), show_progress=False)
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE, trial.error
        model = study.load_model(trial)
        assert not model.non_trainable_weights  # so Keras's count is of trainable ones
        assert trial.measures["params"] == model.count_params()
        assert trial.values[1] == trial.measures["params"]
        assert trial.measures["model_bytes"] == 4 * model.count_params()  # float32
        # the study's own measures, of the trained model and the study's data
        assert trial.measures["depth"] == len(model.layers) and trial.measures["val_rows"] == 300
        assert study.record.feasible(trial) == (len(model.layers) <= 3)
        again = latency_ms(model, _batch())
        assert 0 < trial.measures["latency_ms"] < 50 * again + 5
        # every epoch's row carries the built-in measures, as early stopping reads them
        rows = Storage(url).epochs([trial.id])[trial.id]
        assert all(r["metrics"]["params"] == trial.measures["params"] for r in rows)


def _batch():
    from sklearn.datasets import load_digits
    return load_digits(return_X_y=True)[0][:64] / 16.0


def _file_options(path: Path) -> dict:
    from tuner.definition import load_definition
    d = load_definition(path)
    return dict(build_model=d.build_model, load_data=d.load_data, space=d.space, epochs=2,
                batch_size=64, patience=None, name="sizes")


def test_multi_objective_asha_keeps_the_front_at_a_rung():
    """At a rung a non-dominated trial goes on even when another has better accuracy; a
    trial dominated by several stops (eta = 2, four trials at the rung)."""
    rule = ASHA(min_epochs=1, reduction_factor=2)
    # signed (accuracy, -params) at epoch 1
    vectors = {0: [(0.9, -900.0)], 1: [(0.5, -100.0)], 2: [(0.4, -800.0)], 3: [(0.8, -950.0)]}
    curves = Curves({n: [v[0][0]] for n, v in vectors.items()}, frozenset(), 4, 0, vectors)
    assert not rule.should_stop(0, 1, curves)  # best accuracy: on the front
    assert not rule.should_stop(1, 1, curves)  # smallest: on the front too
    assert rule.should_stop(2, 1, curves)  # dominated by trial 1
    assert rule.should_stop(3, 1, curves)  # dominated by trial 0
    # by accuracy alone trial 3 would have gone on instead of trial 1
    single = Curves(curves.values, frozenset(), 4, 0)
    assert not rule.should_stop(3, 1, single) and rule.should_stop(1, 1, single)


def test_multi_objective_asha_in_a_study(sqlite_url):
    """One worker, so each trial meets at a rung the trials numbered before it: a trial
    stops exactly where it is not among the top 1/eta by fronts of (accuracy, params)."""
    study = Study.create(definition=STUDIES / "digits_pareto.py", storage=sqlite_url,
                         strategy="random", seed=6, epochs=3,
                         early_stop=ASHA(min_epochs=1, reduction_factor=2))
    study.optimize(trials=6, executor=InProcess(), show_progress=False)
    trials = study.trials
    assert any(t.state == TrialState.PRUNED for t in trials)
    epochs = Storage(sqlite_url).epochs(t.id for t in trials)

    def point(trial, rung):
        metrics = epochs[trial.id][rung - 1]["metrics"]
        return (metrics["val_accuracy"], -metrics["params"])

    for trial in trials[1:]:
        for rung in (1, 2):
            if len(epochs[trial.id]) < rung:
                break
            rivals = [point(t, rung) for t in trials
                      if t.number < trial.number and len(epochs[t.id]) >= rung]
            goes_on = promotable_by_fronts(point(trial, rung), rivals, 2)
            assert goes_on == (len(epochs[trial.id]) > rung), (trial.number, rung)


def test_cli_run_best_and_pareto(sqlite_url):
    result = run_cli("run", str(STUDIES / "toy_pareto.py"), "--storage", sqlite_url,
                     "--name", "toy", "--strategy", "nsga2", "--trials", "12", "--seed", "1")
    assert result.returncode == 0, result.stderr
    assert "f1 (minimize), f2 (minimize)" in result.stdout
    assert "Pareto front of toy" in result.stdout
    study = Study.load("toy", storage=sqlite_url)
    front = study.best_trials
    best = run_cli("best", "toy", "--storage", sqlite_url)
    assert best.returncode == 0, best.stderr
    assert f"Pareto front of toy: {len(front)} of 12 trials" in best.stdout
    numbers = [int(line.split("│")[2]) for line in best.stdout.splitlines()
               if line.startswith("│")]
    assert numbers == [t.number for t in front]
    listing = run_cli("trials", "toy", "--storage", sqlite_url, "--pareto")
    assert sorted(int(line.split("│")[2]) for line in listing.stdout.splitlines()
                  if line.startswith("│")) == sorted(numbers)
    one = run_cli("best", "toy", "--storage", sqlite_url, "--trial", str(front[-1].number))
    assert one.returncode == 0 and f"#{front[-1].number}, f1=" in one.stdout
    exported = run_cli("export", "toy", "--storage", sqlite_url, "--format", "csv")
    header, *rows = exported.stdout.splitlines()
    assert "values_f1,values_f2" in header and len(rows) == 12
    studies = run_cli("studies", "--storage", sqlite_url)
    assert "f1 ↓, f2 ↓" in studies.stdout
    refused = run_cli("best", "toy", "--storage", sqlite_url, "--export", "x.keras")
    assert refused.returncode != 0 and "--trial N" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize(("options", "message"), [
    ({"metric": ["a", "b"], "direction": "maximize"}, "one direction per metric"),
    ({"metric": ["a", "b"], "direction": ["maximize"]}, "1 entries for 2 metrics"),
    ({"metric": ["a", "a"]}, "names an objective twice"),
    ({"metric": ["a", "b"], "direction": ["up", "down"]}, "must be 'maximize'"),
    ({"constraints": {"params": ("<", 5)}}, "op '<=' or '>='"),
    ({"constraints": {"params": ("<=", float("nan"))}}, "a finite number"),
    ({"metric": ["a", "b"], "early_stop": "median"}, "use 'asha' or 'hyperband'"),
])
def test_bad_objectives_are_one_clear_error(options, message):
    with pytest.raises(DefinitionError, match=message):
        StudyDefinition(objective=lambda hp: 0, **options)


def test_bad_input_on_the_command_line_leaves_nothing(tmp_path, sqlite_url):
    bad = tmp_path / "bad.py"
    bad.write_text("from tuner import Float, Space\nmetric = ['a', 'b']\n"
                   "direction = ['maximize']\nspace = Space(x=Float(0, 1))\n"
                   "def objective(hp):\n    return [hp['x'], 1]\n")
    result = run_cli("run", str(bad), "--storage", sqlite_url, "--trials", "2")
    assert result.returncode != 0 and "1 entries for 2 metrics" in result.stderr
    assert "Traceback" not in result.stderr
    pbt = run_cli("run", str(STUDIES / "toy_pareto.py"), "--storage", sqlite_url,
                  "--strategy", "pbt", "--trials", "2")
    assert pbt.returncode != 0 and "cannot search a study with several objectives" in pbt.stderr
    assert "Traceback" not in pbt.stderr
    assert Storage(sqlite_url).find_study("toy_pareto") is None


def test_an_objective_never_measured_fails_the_trial_with_why(sqlite_url):
    definition = StudyDefinition(objective=lambda hp: {"a": 1.0}, metric=["a", "flops"],
                                 name="unmeasured")
    study = Study.create(definition=definition, storage=sqlite_url, strategy="random", seed=1)
    with pytest.raises(StudyStopped, match="'flops', which the trial did not measure"):
        study.optimize(trials=3, executor=InProcess(), show_progress=False)
    trial = study.trials[0]  # the first trial says it, and the study stops there
    assert trial.state == TrialState.FAILED and "flops" in trial.error


def test_a_plain_objective_may_return_its_values_in_order(sqlite_url):
    definition = StudyDefinition(objective=lambda hp: [1.0, 2.0], metric=["a", "b"],
                                 name="ordered")
    study = Study.create(definition=definition, storage=sqlite_url, strategy="random", seed=1)
    study.optimize(trials=2, executor=InProcess(), show_progress=False)
    assert [t.values for t in study.trials] == [[1.0, 2.0], [1.0, 2.0]]


def test_single_objective_studies_store_as_before(sqlite_url):
    study = Study.create(definition=STUDIES / "trivial.py", storage=sqlite_url,
                         strategy="random", seed=1)
    study.optimize(trials=3, executor=InProcess(), show_progress=False)
    assert all(t.values is None and t.measures is None for t in study.trials)
    assert "objectives" not in study.record.settings
    assert study.best_trials == [study.best_trial]


def test_keras_tuner_list_of_objectives(tmp_path):
    import keras

    import tuner.keras_tuner as keras_tuner
    x, y = _batch(), [i % 10 for i in range(64)]

    def build(hp):
        model = keras.Sequential([keras.Input(shape=(64,)),
                                  keras.layers.Dense(hp.Int("units", 2, 32), activation="relu"),
                                  keras.layers.Dense(10, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    tuner = keras_tuner.RandomSearch(
        build, objective=[keras_tuner.Objective("val_accuracy", "max"),
                          keras_tuner.Objective("params", "min")],
        max_trials=3, directory=str(tmp_path), project_name="mo", seed=1)
    import numpy as np
    tuner.search(x, np.array(y), validation_data=(x, np.array(y)), epochs=1, verbose=0)
    study = Study.load("mo", storage=f"sqlite:///{tmp_path / 'mo' / 'tuner.db'}")
    assert [o.name for o in study.objectives] == ["val_accuracy", "params"]
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE, trial.error
        assert trial.values[1] == 64 * trial.params["units"] + trial.params["units"] + (
            trial.params["units"] * 10 + 10)


def test_hyperband_ranks_its_brackets_by_fronts():
    """Each bracket's rung keeps the top 1/eta of its own members by fronts."""
    from tuner.early_stop import Hyperband
    from tuner.early_stop._hyperband import bracket_of, bracket_weights

    rule = Hyperband(min_epochs=1, reduction_factor=2)
    vectors = {n: [(0.5 + 0.04 * (n % 5), -100.0 * (n % 3 + 1))] * 4 for n in range(24)}
    curves = Curves({n: [v[0][0]] * 4 for n, v in vectors.items()}, frozenset(), 4, 7, vectors)
    weights = bracket_weights(1, 4, 2)
    checked = 0
    for number in range(24):
        bracket = bracket_of(number, 7, weights)
        rung = 2 ** bracket  # the bracket's first rung
        if rung >= 4:
            continue
        rivals = [vectors[n][rung - 1] for n in range(24)
                  if n != number and bracket_of(n, 7, weights) == bracket]
        expected = not promotable_by_fronts(vectors[number][rung - 1], rivals, 2)
        assert rule.should_stop(number, rung, curves) == expected
        checked += 1
    assert checked > 10


def test_the_gp_sampler_takes_several_objectives_and_constraints(sqlite_url, monkeypatch):
    """`bayes-gp`: Optuna's GP sampler past its random start, on two objectives and a
    constraint; the front is the non-dominated feasible set."""
    monkeypatch.setenv("TUNER_TEST_CONSTRAINED", "2.0")
    study = Study.create(definition=STUDIES / "toy_pareto.py", storage=sqlite_url,
                         strategy="bayes-gp", seed=4)
    study.optimize(trials=13, executor=InProcess(), show_progress=False)
    trials = study.trials
    assert len(trials) == 13 and all(t.state == TrialState.COMPLETE for t in trials)
    front = study.best_trials
    assert front and {t.number for t in front} == brute_front(study, trials)
    assert all(t.measures["f2"] <= 2.0 for t in front)
