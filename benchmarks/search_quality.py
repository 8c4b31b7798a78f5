"""Search quality at an equal budget of training epochs: this service, KerasTuner, Optuna.

    .venv/bin/python benchmarks/search_quality.py            # 3 seeds, every method
    .venv/bin/python benchmarks/search_quality.py --seeds 1 --budget 60 --max-epochs 6
    .venv/bin/python benchmarks/search_quality.py --methods random,bayes+asha,kt-hyperband \\
        --json quality.json
    .venv/bin/python benchmarks/search_quality.py --workers 2 --methods \\
        random+asha,random+asha-promotion,random+hyperband,optuna-tpe-hyperband,kt-hyperband

Every method tunes the same MLP on scikit-learn's digits (studies/digits_mlp.py: 1-2
hidden layers of 16-256 units (log), relu/tanh, dropout 0-0.5, Adam learning rate
1e-4..1e-1 (log), batch size 32), on the same split (load_digits / 16,
train_test_split(test_size=0.25, random_state=0, stratify=y)), with the same seeds and the
same budget B of training epochs, at most E epochs per trial:

  this service    random, random+asha, random+asha-promotion, random+hyperband, bayes,
                  bayes+asha, evolution, pbt   (Study, InProcess: 1 worker; -promotion: ASHA pauses
                  trials at a rung and resumes them from their checkpoint when promoted)
  KerasTuner      kt-random, kt-hyperband, kt-bayes
  Optuna          optuna-tpe-median, optuna-tpe-hyperband  (TPE + MedianPruner/HyperbandPruner,
                  pruned by a Keras callback that reports val_accuracy after every epoch)

How each method spends B:
  - no early stopping across trials (random, bayes, evolution, kt-random, kt-bayes): B // E
    trials of E epochs each;
  - pbt: a population of B // E members (`optimize(trials=B // E)`), each trained for E
    epochs in segments (one trial per segment);
  - ASHA and Optuna's pruners: trials are started until B epochs have been trained
    (the trial that crosses B finishes; this service's one worker has already claimed the
    next queued trial by then, so it may run one more). A trial count fixed in advance
    could only match B in expectation, and Optuna's median rule has no closed form for it;
  - kt-hyperband: max_epochs=E, factor=3, and the hyperband_iterations whose KerasTuner
    schedule comes closest to B.
Realized epochs are counted, not assumed: by a Keras callback in every KerasTuner and Optuna
fit (KerasTuner's Hyperband resumes promoted trials from a checkpoint, so only the epochs it
trains count), and from the database for this service (the epochs stored for its trials).

Per method and seed: the best validation accuracy of any epoch of any trial (pruned ones
too), the epochs trained, the trials, the wall time (from just before the study or tuner is
created, with the database schema made beforehand, to the end of the search), and the time
until the best so far first reached --target, taken when a trial ends (this service: the
trials' `finished_at` from the database clock; the others: the end of each fit), None if it
never did. The table shows the mean over seeds with (min-max); a time to target is averaged
over the seeds that reached it.

Each (method, seed) runs in a fresh Python process, one after another, so that no method
inherits another's Keras/TensorFlow state and all of them get the same single process of
compute; the order of the methods rotates from one seed to the next, so a machine that gets
busier or quieter does not favour one method. Before its clock starts, each process
imports Keras and trains a tiny model once, so one-time start-up costs count for none.
With --workers N every method gets N worker processes instead, started after its clock
starts (so their start-up counts for every method alike): this service's `workers=N`,
N Optuna processes on one journal file (sampler seeds seed + 1000 i), KerasTuner's
distributed mode (a chief serving the oracle and N tuner processes).
Weight initialisation is seeded per trial with `tuner.strategies.trial_seed(seed, trial
number)` in every method, and --patience (default: off) adds the same Keras EarlyStopping
to every method's trials.
A run that fails is shown as such and makes the script exit with status 1.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything can import TensorFlow

import argparse
import json
import math
import multiprocessing
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from machine import machine_basics

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # benchmark this working tree

SERVICE = ("random", "random+asha", "random+asha-promotion", "random+hyperband", "bayes",
           "bayes+asha", "evolution", "pbt")
KERAS_TUNER = ("kt-random", "kt-hyperband", "kt-bayes")
OPTUNA = ("optuna-tpe-median", "optuna-tpe-hyperband")
METHODS = SERVICE + KERAS_TUNER + OPTUNA
# Spend the epoch budget trial by trial, rather than in a trial count fixed in advance.
BUDGETED = {"random+asha", "random+asha-promotion", "random+hyperband", "bayes+asha", *OPTUNA}
BATCH_SIZE = 32
METRIC = "val_accuracy"
REDUCTION_FACTOR = 3  # ASHA's (this service's default), Optuna's Hyperband, KerasTuner's
KT_BAYES_INITIAL_POINTS = 10  # as this service's and Optuna's TPE: 10 random trials first


# -- the workload, shared by every method --------------------------------------------
def load_data():
    """studies/digits_mlp.py's data: 64 features scaled to [0, 1], a fixed 25% split."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        (x / 16.0).astype(np.float32), y.astype(np.int32), test_size=0.25, random_state=0,
        stratify=y,
    )
    return (x_train, y_train), (x_val, y_val)


