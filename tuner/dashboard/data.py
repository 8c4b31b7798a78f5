"""What the dashboard's pages and its JSON API show, read from the storage as plain data.

Pages and API call the same functions, so they always agree. Reads that grow with the
study (history, importance, parallel coordinates) are cached until the study changes."""

from __future__ import annotations

import dataclasses
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tuner import analysis, fronts
from tuner.coordinator import lease_graces
from tuner.errors import TunerError
from tuner.space import Choice, Fixed, Float, Int, Space
from tuner.states import TrialState
from tuner.storage import Storage, StudyRecord, Trial, TrialFilter, WorkerRecord, shown_epoch
from tuner.storage.records import values_of

PAGE_SIZES = (25, 50, 100, 200)
CURVES = 40  # learning curves drawn: the best and the latest trials
PARALLEL_TRIALS = 1000  # the latest completed trials in the parallel-coordinates plot
MAX_TEXT = 1000  # characters of a filter, sort, order or state: a URL, not a document
MAX_PAGE = 10**9  # keeps the row offset within the databases' 64-bit integers
_OPERATOR = re.compile(r"<=|>=|!=|=|<|>|!")  # two-character operators first
_FIELD = re.compile(r"[A-Za-z_][\w.]*")


class BadQuery(TunerError):
    """A sort or filter the trials table cannot apply: shown to the user, not a 500."""


def study_dict(study: StudyRecord) -> dict[str, Any]:
    return {"id": study.id, "name": study.name, "metric": study.metric,
            "direction": study.direction, "strategy": study.strategy, "seed": study.seed,
            "created_at": study.created_at, "space": study.space, "settings": study.settings,
            "objectives": [{"name": o.name, "direction": o.direction} for o in study.objectives],
            "constraints": [{"name": c.name, "op": c.op, "bound": c.bound}
                            for c in study.constraints]}


def trial_dict(trial: Trial, study: StudyRecord | None = None) -> dict[str, Any]:
    """A trial as the API gives it; with its study, its constraint `verdict` too (None
    where the study has no constraint or the trial measured nothing yet)."""
    values = values_of(trial)
    row = {"number": trial.number, "state": trial.state.value, "value": trial.value,
           "values": None if values is None else list(values), "measures": trial.measures,
           "params": trial.params, "epochs": trial.epochs,
           "best_epoch": shown_epoch(trial.best_epoch),
           "retries": trial.retries, "worker_id": trial.worker_id, "error": trial.error,
           "attrs": trial.attrs, "queued_at": trial.queued_at, "started_at": trial.started_at,
           "finished_at": trial.finished_at, "duration": trial.duration}
    if study is not None:
        row["verdict"] = fronts.verdict(study, trial)
    return row


def worker_dict(worker: WorkerRecord, now: float, grace: float) -> dict[str, Any]:
    return {"id": worker.id, "host": worker.host, "pid": worker.pid, "device": worker.device,
            "status": worker.status(now, grace),
            "study": worker.study, "trial": worker.trial,
            "heartbeat_age": now - worker.heartbeat_at, "started_at": worker.started_at,
            "trials_done": worker.trials_done}


def worker_dicts(storage: Storage, records: list[WorkerRecord]) -> list[dict[str, Any]]:
    """`worker_dict` of each, judged live or lost by the lease grace of its study."""
    now = storage.now()
    graces = lease_graces(storage, records)
    return [worker_dict(w, now, graces[w.id]) for w in records]


def studies(storage: Storage) -> list[dict[str, Any]]:
    rows = []
    for summary in storage.list_studies():
        counts = {state.value: summary.counts.get(state, 0) for state in TrialState}
        rows.append({**study_dict(summary.study), "counts": counts,
                     "trials": sum(counts.values()), "best_value": summary.best_value,
                     "last_activity": summary.last_activity,
                     "state": "running" if counts["QUEUED"] + counts["RUNNING"] else "idle"})
    return rows


def numeric_params(space: Space) -> set[str]:
    """Parameters whose values compare as numbers (in SQL as in the filter box)."""
    return {p.name for p in space if isinstance(p, (Int, Float)) or (
        isinstance(p, Choice) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                      for v in p.values))}


