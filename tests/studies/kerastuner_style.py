"""A build_model(hp) written for KerasTuner, unchanged: define-by-run with a conditional scope."""

import keras
from sklearn.datasets import load_digits

epochs = 2
batch_size = 64


def load_data():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    return (x[:600], y[:600]), (x[600:900], y[600:900])


def build_model(hp):
    model = keras.Sequential()
    model.add(keras.Input(shape=(64,)))
    model_type = hp.Choice("model_type", ["shallow", "deep"], default="shallow")
    with hp.conditional_scope("model_type", ["shallow"]):
        if model_type == "shallow":
            model.add(keras.layers.Dense(hp.Int("units", 16, 64, step=16), activation="relu"))
    with hp.conditional_scope("model_type", ["deep"]):
        if model_type == "deep":
            for i in range(hp.Int("num_layers", 2, 3)):
                model.add(keras.layers.Dense(
                    hp.Int(f"units_{i}", 8, 64, step=2, sampling="log"), activation="relu"))
    if hp.Boolean("dropout"):
        model.add(keras.layers.Dropout(rate=0.25))
    model.add(keras.layers.Dense(10, activation="softmax"))
    lr = hp.Float("lr", min_value=1e-3, max_value=3e-2, sampling="log")
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model