def mlp(layers: int, units: Sequence[int], activation: str, dropout: float,
        learning_rate: float):
    """studies/digits_mlp.py's model."""
    import keras

    model = keras.Sequential([keras.Input(shape=(64,))])
    for i in range(layers):
        model.add(keras.layers.Dense(units[i], activation=activation))
        model.add(keras.layers.Dropout(dropout))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def service_space(pbt: bool):
    """The space in this service's terms; PBT may change dropout and learning rate while a
    model trains, so they are marked mutable for it (and only for it)."""
    from tuner import Choice, Float, Int, Space

    mutable = {"mutable": True} if pbt else {}
    return Space(
        layers=Int(1, 2),
        units_1=Int(16, 256, log=True),
        units_2=Int(16, 256, log=True, when={"layers": [2]}),
        activation=Choice(["relu", "tanh"]),
        dropout=Float(0.0, 0.5, **mutable),
        learning_rate=Float(1e-4, 1e-1, log=True, **mutable),
    )


def service_build(hp):
    units = [hp["units_1"]] + ([hp["units_2"]] if hp["layers"] == 2 else [])
    return mlp(hp["layers"], units, hp["activation"], hp["dropout"], hp["learning_rate"])


def keras_tuner_build(seeds: Callable[[], int]):
    """The space in KerasTuner's hp.* terms; `seeds()` gives each build its weight seed."""

    def build(hp):
        import keras

        layers = hp.Int("layers", 1, 2)
        units = [hp.Int("units_1", 16, 256, sampling="log")]
        with hp.conditional_scope("layers", [2]):
            units_2 = hp.Int("units_2", 16, 256, sampling="log")
        if layers == 2:
            units.append(units_2)
        activation = hp.Choice("activation", ["relu", "tanh"])
        dropout = hp.Float("dropout", 0.0, 0.5)
        learning_rate = hp.Float("learning_rate", 1e-4, 1e-1, sampling="log")
        keras.utils.set_random_seed(seeds())
        return mlp(layers, units, activation, dropout, learning_rate)

    return build


