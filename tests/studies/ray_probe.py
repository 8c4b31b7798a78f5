"""A trivial objective that says where it ran: for the Ray executor's tests.

Each run to its end appends one JSON line to TUNER_TEST_RUN_LOG: the parameters, the
process, the node, the GPUs Ray gave it and the path this file was loaded from.
TUNER_TEST_SLEEP makes each trial last that many seconds.
"""

import json
import os
import time

from tuner import Float, Int, Space

metric = "score"
space = Space(i=Int(0, 999), x=Float(0.0, 1.0))


def objective(hp):
    import ray

    time.sleep(float(os.environ.get("TUNER_TEST_SLEEP", "0")))
    with open(os.environ["TUNER_TEST_RUN_LOG"], "a") as out:  # one short O_APPEND write
        out.write(json.dumps({
            "params": hp.values, "pid": os.getpid(), "file": os.path.abspath(__file__),
            "node": ray.get_runtime_context().get_node_id(),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }) + "\n")
    return hp["x"] - abs(hp["i"] - 500) / 1000
