"""Tune a small MLP on scikit-learn's handwritten digits (ships with scikit-learn: offline).

    tuner run studies/digits_mlp.py --strategy bayes --trials 20 --workers 2

Every strategy runs it: grid, random, bayes, bayes-gp and pbt.
"""

import keras
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from tuner import Choice, Float, Int, Space

# What "best" means: the highest validation accuracy of any epoch.
metric = "val_accuracy"
direction = "maximize"

# How each trial trains. EarlyStopping stops a trial `patience` epochs after its best.
epochs = 20
batch_size = 32
patience = 3

# The search space: one or two hidden layers; the second exists only when layers == 2.
# Every parameter takes finitely many values (units: powers of two; log with step=2 is a
# factor), so a grid can walk it too; `mutable` ones may change while a model trains
# (population-based training explores them).
space = Space(
    layers=Int(1, 2),
    units_1=Int(16, 256, step=2, log=True),
    units_2=Int(16, 256, step=2, log=True, when={"layers": [2]}),
    activation=Choice(["relu", "tanh"]),
    dropout=Float(0.0, 0.5, step=0.1, mutable=True),
    learning_rate=Choice([1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1], mutable=True),
)


def load_data():
    """8x8 digit images as 64 features scaled to [0, 1], with a fixed 25% validation split."""
    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x / 16.0, y, test_size=0.25, random_state=0, stratify=y
    )
    return (x_train, y_train), (x_val, y_val)


def build_model(hp):
    """One configuration's model: `hp` holds this trial's values of the space above."""
    model = keras.Sequential([keras.Input(shape=(64,))])
    for i in range(1, hp["layers"] + 1):
        model.add(keras.layers.Dense(hp[f"units_{i}"], activation=hp["activation"]))
        model.add(keras.layers.Dropout(hp["dropout"]))
    model.add(keras.layers.Dense(10, activation="softmax"))
    model.compile(
        optimizer=keras.optimizers.Adam(hp["learning_rate"]),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
