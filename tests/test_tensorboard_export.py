"""Exporting a study to TensorBoard, read back with TensorBoard's own event reader."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from tuner.errors import StudyNotFound
from tuner.space import Bool, Choice, Fixed, Float, Int, Space
from tuner.states import TrialState
from tuner.storage import Storage
from tuner.tensorboard_export import export_tensorboard

SPACE = Space(
    units=Int(8, 64),
    lr=Float(1e-4, 1e-1, log=True),
    activation=Choice(("relu", "tanh")),
    batch_norm=Bool(when={"activation": ["tanh"]}),  # absent from relu trials
    epochs=Fixed(3),
)
# number -> (params, final state, per-epoch values, final value); 5 runs, 6 stays queued.
TRIALS = {
    0: ({"units": 8, "lr": 1e-3, "activation": "relu", "epochs": 3},
        TrialState.COMPLETE, [0.5, 0.625, 0.75], 0.75),
    1: ({"units": 32, "lr": 0.0123, "activation": "tanh", "batch_norm": True, "epochs": 3},
        TrialState.COMPLETE, [0.25, 0.875, 0.5], 0.875),
    2: ({"units": 64, "lr": 1e-4, "activation": "tanh", "batch_norm": False, "epochs": 3},
        TrialState.COMPLETE, [0.125, 0.375, 0.625], 0.625),
    3: ({"units": 16, "lr": 0.05, "activation": "relu", "epochs": 3},
        TrialState.PRUNED, [0.0625, 0.1875], 0.1875),
    4: ({"units": 48, "lr": 0.1, "activation": "tanh", "batch_norm": True, "epochs": 3},
        TrialState.FAILED, [math.nan, 0.3], None),  # NaN is stored as None: no point
    5: ({"units": 40, "lr": 0.003, "activation": "relu", "epochs": 3}, None, [0.4], None),
    6: ({"units": 24, "lr": 0.002, "activation": "relu", "epochs": 3}, None, [], None),
}
FINISHED = [n for n, (_, state, _, _) in TRIALS.items() if state is not None]


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    storage = Storage(f"sqlite:///{tmp_path / 'tuner.db'}")
    study = storage.create_study(
        "tb", metric="val_accuracy", direction="maximize", strategy="random", seed=1,
        space=SPACE.to_dict(), settings={"epochs": 3},
    )
    wid = storage.register_worker(host="test-host", pid=1, device="cpu", study_id=study.id)
    storage.enqueue_trials(study.id, [(n, params, None) for n, (params, *_) in TRIALS.items()])
    for number, (_, state, values, final) in TRIALS.items():
        if number == 6:
            break
        trial = storage.claim_trial(study.id, wid)
        assert trial.number == number
        for epoch, value in enumerate(values):
            assert storage.report_epoch(trial.id, wid, epoch, value,
                                        {"val_accuracy": value, "loss": 1.0 - epoch / 10})
        if state is not None:
            best = None if final is None else values.index(final)
            assert storage.finish_trial(trial.id, wid, state, value=final, best_epoch=best)
    yield storage
    storage.dispose()


def read_runs(directory: Path):
    """What TensorBoard's backend loads from `directory`."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(directory))
    multiplexer.Reload()
    return multiplexer


def scalars(multiplexer, run: str, tag: str) -> dict[int, float]:
    from tensorboard.util.tensor_util import make_ndarray

    return {e.step: float(make_ndarray(e.tensor_proto)) for e in multiplexer.Tensors(run, tag)}


def hparam_value(value) -> object:
    kind = value.WhichOneof("kind")
    return {"number_value": value.number_value, "string_value": value.string_value,
            "bool_value": value.bool_value}[kind]


