"""One KerasTuner script, run three ways: KerasTuner itself, and this service's drop-in
(`import tuner.keras_tuner as keras_tuner`, the only change) with `workers=1` and with
`workers=2` (the one added argument).

    .venv/bin/python benchmarks/kerastuner_dropin.py
    .venv/bin/python benchmarks/kerastuner_dropin.py --trials 12 --seeds 0 1 2 --json out.json

The script tunes an MLP on scikit-learn's digits (units, activation, dropout, learning
rate) with RandomSearch, `max_trials` trials of `epochs` epochs, `seed` as given; a
callback of the script records when each fit starts and ends. Each run is a fresh
`python` process; the variants take turns for each seed. Figures per run:

  - wall: the whole process (start, imports, search, exit);
  - search: `tuner.search(...)` alone, timed inside the script;
  - best: the best trial's score (`oracle.get_best_trials(1)[0].score`);
  - overhead/trial: (W x search - total fit time) / trials, where W is the workers: the
    time a worker slot spends on a trial outside `model.fit` (building the model,
    bookkeeping, the database, starting worker processes), per trial.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = '''
import json, os, sys, time
import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
{import_line}

x, y = load_digits(return_X_y=True)
x_train, x_val, y_train, y_val = train_test_split(
    (x / 16.0).astype("float32"), y, test_size=0.25, random_state=0, stratify=y)


class FitClock(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.began = time.time()

    def on_train_end(self, logs=None):
        with open(os.environ["FIT_CLOCK"], "a") as out:
            out.write(f"{{self.began}} {{time.time()}}\\n")


def build_model(hp):
    model = keras.Sequential([keras.Input(shape=(64,))])
    model.add(keras.layers.Dense(hp.Int("units", 16, 256, step=16),
                                 activation=hp.Choice("activation", ["relu", "tanh"])))
    model.add(keras.layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.1)))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("lr", 1e-4, 1e-1, sampling="log")),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


tuner = keras_tuner.RandomSearch(build_model, objective="val_accuracy",
                                 max_trials={trials}, seed={seed}, overwrite=True,
                                 directory=sys.argv[1], project_name="bench"{extra})
began = time.time()
tuner.search(x_train, y_train, epochs={epochs}, batch_size=32,
             validation_data=(x_val, y_val), callbacks=[FitClock()], verbose=0)
search = time.time() - began
best = tuner.oracle.get_best_trials(1)[0]
print(json.dumps({{"search": search, "best": best.score}}))
'''

VARIANTS = {  # name: (import line, extra tuner arguments, workers)
    "KerasTuner 1.4": ("import keras_tuner", "", 1),
    "drop-in, workers=1": ("import tuner.keras_tuner as keras_tuner", "", 1),
    "drop-in, workers=2": ("import tuner.keras_tuner as keras_tuner", ", workers=2", 2),
}


def run(variant: str, seed: int, trials: int, epochs: int) -> dict[str, float]:
    import_line, extra, workers = VARIANTS[variant]
    with tempfile.TemporaryDirectory() as folder:
        script, clock = Path(folder) / "search.py", Path(folder) / "fits.txt"
        script.write_text(SCRIPT.format(import_line=import_line, extra=extra, trials=trials,
                                        seed=seed, epochs=epochs))
        env = dict(os.environ, FIT_CLOCK=str(clock), TF_CPP_MIN_LOG_LEVEL="3",
                   PYTHONPATH=str(ROOT))
        began = time.time()
        result = subprocess.run([sys.executable, str(script), folder], env=env, cwd=folder,
                                capture_output=True, text=True, timeout=3600)
        wall = time.time() - began
        if result.returncode != 0:
            raise RuntimeError(f"{variant} (seed {seed}) failed:\n{result.stderr[-3000:]}")
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        fits = [float(b) - float(a) for a, b in
                (line.split() for line in clock.read_text().splitlines())]
    return {"wall": wall, "search": measured["search"], "best": measured["best"],
            "trials": len(fits), "fit": sum(fits),
            "overhead": (workers * measured["search"] - sum(fits)) / len(fits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", type=Path, help="write every run's figures here")
    args = parser.parse_args()
    print(f"{cpu()}; {args.trials} trials of {args.epochs} "
          f"epochs, seeds {args.seeds}", flush=True)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for seed in args.seeds:
        for name in VARIANTS:  # the variants take turns, so drift hits them alike
            runs[name].append(run(name, seed, args.trials, args.epochs))
            print(f"  seed {seed} {name}: {runs[name][-1]}", flush=True)
    reference = statistics.mean(r["wall"] for r in runs["KerasTuner 1.4"])
    print("\n| variant | wall s | search s | × KerasTuner's wall | best val_accuracy | "
          "overhead/trial s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, results in runs.items():
        def mean(key: str, results: list[dict[str, float]] = results) -> float:
            return statistics.mean(r[key] for r in results)

        print(f"| {name} | {mean('wall'):.1f} | {mean('search'):.1f} | "
              f"{mean('wall') / reference:.2f} | {mean('best'):.4f} | {mean('overhead'):.2f} |")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
