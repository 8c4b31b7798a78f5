"""Runs one trial: build the Keras model for a configuration, fit it, judge it.

Keras is imported here and nowhere on the coordinator's side, so the CLI stays fast.
"""

from __future__ import annotations

import functools
import math
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from tuner.artifacts import Artifacts
from tuner.definition import StudyDefinition
from tuner.hyperparameters import HyperParameters
from tuner.objectives import BUILT_IN_MEASURES
from tuner.space import Space
from tuner.storage import sign_of
from tuner.strategies import PBTSegment
from workers.checkpoints import load_checkpoint, save_best, save_checkpoint
from workers.live_models import LiveModel, LiveModels, model_for
from workers.measures import built_in, input_batch, users
from workers.outcome import Outcome, TrialLost
from workers.resume import CallbackState, ResumePoint, SaveCheckpoints, load

# report(epoch, value, metrics) -> False when the trial is no longer this worker's.
Report = Callable[[int, "float | None", Mapping[str, float]], bool]


class EpochReporter(keras.callbacks.Callback):
    """Writes every epoch's metrics through `report` (None: keeps them only, as for a
    trial's second execution), fails the trial on a NaN loss, asks the early-stop rule.
    `started` is called when training starts: what `fit` declared is known by then.
    `measure(model)` gives the built-in measures the study reads, taken once the model has
    trained an epoch and added to every epoch's logs (the callbacks after this one see them
    too), so early stopping judges them at every rung."""

    def __init__(self, report: Report | None, metric: str,
                 should_stop: Callable[[int], bool] | None = None, *,
                 require_metric: bool = True, started: Callable[[], None] | None = None,
                 measure: Callable[[keras.Model], dict[str, float]] | None = None) -> None:
        super().__init__()
        self.report, self.metric, self.should_stop = report, metric, should_stop
        self.require_metric, self.started, self.measure = require_metric, started, measure
        self.values: list[float | None] = []
        self.logs: list[dict[str, float]] = []
        self.measured: dict[str, float] | None = None
        self.pruned = False

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        if self.started is not None:
            self.started()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.measure is not None and logs is not None:
            if self.measured is None:
                self.measured = self.measure(self.model)
            logs.update(self.measured)
        logs = {k: float(v) for k, v in (logs or {}).items()}
        optimizer = getattr(self.model, "optimizer", None)
        learning_rate = getattr(optimizer, "learning_rate", None)
        if learning_rate is not None:  # the live value: what PBT's explore must change
            logs.setdefault("learning_rate", float(keras.ops.convert_to_numpy(learning_rate)))
        if self.metric not in logs and self.require_metric:
            raise KeyError(
                f"metric {self.metric!r} is not in the epoch logs ({', '.join(sorted(logs))}); "
                "set `metric` in the study file"
            )
        value = logs.get(self.metric)
        self.values.append(value if value is not None and math.isfinite(value) else None)
        self.logs.append(logs)
        if self.report is not None and not self.report(epoch, value, logs):
            raise TrialLost(f"lease lost at epoch {epoch}")
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            raise FloatingPointError(f"loss became {loss} at epoch {epoch}")
        if self.should_stop is not None and self.should_stop(epoch + 1):
            self.pruned = True  # stopped by the study's early-stop rule, across trials
            self.model.stop_training = True


class BestWeights(keras.callbacks.Callback):
    """The weights of the best epoch seen (over all of a trial's executions), kept so the
    study hands back the trained model, as KerasTuner's own checkpoint does."""

    def __init__(self, metric: str, sign: int) -> None:
        super().__init__()
        self.metric, self.sign = metric, sign
        self.value: float | None = None
        self.weights: list[Any] | None = None
        self.holder: keras.Model | None = None

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.metric)
        if value is None or not math.isfinite(float(value)):
            return
        if self.value is None or self.sign * float(value) > self.sign * self.value:
            self.value = float(value)
            self.weights = [keras.ops.convert_to_numpy(w) for w in self.model.weights]
            self.holder = self.model

    def save(self, store: Artifacts, number: int) -> None:
        if self.holder is None or self.weights is None:
            return
        with tempfile.TemporaryDirectory() as folder:
            save_best(self.holder, self.weights, Path(folder))
            store.put(number, Path(folder))