def optuna_params(trial) -> dict[str, Any]:
    """The space in Optuna's suggest_* terms."""
    params: dict[str, Any] = {"layers": trial.suggest_int("layers", 1, 2)}
    params["units_1"] = trial.suggest_int("units_1", 16, 256, log=True)
    if params["layers"] == 2:
        params["units_2"] = trial.suggest_int("units_2", 16, 256, log=True)
    params["activation"] = trial.suggest_categorical("activation", ["relu", "tanh"])
    params["dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    params["learning_rate"] = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    return params


# -- measuring KerasTuner's and Optuna's trials -------------------------------------
class Tracker:
    """Epochs trained, and the best value so far each time a fit ends, since `t0`."""

    def __init__(self, target: float, t0: float | None = None) -> None:
        self.target = target
        self.t0 = time.time() if t0 is None else t0
        self.epochs = 0
        self.fits = 0
        self.best: float | None = None
        self.trace: list[tuple[float, float]] = []  # (seconds, new best so far)
        self.time_to_target: float | None = None

    def fit_ended(self, best: float | None) -> None:
        self.fits += 1
        if best is None or (self.best is not None and best <= self.best):
            return
        elapsed = time.time() - self.t0
        self.best = best
        self.trace.append((elapsed, best))
        if self.time_to_target is None and best >= self.target:
            self.time_to_target = elapsed


TRACKER: Tracker | None = None  # a global: KerasTuner deep-copies the callbacks it is given


def counting_callback():
    import keras

    class EpochCounter(keras.callbacks.Callback):
        """Counts every epoch trained and reports each fit's best value when it ends."""

        def on_train_begin(self, logs=None):
            self.best = None

        def on_epoch_end(self, epoch, logs=None):
            TRACKER.epochs += 1
            value = (logs or {}).get(METRIC)
            if value is not None and math.isfinite(value):
                self.best = value if self.best is None else max(self.best, float(value))

        def on_train_end(self, logs=None):
            TRACKER.fit_ended(self.best)

    return EpochCounter()


def early_stopping(patience: int | None) -> list[Any]:
    import keras

    if not patience:
        return []
    return [keras.callbacks.EarlyStopping(monitor=METRIC, mode="max", patience=patience,
                                          restore_best_weights=True)]


def kt_hyperband_schedule(max_epochs: int, factor: int) -> tuple[int, int]:
    """(epochs, trials) of one Hyperband iteration of KerasTuner 1.4 (its HyperbandOracle's
    _get_num_brackets, _get_size and _get_epochs). A promoted trial resumes from its
    parent's checkpoint, so it trains only the epochs its round adds."""
    brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    end_size = math.ceil(1 + math.log(max_epochs, factor))
    total = trials = 0
    for bracket in range(brackets):
        previous = 0
        for round_num in range(bracket + 1):
            size = math.ceil(end_size / (bracket + 1) * factor ** (bracket - round_num))
            epochs_now = math.ceil(max_epochs / factor ** (bracket - round_num))
            total += size * (epochs_now - previous)
            trials += size
            previous = epochs_now
    return total, trials


# -- one method, one seed (in a child process) --------------------------------------
def run_service(method: str, seed: int, cfg: argparse.Namespace, workdir: Path) -> dict:
    from tuner import InProcess, Storage, Study, StudyDefinition
    from tuner.early_stop import RULES
    from tuner.states import TrialState

    strategy, _, rule = method.partition("+")
    rule, _, promotion = rule.partition("-")
    early_stop = RULES[rule](promotion=promotion == "promotion") if rule else None
    budget, max_epochs = cfg.budget, cfg.max_epochs
    storage = Storage(f"sqlite:///{workdir / f'{method}-s{seed}.db'}")  # schema made here
    definition = StudyDefinition(
        build_model=service_build, load_data=load_data, space=service_space(strategy == "pbt"),
        metric=METRIC, direction="maximize", epochs=max_epochs, batch_size=BATCH_SIZE,
        patience=cfg.patience or None, name=f"search-quality-{method}-s{seed}",
        early_stop=early_stop,
    )

    class BudgetSpent(Exception):
        pass

    def stop_when_spent(progress) -> None:
        # Every trial's epochs: finished, running, and paused at a rung (promotion).
        if sum(t.epochs for t in study.storage.trials(study.record.id)) >= budget:
            raise BudgetSpent  # the coordinator stops its worker after its current trial

    t0 = time.time()
    # PBT's segments and paused trials go on from checkpoints (written as a trial pauses).
    artifacts = workdir / f"{method}-s{seed}-artifacts"
    study = Study.create(definition.name, definition=definition, storage=storage,
                         strategy=strategy, seed=seed, artifacts=str(artifacts))
    # One worker in this process; several as the worker processes `workers=N` spawns.
    workers = {"executor": InProcess()} if cfg.workers == 1 else {"workers": cfg.workers}
    if method in BUDGETED:
        try:
            study.optimize(trials=budget, on_progress=stop_when_spent, **workers)
        except BudgetSpent:
            pass
    else:  # PBT: `trials` is the population, and each member trains `max_epochs` epochs
        study.optimize(trials=budget // max_epochs, **workers)
    wall = time.time() - t0

    # Epochs trained: the epoch records stored per trial (what each trial trained, a PBT
    # segment included). A trial's best: its best stored epoch, as for the other methods
    # (a PBT segment's own value is its last epoch's).
    trials = study.trials
    stored = study.storage.epochs(t.id for t in trials)
    best = None
    trace, time_to_target = [], None
    judged = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
              and t.finished_at is not None]
    for t in sorted(judged, key=lambda t: t.finished_at):
        values = [e["value"] for e in stored[t.id] if e["value"] is not None]
        if values and (best is None or max(values) > best):
            best = max(values)
            trace.append((t.finished_at - t0, best))
            if time_to_target is None and best >= cfg.target:
                time_to_target = t.finished_at - t0
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.value] = states.get(t.state.value, 0) + 1
    ran = [t for t in trials if t.state != TrialState.QUEUED]  # not those queued ahead
    return {"best": best, "epochs": sum(len(e) for e in stored.values()), "trials": len(ran),
            "states": states, "wall_s": wall, "time_to_target_s": time_to_target,
            "trace": trace}


