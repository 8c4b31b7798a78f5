"""The storage layer's guarantees, on SQLite, PostgreSQL and MariaDB alike."""

from __future__ import annotations

import math
import socket
import threading
import time

import pytest
import sqlalchemy as sa

from tests.conftest import stored_trial
from tuner.errors import StorageError, StudyExists, StudyNotFound
from tuner.states import TrialState
from tuner.storage import Storage


def make_study(storage: Storage, name: str = "s", direction: str = "maximize"):
    return storage.create_study(
        name, metric="val_accuracy", direction=direction, strategy="random", seed=1,
        space={"x": {"type": "int", "low": 0, "high": 9}}, settings={"epochs": 2},
    )


def worker(storage: Storage, study_id: int) -> int:
    return storage.register_worker(host="test-host", pid=1, device="cpu", study_id=study_id)


def test_schema_is_created_on_first_use_and_stamped(storage_url):
    Storage(storage_url)
    engine = sa.create_engine(storage_url)
    with engine.connect() as conn:
        version = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert version == "0005"
    assert {"studies", "trials", "trial_epochs", "workers"} <= tables
    Storage(storage_url)  # a second open finds the schema current and changes nothing


def test_studies_create_list_get_delete(storage_url):
    storage = Storage(storage_url)
    study = make_study(storage, "first")
    make_study(storage, "second")
    with pytest.raises(StudyExists):
        make_study(storage, "first")
    assert [s.study.name for s in storage.list_studies()] == ["first", "second"]
    assert storage.get_study("first").id == study.id
    storage.enqueue_trial(study.id, 0, {"x": 1})
    storage.delete_study("first")
    with pytest.raises(StudyNotFound, match="studies there: second"):
        storage.get_study("first")


def test_enqueue_respects_budget_and_unique_numbers(storage_url):
    storage = Storage(storage_url)
    study = make_study(storage)
    assert storage.enqueue_trial(study.id, 0, {"x": 1}, budget=2).number == 0
    assert storage.enqueue_trial(study.id, 0, {"x": 2}, budget=2) is None  # number taken
    assert storage.enqueue_trial(study.id, 1, {"x": 2}, budget=2).number == 1
    assert storage.enqueue_trial(study.id, 2, {"x": 3}, budget=2) is None  # budget spent
    assert storage.next_number(study.id) == 2
    assert storage.counts(study.id)[TrialState.QUEUED] == 2


