"""Checkpoints of a Keras model: its weights and its optimizer's state, in one file."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

_CHECKPOINT = "model.weights.h5"  # Keras keeps the optimizer's state in it too


def save_checkpoint(model: keras.Model, folder: Path) -> None:
    model.save_weights(folder / _CHECKPOINT)


def load_checkpoint(model: keras.Model, folder: Path) -> None:
    """Weights and optimizer state into a model freshly built for the (new) configuration.

    The learning rate belongs to the configuration, not the checkpoint: it is put back
    after loading, so an explored value takes effect on the live optimizer.
    """
    model.optimizer.build(model.trainable_variables)
    configured = [(v, keras.ops.convert_to_numpy(v)) for v in model.optimizer.variables
                  if v.path.endswith("learning_rate")]
    model.load_weights(folder / _CHECKPOINT)
    for variable, value in configured:
        variable.assign(value)


# A trial's best-epoch weights, kept so a study hands back trained models: the weights as
# NumPy arrays in `model.get_weights()` order (no optimizer state: a best model is for use,
# not for more training), and the model's build config for one that builds lazily.
_BEST_WEIGHTS, _BUILD_CONFIG = "weights.npz", "build_config.json"


def save_best(model: keras.Model, weights: list[np.ndarray], folder: Path) -> None:
    np.savez(folder / _BEST_WEIGHTS, *weights)
    config = model.get_build_config() if hasattr(model, "get_build_config") else None
    if config is not None:
        (folder / _BUILD_CONFIG).write_text(json.dumps(config))


def load_best(model: keras.Model, folder: Path) -> keras.Model:
    """`model`, freshly built for the trial's configuration, with the trial's best weights."""
    if not model.built and (folder / _BUILD_CONFIG).exists():
        model.build_from_config(json.loads((folder / _BUILD_CONFIG).read_text()))
    with np.load(folder / _BEST_WEIGHTS) as stored:
        model.set_weights([stored[f"arr_{i}"] for i in range(len(stored.files))])
    return model
