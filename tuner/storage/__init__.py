"""SQL storage of studies, trials, per-epoch metrics and workers."""

from tuner.storage.engine import DEFAULT_URL, safe_url
from tuner.storage.reads import TrialFilter
from tuner.storage.records import (
    StudyRecord,
    StudySummary,
    Trial,
    WorkerRecord,
    shown_epoch,
    sign_of,
)
from tuner.storage.storage import Storage
from tuner.storage.studies import LEASE_GRACE

__all__ = [
    "DEFAULT_URL", "LEASE_GRACE", "Storage", "StudyRecord", "StudySummary", "Trial",
    "TrialFilter", "WorkerRecord", "safe_url", "shown_epoch", "sign_of",
]