def run_keras_tuner(method: str, seed: int, cfg: argparse.Namespace, workdir: Path) -> dict:
    """One KerasTuner search; with --workers N, KerasTuner's distributed mode: a chief
    process serving the oracle and N tuner processes, each with its own Keras."""
    if cfg.workers == 1:
        result = keras_tuner_search(method, seed, cfg, workdir, t0=time.time())
        return {**result, "wall_s": time.time() - result.pop("t0")}
    import socket

    with socket.socket() as probe:  # a free port for the chief's oracle
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    t0 = time.time()
    roles = ["chief"] + [f"tuner{i}" for i in range(cfg.workers)]
    with ProcessPoolExecutor(len(roles), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(keras_tuner_search, method, seed, cfg, workdir, t0, role, port)
                   for role in roles]
        results = [f.result() for f in futures]
    wall = time.time() - t0
    chief, tuners = results[0], results[1:]
    return {**_merged(tuners, cfg.target), "trials": chief["trials"], "states": chief["states"],
            "wall_s": wall, **{k: v for k, v in chief.items() if k.startswith("planned")}}


def keras_tuner_search(method: str, seed: int, cfg: argparse.Namespace, workdir: Path,
                       t0: float, role: str | None = None, port: int | None = None) -> dict:
    global TRACKER
    if role is not None:  # read by KerasTuner when the tuner is made
        os.environ.update(KERASTUNER_TUNER_ID=role, KERASTUNER_ORACLE_IP="127.0.0.1",
                          KERASTUNER_ORACLE_PORT=str(port))
        if role != "chief":
            warm_up()
    import keras_tuner

    from tuner.strategies import trial_seed

    (x, y), validation = load_data()
    builds = iter(range(10**9))
    build = keras_tuner_build(lambda: trial_seed(seed, next(builds)))
    common = dict(objective=METRIC, seed=seed, directory=str(workdir / "keras_tuner"),
                  project_name=f"{method}-s{seed}", overwrite=role in (None, "chief"))
    extra: dict[str, Any] = {}
    TRACKER = Tracker(cfg.target, t0)
    if method == "kt-random":
        tuner = keras_tuner.RandomSearch(build, max_trials=cfg.budget // cfg.max_epochs,
                                         **common)
    elif method == "kt-bayes":
        tuner = keras_tuner.BayesianOptimization(
            build, max_trials=cfg.budget // cfg.max_epochs,
            num_initial_points=KT_BAYES_INITIAL_POINTS, **common)
    elif method == "kt-hyperband":
        per_iteration, _ = kt_hyperband_schedule(cfg.max_epochs, REDUCTION_FACTOR)
        iterations = max(1, round(cfg.budget / per_iteration))
        extra = {"hyperband_iterations": iterations,
                 "planned_epochs": iterations * per_iteration}
        tuner = keras_tuner.Hyperband(build, max_epochs=cfg.max_epochs, factor=REDUCTION_FACTOR,
                                      hyperband_iterations=iterations, **common)
    else:
        raise ValueError(f"not a KerasTuner method: {method!r}")
    tuner.search(x, y, validation_data=validation, epochs=cfg.max_epochs,
                 batch_size=BATCH_SIZE, verbose=0,
                 callbacks=[counting_callback(), *early_stopping(cfg.patience)])
    trials = len(tuner.oracle.trials) if role in (None, "chief") else None
    return {"best": TRACKER.best, "epochs": TRACKER.epochs, "trials": trials,
            "states": _kt_states(tuner) if trials is not None else None, "t0": t0,
            "time_to_target_s": TRACKER.time_to_target, "trace": TRACKER.trace, **extra}