class TrialQuery(BaseModel):
    """The trials table's state: sort, filters and page, as the URL gives them."""
    model_config = ConfigDict(frozen=True)

    sort: str = "value"
    order: str = Field("best", description="best (best values first), asc or desc")
    state: str = Field("", description="only trials in this state")
    filter: str = Field("", description="e.g. value >= 0.9, units = 64, activation != relu "
                                        f"(at most {MAX_TEXT:,} characters)")
    page: int = Field(1, ge=1, le=MAX_PAGE)
    per_page: int = Field(50, ge=1, le=max(PAGE_SIZES))


def _condition(part: str) -> tuple[str, str, str] | None:
    """`field op value`, split at the first operator: linear in the text (a regex with
    adjacent unbounded quantifiers took quadratic time on a long run of spaces)."""
    op = _OPERATOR.search(part)
    if op is None or op.group() == "!":
        return None
    field, raw = part[:op.start()].strip(), part[op.end():].strip()
    return (field, op.group(), raw) if _FIELD.fullmatch(field) else None


def parse_filter(text: str, study: StudyRecord, space: Space) -> list[TrialFilter]:
    numeric = numeric_params(space) | {"number", "value", "epochs", "duration"}
    fields = {"number", "value", "epochs", "duration", *space.names}
    filters = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        condition = _condition(part)
        if condition is None:
            raise BadQuery(f"cannot read the filter {part!r}: write e.g. value >= 0.9, "
                           "units = 64, activation != relu")
        field, op, raw = condition
        if field not in fields:
            raise BadQuery(f"no column or parameter named {field!r} in study {study.name!r}")
        value: float | str = raw.strip("'\"")
        if field in numeric:
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):  # MariaDB cannot bind nan or inf; no value is either
                raise BadQuery(f"{field} is a number: cannot compare it with {raw!r}")
        filters.append(TrialFilter(field, op, value))
    return filters


