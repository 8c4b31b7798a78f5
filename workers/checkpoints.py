"""Checkpoints of a Keras model: its weights and its optimizer's state, in one file."""

from __future__ import annotations

from pathlib import Path

import keras

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