def _merged(processes: Sequence[dict], target: float) -> dict:
    """Several processes' trackers as one: epochs added, traces merged on their shared
    clock, the best of all."""
    epochs = sum(p["epochs"] for p in processes)
    best, trace, to_target = None, [], None
    for elapsed, value in sorted(point for p in processes for point in p["trace"]):
        if best is None or value > best:
            best = value
            trace.append((elapsed, value))
            if to_target is None and value >= target:
                to_target = elapsed
    return {"best": best, "epochs": epochs, "trace": trace, "time_to_target_s": to_target}


def _kt_states(tuner) -> dict[str, int]:
    states: dict[str, int] = {}
    for trial in tuner.oracle.trials.values():
        states[str(trial.status)] = states.get(str(trial.status), 0) + 1
    return states


def run_optuna(method: str, seed: int, cfg: argparse.Namespace, workdir: Path) -> dict:
    """One Optuna study; with --workers N, N processes optimizing one study in a journal
    file (Optuna's storage for processes on one host), each with its own sampler seed."""
    import optuna

    name = f"{method}-s{seed}"  # fixed: HyperbandPruner assigns brackets from its hash
    if cfg.workers == 1:
        storage = None
        result = optuna_worker(method, seed, cfg, storage, 0, time.time())
        results = [result]
    else:
        storage = str(workdir / f"{name}.journal")
        t0 = time.time()
        with ProcessPoolExecutor(cfg.workers,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(optuna_worker, method, seed, cfg, storage, i, t0)
                       for i in range(cfg.workers)]
            results = [f.result() for f in futures]
    wall = time.time() - results[0]["t0"]
    trials = results[0]["trials"] if storage is None else optuna.load_study(
        study_name=name, storage=_journal(storage)).get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for state in (t if isinstance(t, str) else t.state.name for t in trials):
        states[state] = states.get(state, 0) + 1
    return {**_merged(results, cfg.target), "trials": len(trials), "states": states,
            "wall_s": wall}


def _journal(path: str):
    import optuna
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(path))