def trial_page(storage: Storage, study: StudyRecord, query: TrialQuery) -> dict[str, Any]:
    for name in ("filter", "sort", "order", "state"):  # bounded work, and short messages
        if len(getattr(query, name)) > MAX_TEXT:
            raise BadQuery(f"the {name} is too long: {len(getattr(query, name)):,} characters, "
                           f"at most {MAX_TEXT:,}")
    space = Space.from_dict(study.space)
    if query.sort not in {"number", "value", "epochs", "duration", *space.names}:
        raise BadQuery(f"cannot sort by {query.sort!r}: no such column or parameter")
    if query.state and query.state not in TrialState.__members__:
        states = ", ".join(TrialState.__members__)
        raise BadQuery(f"no trial state {query.state!r} (one of {states})")
    if query.order not in ("best", "asc", "desc"):
        raise BadQuery(f"order is best, asc or desc, not {query.order!r}")
    per_page = max(1, min(query.per_page, max(PAGE_SIZES)))
    page = max(1, query.page)
    descending = query.order == "desc" or (
        query.order == "best" and (query.sort != "value" or study.sign > 0))
    total, rows = storage.trial_page(
        study.id, sort=query.sort, descending=descending,
        states=[TrialState(query.state)] if query.state else None,
        filters=parse_filter(query.filter, study, space), numeric=numeric_params(space),
        offset=(page - 1) * per_page, limit=per_page)
    return {"total": total, "page": page, "per_page": per_page,
            "pages": max(1, -(-total // per_page)),
            "trials": [trial_dict(t, study) for t in rows]}


def version(storage: Storage, study: StudyRecord) -> str:
    """Changes whenever anything shown of the study does: a trial's state, or an epoch of
    a running trial. Pages poll it (one count by state over the study's trials, and its
    running trials), and fetch fragments and charts only when it changes."""
    counts = storage.counts(study.id)
    running = storage.trials(study.id, states=[TrialState.RUNNING])
    return ";".join([*(f"{s.value}={n}" for s, n in sorted(counts.items())),
                     *(f"{t.number}:{t.epochs}" for t in running)])


class Cache:
    """Results of slow reads per study, kept while their key (a version, or a part of it)
    stays the same, or for `max_age` seconds whatever happens: importance is worth
    recomputing now and then, not at every trial of a busy study. One computation at a
    time per result: requests arriving meanwhile wait for it rather than repeat it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._computing: dict[tuple[int, str], threading.Lock] = {}
        self._entries: dict[tuple[int, str], tuple[str, float, Any]] = {}

    def get(self, study: StudyRecord, kind: str, key: str, compute: Callable[[], Any], *,
            max_age: float = 0.0) -> Any:
        slot = (study.id, kind)
        with self._lock:
            computing = self._computing.setdefault(slot, threading.Lock())
        with computing:
            entry = self._entries.get(slot)
            if entry is not None and (entry[0] == key or time.monotonic() - entry[1] < max_age):
                return entry[2]
            result = compute()
            self._entries[slot] = (key, time.monotonic(), result)
            return result


def epochs(storage: Storage, trial_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
    """Per-epoch rows of these trials, each epoch numbered from 1 as users see it."""
    return {trial_id: [{**row, "epoch": shown_epoch(row["epoch"])} for row in rows]
            for trial_id, rows in storage.epochs(trial_ids).items()}


def history(storage: Storage, study: StudyRecord) -> list[analysis.HistoryPoint]:
    return analysis.history(study, storage.finished_values(study.id))


def curves(storage: Storage, study: StudyRecord) -> list[dict[str, Any]]:
    """Per-epoch values of the best and the latest trials (of any state but QUEUED)."""
    best = storage.trial_page(study.id, sort="value", descending=study.sign > 0,
                              states=[TrialState.COMPLETE, TrialState.PRUNED],
                              limit=CURVES // 2)[1]
    latest = storage.trial_page(
        study.id, sort="number", descending=True,
        states=[TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAILED, TrialState.RUNNING,
                TrialState.PAUSED],
        limit=CURVES)[1]
    chosen = {t.id: t for t in [*best, *latest]}
    chosen = dict(list(chosen.items())[:CURVES])
    per_epoch = epochs(storage, chosen)
    return [{"number": t.number, "state": t.state.value,
             "epochs": [e["epoch"] for e in per_epoch[t.id]],
             "values": [e["value"] for e in per_epoch[t.id]]}
            for t in sorted(chosen.values(), key=lambda t: t.number)]


def parallel(storage: Storage, study: StudyRecord) -> dict[str, Any]:
    trials = storage.recent_trials(study.id, states=[TrialState.COMPLETE], limit=PARALLEL_TRIALS)
    space = Space.from_dict(study.space)
    return {"params": [p.name for p in space if not isinstance(p, Fixed)],
            "trials": [{"number": t.number, "params": t.params, "value": t.value}
                       for t in trials if t.value is not None]}


def importance(storage: Storage, study: StudyRecord) -> dict[str, float]:
    trials = storage.recent_trials(study.id, states=[TrialState.COMPLETE],
                                   limit=analysis.IMPORTANCE_TRIALS)
    return analysis.importance(study, trials)


def lineage(storage: Storage, study: StudyRecord) -> dict[str, Any]:
    """PBT: every segment, and the schedule of the best trial; empty for other strategies."""
    if study.strategy != "pbt":
        return {"segments": [], "schedule": []}
    trials = storage.trials(study.id)
    best = storage.best_trial(study)
    segments = analysis.lineage(trials)
    chain = analysis.schedule(trials, best) if best is not None else []
    return {"segments": [dataclasses.asdict(s) for s in segments],
            "schedule": [trial_dict(t) for t in chain]}


def pareto(storage: Storage, study: StudyRecord) -> dict[str, Any]:
    """The objectives, each completed trial's point (with whether it is feasible, which
    constraints it breaks, whether it is on the front), the front's trial numbers best
    first by the first objective, and the hypervolume after each feasible trial, from the
    `reference` point (each objective's worst value among them)."""
    trials = storage.trials(study.id, states=[TrialState.COMPLETE])
    history, reference = fronts.hypervolume(study, trials)
    return {"objectives": [{"name": o.name, "direction": o.direction} for o in study.objectives],
            "constraints": [str(c) for c in study.constraints],
            "front": [t.number for t in study.front(trials)],
            "points": [{"number": p.number, "values": list(p.values), "feasible": p.feasible,
                        "front": p.front, "broken": list(p.broken)}
                       for p in fronts.points(study, trials)],
            "reference": None if reference is None else list(reference),
            "hypervolume": [dataclasses.asdict(h) for h in history]}
