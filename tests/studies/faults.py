"""Each value of `mode` breaks a trial in its own way; a grid over it runs each once."""

import keras
from sklearn.datasets import load_digits

from tuner import Choice, Space

epochs = 2
batch_size = 64
patience = None

space = Space(mode=Choice(["ok", "raise", "nan", "oom", "ok2"]))


def load_data():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    return (x[:300], y[:300]), (x[300:500], y[300:500])


def build_model(hp):
    mode = hp["mode"]
    if mode == "raise":
        raise ValueError("this configuration cannot be built")
    width = 2**31 if mode == "oom" else 16  # 64 x 2^31 floats: 512 GiB, refused by TensorFlow
    layers = [keras.Input(shape=(64,)), keras.layers.Dense(width, activation="relu"),
              keras.layers.Dense(10, "softmax")]
    if mode == "nan":  # predictions, hence the loss, become NaN
        layers.append(keras.layers.Lambda(lambda p: p * float("nan")))
    model = keras.Sequential(layers)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