@dataclass(frozen=True)
class SegmentRun:
    """A PBT segment as a worker runs it: trial `number` trains `segment`'s epochs, starting
    from trial `segment.restore`'s checkpoint in `artifacts` (None: from scratch), and is
    checkpointed there as trial `number`. With `models`, the worker's live models, the
    member's model of study `study` goes on from where this worker left it."""

    number: int
    segment: PBTSegment
    artifacts: Artifacts
    study: int = 0
    models: LiveModels | None = None

    def model(self, definition: StudyDefinition, hp: HyperParameters,
              seed: int) -> tuple[keras.Model, str]:
        """The model to train, at the checkpoint the segment starts from, and how it was
        had: "live" (the member's model in this worker, its checkpoint loaded only if the
        member trained elsewhere since) or "built"."""
        live = (self.models.take(self.study, self.segment.member)
                if self.models is not None else None)
        if live is None:
            keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        build = functools.partial(definition.build, hp)
        model = build() if live is None else model_for(live, hp.values, build)
        fresh = live is None or model is not live.model
        if fresh or self.segment.restore != live.number:  # else it is that checkpoint's
            self.restore(model)
        return model, "built" if fresh else "live"

    def restore(self, model: keras.Model) -> None:
        """The checkpoint the segment starts from into `model`, if it starts from one."""
        if self.segment.restore is not None:
            with tempfile.TemporaryDirectory() as folder:
                self.artifacts.get(self.segment.restore, Path(folder))
                load_checkpoint(model, Path(folder))

    def done(self, model: keras.Model, hp: HyperParameters | None) -> None:
        """Checkpoint the segment's end; with `hp`, the worker keeps the model live for the
        member's next segment."""
        with tempfile.TemporaryDirectory() as folder:
            save_checkpoint(model, Path(folder))
            self.artifacts.put(self.number, Path(folder))
        if self.models is not None and hp is not None:
            self.models.keep(self.study, self.segment.member,
                             LiveModel(model, dict(hp.values), self.number))


def _measures(names: Sequence[str], logs: Mapping[str, float] | None,
              own: Mapping[str, float]) -> dict[str, float] | None:
    """What a trial measured: of its best epoch's logs (built-in measures included) the
    names its study reads (`names`), and whatever the study's own `measures` returned;
    None when that is nothing."""
    found = {**(logs or {}), **own}
    measured = {name: found[name] for name in names if name in found} | dict(own)
    return measured or None


def _best(values: list[float | None], sign: int) -> tuple[float | None, int | None]:
    scored = [(sign * v, -i, v, i) for i, v in enumerate(values) if v is not None]
    if not scored:
        return None, None
    _, _, value, epoch = max(scored)
    return value, epoch


