"""Resumable trials' parts: the interval a user writes, and what a checkpoint carries of
the callbacks that judge a trial (Keras EarlyStopping's best and wait, the curve)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from tuner.checkpointing import CheckpointEvery
from workers.resume import CallbackState, fingerprint
from workers.runner import BestWeights, EpochReporter


@pytest.mark.parametrize("text, expected", [
    ("60s", CheckpointEvery(seconds=60)), ("5m", CheckpointEvery(seconds=300)),
    ("2.5 seconds", CheckpointEvery(seconds=2.5)),
    ("3 epochs", CheckpointEvery(seconds=None, epochs=3)),
    ("1e", CheckpointEvery(seconds=None, epochs=1)), ("off", None),
])
def test_intervals_read_as_written(text, expected):
    assert CheckpointEvery.parse(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "-5s", "0s", "1.5 epochs", "5h"])
def test_a_bad_interval_is_one_clear_error(text):
    with pytest.raises(ValueError, match="checkpoint_every"):
        CheckpointEvery.parse(text)


def model(units: int = 8) -> keras.Model:
    built = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(units),
                              keras.layers.Dense(10, activation="softmax")])
    built.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return built


def test_early_stopping_and_the_curve_come_back_as_they_were():
    x, y = load_digits(return_X_y=True)
    first = model()
    reporter, keeper = EpochReporter(None, "val_accuracy"), BestWeights("val_accuracy", 1)
    stopping = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=50,
                                             restore_best_weights=True)
    first.fit(x[:200] / 16, y[:200], validation_data=(x[200:300] / 16, y[200:300]), epochs=6,
              verbose=0, callbacks=[reporter, keeper, stopping])
    state, arrays = CallbackState(reporter, keeper, stopping).capture(5, first)

    second = model()
    again = (EpochReporter(None, "val_accuracy"), BestWeights("val_accuracy", 1),
             keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=50,
                                           restore_best_weights=True))
    restored = CallbackState(*again)
    restored.restore(state, arrays, second)
    again[2].set_model(second)
    again[2].on_train_begin()  # what fit does first: it resets EarlyStopping...
    restored.restore_early_stopping(state, arrays)  # ...and the checkpoint's state returns
    assert again[0].values == reporter.values and again[1].value == keeper.value
    assert (again[2].wait, again[2].best, again[2].best_epoch) == (
        stopping.wait, stopping.best, stopping.best_epoch)
    assert all(np.array_equal(a, b) for a, b in zip(again[2].best_weights,
                                                    stopping.best_weights, strict=True))
    assert fingerprint(second) == fingerprint(first) != fingerprint(model(units=9))
