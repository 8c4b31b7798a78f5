"""A trivial objective (no Keras): for tests of many workers, many trials and faults.

TUNER_TEST_SLEEP makes each trial last that many seconds (so one can be killed midway);
TUNER_TEST_RUN_LOG names a file that gets one JSON line per trial run to its end.
"""

import json
import os
import time

from tuner import Float, Int, Space

metric = "score"
space = Space(i=Int(0, 999), x=Float(0.0, 1.0))


def objective(hp):
    time.sleep(float(os.environ.get("TUNER_TEST_SLEEP", "0")))
    log = os.environ.get("TUNER_TEST_RUN_LOG")
    if log:  # one short O_APPEND write: whole lines, however many processes write
        with open(log, "a") as out:
            out.write(json.dumps({"pid": os.getpid(), "params": hp.values}) + "\n")
    return hp["x"] - abs(hp["i"] - 500) / 1000
