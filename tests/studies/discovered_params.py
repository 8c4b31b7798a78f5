"""A KerasTuner HyperModel whose fit() declares parameters that building the model with
defaults never meets: they join the study's space only once the first trial has run."""

import keras
import keras_tuner
from sklearn.datasets import load_digits

epochs = 1


def load_data():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    return (x[:300], y[:300]), (x[300:500], y[300:500])


class DigitsHyperModel(keras_tuner.HyperModel):
    def __init__(self, units=(16, 32), batch_sizes=(8, 16, 32)):
        super().__init__()
        self.units, self.batch_sizes = list(units), list(batch_sizes)

    def build(self, hp):
        model = keras.Sequential([
            keras.Input(shape=(64,)),
            keras.layers.Dense(hp.Choice("units", self.units), activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(*args, batch_size=hp.Choice("batch_size", self.batch_sizes),
                         shuffle=hp.Boolean("shuffle"), **kwargs)


hypermodel = DigitsHyperModel()