def optuna_worker(method: str, seed: int, cfg: argparse.Namespace, storage: str | None,
                  index: int, t0: float) -> dict:
    """One process's share of an Optuna study: trials until the study's epochs (each
    trial's "epochs" user attribute, kept current by every process) reach the budget."""
    global TRACKER
    if storage is not None:
        warm_up()
    import keras
    import optuna

    from tuner.strategies import trial_seed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (x, y), validation = load_data()
    budget, max_epochs = cfg.budget, cfg.max_epochs

    class Pruning(keras.callbacks.Callback):
        """Reports val_accuracy after each epoch (step = epochs trained so far) and stops
        the fit when the pruner says so; the objective then raises TrialPruned."""

        def __init__(self, trial) -> None:
            super().__init__()
            self.trial, self.pruned = trial, False

        def on_epoch_end(self, epoch, logs=None):
            self.trial.set_user_attr("epochs", epoch + 1)
            value = (logs or {}).get(METRIC)
            if value is None or not math.isfinite(value):
                return
            self.trial.report(float(value), epoch + 1)
            if self.trial.should_prune():
                self.pruned = True
                self.model.stop_training = True

    def objective(trial) -> float:
        params = optuna_params(trial)
        keras.backend.clear_session()
        keras.utils.set_random_seed(trial_seed(seed, trial.number))
        units = [params["units_1"]] + ([params["units_2"]] if params["layers"] == 2 else [])
        model = mlp(params["layers"], units, params["activation"], params["dropout"],
                    params["learning_rate"])
        pruning = Pruning(trial)
        history = model.fit(x, y, validation_data=validation, epochs=max_epochs,
                            batch_size=BATCH_SIZE, verbose=0,
                            callbacks=[pruning, counting_callback(),
                                       *early_stopping(cfg.patience)])
        if pruning.pruned:
            raise optuna.TrialPruned()
        values = [v for v in history.history[METRIC] if math.isfinite(v)]
        if not values:
            raise ValueError(f"no finite {METRIC}")
        return max(values)

    def stop_when_spent(study, trial) -> None:
        trials = study.get_trials(deepcopy=False)
        if sum(t.user_attrs.get("epochs", 0) for t in trials) >= budget:
            study.stop()

    TRACKER = Tracker(cfg.target, t0)
    if method == "optuna-tpe-median":
        pruner = optuna.pruners.MedianPruner()
    elif method == "optuna-tpe-hyperband":
        pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs,
                                                reduction_factor=REDUCTION_FACTOR)
    else:
        raise ValueError(f"not an Optuna method: {method!r}")
    study = optuna.create_study(
        study_name=f"{method}-s{seed}", direction="maximize", load_if_exists=True,
        storage=_journal(storage) if storage is not None else None,
        sampler=optuna.samplers.TPESampler(seed=seed + 1000 * index), pruner=pruner)
    study.optimize(objective, n_trials=budget, callbacks=[stop_when_spent])
    trials = [t.state.name for t in study.trials] if storage is None else None
    return {"best": TRACKER.best, "epochs": TRACKER.epochs, "trials": trials, "t0": t0,
            "time_to_target_s": TRACKER.time_to_target, "trace": TRACKER.trace}


def warm_up() -> None:
    """Import Keras and train a tiny model once, so that no method's timing includes the
    process's one-time costs (importing TensorFlow, starting its runtime)."""
    import keras

    (x, y), validation = load_data()
    mlp(1, [16], "relu", 0.0, 1e-3).fit(x[:64], y[:64], validation_data=validation,
                                         epochs=1, batch_size=BATCH_SIZE, verbose=0)
    keras.backend.clear_session()


def child(cfg: argparse.Namespace) -> None:
    method, seed, workdir = cfg.child, cfg.child_seed, Path(cfg.child_dir)
    warm_up()
    if method in SERVICE:
        result = run_service(method, seed, cfg, workdir)
    elif method in KERAS_TUNER:
        result = run_keras_tuner(method, seed, cfg, workdir)
    else:
        result = run_optuna(method, seed, cfg, workdir)
    Path(cfg.child_out).write_text(json.dumps(result))