def test_every_finished_trial_becomes_an_hparams_run(storage: Storage, tmp_path: Path):
    from tensorboard.plugins.hparams import api_pb2, metadata

    out = tmp_path / "tb"
    assert export_tensorboard(storage, "tb", out) == len(FINISHED)

    multiplexer = read_runs(out)
    runs = {f"trial-{n:05d}": n for n in FINISHED}
    assert set(multiplexer.Runs()) == {".", *runs}
    content = multiplexer.PluginRunToTagToContent(metadata.PLUGIN_NAME)

    # The experiment: one hparam per parameter of the space, with its domain, and the metric.
    experiment = metadata.parse_experiment_plugin_data(
        content["."][metadata.EXPERIMENT_TAG])
    infos = {info.name: info for info in experiment.hparam_infos}
    assert list(infos) == [p.name for p in SPACE]
    assert (infos["units"].domain_interval.min_value,
            infos["units"].domain_interval.max_value) == (8, 64)
    assert (infos["lr"].domain_interval.min_value,
            infos["lr"].domain_interval.max_value) == (1e-4, 1e-1)
    assert [v.string_value for v in infos["activation"].domain_discrete.values] == [
        "relu", "tanh"]
    assert [v.bool_value for v in infos["batch_norm"].domain_discrete.values] == [False, True]
    assert [v.number_value for v in infos["epochs"].domain_discrete.values] == [3]
    assert infos["activation"].type == api_pb2.DATA_TYPE_STRING
    assert [m.name.tag for m in experiment.metric_infos] == ["val_accuracy"]

    stored = {t.number: t for t in storage.trials(storage.get_study("tb").id)}
    epochs = storage.epochs(t.id for t in stored.values())
    for run, number in runs.items():
        trial = stored[number]
        session = metadata.parse_session_start_info_plugin_data(
            content[run][metadata.SESSION_START_INFO_TAG])
        assert session.group_name == str(number)
        assert {k: hparam_value(v) for k, v in session.hparams.items()} == trial.params
        assert session.start_time_secs == trial.started_at

        expected = {e["epoch"]: e["value"] for e in epochs[trial.id] if e["value"] is not None}
        # TensorBoard keeps scalars as float32.
        assert scalars(multiplexer, run, "epoch_val_accuracy") == pytest.approx(expected)
        assert scalars(multiplexer, run, "epoch_loss") == pytest.approx(
            {e["epoch"]: e["metrics"]["loss"] for e in epochs[trial.id]})
        tags = multiplexer.Runs()[run]["tensors"]
        if trial.value is None:  # FAILED: curves, but no value for the dashboard
            assert trial.state is TrialState.FAILED
            assert "val_accuracy" not in tags
        else:
            assert scalars(multiplexer, run, "val_accuracy") == pytest.approx(
                {trial.best_epoch: trial.value})

    # What the runs were compared with is what the study holds: a NaN epoch stays out.
    assert [stored[n].state for n in FINISHED] == [TRIALS[n][1] for n in FINISHED]
    assert scalars(multiplexer, "trial-00004", "epoch_val_accuracy") == pytest.approx({1: 0.3})


def test_unknown_study_raises(storage: Storage, tmp_path: Path):
    with pytest.raises(StudyNotFound, match="nope"):
        export_tensorboard(storage, "nope", tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_every_objective_and_measure_is_a_metric_of_each_run(tmp_path: Path):
    from tensorboard.plugins.hparams import metadata

    from tests.conftest import TRADEOFF, objective_study

    storage = Storage(f"sqlite:///{tmp_path / 'tuner.db'}")
    study = objective_study(storage, "mo", **TRADEOFF)
    out = tmp_path / "tb"
    assert export_tensorboard(storage, "mo", out) == len(TRADEOFF["trials"])
    multiplexer = read_runs(out)
    content = multiplexer.PluginRunToTagToContent(metadata.PLUGIN_NAME)
    experiment = metadata.parse_experiment_plugin_data(content["."][metadata.EXPERIMENT_TAG])
    assert [m.name.tag for m in experiment.metric_infos] == ["acc", "params", "latency_ms"]
    for trial in storage.trials(study.id):
        run = f"trial-{trial.number:05d}"
        if trial.values is None:  # the failed one: nothing to compare
            assert trial.state is TrialState.FAILED
            assert not {"acc", "params"} & set(multiplexer.Runs()[run]["tensors"])
            continue
        assert scalars(multiplexer, run, "acc") == pytest.approx({0: trial.values[0]})
        assert scalars(multiplexer, run, "params") == pytest.approx({0: trial.values[1]})
        latency = trial.measures.get("latency_ms")
        tags = multiplexer.Runs()[run]["tensors"]
        if latency is None:  # never measured: no point rather than a made-up one
            assert "latency_ms" not in tags
        else:
            assert scalars(multiplexer, run, "latency_ms") == pytest.approx({0: latency})
    storage.dispose()
