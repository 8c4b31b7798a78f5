"""Resumable Keras trials: what a trial needs to carry on after a crash, saved as it
trains and loaded by whichever worker runs it next.

A checkpoint is one folder per epoch (`artifacts.resume_points`): the model's weights
with its optimizer's state, the state of the callbacks that judge the trial (its curve so
far, Keras EarlyStopping's best value and wait, the best weights) and the model's
fingerprint. The folder is written whole before the database records its epoch
(`Storage.checkpoint_trial`), and the one before is deleted only after: a torn write is
never loaded, on a local disk or an object store alike.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tuner.artifacts import Artifacts
from tuner.checkpointing import CheckpointEvery
from workers.outcome import CheckpointUnavailable, TrialLost

log = logging.getLogger(__name__)

_WEIGHTS, _STATE, _ARRAYS = "model.weights.h5", "state.json", "arrays.npz"


@dataclass(frozen=True)
class ResumePoint:
    """A trial's checkpoints: where they live, how often one is saved, the epoch of the
    one to resume from (None: start at epoch 0), and the database's side: `saved(epoch)`
    records a whole checkpoint (False: the trial is no longer this worker's), `restart()`
    forgets the stored epochs of a checkpoint that cannot be used. With `pauses`, a trial
    the study's early-stop rule stops is checkpointed there, to be promoted later."""

    store: Artifacts
    every: CheckpointEvery
    epoch: int | None
    saved: Callable[[int], bool]
    restart: Callable[[], bool]
    pauses: bool = False


def fingerprint(model: keras.Model) -> str:
    """The model's variables by shape and dtype, in order (their names count up within a
    process): a checkpoint of another model (a changed study file) does not match."""
    described = [(tuple(v.shape), str(v.dtype)) for v in model.weights]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()[:16]


class CallbackState:
    """The callbacks' state a checkpoint carries, read from and put back into them."""

    def __init__(self, reporter: Any, keeper: Any, early_stopping: Any) -> None:
        self.reporter, self.keeper, self.early_stopping = reporter, keeper, early_stopping

    def capture(self, epoch: int, model: keras.Model, *,
                pausing: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        """The state after `epoch`; `pausing`: stopped only until promoted, so a resume
        trains on."""
        arrays: dict[str, Any] = {}
        state: dict[str, Any] = {"epoch": epoch, "fingerprint": fingerprint(model),
                                 "values": self.reporter.values, "logs": self.reporter.logs,
                                 "pruned": self.reporter.pruned and not pausing,
                                 "stopped": bool(model.stop_training) and not pausing}
        if self.keeper is not None and self.keeper.weights is not None:
            state["keeper"] = {"value": self.keeper.value, "weights": len(self.keeper.weights)}
            arrays.update({f"keeper_{i}": w for i, w in enumerate(self.keeper.weights)})
        stopping = self.early_stopping
        if stopping is not None:
            best = stopping.best
            state["early_stopping"] = {
                "wait": stopping.wait, "stopped_epoch": stopping.stopped_epoch,
                "best_epoch": stopping.best_epoch,
                "best": None if best is None else float(best),
                "best_weights": None if stopping.best_weights is None
                else len(stopping.best_weights)}
            for i, w in enumerate(stopping.best_weights or []):
                arrays[f"stopping_{i}"] = w
        return state, arrays

    def restore(self, state: dict[str, Any], arrays: Any, model: keras.Model) -> None:
        self.reporter.values = list(state["values"])
        self.reporter.logs = list(state["logs"])
        self.reporter.pruned = state["pruned"]
        kept = state.get("keeper")
        if self.keeper is not None and kept is not None:
            self.keeper.value = kept["value"]
            self.keeper.weights = [arrays[f"keeper_{i}"] for i in range(kept["weights"])]
            self.keeper.holder = model

    def restore_early_stopping(self, state: dict[str, Any], arrays: Any) -> None:
        """After EarlyStopping's own `on_train_begin`, which resets it."""
        stopping, saved = self.early_stopping, state.get("early_stopping")
        if stopping is None or saved is None:
            return
        stopping.wait, stopping.stopped_epoch = saved["wait"], saved["stopped_epoch"]
        stopping.best_epoch, stopping.best = saved["best_epoch"], saved["best"]
        if saved["best_weights"] is not None:
            stopping.best_weights = [arrays[f"stopping_{i}"]
                                     for i in range(saved["best_weights"])]


def load(point: ResumePoint, model: keras.Model, state: CallbackState) -> dict[str, Any] | None:
    """Put the checkpoint `point.epoch` into the freshly built `model` and the callbacks;
    its state, or None when there is none to resume from. A checkpoint that is missing or
    of another model is said in a line, and the trial starts over."""
    if point.epoch is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        try:
            point.store.get(point.epoch, folder)
        except FileNotFoundError:
            return _start_over(point, f"its checkpoint of epoch {point.epoch + 1} is gone")
        except Exception as exc:
            raise CheckpointUnavailable(
                f"cannot read the checkpoint of epoch {point.epoch + 1} from "
                f"{point.store.url}: {exc}") from exc
        saved = json.loads((folder / _STATE).read_text())
        if saved["fingerprint"] != fingerprint(model):
            return _start_over(point, "its checkpoint is of another model (the study file "
                                      "changed?)")
        model.optimizer.build(model.trainable_variables)
        model.load_weights(folder / _WEIGHTS)
        with np.load(folder / _ARRAYS) as stored:
            arrays = {name: stored[name] for name in stored.files}
    state.restore(saved, arrays, model)
    return {"state": saved, "arrays": arrays}


def _start_over(point: ResumePoint, why: str) -> None:
    log.warning("%s; the trial starts again from epoch 1", why)
    if not point.restart():
        raise TrialLost("lease lost before the trial started over")
    return None


class SaveCheckpoints(keras.callbacks.Callback):
    """Saves the trial's checkpoint when one is due (after the epoch's other callbacks:
    put it last), and puts a loaded checkpoint's EarlyStopping state back when training
    starts. A store that fails is logged, and training goes on."""

    def __init__(self, point: ResumePoint, state: CallbackState,
                 loaded: dict[str, Any] | None) -> None:
        super().__init__()
        self.point, self.state, self.loaded = point, state, loaded
        self.last_epoch = point.epoch if loaded is not None else -1
        self.last_time = time.monotonic()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self.loaded is not None:
            self.state.restore_early_stopping(self.loaded["state"], self.loaded["arrays"])

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        pausing = self.point.pauses and self.state.reporter.pruned
        if not pausing and not self.point.every.due(epoch - self.last_epoch,
                                                    time.monotonic() - self.last_time):
            return
        state, arrays = self.state.capture(epoch, self.model, pausing=pausing)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp)
                self.model.save_weights(folder / _WEIGHTS)
                np.savez(folder / _ARRAYS, **arrays)
                (folder / _STATE).write_text(json.dumps(state))
                self.point.store.put(epoch, folder)
        except Exception as exc:  # the trial goes on; a crash would cost more epochs
            log.warning("could not save the checkpoint of epoch %d to %s: %s", epoch + 1,
                        self.point.store.url, exc)
            return
        if not self.point.saved(epoch):
            raise TrialLost(f"lease lost at epoch {epoch}")
        for older in self.point.store.numbers():
            if older != epoch:
                self.point.store.delete(older)
        self.last_epoch, self.last_time = epoch, time.monotonic()
