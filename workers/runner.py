"""Runs one trial: build the Keras model for a configuration, fit it, judge it.

Keras is imported here and nowhere on the coordinator's side, so the CLI stays fast.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from tuner.artifacts import Artifacts
from tuner.definition import StudyDefinition
from tuner.hyperparameters import HyperParameters
from tuner.space import Space
from workers.checkpoints import load_checkpoint, save_checkpoint
from workers.outcome import Outcome, TrialLost

# report(epoch, value, metrics) -> False when the trial is no longer this worker's.
Report = Callable[[int, "float | None", Mapping[str, float]], bool]


class EpochReporter(keras.callbacks.Callback):
    """Writes every epoch's metrics through `report`, and fails the trial on a NaN loss."""

    def __init__(self, report: Report, metric: str,
                 should_stop: Callable[[int], bool] | None = None) -> None:
        super().__init__()
        self.report, self.metric, self.should_stop = report, metric, should_stop
        self.values: list[float | None] = []
        self.pruned = False

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        learning_rate = getattr(self.model.optimizer, "learning_rate", None)
        if learning_rate is not None:  # the live value: what PBT's explore must change
            logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(learning_rate)))
        if self.metric not in logs:
            raise KeyError(
                f"metric {self.metric!r} is not in the epoch logs ({', '.join(sorted(logs))}); "
                "set `metric` in the study file"
            )
        value = logs[self.metric]
        self.values.append(value if math.isfinite(value) else None)
        if not self.report(epoch, value, logs):
            raise TrialLost(f"lease lost at epoch {epoch}")
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at epoch {epoch}")
        if self.should_stop is not None and self.should_stop(epoch + 1):
            self.pruned = True  # stopped by the study's early-stop rule, across trials
            self.model.stop_training = True


@dataclass(frozen=True)
class Segment:
    """A stretch of a PBT member's training: epochs [start, start + epochs), starting
    from trial `restore`'s checkpoint (None: from scratch), checkpointed as trial `number`."""

    number: int
    start: int
    epochs: int
    restore: int | None
    artifacts: Artifacts


def _best(values: list[float | None], sign: int) -> tuple[float | None, int | None]:
    scored = [(sign * v, -i, v, i) for i, v in enumerate(values) if v is not None]
    if not scored:
        return None, None
    _, _, value, epoch = max(scored)
    return value, epoch


def run_trial(
    definition: StudyDefinition, data: Any, space: Space, params: Mapping[str, Any], *,
    metric: str, direction: str, settings: Mapping[str, Any], seed: int, report: Report,
    should_stop: Callable[[int], bool] | None = None, segment: Segment | None = None,
) -> Outcome:
    """Train one configuration; exceptions propagate and the caller marks the trial FAILED.

    With a `segment` (population-based training) the model starts from a checkpoint,
    trains a few epochs on from there, is judged on its last epoch, and is checkpointed.
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    hp = HyperParameters(space, params)
    model = definition.build(hp)
    try:
        (x, y), validation = data
    except (TypeError, ValueError):
        raise ValueError("load_data() must return (x_train, y_train), (x_val, y_val)") from None
    reporter = EpochReporter(report, metric, should_stop)
    callbacks: list[keras.callbacks.Callback] = [reporter]
    first_epoch, last_epoch = 0, settings["epochs"]
    if segment is not None:
        first_epoch, last_epoch = segment.start, segment.start + segment.epochs
        if segment.restore is not None:
            with tempfile.TemporaryDirectory() as folder:
                segment.artifacts.get(segment.restore, Path(folder))
                load_checkpoint(model, Path(folder))
    elif settings.get("patience"):
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor=metric, mode="max" if direction == "maximize" else "min",
            patience=settings["patience"], restore_best_weights=True,
        ))
    fit_args = dict(validation_data=validation, initial_epoch=first_epoch, epochs=last_epoch,
                    callbacks=callbacks, verbose=0)
    if definition.hypermodel is not None:
        # A KerasTuner HyperModel's fit picks its own batch size, as under KerasTuner.
        returned = definition.hypermodel.fit(hp, model, x, y, **fit_args)
    else:
        batch_size = hp.values.get("batch_size", settings["batch_size"])  # tunable by name
        returned = model.fit(x, y, batch_size=batch_size, **fit_args)
    sign = 1 if direction == "maximize" else -1
    value, best_epoch = _best(reporter.values, sign)
    if segment is not None:  # a member is as good as it is now, not as it once was
        value = next((v for v in reversed(reporter.values) if v is not None), None)
        best_epoch = len(reporter.values) - 1 if reporter.values else None
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(model, Path(folder))
            segment.artifacts.put(segment.number, Path(folder))
    if isinstance(returned, (int, float)):  # KerasTuner lets fit return the objective
        value, best_epoch = float(returned), None
    elif isinstance(returned, Mapping):
        value, best_epoch = float(returned[metric]), None
    if best_epoch is not None:
        best_epoch += first_epoch
    return Outcome(value=value, best_epoch=best_epoch, params=dict(hp.values), space=hp.space,
                   pruned=reporter.pruned)
