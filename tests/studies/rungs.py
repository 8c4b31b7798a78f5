"""Early stopping by promotion, trial by trial: under a grid, a good learner, a slower
one, then four that cannot learn (softmax regression from zero weights, full batch, no
shuffling; each step paused 0.05 s so a run can be stopped mid-bracket). Rungs at epochs
2 and 4: after one step from zero weights every learning rate predicts alike."""

import time

import keras
from sklearn.datasets import load_digits

from tuner import Choice, Space
from tuner.early_stop import ASHA

epochs = 8
patience = None  # only the early-stop rule across trials acts
batch_size = 300
early_stop = ASHA(min_epochs=2, reduction_factor=2, promotion=True)

space = Space(lr=Choice([3e-2, 1e-2, 1e-7, 2e-7, 3e-7, 4e-7]))


class Pause(keras.layers.Layer):
    def call(self, x, training=None):
        if training:
            time.sleep(0.05)
        return x


def load_data():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    return (x[:300], y[:300]), (x[300:500], y[300:500])


def build_model(hp):
    model = keras.Sequential([
        keras.Input(shape=(64,)),
        Pause(),
        keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(hp["lr"]),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  run_eagerly=True)
    return model