# -- the parent: every method and seed, then the table ------------------------------
def run_one(method: str, seed: int, cfg: argparse.Namespace, workdir: Path) -> dict:
    out = workdir / f"{method}-s{seed}.json"
    log = workdir / f"{method}-s{seed}.log"
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", method,
        "--child-seed", str(seed), "--child-out", str(out), "--child-dir", str(workdir),
        "--budget", str(cfg.budget), "--max-epochs", str(cfg.max_epochs),
        "--target", str(cfg.target), "--patience", str(cfg.patience or 0),
        "--workers", str(cfg.workers),
    ]
    record: dict[str, Any] = {"method": method, "seed": seed}
    started = time.time()
    try:
        with log.open("w") as sink:
            # The work directory as the current one: whatever a tool writes stays there.
            done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, cwd=workdir,
                                  timeout=cfg.timeout, env={**os.environ, "PYTHONHASHSEED": "0"})
        failed = None if done.returncode == 0 else f"exit status {done.returncode}"
    except subprocess.TimeoutExpired:
        failed = f"timed out after {cfg.timeout} s"
    record["process_s"] = time.time() - started
    if failed is None and out.is_file():
        record.update(json.loads(out.read_text()))
        return record
    tail = log.read_text(errors="replace").strip().splitlines()[-15:] if log.is_file() else []
    record["error"] = failed or "no result written"
    record["log_tail"] = tail
    return record


def _mean_range(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "min": None, "max": None}
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def summarize(runs: list[dict], methods: Sequence[str]) -> list[dict]:
    rows = []
    for method in methods:
        mine = [r for r in runs if r["method"] == method]
        ok = [r for r in mine if "error" not in r]
        hits = [r["time_to_target_s"] for r in ok if r["time_to_target_s"] is not None]
        rows.append({
            "method": method, "runs": len(mine), "failed": len(mine) - len(ok),
            "best": _mean_range([r["best"] for r in ok if r["best"] is not None]),
            "epochs": _mean_range([r["epochs"] for r in ok]),
            "trials": _mean_range([r["trials"] for r in ok]),
            "wall_s": _mean_range([r["wall_s"] for r in ok]),
            "time_to_target_s": _mean_range(hits), "reached_target": len(hits),
            "errors": sorted({r["error"] for r in mine if "error" in r}),
        })
    return rows


def _cell(stats: dict[str, float | None], fmt: str) -> str:
    if stats["mean"] is None:
        return "-"
    if stats["min"] == stats["max"]:
        return format(stats["mean"], fmt)
    return (f"{format(stats['mean'], fmt)} ({format(stats['min'], fmt)}"
            f"–{format(stats['max'], fmt)})")


