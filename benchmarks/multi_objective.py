"""Accuracy against size: the hypervolume each method's Pareto front reaches, same budget.

    .venv/bin/python benchmarks/multi_objective.py              # 3 seeds, every method
    KERAS_BACKEND=torch .venv/bin/python benchmarks/multi_objective.py --trials 30
    .venv/bin/python benchmarks/multi_objective.py --methods evolution,optuna-nsga2 --seeds 1

Every method tunes search_quality.py's digits MLP (the same space, data and split: 1-2
hidden layers of 16-256 units (log), relu/tanh, dropout 0-0.5, Adam learning rate
1e-4..1e-1 (log)) for two objectives: the validation accuracy of the trial's best epoch
(maximize) and the model's trainable parameters (minimize), with the same seeds and the
same budget: --trials T trials of --epochs E epochs each, one worker, no early stopping.

  this service   bayes (Optuna's multi-objective TPE), nsga2 (Optuna's NSGA-II, population
                 10), evolution (aging evolution, population 10, tournaments of 3), random:
                 `Study` with objectives ["val_accuracy", "params"], InProcess; the worker
                 measures `params` itself
  Optuna         optuna-tpe (TPESampler), optuna-nsga2 (NSGAIISampler, population_size=10),
                 `create_study(directions=["maximize", "minimize"])`, the objective
                 building and fitting the same model and returning (best val_accuracy,
                 model.count_params())

The figure is the hypervolume of the front of a run's trials in (val_accuracy,
log10 params), from the reference point (accuracy 0.8, the largest model of the space),
divided by the area from there to (1.0, the smallest model): 1.0 would be a perfect model
of the smallest size. Sizes are taken in log10 because they span two orders of magnitude
and the trade-off that matters lies among small models. Wall time is from the study's
creation to its end. Weight initialisation is seeded per trial with `trial_seed(seed,
trial number)` in every method. Each (method, seed) runs in a fresh Python process, one
after another, after importing Keras and training a tiny model once; the order of the
methods rotates with the seed.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything can import TensorFlow

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from search_quality import (
    BATCH_SIZE,
    ROOT,
    describe_machine,
    load_data,
    mlp,
    optuna_params,
    service_build,
    service_space,
    warm_up,
)

SERVICE = ("bayes", "nsga2", "evolution", "random")
OPTUNA = ("optuna-tpe", "optuna-nsga2")
METHODS = SERVICE + OPTUNA
FLOOR = 0.8  # the reference accuracy: below it a digits model is of no use
NSGA2_POPULATION = 10  # this service's default, given to Optuna's too


def size_range() -> tuple[int, int]:
    """Trainable parameters of the space's smallest and largest models."""
    small = 64 * 16 + 16 + 16 * 10 + 10
    large = 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    return small, large


def hypervolume(points: Sequence[tuple[float, float]]) -> float:
    """Normalised hypervolume of (accuracy, params) points, as the docstring says."""
    from tuner.pareto import hypervolume as volume

    small, large = size_range()
    signed = [(acc, -math.log10(params)) for acc, params in points]
    area = (1.0 - FLOOR) * (math.log10(large) - math.log10(small))
    return volume(signed, (FLOOR, -math.log10(large))) / area


def run_service(method: str, seed: int, cfg: argparse.Namespace, workdir: Path) -> dict:
    from tuner import InProcess, Storage, Study, StudyDefinition
    from tuner.states import TrialState

    storage = Storage(f"sqlite:///{workdir / f'{method}-s{seed}.db'}")  # schema made here
    definition = StudyDefinition(
        build_model=service_build, load_data=load_data, space=service_space(False),
        metric=["val_accuracy", "params"], epochs=cfg.epochs, batch_size=BATCH_SIZE,
        patience=None, name=f"multi-objective-{method}-s{seed}")
    t0 = time.time()
    study = Study.create(definition.name, definition=definition, storage=storage,
                         strategy=method, seed=seed, artifacts=str(workdir / "artifacts"))
    study.optimize(trials=cfg.trials, executor=InProcess(), show_progress=False)
    wall = time.time() - t0
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    return {"points": [tuple(t.values) for t in done], "front": len(study.best_trials),
            "trials": len(done), "wall_s": wall}


