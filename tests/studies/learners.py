"""Good and hopeless configurations, each kind training identically: softmax regression
from zero weights, full batch, no shuffling. `lr=1e-7` cannot learn in 9 epochs."""

import keras
import keras_tuner
from sklearn.datasets import load_digits

from tuner import Choice, Int, Space

epochs = 9
patience = None  # no Keras EarlyStopping: only the early-stop rule across trials acts

space = Space(lr=Choice([3e-2, 1e-7]), rep=Int(0, 3))  # a grid: 4 good, then 4 hopeless


def load_data():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    return (x[:300], y[:300]), (x[300:500], y[300:500])


class SoftmaxRegression(keras_tuner.HyperModel):
    def build(self, hp):
        model = keras.Sequential([
            keras.Input(shape=(64,)),
            keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros"),
        ])
        model.compile(optimizer=keras.optimizers.Adam(hp["lr"]),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(*args, batch_size=300, shuffle=False, **kwargs)


hypermodel = SoftmaxRegression()
