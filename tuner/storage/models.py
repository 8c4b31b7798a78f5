"""SQLAlchemy tables. Times are seconds since the epoch read from the database's clock."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tuner.states import TrialState


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, dict[str, Any] | None: JSON,
                           list[float | None] | None: JSON}


class StudyRow(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    metric: Mapped[str] = mapped_column(String(200))
    direction: Mapped[str] = mapped_column(String(8))
    strategy: Mapped[str] = mapped_column(String(50))
    seed: Mapped[int] = mapped_column(Integer)
    space: Mapped[dict[str, Any]]
    settings: Mapped[dict[str, Any]]
    definition: Mapped[str | None] = mapped_column(Text)
    definition_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Double)
    # The lease of the one active coordinator: "host:pid:token" and its last renewal.
    coordinator: Mapped[str | None] = mapped_column(String(255))
    coordinator_beat_at: Mapped[float | None] = mapped_column(Double)


class TrialRow(Base):
    __tablename__ = "trials"
    __table_args__ = (
        UniqueConstraint("study_id", "number"),
        Index("ix_trials_study_state", "study_id", "state", "number"),
        Index("ix_trials_state_study", "state", "study_id", "number"),  # claims of any study
        Index("ix_trials_worker", "worker_id"),
        CheckConstraint(f"state IN ({', '.join(repr(s.value) for s in TrialState)})",
                        name="ck_trials_state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(8))
    params: Mapped[dict[str, Any]]
    value: Mapped[float | None] = mapped_column(Double)
    best_epoch: Mapped[int | None] = mapped_column(Integer)
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[int | None] = mapped_column(ForeignKey("workers.id", ondelete="SET NULL"))
    error: Mapped[str | None] = mapped_column(Text)
    attrs: Mapped[dict[str, Any] | None]  # what a strategy records on a trial (PBT lineage)
    # Each objective's value, in the study's order (`value` is the first's), and what the
    # trial measured: the names its objectives and constraints read, the built-in measures.
    values: Mapped[list[float | None] | None]
    measures: Mapped[dict[str, Any] | None]
    # The last epoch (from 0) its resumable checkpoint holds: a requeued trial keeps its
    # epochs up to there and goes on from the next one.
    checkpoint_epoch: Mapped[int | None] = mapped_column(Integer)
    queued_at: Mapped[float] = mapped_column(Double)
    started_at: Mapped[float | None] = mapped_column(Double)
    finished_at: Mapped[float | None] = mapped_column(Double)


class EpochRow(Base):
    __tablename__ = "trial_epochs"

    trial_id: Mapped[int] = mapped_column(
        ForeignKey("trials.id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float | None] = mapped_column(Double)
    metrics: Mapped[dict[str, Any]]


class WorkerRow(Base):
    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(50))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"))
    started_at: Mapped[float] = mapped_column(Double)
    heartbeat_at: Mapped[float] = mapped_column(Double)
    stopped_at: Mapped[float | None] = mapped_column(Double)
    trials_done: Mapped[int] = mapped_column(Integer, default=0)


# The tables, for SQLAlchemy Core statements.
STUDIES = StudyRow.__table__
TRIALS = TrialRow.__table__
EPOCHS = EpochRow.__table__
WORKERS = WorkerRow.__table__
TUNER_TABLES = frozenset(t.name for t in (STUDIES, TRIALS, EPOCHS, WORKERS))
