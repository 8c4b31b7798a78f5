"""A toy problem for the evolution strategy (no Keras): eight digits to match to a hidden
target, one step at a time, plus a conditional bonus. Random search rarely lands near the
target in a few dozen trials; mutating the best configurations walks there.

TUNER_TEST_SLEEP makes each trial last that many seconds (so a run can be killed midway).
"""

import os
import time

from tuner import Choice, Float, Int, Space

metric = "score"
TARGET = (7, 2, 9, 4, 0, 6, 3, 8)

space = Space(
    **{f"d{i}": Int(0, 9) for i in range(len(TARGET))},
    mode=Choice(["plain", "bonus"]),
    bonus=Float(0.0, 1.0, when={"mode": ["bonus"]}),
)


def objective(hp):
    time.sleep(float(os.environ.get("TUNER_TEST_SLEEP", "0")))
    score = -sum(abs(hp[f"d{i}"] - t) for i, t in enumerate(TARGET))
    if hp["mode"] == "bonus":
        score += 2 * hp["bonus"]
    return score
