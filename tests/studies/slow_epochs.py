"""Epochs slow enough to kill a worker mid-trial: a small MLP on 300 digits, one batch an
epoch, each step paused 0.1 s (the model runs eagerly)."""

import json
import os
import time

import keras
from sklearn.datasets import load_digits

from tuner import Float, Space

metric = "val_accuracy"
epochs = 24
batch_size = 300
patience = 20

space = Space(learning_rate=Float(1e-3, 1e-2, log=True))


class Pause(keras.layers.Layer):
    def call(self, x, training=None):
        if training:
            time.sleep(0.1)
        return x


def load_data():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    return (x[:300], y[:300]), (x[300:500], y[300:500])


def build_model(hp):
    if os.environ.get("TUNER_TEST_BUILD_LOG"):  # lets tests count how often each trial ran
        with open(os.environ["TUNER_TEST_BUILD_LOG"], "a") as log:
            log.write(json.dumps({"pid": os.getpid(), "params": hp.values}) + "\n")
    model = keras.Sequential([
        keras.Input(shape=(64,)),
        keras.layers.Dense(16, activation="relu"),
        Pause(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(hp["learning_rate"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  run_eagerly=True)
    return model
