"""A small population-based training study: learning rate and dropout are mutable."""

import os

import keras
from sklearn.datasets import load_digits

from tuner import Choice, Float, Space

epochs = 6
batch_size = 64

space = Space(
    units=Choice([32, 64]),  # architecture: fixed per member
    dropout=Float(0.0, 0.5, mutable=True),
    learning_rate=Float(1e-5, 1e-1, log=True, mutable=True),
)


def load_data():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    return (x[:600], y[:600]), (x[600:900], y[600:900])


def build_model(hp):
    if log := os.environ.get("TUNER_TEST_BUILD_LOG"):  # tests count the models built
        with open(log, "a") as out:
            out.write(f"{os.getpid()}\n")
    model = keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(hp["units"], activation="relu"),
        keras.layers.Dropout(hp["dropout"]),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(hp["learning_rate"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
