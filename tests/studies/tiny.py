"""A fast study for tests: a small MLP on 600 digits, 2 epochs."""

import json
import os

import keras
from sklearn.datasets import load_digits

from tuner import Choice, Float, Int, Space

metric = "val_accuracy"
epochs = 2
batch_size = 64
patience = 2

space = Space(
    units=Int(8, 64, log=True),
    activation=Choice(["relu", "tanh"]),
    learning_rate=Float(1e-3, 3e-2, log=True),
)


def load_data():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    return (x[:600], y[:600]), (x[600:900], y[600:900])


def build_model(hp):
    if os.environ.get("TUNER_TEST_BUILD_LOG"):  # lets tests count how often each trial ran
        with open(os.environ["TUNER_TEST_BUILD_LOG"], "a") as log:
            entry = {"pid": os.getpid(), "params": hp.values, "backend": keras.backend.backend()}
            log.write(json.dumps(entry) + "\n")
    model = keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(hp["units"], activation=hp["activation"]),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(hp["learning_rate"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
