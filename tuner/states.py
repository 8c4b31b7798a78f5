"""The trial life cycle every part of the system agrees on.

    QUEUED -> RUNNING -> COMPLETE | PRUNED | FAILED
    RUNNING -> QUEUED   only when the worker's lease is gone (it died, or was stopped)
    RUNNING -> PAUSED   at a rung of early stopping by promotion, checkpointed
    PAUSED -> QUEUED    promoted: it resumes from its checkpoint on any worker
    PAUSED -> PRUNED    never promoted before the study's budget was spent

Storage enforces it: every transition is a statement conditioned on the trial's state,
and the database accepts no other state.
"""

from __future__ import annotations

import enum


class TrialState(enum.StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETE = "COMPLETE"
    PRUNED = "PRUNED"
    FAILED = "FAILED"

    def is_finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED})
UNFINISHED = frozenset({TrialState.QUEUED, TrialState.RUNNING})  # held by the queue or a worker