def run_trial(
    definition: StudyDefinition, data: Any, space: Space, params: Mapping[str, Any], *,
    metric: str, direction: str, settings: Mapping[str, Any], seed: int, report: Report,
    should_stop: Callable[[int], bool] | None = None, pbt: SegmentRun | None = None,
    best: tuple[Artifacts, int] | None = None, grew: Callable[[Space], None] | None = None,
    resume: ResumePoint | None = None, measured: Sequence[str] = (),
) -> Outcome:
    """Train one configuration; exceptions propagate and the caller marks the trial FAILED.

    With a `pbt` segment (population-based training) the model starts from a checkpoint,
    trains a few epochs on from there, is judged on its last epoch, and is checkpointed.
    Otherwise its best epoch's weights go to `best` (a store and the trial's number), and,
    with a `resume` point, it checkpoints as it trains and goes on from the checkpoint an
    earlier attempt left. `grew` hears of parameters the trial met that the space did not
    have, once fit starts. `measured` names what the study's objectives and constraints
    read: the outcome's `measures` hold them.
    """
    hp = HyperParameters(space, params, **definition.hp_options)
    if pbt is not None:
        model, how = pbt.model(definition, hp, seed)
    else:
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = definition.build(hp)
    try:
        (x, y), validation = data
    except (TypeError, ValueError):
        raise ValueError("load_data() must return (x_train, y_train), (x_val, y_val)") from None
    sign = sign_of(direction)
    batch_size = hp.values.get("batch_size", settings["batch_size"])  # tunable by name
    reporter = EpochReporter(report, metric, should_stop, started=_told(grew, hp, space),
                             measure=_measure(measured, lambda: x[:batch_size]))
    keeper = BestWeights(metric, sign)
    callbacks: list[keras.callbacks.Callback] = [reporter]
    first_epoch, last_epoch = 0, settings["epochs"]
    loaded = saver = None  # a checkpoint an earlier attempt left; the one saving this one's
    if pbt is not None:
        first_epoch, last_epoch = pbt.segment.start, pbt.segment.end
    else:
        callbacks.append(keeper)
        stopping = None
        if settings.get("patience"):
            stopping = keras.callbacks.EarlyStopping(
                monitor=metric, mode="max" if sign > 0 else "min",
                patience=settings["patience"], restore_best_weights=True,
            )
            callbacks.append(stopping)
        if resume is not None:  # last: it saves what the others made of the epoch
            state = CallbackState(reporter, keeper, stopping)
            loaded = load(resume, model, state)
            if loaded is not None:
                first_epoch = (last_epoch if loaded["state"]["stopped"]
                               else loaded["state"]["epoch"] + 1)
            saver = SaveCheckpoints(resume, state, loaded)
            callbacks.append(saver)
    fit_args = dict(validation_data=validation, initial_epoch=first_epoch, epochs=last_epoch,
                    callbacks=callbacks, verbose=0)
    if definition.hypermodel is not None:
        # A KerasTuner HyperModel's fit picks its own batch size, as under KerasTuner.
        returned = definition.hypermodel.fit(hp, model, x, y, **fit_args)
    else:
        returned = model.fit(x, y, batch_size=batch_size, **fit_args)
    value, best_epoch = _best(reporter.values, sign)
    if pbt is not None:  # a member is as good as it is now, not as it once was
        value = next((v for v in reversed(reporter.values) if v is not None), None)
        best_epoch = pbt.segment.start + len(reporter.values) - 1 if reporter.values else None
        pbt.done(model, hp)
    elif best is not None:
        keeper.save(*best)
    if isinstance(returned, (int, float)):  # KerasTuner lets fit return the objective
        value, best_epoch = float(returned), None
    elif isinstance(returned, Mapping):
        value, best_epoch = float(returned[metric]), None
    # Stopped at a rung of a rule by promotion, with its checkpoint there: it waits.
    paused = (reporter.pruned and saver is not None and saver.point.pauses
              and saver.last_epoch == len(reporter.values) - 1)
    attrs = ({"model": how} if pbt is not None
             else {"resumed_at_epoch": first_epoch} if loaded is not None else None)
    logs = reporter.logs[best_epoch - first_epoch if pbt is not None else best_epoch] if (
        best_epoch is not None and reporter.logs) else None
    measures = _measures(measured, logs, users(definition.measures, model, data))
    return Outcome(value=value, best_epoch=best_epoch, params=dict(hp.values), space=hp.space,
                   pruned=reporter.pruned and not paused, paused=paused, attrs=attrs,
                   measures=measures)


def _measure(names: Sequence[str], batch: Callable[[], Any]
             ) -> Callable[[keras.Model], dict[str, float]] | None:
    """What takes the built-in measures among `names` from a model (None: it reads none)."""
    if not any(name in BUILT_IN_MEASURES for name in names):
        return None
    return lambda model: built_in(model, names, batch)


class SegmentCheckpoint(keras.callbacks.Callback):
    """A PBT segment inside a KerasTuner trial's fit: the model starts from the checkpoint
    it continues, and ends in its own."""

    def __init__(self, pbt: SegmentRun) -> None:
        super().__init__()
        self.pbt = pbt

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        self.pbt.restore(self.model)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self.pbt.done(self.model, None)


