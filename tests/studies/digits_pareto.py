"""Accuracy against size: a small MLP on 600 digits, 2 epochs, judged on two objectives.

TUNER_TEST_CONSTRAINED=N adds the constraint params <= N.
"""

import os

import keras
from sklearn.datasets import load_digits

from tuner import Float, Int, Space

metric = ["val_accuracy", "params"]
direction = ["maximize", "minimize"]
epochs = 2
batch_size = 64
patience = 2
if os.environ.get("TUNER_TEST_CONSTRAINED"):
    constraints = {"params": ("<=", int(os.environ["TUNER_TEST_CONSTRAINED"]))}

space = Space(
    layers=Int(1, 2),
    units=Int(2, 64, log=True),
    units_2=Int(2, 32, log=True, when={"layers": [2]}),
    learning_rate=Float(3e-3, 3e-2, log=True),
)


def load_data():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    return (x[:600], y[:600]), (x[600:900], y[600:900])


def build_model(hp):
    model = keras.Sequential([keras.Input(shape=(64,)),
                              keras.layers.Dense(hp["units"], activation="relu")])
    if hp["layers"] == 2:
        model.add(keras.layers.Dense(hp["units_2"], activation="relu"))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(hp["learning_rate"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