def markdown(config: dict[str, Any], machine: dict[str, Any], rows: list[dict]) -> str:
    lines = ["## Search quality at an equal epoch budget", ""]
    lines += [f"- **{key}**: {value}" for key, value in {**config, **machine}.items()]
    lines += [
        "", "Mean over seeds, (min–max). Time to target: over the seeds that reached it.", "",
        "| Method | Best val acc | Epochs trained | Trials | Wall s | Time to target s "
        "| Reached target |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ok = r["runs"] - r["failed"]
        failed = f" ({r['failed']} failed)" if r["failed"] else ""
        lines.append(
            f"| {r['method']}{failed} | {_cell(r['best'], '.4f')} | {_cell(r['epochs'], '.0f')} "
            f"| {_cell(r['trials'], '.0f')} | {_cell(r['wall_s'], '.0f')} "
            f"| {_cell(r['time_to_target_s'], '.0f')} | {r['reached_target']}/{ok} |"
        )
    lines += ["", "Trials: a pbt trial is one segment of a member's training; a kt-hyperband "
              "trial is one round of a bracket (a promoted model resumes from its checkpoint)."]
    errors = [(r["method"], e) for r in rows for e in r["errors"]]
    if errors:
        lines += ["", "Failed runs: " + "; ".join(f"{m}: {e}" for m, e in errors)]
    return "\n".join(lines)


def describe_machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("keras", "tensorflow", "tensorflow-cpu", "keras-tuner", "optuna"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            pass
    return {
        **machine_basics(),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "keras backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
    }


def parse_methods(text: str) -> list[str]:
    if text == "all":
        return list(METHODS)
    methods = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(unknown) or '(none)'}; choose from "
            f"{', '.join(METHODS)} or 'all'")
    return methods


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=300,
                        help="training epochs per method and seed (default 300)")
    parser.add_argument("--max-epochs", type=int, default=20,
                        help="epochs of a trial that is not stopped early (default 20)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--methods", type=parse_methods, default=list(METHODS),
                        help=f"comma-separated, from {', '.join(METHODS)} (default: all)")
    parser.add_argument("--target", type=float, default=0.97,
                        help="validation accuracy for the time to target (default 0.97)")
    parser.add_argument("--workers", type=int, default=1,
                        help="workers per method: processes of this service, Optuna and "
                             "KerasTuner's distributed mode (default 1, in one process)")
    parser.add_argument("--patience", type=int, default=0,
                        help="Keras EarlyStopping patience inside every trial (default 0: off)")
    parser.add_argument("--timeout", type=int, default=3600,
                        help="seconds one method may take for one seed (default 3600)")
    parser.add_argument("--json", type=Path, help="also write every run and the summary here")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work directory (databases, logs, KerasTuner's files)")
    for hidden in ("--child", "--child-out", "--child-dir"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--child-seed", type=int, help=argparse.SUPPRESS)
    cfg = parser.parse_args(argv)
    if cfg.budget < cfg.max_epochs or cfg.max_epochs < 1 or cfg.seeds < 1 or cfg.workers < 1:
        parser.error("need --seeds >= 1, --workers >= 1 and --budget >= --max-epochs >= 1")
    if cfg.child:
        child(cfg)
        return 0

    config = {"budget (epochs)": cfg.budget, "max epochs per trial": cfg.max_epochs,
              "seeds": list(range(cfg.seeds)), "target": cfg.target,
              "patience": cfg.patience or None, "batch size": BATCH_SIZE,
              "workers": cfg.workers,
              "methods": cfg.methods}
    machine = describe_machine()
    workdir = Path(tempfile.mkdtemp(prefix="search_quality-"))
    runs: list[dict] = []
    total = cfg.seeds * len(cfg.methods)
    started = time.time()
    try:
        for seed in range(cfg.seeds):
            shift = seed % len(cfg.methods)
            for method in cfg.methods[shift:] + cfg.methods[:shift]:
                record = run_one(method, seed, cfg, workdir)
                runs.append(record)
                if "error" in record:
                    detail = f"FAILED ({record['error']}): " + " | ".join(record["log_tail"][-3:])
                else:
                    ttt = record["time_to_target_s"]
                    best = "-" if record["best"] is None else f"{record['best']:.4f}"
                    detail = (f"best {best}, {record['epochs']} epochs, "
                              f"{record['trials']} trials, {record['wall_s']:.0f} s, to target "
                              + ("never" if ttt is None else f"{ttt:.0f} s"))
                print(f"[{len(runs)}/{total} {time.time() - started:.0f} s] seed {seed} "
                      f"{method}: {detail}", file=sys.stderr, flush=True)
    finally:
        if cfg.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    machine["load average at end"] = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    machine["total time"] = f"{time.time() - started:.0f} s"
    rows = summarize(runs, cfg.methods)
    print(markdown(config, machine, rows))
    if cfg.json:
        cfg.json.write_text(json.dumps({"config": config, "machine": machine, "summary": rows,
                                        "runs": runs}, indent=1))
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
