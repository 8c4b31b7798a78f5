"""Two objectives without Keras (Schaffer's problem, with a conditional parameter): cheap
trials for multi-objective strategies. TUNER_TEST_CONSTRAINED=B adds `f2 <= B`."""

import os

from tuner import Choice, Float, Space

metric = ["f1", "f2"]
direction = ["minimize", "minimize"]
if os.environ.get("TUNER_TEST_CONSTRAINED"):
    constraints = {"f2": ("<=", float(os.environ["TUNER_TEST_CONSTRAINED"]))}

space = Space(
    x=Float(-2.0, 4.0, step=0.125),
    shift=Choice(["none", "some"]),
    by=Float(0.0, 1.0, step=0.25, when={"shift": ["some"]}),
)


def objective(hp):
    x = hp["x"] + (hp["by"] if hp["shift"] == "some" else 0.0)
    return {"f1": x * x, "f2": (x - 2) ** 2}
