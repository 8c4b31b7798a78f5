"""KerasTuner's errors: what a trial raises to say how the search goes on.

`FailedTrialError`: the trial fails at once, without the retries of `max_retries_per_trial`.
`FatalError` (and its kinds): the whole search stops, raising it from `Tuner.search()`.
"""


class FailedTrialError(Exception):
    """Raised in a trial: it is FAILED at once, not retried."""


class FatalError(Exception):
    """Raised in a trial: the search stops; `search()` raises it."""


class FatalValueError(FatalError, ValueError):
    pass


class FatalTypeError(FatalError, TypeError):
    pass


class FatalRuntimeError(FatalError, RuntimeError):
    pass


__all__ = ["FailedTrialError", "FatalError", "FatalRuntimeError", "FatalTypeError",
           "FatalValueError"]
