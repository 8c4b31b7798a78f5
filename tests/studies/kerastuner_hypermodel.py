"""A keras_tuner.HyperModel subclass with its own fit (tuning the batch size), unchanged."""

import keras
import keras_tuner
from sklearn.datasets import load_digits

epochs = 2


def load_data():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    return (x[:600], y[:600]), (x[600:900], y[600:900])


class DigitsHyperModel(keras_tuner.HyperModel):
    def build(self, hp):
        model = keras.Sequential([
            keras.Input(shape=(64,)),
            keras.layers.Dense(hp.Int("units", 16, 64, step=16), activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(*args, batch_size=hp.Choice("batch_size", [32, 64]), **kwargs)


hypermodel = DigitsHyperModel()
