"""The objective of benchmarks/throughput.py: two floats, a quadratic, no Keras, no sleep.

A trial costs next to nothing, so what a run measures is the coordination around it:
the database round trips, the sampling, the processes. The tuner imports this file as a
study (`objective(hp)`); Optuna's processes call `optuna_objective(trial)`, which asks
Optuna for the same two parameters and calls the same function.
"""

from tuner import Float, Space

metric = "score"
direction = "minimize"
space = Space(x=Float(0.0, 1.0), y=Float(0.0, 1.0))


def objective(hp):
    return (hp["x"] - 0.3) ** 2 + (hp["y"] - 0.7) ** 2


def optuna_objective(trial):
    return objective({"x": trial.suggest_float("x", 0.0, 1.0),
                      "y": trial.suggest_float("y", 0.0, 1.0)})
