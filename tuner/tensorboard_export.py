"""Export a study's finished trials as TensorBoard HParams runs.

`directory` gets the experiment config (the study's parameters and metric) at its top and
one sub-folder per trial, `trial-00042`, holding that trial's parameter values, its
per-epoch metrics as `epoch_<name>` scalars, and its final value under the study's metric,
the tag the HParams dashboard reads for its metric column. A study with several objectives
or constraints has a metric column for each objective and each measure (what constraints
read, e.g. `params`), so runs compare on all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuner.objectives import measured_names
from tuner.space import Float, Int, Param, Space
from tuner.states import FINISHED
from tuner.storage import Storage, StudyRecord, Trial


def export_tensorboard(storage: Storage, study_name: str, directory: str | Path) -> int:
    """Write every finished trial of `study_name` as one run under `directory`; the number of
    runs written. Raises `StudyNotFound` for an unknown study."""
    study = storage.get_study(study_name)  # fails before TensorFlow's slow import
    # TensorFlow is heavy and optional for most commands: only load it when exporting.
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hp

    directory = Path(directory)
    hparams = [hp.HParam(p.name, _domain(hp, p)) for p in Space.from_dict(study.space)]
    trials = storage.trials(study.id, states=FINISHED)
    metrics = metric_names(study, trials)
    writer = tf.summary.create_file_writer(str(directory))
    try:
        with writer.as_default():
            hp.hparams_config(hparams=hparams, metrics=[hp.Metric(m) for m in metrics],
                              time_created_secs=study.created_at)
    finally:
        writer.close()

    epochs = storage.epochs(t.id for t in trials)
    for trial in trials:
        writer = tf.summary.create_file_writer(str(directory / f"trial-{trial.number:05d}"))
        try:
            with writer.as_default():
                # Inactive conditional parameters are absent from `params`, so from the run.
                hp.hparams(trial.params, trial_id=str(trial.number),
                           start_time_secs=trial.started_at)
                for row in epochs[trial.id]:
                    # The objective's value wins over the same name in Keras' logs.
                    scalars = {**(row["metrics"] or {}), study.metric: row["value"]}
                    for name, value in scalars.items():
                        if value is not None:  # storage keeps NaN and inf as None
                            tf.summary.scalar(f"epoch_{name}", value, step=row["epoch"])
                last = epochs[trial.id][-1]["epoch"] if epochs[trial.id] else 0
                step = trial.best_epoch if trial.best_epoch is not None else last
                for name, value in final_values(study, trial).items():
                    tf.summary.scalar(name, value, step=step)
        finally:
            writer.close()
    return len(trials)


def metric_names(study: StudyRecord, trials: Sequence[Trial]) -> list[str]:
    """The HParams metrics: each objective, then what constraints read, then any other
    measure a trial took (in name order)."""
    names = measured_names(study.objectives, study.constraints)
    extra = {k for t in trials for k in (t.measures or {})} - set(names)
    return names + sorted(extra)


def final_values(study: StudyRecord, trial: Trial) -> dict[str, float]:
    """A trial's value of each objective and each measure, those it has (a FAILED trial
    has none): an objective's own value wins over a measure of the same name."""
    values = study.values_of(trial) or ()
    objectives = {o.name: v for o, v in zip(study.objectives, values, strict=False)}
    merged = {**(trial.measures or {}), **objectives}
    return {k: v for k, v in merged.items() if v is not None}


def _domain(hp: Any, param: Param) -> Any:
    """The TensorBoard domain of a parameter, or None where TensorBoard has none for it."""
    if isinstance(param, Int):
        return hp.IntInterval(param.low, param.high)
    if isinstance(param, Float):
        return hp.RealInterval(float(param.low), float(param.high))
    values = param.grid()  # a Choice's values, [False, True] or a Fixed's one value
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        values = [float(v) for v in values]  # TensorBoard stores every number as a float
    try:
        return hp.Discrete(values)
    except TypeError:  # values of mixed kinds: TensorBoard infers from the runs instead
        return None