def test_concurrent_claims_take_each_trial_exactly_once(storage_url):
    storage = Storage(storage_url)
    study = make_study(storage)
    for n in range(40):
        storage.enqueue_trial(study.id, n, {"x": n % 10})
    claimed: list[list[int]] = [[] for _ in range(6)]

    def claim_all(slot: int) -> None:
        own = Storage(storage_url)
        wid = worker(own, study.id)
        while (trial := own.claim_trial(study.id, wid)) is not None:
            claimed[slot].append(trial.number)
            assert own.finish_trial(trial.id, wid, TrialState.COMPLETE, value=1.0)
        own.dispose()

    threads = [threading.Thread(target=claim_all, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = sorted(n for slot in claimed for n in slot)
    assert numbers == list(range(40))
    assert storage.counts(study.id)[TrialState.COMPLETE] == 40


def test_only_the_holder_finishes_a_running_trial(storage_url):
    storage = Storage(storage_url)
    study = make_study(storage)
    first, second = worker(storage, study.id), worker(storage, study.id)
    queued = storage.enqueue_trial(study.id, 0, {"x": 1})
    assert not storage.finish_trial(queued.id, first, TrialState.COMPLETE, value=1.0)  # QUEUED
    trial = storage.claim_trial(study.id, first)
    assert trial.state == TrialState.RUNNING and trial.worker_id == first
    assert not storage.finish_trial(trial.id, second, TrialState.COMPLETE, value=0.5)
    assert storage.finish_trial(trial.id, first, TrialState.COMPLETE, value=0.9, best_epoch=1)
    assert not storage.finish_trial(trial.id, first, TrialState.FAILED, error="again")
    final = stored_trial(storage, trial.id)
    assert (final.state, final.value, final.best_epoch, final.error) == (
        TrialState.COMPLETE, 0.9, 1, None)
    with pytest.raises(ValueError, match="not a final state"):
        storage.finish_trial(trial.id, first, TrialState.QUEUED)


def test_lost_lease_requeues_then_fails_and_late_results_are_refused(storage_url):
    storage = Storage(storage_url)
    study = make_study(storage)
    trial = storage.enqueue_trial(study.id, 0, {"x": 1})
    for attempt in range(3):
        wid = worker(storage, study.id)
        claimed = storage.claim_trial(study.id, wid)
        assert claimed.id == trial.id
        assert storage.report_epoch(trial.id, wid, 0, 0.5, {"val_accuracy": 0.5})
        time.sleep(0.05)
        lost = storage.requeue_lost(study.id, grace=0.01, max_retries=2)
        assert lost == [0]
        # the worker that lost its lease comes back with a result: refused, not counted
        assert not storage.report_epoch(trial.id, wid, 1, 0.6, {"val_accuracy": 0.6})
        assert not storage.finish_trial(trial.id, wid, TrialState.COMPLETE, value=0.6)
        state = stored_trial(storage, trial.id)
        if attempt < 2:
            assert (state.state, state.retries) == (TrialState.QUEUED, attempt + 1)
            assert storage.epochs([trial.id])[trial.id] == []  # the lost attempt's epochs go
    assert state.state == TrialState.FAILED
    assert "stopped heartbeating" in state.error and "3 attempts" in state.error


def test_heartbeats_keep_a_lease(storage_url):
    storage = Storage(storage_url)
    study = make_study(storage)
    storage.enqueue_trial(study.id, 0, {"x": 1})
    wid = worker(storage, study.id)
    storage.claim_trial(study.id, wid)
    storage.heartbeat(wid)
    assert storage.requeue_lost(study.id, grace=30, max_retries=2) == []
    assert storage.counts(study.id)[TrialState.RUNNING] == 1


def test_release_worker_requeues_without_counting_a_retry_on_clean_stop(storage_url):
    storage = Storage(storage_url)
    study = make_study(storage)
    storage.enqueue_trial(study.id, 0, {"x": 1})
    wid = worker(storage, study.id)
    trial = storage.claim_trial(study.id, wid)
    assert storage.release_worker(wid, reason="stopped") == [0]
    after = stored_trial(storage, trial.id)
    assert (after.state, after.retries, after.worker_id) == (TrialState.QUEUED, 0, None)
    assert storage.workers()[0].stopped_at is not None


def test_epochs_values_and_best_trial(storage_url):
    storage = Storage(storage_url)
    for direction, expected in (("maximize", 0.9), ("minimize", 0.2)):
        study = make_study(storage, direction, direction)
        wid = worker(storage, study.id)
        for n, value in enumerate((0.2, 0.9, float("nan"))):
            storage.enqueue_trial(study.id, n, {"x": n})
            trial = storage.claim_trial(study.id, wid)
            storage.report_epoch(trial.id, wid, 0, value, {"val_accuracy": value, "loss": 1.0})
            storage.finish_trial(trial.id, wid, TrialState.COMPLETE, value=value, best_epoch=0)
        best = storage.best_trial(study)
        assert best.value == pytest.approx(expected)
        nan_trial = storage.trials(study.id, numbers=[2])[0]
        assert nan_trial.value is None  # NaN is stored as NULL everywhere
        epochs = storage.epochs([nan_trial.id])[nan_trial.id]
        assert epochs[0]["metrics"] == {"val_accuracy": None, "loss": 1.0}
        summary = {s.study.name: s for s in storage.list_studies()}[direction]
        assert math.isclose(summary.best_value, expected, rel_tol=1e-6)
        assert summary.counts[TrialState.COMPLETE] == 3


def test_space_grows_by_appending(storage_url):
    storage = Storage(storage_url)
    study = make_study(storage)
    storage.update_space(study.id, {"x": {"type": "int", "low": 5, "high": 6},
                                    "y": {"type": "bool"}})
    space = storage.study_by_id(study.id).space
    assert list(space) == ["x", "y"] and space["x"]["low"] == 0  # known ones unchanged


def test_database_time_is_used():
    storage = Storage("sqlite://")
    assert abs(storage.now() - time.time()) < 5


@pytest.mark.parametrize("url, message", [
    ("postgresql+psycopg://postgres@127.0.0.1:1/nothing", "database error on postgresql"),
    ("not a url", "is not a database URL"),
    ("nosuchdb://x/y", "no driver"),
])
def test_unusable_databases_give_one_clear_error(url, message):
    with pytest.raises(StorageError, match=message):
        Storage(url)


def test_an_older_schema_is_upgraded_on_first_use_without_losing_data(storage_url):
    """A database made by the first release (revision 0001) gains `trials.attrs`."""
    from alembic.command import upgrade
    from alembic.config import Config

    from tuner.storage.engine import MIGRATIONS

    engine = sa.create_engine(storage_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        upgrade(config, "0001")
        conn.exec_driver_sql(
            "INSERT INTO studies (name, metric, direction, strategy, seed, space, settings, "
            "created_at) VALUES ('old', 'val_accuracy', 'maximize', 'random', 1, '{}', "
            "'{\"epochs\": 2}', 0)")
        conn.exec_driver_sql(
            "INSERT INTO trials (study_id, number, state, params, value, epochs, retries, "
            "queued_at) SELECT id, 0, 'COMPLETE', '{\"x\": 1}', 0.5, 2, 0, 0 FROM studies")
    engine.dispose()
    storage = Storage(storage_url)
    study = storage.get_study("old")
    [trial] = storage.trials(study.id)
    assert (trial.value, trial.params, trial.attrs) == (0.5, {"x": 1}, None)
    assert storage.enqueue_trial(study.id, 1, {"x": 2}, attrs={"member": 0}).attrs == {
        "member": 0}


@pytest.mark.parametrize("url, limit", [
    ("postgresql+psycopg://u@127.0.0.1:{port}/db", 15.0),  # the default connect timeout
    ("mysql+pymysql://u@127.0.0.1:{port}/db?read_timeout=2", 6.0),  # the URL's own wins
])
def test_a_server_that_never_answers_is_an_error_not_a_hang(url, limit):
    """A socket that accepts and then stays silent (a server mid-restart, a half-open
    connection) must end in a clear error: a worker hung on it would hold its trial."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        start = time.monotonic()
        with pytest.raises(StorageError, match="database error"):
            Storage(url.format(port=silent.getsockname()[1]))
        assert time.monotonic() - start < limit


def test_a_requeued_trial_keeps_the_epochs_its_checkpoint_holds(storage_url):
    storage = Storage(storage_url)
    study = make_study(storage)
    trial = storage.enqueue_trial(study.id, 0, {"x": 1})
    wid = worker(storage, study.id)
    storage.claim_trial(study.id, wid)
    for epoch in range(4):
        assert storage.report_epoch(trial.id, wid, epoch, epoch / 10, {"val_accuracy": epoch})
        if epoch == 1:
            assert storage.checkpoint_trial(trial.id, wid, epoch)
    assert storage.release_worker(wid, reason="killed", max_retries=2) == [0]
    after = stored_trial(storage, trial.id)
    assert (after.state, after.epochs, after.checkpoint_epoch) == (TrialState.QUEUED, 2, 1)
    assert [e["epoch"] for e in storage.epochs([trial.id])[trial.id]] == [0, 1]
    assert not storage.checkpoint_trial(trial.id, wid, 3)  # the lost worker's, refused

    # The next worker goes on from epoch 2; one that cannot use the checkpoint starts over.
    second = worker(storage, study.id)
    assert storage.claim_trial(study.id, second).checkpoint_epoch == 1
    assert storage.report_epoch(trial.id, second, 2, 0.2, {"val_accuracy": 2})
    assert [e["epoch"] for e in storage.epochs([trial.id])[trial.id]] == [0, 1, 2]
    assert storage.restart_trial(trial.id, second)
    after = stored_trial(storage, trial.id)
    assert (after.epochs, after.checkpoint_epoch) == (0, None)
    assert storage.epochs([trial.id])[trial.id] == []
