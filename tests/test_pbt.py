"""Population-based training: the maths, a real population on digits, resume, export."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from tests.conftest import STUDIES, start_cli
from tests.test_failures import wait_for
from tuner import InProcess, Study, TrialState
from tuner.artifacts import Artifacts
from tuner.space import Bool, Choice, Float, Int, Space
from tuner.strategies import PBT, make_strategy
from tuner.strategies._pbt import explore, perturb, quantiles


def test_quantiles_split_bottom_and_top():
    scores = {0: 0.5, 1: 0.9, 2: 0.1, 3: 0.7}
    assert quantiles(scores, 0.25) == ([2], [1])
    assert quantiles(scores, 0.5) == ([2, 0], [3, 1])
    assert quantiles({0: 0.3, 1: 0.4}, 0.25) == ([0], [1])
    assert quantiles({0: 0.3}, 0.25) == ([], [])
    bottom, top = quantiles({i: float(i) for i in range(10)}, 0.25)
    assert bottom == [0, 1] and top == [8, 9]


def test_perturb_scales_continuous_values_and_steps_discrete_ones():
    rng = np.random.default_rng(0)
    lr = Float(1e-4, 1e-1, log=True)
    seen = {round(perturb(lr, 0.01, rng) / 0.01, 6) for _ in range(50)}
    assert seen == {0.8, 1.2}
    assert perturb(lr, 0.1, np.random.default_rng(1)) <= 0.1  # kept in range
    units = Int(10, 20)
    assert all(isinstance(perturb(units, 15, rng), int) for _ in range(10))
    batch = Choice([16, 32, 64, 128])
    assert {perturb(batch, 32, rng) for _ in range(50)} == {16, 64}  # neighbours only
    assert {perturb(batch, 16, rng) for _ in range(20)} == {32}
    assert {perturb(Bool(), False, rng) for _ in range(10)} == {True}
    stepped = Float(0.0, 0.5, step=0.1)
    assert {perturb(stepped, 0.2, rng) for _ in range(50)} == {0.1, 0.3}


def test_explore_touches_only_mutable_parameters():
    space = Space(units=Int(16, 64), lr=Float(1e-4, 1e-1, log=True, mutable=True),
                  act=Choice(["relu", "tanh"]))
    params = {"units": 32, "lr": 0.01, "act": "relu"}
    rng = np.random.default_rng(3)
    for _ in range(20):
        out = explore(params, space, ["lr"], rng, resample_probability=0.0)
        assert out["units"] == 32 and out["act"] == "relu" and out["lr"] in (0.008, 0.012)
    resampled = [explore(params, space, ["lr"], rng, 1.0)["lr"] for _ in range(20)]
    assert all(1e-4 <= v <= 1e-1 for v in resampled) and len(set(resampled)) == 20


def test_pbt_needs_mutable_parameters_and_sane_options():
    with pytest.raises(ValueError, match="mutable"):
        PBT().start(Space(units=Int(1, 4)), direction="maximize", seed=0, trials=[],
                    settings={"epochs": 4})
    with pytest.raises(ValueError, match="not parameters"):
        PBT(mutable=["nope"]).start(Space(units=Int(1, 4)), direction="maximize", seed=0,
                                    trials=[], settings={"epochs": 4})
    for bad in (dict(population=1), dict(interval=0), dict(quantile=0.7)):
        with pytest.raises(ValueError):
            PBT(**bad)
    strategy = make_strategy("pbt")
    strategy.start(Space(lr=Float(0.1, 1.0, mutable=True)), direction="maximize", seed=0,
                   trials=[], settings={"epochs": 7})
    assert strategy.trial_budget(5) == 5 * 4  # 5 members, ceil(7 / 2) segments each


@pytest.fixture(scope="module")
def population(tmp_path_factory):
    """4 members, 2-epoch intervals, 6 epochs, trained for real in this process (one
    worker); `study.builds` counts the models its file built."""
    folder = tmp_path_factory.mktemp("pbt")
    study = Study.create(definition=STUDIES / "pbt_digits.py", storage=f"sqlite:///{folder}/t.db",
                         strategy="pbt", seed=3, artifacts=str(folder / "artifacts"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNER_TEST_BUILD_LOG", str(folder / "builds"))
        study.optimize(trials=4, executor=InProcess())
    study.builds = len((folder / "builds").read_text().splitlines())
    return study


@pytest.mark.slow
def test_every_member_trains_every_epoch_in_segments(population):
    trials = population.trials
    assert len(trials) == 4 * 3 and all(t.state == TrialState.COMPLETE for t in trials)
    for member in range(4):
        segments = sorted((t for t in trials if t.attrs["member"] == member),
                          key=lambda t: t.attrs["generation"])
        assert [s.attrs["segment"]["start"] for s in segments] == [0, 2, 4]
        assert all(s.epochs == 2 for s in segments)
        assert segments[0].attrs["segment"]["restore"] is None
        for earlier, later in zip(segments, segments[1:], strict=False):
            if later.attrs["copied_from"] is None:  # continues from its own checkpoint
                assert later.attrs["segment"]["restore"] == earlier.number
                assert later.params == earlier.params


@pytest.mark.slow
def test_exploit_copies_a_better_member_and_explore_changes_the_live_optimizer(population):
    by_number = {t.number: t for t in population.trials}
    copies = [t for t in population.trials if t.attrs["copied_from"] is not None]
    assert copies, "no member exploited another"
    epochs = population.storage.epochs(t.id for t in population.trials)
    for child in copies:
        parent = by_number[child.attrs["segment"]["restore"]]
        assert parent.attrs["member"] == child.attrs["copied_from"] != child.attrs["member"]
        assert parent.attrs["segment"]["start"] + 2 == child.attrs["segment"]["start"]
        assert child.params["units"] == parent.params["units"]  # the weights fit
        assert child.params["learning_rate"] != parent.params["learning_rate"]
        for row in epochs[child.id]:  # the optimizer really trained with the new rate
            assert row["metrics"]["learning_rate"] == pytest.approx(
                child.params["learning_rate"], rel=1e-6)
        rival = next(t for t in population.trials if t.attrs["member"] == child.attrs["member"]
                     and t.attrs["generation"] == child.attrs["generation"] - 1)
        assert rival.value <= parent.value  # it copied from a better member


@pytest.mark.slow
def test_a_member_s_next_segments_train_on_its_live_model(population):
    """One worker holds every member's model: a member that goes on with its own values
    builds nothing; one that exploits builds one model, to compare (a same-shaped live model
    takes the copied checkpoint and the explored values in place) or to train (another
    shape)."""
    later = [t for t in population.trials if t.attrs["generation"] > 0]
    copies = [t for t in later if t.attrs["copied_from"] is not None]
    assert all(t.attrs["model"] == "live" for t in later if t not in copies)
    assert population.builds == 4 + len(copies)  # the first segments', one per exploit
    first = {t.attrs["member"]: t for t in population.trials if t.attrs["generation"] == 0}
    for child in copies:  # live exactly when its shape stayed
        same_shape = child.params["units"] == first[child.attrs["member"]].params["units"]
        assert child.attrs["model"] == ("live" if same_shape else "built")
    assert {t.attrs["model"] for t in copies} == {"live", "built"}  # both kinds were met


def test_explored_values_go_into_the_live_model_in_place():
    import keras

    from workers.live_models import LiveModel, model_for

    def build(units=8, dropout=0.1, learning_rate=0.01, optimizer=keras.optimizers.Adam):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(units),
                                  keras.layers.Dropout(dropout), keras.layers.Dense(2)])
        model.compile(optimizer=optimizer(learning_rate), loss="mse")
        return model

    live = LiveModel(build(), {"units": 8, "dropout": 0.1, "lr": 0.01}, number=0)
    x, y = np.random.rand(16, 4), np.random.rand(16, 2)
    live.model.fit(x, y, verbose=0)
    kernel = keras.ops.convert_to_numpy(live.model.layers[0].kernel)
    explored = {"units": 8, "dropout": 0.3, "lr": 0.012}
    model = model_for(live, explored, lambda: build(dropout=0.3, learning_rate=0.012))
    assert model is live.model and live.params == explored
    assert model.layers[1].rate == 0.3
    assert float(model.optimizer.learning_rate) == pytest.approx(0.012)
    assert model.train_function is None  # retraced with the new rate
    assert np.array_equal(keras.ops.convert_to_numpy(model.layers[0].kernel), kernel)
    model.fit(x, y, verbose=0)  # and trains on
    assert model_for(live, dict(explored), lambda: pytest.fail("built")) is model
    class Subclassed(keras.Model):  # its call may read anything: never changed in place
        def __init__(self, rate):
            super().__init__()
            self.rate, self.dense = rate, keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x) * (1 - self.rate)

    subclassed = LiveModel(Subclassed(0.1), {"rate": 0.1}, number=0)
    subclassed.model.compile(optimizer="adam", loss="mse")
    other = Subclassed(0.2)
    other.compile(optimizer="adam", loss="mse")
    assert model_for(subclassed, {"rate": 0.2}, lambda: other) is other
    for other in (build(units=16), build(optimizer=keras.optimizers.SGD)):
        assert model_for(live, {"units": 16}, lambda m=other: m) is other  # one of its own
        assert live.params == explored and live.model.layers[1].rate == 0.3


def test_a_worker_keeps_its_most_recent_live_models_within_bounds():
    import keras

    from workers.live_models import LiveModel, LiveModels

    def live(number):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(250)])  # 1250 numbers
        return LiveModel(model, {}, number)

    models = LiveModels(max_models=3, max_bytes=3 * 5000)
    for member in range(4):
        models.keep(7, member, live(member))
    assert models.members() == {7: [1, 2, 3]}  # the least recently kept went
    assert models.take(7, 2).number == 2 and models.take(7, 2) is None  # taken, not shared
    models.keep(8, 0, live(9))
    models.keep(8, 1, live(10))
    assert models.members() == {7: [3], 8: [0, 1]}
    models.max_bytes = 2 * 5000
    models.keep(8, 2, live(11))
    assert models.members() == {8: [1, 2]}  # past the bytes: down to what fits


@pytest.mark.slow
def test_stale_checkpoints_are_removed_and_the_best_model_exports(population, tmp_path):
    artifacts = Artifacts(population.record.settings["artifacts"])
    finals = {t.number for t in population.trials if t.attrs["segment"]["start"] == 4}
    assert set(artifacts.numbers()) == finals
    schedule = population.schedule()
    assert [s.attrs["segment"]["start"] for s in schedule] == [0, 2, 4]
    best = population.export_best_model(tmp_path / "best.keras")
    import keras

    model = keras.models.load_model(tmp_path / "best.keras")
    (_, _), (x_val, y_val) = population.definition.load_data()
    _, accuracy = model.evaluate(x_val, y_val, verbose=0)
    assert accuracy == pytest.approx(best.value, abs=1e-6)  # the trained model itself


@pytest.mark.slow
def test_a_killed_pbt_study_resumes_from_its_checkpoints(sqlite_url, tmp_path):
    args = ["run", str(STUDIES / "pbt_digits.py"), "--storage", sqlite_url, "--strategy", "pbt",
            "--trials", "4", "--workers", "2", "--seed", "5",
            "--artifacts", str(tmp_path / "artifacts")]
    run = start_cli(*args)

    def done() -> int:
        try:
            return Study.load("pbt_digits", storage=sqlite_url).counts()[TrialState.COMPLETE]
        except Exception:
            return 0

    wait_for(lambda: done() >= 6, timeout=180)
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate(timeout=60)
    before = {t.number for t in Study.load("pbt_digits", storage=sqlite_url).trials
              if t.state == TrialState.COMPLETE}
    assert len(before) < 12

    resumed = start_cli(*args)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    trials = Study.load("pbt_digits", storage=sqlite_url).trials
    assert len(trials) == 12 and all(t.state == TrialState.COMPLETE for t in trials)
    new = [t for t in trials if t.number not in before]
    assert any(t.attrs["segment"]["restore"] in before for t in new)  # from old checkpoints
    assert all(t.attrs["segment"]["restore"] is not None for t in new
               if t.attrs["generation"] > 0)  # nobody started over
    for member in range(4):
        ends = [t.attrs["segment"]["start"] + 2 for t in trials if t.attrs["member"] == member]
        assert sorted(ends) == [2, 4, 6]


def test_a_tunable_batch_size_reaches_fit():
    """A space parameter named batch_size sets the next fit's batch size (PBT explores it)."""
    import keras

    from tuner import StudyDefinition
    from workers.runner import run_trial

    seen = []

    class Recording(keras.Sequential):
        def fit(self, *args, **kwargs):
            seen.append(kwargs["batch_size"])
            return super().fit(*args, **kwargs)

    def build_model(hp):
        model = Recording([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    space = Space(batch_size=Choice([8, 16], mutable=True))
    definition = StudyDefinition(build_model=build_model, load_data=lambda: None, space=space)
    data = ((np.random.rand(32, 4), np.random.randint(0, 2, 32)),
            (np.random.rand(8, 4), np.random.randint(0, 2, 8)))
    outcome = run_trial(definition, data, space, {"batch_size": 16}, metric="val_accuracy",
                        direction="maximize", settings={"epochs": 1, "batch_size": 32},
                        seed=0, report=lambda *a: True)
    assert seen == [16] and outcome.params == {"batch_size": 16}


def segment_trial(number, member, start, state=TrialState.COMPLETE, value=0.5, restore=None,
                  generation=None):
    from tuner.storage.records import Trial

    attrs = {"member": member, "generation": start // 2 if generation is None else generation,
             "copied_from": None, "segment": {"start": start, "epochs": 2, "restore": restore}}
    return Trial(id=number + 1, number=number, state=state, params={"lr": 0.1}, value=value,
                 attrs=attrs)


def test_members_do_not_wait_for_each_other():
    """Member 0 finished its first segment while 1-3 still train: it goes on at once."""
    space = Space(lr=Float(0.01, 1.0, mutable=True))
    history = [segment_trial(0, 0, 0, value=0.9)] + [
        segment_trial(n, n, 0, state=TrialState.RUNNING, value=None) for n in (1, 2, 3)]
    strategy = PBT(population=4)
    strategy.start(space, direction="maximize", seed=0, trials=history, settings={"epochs": 6})
    proposal = strategy.ask(4, space)
    assert proposal.attrs["member"] == 0
    assert proposal.attrs["segment"] == {"start": 2, "epochs": 2, "restore": 0}
    from tuner.strategies import WAIT

    assert strategy.ask(5, space) is WAIT  # everyone else is busy: nothing to start yet
    strategy.tell(segment_trial(4, 0, 2, value=0.95, restore=0))
    assert strategy.ask(5, space).attrs["segment"]["start"] == 4  # member 0 again, ahead
    strategy.tell(segment_trial(5, 0, 4, value=0.97, restore=4))
    assert strategy.ask(6, space) is WAIT  # member 0 is done; the others still train


def test_the_bottom_member_copies_a_top_one_at_the_same_epoch():
    space = Space(lr=Float(0.01, 1.0, mutable=True))
    history = [segment_trial(n, n, 0, value=v) for n, v in enumerate((0.9, 0.1, 0.5, 0.6))]
    strategy = PBT(population=4, resample_probability=0.0)
    strategy.start(space, direction="maximize", seed=0, trials=history, settings={"epochs": 6})
    proposals = {p.attrs["member"]: p for p in (strategy.ask(n, space) for n in range(4, 8))}
    assert proposals[1].attrs["copied_from"] == 0  # bottom (0.1) copies top (0.9)
    assert proposals[1].attrs["segment"]["restore"] == 0
    assert proposals[1].params["lr"] in (pytest.approx(0.08), pytest.approx(0.12))
    assert all(proposals[m].attrs["copied_from"] is None for m in (0, 2, 3))


@pytest.mark.parametrize("url", ["memory://pbt-artifacts", "folder", "file-url"])
def test_artifacts_store_checkpoints_under_any_fsspec_url(url, tmp_path):
    url = {"folder": str(tmp_path / "a"), "file-url": f"file://{tmp_path}/b"}.get(url, url)
    artifacts = Artifacts(url)
    source = tmp_path / "src"
    source.mkdir()
    (source / "model.weights.h5").write_bytes(b"weights")
    artifacts.put(7, source)
    artifacts.put(3, source)
    assert artifacts.numbers() == [3, 7] and artifacts.exists(7)
    artifacts.get(7, tmp_path / "dst")
    assert (tmp_path / "dst" / "model.weights.h5").read_bytes() == b"weights"
    artifacts.delete(7)
    assert artifacts.numbers() == [3]
    with pytest.raises(FileNotFoundError, match="no checkpoint of trial 7"):
        artifacts.get(7, tmp_path / "again")
    artifacts.delete(3)


def test_cleanup_keeps_what_a_lagging_member_may_still_copy(tmp_path):
    """Member 3's first segment is still queued: the epoch-2 checkpoints must stay."""
    space = Space(lr=Float(0.01, 1.0, mutable=True))
    artifacts = Artifacts(str(tmp_path))
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "model.weights.h5").write_bytes(b"w")
    history = [segment_trial(n, n, 0, value=0.5) for n in range(3)]
    history += [segment_trial(3, 3, 0, state=TrialState.QUEUED, value=None)]
    history += [segment_trial(4 + n, n, 2, value=0.6, restore=n) for n in range(3)]
    for trial in history:
        if trial.state == TrialState.COMPLETE:
            artifacts.put(trial.number, folder)
    strategy = PBT(population=4)
    strategy.start(space, direction="maximize", seed=0, trials=history,
                   settings={"epochs": 6, "artifacts": str(tmp_path)})
    assert artifacts.numbers() == [0, 1, 2, 4, 5, 6]  # member 3 will compare at epoch 2
    for number, start, restore in ((3, 0, None), (7, 2, 3)):  # a worker checkpoints, then ends
        artifacts.put(number, folder)
        strategy.tell(segment_trial(number, 3, start, value=0.4, restore=restore))
    assert artifacts.numbers() == [4, 5, 6, 7]  # everyone is past epoch 2 now


@pytest.mark.parametrize("taken", [False, True])
def test_a_segment_taken_from_its_worker_leaves_no_live_model(tmp_path, taken):
    """A segment whose result the study refused (its trial requeued meanwhile) runs again
    elsewhere and writes the checkpoint its member goes on from: the model this worker
    trained is not kept."""
    import keras

    from tuner import Storage, StudyDefinition
    from tuner.keras_tuner import HyperModel
    from tuner.strategies import PBTSegment
    from workers.loop import Worker

    storage = Storage(f"sqlite:///{tmp_path}/t.db")
    claimed = {}

    class Taken(HyperModel):
        def build(self, hp):
            model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
            model.compile(optimizer=keras.optimizers.Adam(hp["lr"]), loss="mse")
            return model

        def fit(self, hp, model, *args, **kwargs):
            history = model.fit(*args, **kwargs)
            if taken:  # as a coordinator does with a trial whose lease ran out
                storage.release_trial(claimed["trial"].id, claimed["worker"])
            return history

    data = ((np.random.rand(16, 4), np.random.rand(16, 2)),
            (np.random.rand(8, 4), np.random.rand(8, 2)))
    space = Space(lr=Float(1e-3, 1e-2, mutable=True))
    definition = StudyDefinition(hypermodel=Taken(), load_data=lambda: data, space=space,
                                 metric="val_loss", direction="minimize", epochs=2)
    study = storage.create_study(
        "pbt", metric="val_loss", direction="minimize", strategy="pbt", seed=0,
        space=space.to_dict(), settings={**definition.settings,
                                         "artifacts": str(tmp_path / "artifacts")})
    segment = PBTSegment(member=0, generation=0, copied_from=None, start=0, epochs=2,
                         restore=None)
    storage.enqueue_trial(study.id, 0, {"lr": 0.005}, attrs=segment.to_attrs())
    worker = Worker(storage, "pbt", definition)
    claimed["worker"] = worker.register()
    claimed["trial"] = storage.claim_trial(study.id, claimed["worker"])
    worker._run_one(worker._context(study.id), claimed["trial"], claimed["worker"])
    state = storage.trials(study.id)[0].state
    assert state == (TrialState.QUEUED if taken else TrialState.COMPLETE)
    assert worker._live.members() == ({} if taken else {study.id: [0]})
