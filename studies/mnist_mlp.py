"""The reference network: an MLP with hidden layers searched around 300 and 100 units,
softmax output and cross-entropy, on MNIST. Downloads MNIST, so it needs the network.

    tuner run studies/mnist_mlp.py --strategy bayes --trials 30
"""

import keras

from tuner import Choice, Float, Int, Space

metric = "val_accuracy"
direction = "maximize"
epochs = 15
batch_size = 128
patience = 3

space = Space(
    units_1=Int(200, 400, step=25),  # the reference: 300
    units_2=Int(50, 150, step=25),   # the reference: 100
    activation=Choice(["relu", "tanh"]),
    dropout=Float(0.0, 0.4),
    learning_rate=Float(1e-4, 1e-2, log=True),
)


def load_data():
    """60,000 training images split 50,000 / 10,000 for validation, pixels scaled to [0, 1]."""
    try:
        (x, y), _ = keras.datasets.mnist.load_data()
    except Exception as exc:
        raise RuntimeError(
            f"MNIST could not be downloaded ({exc}); this study needs the network. "
            "studies/digits_mlp.py runs offline."
        ) from None
    x = x.reshape(-1, 784).astype("float32") / 255.0
    return (x[:50_000], y[:50_000]), (x[50_000:], y[50_000:])


def build_model(hp):
    model = keras.Sequential([
        keras.Input(shape=(784,)),
        keras.layers.Dense(hp["units_1"], activation=hp["activation"]),
        keras.layers.Dropout(hp["dropout"]),
        keras.layers.Dense(hp["units_2"], activation=hp["activation"]),
        keras.layers.Dropout(hp["dropout"]),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(
        optimizer=keras.optimizers.Adam(hp["learning_rate"]),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
