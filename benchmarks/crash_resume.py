"""Epochs trained again after a worker dies mid-trial: from the start (no checkpoints,
what KerasTuner does, keras-team/keras-tuner#702) against resuming from a checkpoint.

    .venv/bin/python benchmarks/crash_resume.py
    .venv/bin/python benchmarks/crash_resume.py --epochs 80 --kill-at 50 --json out.json

One trial of an MLP on scikit-learn's digits (the full set, batch 64, no Keras
EarlyStopping), `tuner run --workers 1`; when the trial has stored `kill-at` epochs its
worker process is SIGKILLed (the pool starts another, which takes the requeued trial).
Per variant of `--checkpoint-every`: the epochs stored at the kill, those the requeued
trial kept, the epochs trained again, and the run's wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_basics

ROOT = Path(__file__).resolve().parents[1]

STUDY = '''
import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tuner import Choice, Space

epochs = {epochs}
batch_size = 64
patience = None
space = Space(units=Choice([128]))


def load_data():
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        (x / 16.0).astype("float32"), y, test_size=0.25, random_state=0, stratify=y)
    return (x_train, y_train), (x_val, y_val)


def build_model(hp):
    model = keras.Sequential([keras.Input(shape=(64,)),
                              keras.layers.Dense(hp["units"], activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model
'''


def run(every: str, epochs: int, kill_at: int, folder: Path) -> dict[str, float | str]:
    from tuner.errors import NoTunerDatabase
    from tuner.states import TrialState
    from tuner.storage import Storage

    study_file = folder / "crash.py"
    study_file.write_text(STUDY.format(epochs=epochs))
    url = f"sqlite:///{folder / 'tuner.db'}"
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", "run", str(study_file), "--storage", url,
         "--trials", "1", "--workers", "1", "--checkpoint-every", every],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    storage = None
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the run ended before epoch {kill_at}: {process.stderr.read()}")
        if storage is None and (folder / "tuner.db").exists():
            with contextlib.suppress(NoTunerDatabase):  # the tables are being made
                storage = Storage(url, create=False)
        study = storage.find_study("crash") if storage else None
        trials = storage.trials(study.id) if study else []
        if trials and trials[0].state == TrialState.RUNNING and trials[0].epochs >= kill_at:
            break
        time.sleep(0.05)
    victim = trials[0]
    pid = next(w.pid for w in storage.workers() if w.id == victim.worker_id)
    os.kill(pid, signal.SIGKILL)
    stored = storage.trials_by_id([victim.id])[0].epochs  # epochs written by then
    _, stderr = process.communicate()
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(stderr)
    final = storage.trials_by_id([victim.id])[0]
    kept = (final.attrs or {}).get("resumed_at_epoch", 0)  # the first epoch trained again
    return {"checkpoint every": every, "epochs stored at the kill": stored,
            "epochs kept": kept, "epochs trained again": stored - kept,
            "final state": final.state.value, "epochs in the curve": final.epochs,
            "wall s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=80)
    parser.add_argument("--kill-at", type=int, default=50)
    parser.add_argument("--every", nargs="+", default=["off", "10s", "5 epochs", "1 epoch"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for key, value in machine_basics().items():
        print(f"{key}: {value}")
    rows = []
    for every in args.every:
        with tempfile.TemporaryDirectory() as folder:
            rows.append(run(every, args.epochs, args.kill_at, Path(folder)))
        print(rows[-1], flush=True)
    columns = list(rows[0])
    print("\n| " + " | ".join(columns) + " |")
    print("| " + " | ".join("---" for _ in columns) + " |")
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