def run_tuner_trial(
    definition: StudyDefinition, space: Space, params: Mapping[str, Any], *, number: int,
    metric: str, direction: str, seed: int, report: Report,
    should_stop: Callable[[int], bool] | None = None, best: tuple[Artifacts, int] | None = None,
    grew: Callable[[Space], None] | None = None, pbt: SegmentRun | None = None,
    measured: Sequence[str] = (),
) -> Outcome:
    """One trial of a KerasTuner `Tuner`: its `run_trial(trial, *search args)`, with the
    callbacks every execution's fit gets (epochs reported from the first execution, the
    best weights over all). The value is what KerasTuner makes of what run_trial returns:
    the mean over executions of each one's best value (or the number or dict it returned);
    a PBT segment's, its last epoch's.
    """
    from tuner.keras_tuner.trial import Trial, result_value

    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    sign = sign_of(direction)
    hp = HyperParameters(space, params, **definition.hp_options)
    keeper = BestWeights(metric, sign)
    reporters: list[EpochReporter] = []
    fit_kwargs = dict(definition.fit_kwargs)
    batch_size = fit_kwargs.get("batch_size", 32)
    measure = _measure(measured, lambda: input_batch(reporters[0].model, batch_size))
    if pbt is not None:
        fit_kwargs.update(initial_epoch=pbt.segment.start, epochs=pbt.segment.end)

    def callbacks(execution: int) -> list[keras.callbacks.Callback]:
        first = execution == 0  # later executions of the same values only keep their curve
        reporter = EpochReporter(report if first else None, metric,
                                 should_stop if first else None, require_metric=False,
                                 started=_told(grew, hp, space) if first else None,
                                 measure=measure)
        reporters.append(reporter)
        return [reporter, SegmentCheckpoint(pbt) if pbt is not None else keeper]

    trial = Trial(str(number), hp, callbacks=callbacks)
    returned = definition.run_trial(trial, *definition.fit_args, **fit_kwargs)
    value, best_epoch = result_value(returned, metric, sign)
    curve = reporters[0].values if reporters else []
    if pbt is not None:  # a member is as good as it is now, not as it once was
        value = next((v for v in reversed(curve) if v is not None), None)
        best_epoch = pbt.segment.start + len(curve) - 1 if curve else None
    elif value is None:  # nothing returned: the epochs reported tell it
        value, best_epoch = _best(curve, sign)
    elif best_epoch is None and len(reporters) == 1 and value in curve:
        best_epoch = curve.index(value)
    if best is not None and pbt is None:
        keeper.save(*best)
    executions = [r.logs for r in reporters]
    logs = (reporters[0].logs[best_epoch] if reporters and best_epoch is not None
            and best_epoch < len(reporters[0].logs) else None)
    if isinstance(returned, Mapping):  # what run_trial returned counts for each objective
        logs = {**(logs or {}), **{k: float(v) for k, v in returned.items()
                                  if isinstance(v, (int, float))}}
    model = keeper.holder if keeper.holder is not None else (
        reporters[0].model if reporters else None)
    # The tuner's run_trial fits on data of its own: the study's measures get none.
    own = users(definition.measures, model, None) if model is not None else {}
    return Outcome(value=value, best_epoch=best_epoch, params=dict(hp.values), space=hp.space,
                   pruned=bool(reporters) and reporters[0].pruned,
                   attrs={"executions": executions} if len(executions) > 1 else None,
                   measures=_measures(measured, logs, own))


def _told(grew: Callable[[Space], None] | None, hp: HyperParameters,
          space: Space) -> Callable[[], None] | None:
    """What tells `grew` of parameters met before training started (in `fit`, or behind a
    branch the study had not seen), while the trial trains: the coordinator can give the
    trials queued meanwhile values for them."""
    if grew is None:
        return None
    return lambda: grew(hp.space) if len(hp.space) > len(space) else None