def run_optuna(method: str, seed: int, cfg: argparse.Namespace, workdir: Path) -> dict:
    import keras
    import optuna

    from tuner.strategies import trial_seed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (x, y), validation = load_data()

    def objective(trial) -> tuple[float, int]:
        p = optuna_params(trial)
        keras.backend.clear_session()
        keras.utils.set_random_seed(trial_seed(seed, trial.number))
        units = [p["units_1"]] + ([p["units_2"]] if p["layers"] == 2 else [])
        model = mlp(p["layers"], units, p["activation"], p["dropout"], p["learning_rate"])
        history = model.fit(x, y, validation_data=validation, epochs=cfg.epochs,
                            batch_size=BATCH_SIZE, verbose=0)
        return max(history.history["val_accuracy"]), model.count_params()

    sampler = (optuna.samplers.TPESampler(seed=seed) if method == "optuna-tpe"
               else optuna.samplers.NSGAIISampler(seed=seed, population_size=NSGA2_POPULATION))
    t0 = time.time()
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=cfg.trials)
    wall = time.time() - t0
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {"points": [tuple(t.values) for t in done], "front": len(study.best_trials),
            "trials": len(done), "wall_s": wall}


def child(cfg: argparse.Namespace) -> None:
    warm_up()
    run = run_service if cfg.child in SERVICE else run_optuna
    result = run(cfg.child, cfg.child_seed, cfg, Path(cfg.child_dir))
    result["hypervolume"] = hypervolume(result["points"])
    Path(cfg.child_out).write_text(json.dumps(result))


def run_one(method: str, seed: int, cfg: argparse.Namespace, workdir: Path) -> dict:
    out = workdir / f"{method}-s{seed}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--child", method,
               "--child-seed", str(seed), "--child-out", str(out), "--child-dir", str(workdir),
               "--trials", str(cfg.trials), "--epochs", str(cfg.epochs)]
    log = workdir / f"{method}-s{seed}.log"
    with log.open("w") as sink:
        done = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, cwd=workdir,
                              env={**os.environ, "PYTHONHASHSEED": "0"})
    if done.returncode != 0 or not out.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        return {"method": method, "seed": seed, "error": "\n".join(tail)}
    return {"method": method, "seed": seed, **json.loads(out.read_text())}


def _cell(values: Sequence[float], fmt: str) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    return f"{mean:{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def markdown(cfg: argparse.Namespace, runs: list[dict], methods: Sequence[str]) -> str:
    lines = [f"{k}: {v}" for k, v in describe_machine().items()]
    lines += [f"budget: {cfg.trials} trials of {cfg.epochs} epochs, seeds 0..{cfg.seeds - 1}",
              "", "| method | hypervolume | front size | wall s |", "| --- | --- | --- | --- |"]
    for method in methods:
        ok = [r for r in runs if r["method"] == method and "error" not in r]
        failed = len([r for r in runs if r["method"] == method]) - len(ok)
        lines.append(f"| {method} | {_cell([r['hypervolume'] for r in ok], '.3f')} | "
                     f"{_cell([r['front'] for r in ok], '.1f')} | "
                     f"{_cell([r['wall_s'] for r in ok], '.0f')} |"
                     + (f" {failed} failed" if failed else ""))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help="comma-separated, from " + ", ".join(METHODS))
    parser.add_argument("--json", type=Path, help="also write every run here")
    for hidden in ("--child", "--child-out", "--child-dir"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--child-seed", type=int, help=argparse.SUPPRESS)
    cfg = parser.parse_args(argv)
    if cfg.child:
        child(cfg)
        return 0
    methods = [m.strip() for m in cfg.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(cfg.seeds):
            for i in range(len(methods)):
                method = methods[(i + seed) % len(methods)]  # rotate the order per seed
                workdir = Path(folder) / f"{method}-s{seed}"
                workdir.mkdir()
                runs.append(run_one(method, seed, cfg, workdir))
                print(json.dumps({k: v for k, v in runs[-1].items() if k != "points"}),
                      flush=True)
    if cfg.json:
        cfg.json.write_text(json.dumps(runs, indent=1))
    print(markdown(cfg, runs, methods))
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
