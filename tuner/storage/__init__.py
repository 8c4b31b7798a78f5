"""SQL storage of studies, trials, per-epoch metrics and workers."""

from tuner.storage.records import StudyRecord, StudySummary, Trial, WorkerRecord, shown_epoch
from tuner.storage.storage import DEFAULT_URL, Storage, TrialFilter, safe_url

__all__ = [
    "DEFAULT_URL", "Storage", "StudyRecord", "StudySummary", "Trial", "TrialFilter", "WorkerRecord",
    "safe_url", "shown_epoch",
]
