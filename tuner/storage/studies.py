"""Writing studies: create, update what a run learns or accepts, delete."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from tuner.errors import StudyBusy, StudyExists
from tuner.states import TrialState
from tuner.storage.clock import db_now
from tuner.storage.engine import retrying
from tuner.storage.models import EPOCHS, STUDIES, TRIALS, WORKERS
from tuner.storage.reads import Reads
from tuner.storage.records import StudyRecord

LEASE_GRACE = 30.0  # seconds without a heartbeat before a worker's or coordinator's lease ends
Alive = Callable[[str, int], bool]  # (host, pid): is that process still running?


class Studies(Reads):
    @retrying
    def create_study(
        self,
        name: str,
        *,
        metric: str,
        direction: str,
        strategy: str,
        seed: int,
        space: Mapping[str, Any],
        settings: Mapping[str, Any],
        definition: str | None = None,
        definition_hash: str | None = None,
    ) -> StudyRecord:
        try:
            with self._tx(write=True) as conn:
                conn.execute(
                    STUDIES.insert().values(
                        name=name, metric=metric, direction=direction, strategy=strategy,
                        seed=seed, space=dict(space), settings=dict(settings),
                        definition=definition, definition_hash=definition_hash,
                        created_at=db_now(),
                    )
                )
        except IntegrityError:
            raise StudyExists(f"a study named {name!r} already exists") from None
        return self.get_study(name)

    @retrying
    def record_changed_definition(
        self, study_id: int, *, path: str | None, source_hash: str | None,
        space: Mapping[str, Any], settings: Mapping[str, Any], change: Mapping[str, Any],
    ) -> StudyRecord:
        """Accept a changed study file for a study (the user said so): its path and hash,
        its space (changed parameters replaced, new ones appended, those it no longer
        declares kept for earlier trials) and settings; `change` is kept in the study's
        settings under "file_changes", stamped with the time."""
        with self._tx(write=True) as conn:
            row = conn.execute(sa.select(STUDIES.c.space, STUDIES.c.settings)
                               .where(STUDIES.c.id == study_id).with_for_update()).one()
            at = conn.execute(sa.select(db_now())).scalar_one()
            history = [*row.settings.get("file_changes", []), {**change, "at": at}]
            conn.execute(STUDIES.update().where(STUDIES.c.id == study_id).values(
                definition=path, definition_hash=source_hash,
                space={**row.space, **space},
                settings={**row.settings, **settings, "file_changes": history}))
        return self.study_by_id(study_id)

    @retrying
    def update_space(self, study_id: int, space: Mapping[str, Any]) -> None:
        """Store a grown space (parameters met during trials are appended in order)."""
        with self._tx(write=True) as conn:
            current = conn.execute(
                sa.select(STUDIES.c.space).where(STUDIES.c.id == study_id).with_for_update()
            ).scalar_one()
            merged = {**current, **{k: v for k, v in space.items() if k not in current}}
            if merged != current:
                conn.execute(
                    STUDIES.update().where(STUDIES.c.id == study_id).values(space=merged)
                )

    @retrying
    def update_settings(self, study_id: int, values: Mapping[str, Any]) -> None:
        """Merge `values` into the study's settings (keys given replace those stored)."""
        with self._tx(write=True) as conn:
            current = conn.execute(
                sa.select(STUDIES.c.settings).where(STUDIES.c.id == study_id).with_for_update()
            ).scalar_one()
            conn.execute(STUDIES.update().where(STUDIES.c.id == study_id)
                         .values(settings={**current, **values}))

    @retrying
    def update_definition(self, study_id: int, path: str | None, source_hash: str | None) -> None:
        """Record the coordinator's copy of the study file: the one workers must match."""
        with self._tx(write=True) as conn:
            conn.execute(STUDIES.update().where(STUDIES.c.id == study_id)
                         .values(definition=path, definition_hash=source_hash))

    @retrying
    def delete_study(self, name: str, *, grace: float = LEASE_GRACE,
                     alive: Alive = lambda host, pid: True) -> None:
        """Delete a study with its trials, refused (`StudyBusy`) while a coordinator or a
        worker that heartbeat within `grace` seconds holds it: it would crash mid-run.
        `alive(host, pid)` may clear a holder whose process is known to be gone."""
        study = self.get_study(name)
        with self._tx(write=True) as conn:
            holders = self._holders(conn, study.id, grace, alive)
            if holders:
                raise StudyBusy(
                    f"study {name!r} is in use by {' and '.join(holders)}; stop them first "
                    f"(Ctrl-C on `tuner run`; a killed one lets go after {grace:.0f} s)")
            # Explicit deletes, children first: MySQL and SQLite without the pragma
            # would not cascade on their own.
            trial_ids = sa.select(TRIALS.c.id).where(TRIALS.c.study_id == study.id)
            conn.execute(EPOCHS.delete().where(EPOCHS.c.trial_id.in_(trial_ids)))
            conn.execute(TRIALS.delete().where(TRIALS.c.study_id == study.id))
            conn.execute(
                WORKERS.update().where(WORKERS.c.study_id == study.id).values(study_id=None)
            )
            conn.execute(STUDIES.delete().where(STUDIES.c.id == study.id))

    @staticmethod
    def _holders(conn: Connection, study_id: int, grace: float, alive: Alive) -> list[str]:
        """Who holds the study now: its coordinator and the workers serving it, if their
        heartbeat is fresh and their process is `alive`."""
        now = conn.execute(sa.select(db_now())).scalar_one()
        found = []
        row = conn.execute(sa.select(STUDIES.c.coordinator, STUDIES.c.coordinator_beat_at)
                           .where(STUDIES.c.id == study_id)).one()
        if row.coordinator and row.coordinator_beat_at >= now - grace:
            host, _, rest = row.coordinator.partition(":")
            pid = rest.partition(":")[0]
            if not pid.isdigit() or alive(host, int(pid)):
                found.append(f"its coordinator {host}:{pid} "
                             f"(renewed {now - row.coordinator_beat_at:.1f} s ago)")
        serving = conn.execute(
            sa.select(WORKERS.c.host, WORKERS.c.pid).distinct()
            .outerjoin(TRIALS, sa.and_(TRIALS.c.worker_id == WORKERS.c.id,
                                       TRIALS.c.state == TrialState.RUNNING.value))
            .where(WORKERS.c.stopped_at.is_(None), WORKERS.c.heartbeat_at >= now - grace,
                   sa.or_(WORKERS.c.study_id == study_id, TRIALS.c.study_id == study_id))
        ).all()
        live = [f"{host}:{pid}" for host, pid in serving if alive(host, pid)]
        if live:
            found.append(f"{len(live)} worker{'s' if len(live) > 1 else ''} "
                         f"({', '.join(live[:5])}{', …' if len(live) > 5 else ''})")
        return found
