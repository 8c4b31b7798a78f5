"""The one way into the database.

Guarantees, on SQLite, PostgreSQL and MySQL/MariaDB alike:
- every method is one short transaction; nothing holds a lock while a model trains;
- a claim is atomic: a QUEUED trial becomes RUNNING for exactly one worker;
- a RUNNING trial is finished or requeued only by a statement that names its state and
  its worker, so a late result from a worker that lost its lease is refused, not counted;
- trial numbers are unique per study (a unique constraint settles races);
- the schema is created (unless `create=False`: a reader creates nothing, not even a
  SQLite file) or upgraded with Alembic on first use; another application's database,
  or a file that is not a SQLite database, is refused before anything is written to it;
- a SQLite file this process may not write is read without leaving -wal or -shm files;
- deadlocks, serialization failures and lock timeouts are retried with jittered backoff,
  a lost connection for a while; what waiting cannot heal (a read-only, full or damaged
  database, a missing table, a refused login) is raised at once;
- driver errors, but a unique constraint's (the methods answer those themselves), become
  `StorageError` with a one-line message.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy import event, func
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
)
from sqlalchemy.pool import StaticPool

from tuner.errors import (
    ForeignDatabase,
    NoTunerDatabase,
    StorageError,
    StudyBusy,
    StudyExists,
    StudyNotFound,
)
from tuner.states import TrialState
from tuner.storage.clock import db_now
from tuner.storage.models import EpochRow, StudyRow, TrialRow, WorkerRow
from tuner.storage.records import StudyRecord, StudySummary, Trial, WorkerRecord

log = logging.getLogger(__name__)

studies = StudyRow.__table__
trials = TrialRow.__table__
epochs = EpochRow.__table__
workers = WorkerRow.__table__

DEFAULT_URL = "sqlite:///tuner.db"
LEASE_GRACE = 30.0  # seconds without a heartbeat before a worker's or coordinator's lease ends
F = TypeVar("F", bound=Callable[..., Any])
_MIGRATIONS = Path(__file__).with_name("migrations")
_TUNER_TABLES = frozenset(table.name for table in (studies, trials, epochs, workers))


def _finite(value: float | None) -> float | None:
    """NaN and infinities are not storable everywhere (MySQL, JSON): store them as NULL."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def safe_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


# A socket to a server that went away mid-request can otherwise wait forever, and a
# worker stuck so would hold its trial while its heartbeat thread keeps the lease alive.
# A timeout turns that into a lost connection, which is retried. (MySQL's reads wait at
# most innodb_lock_wait_timeout, 50 s, for a lock; PostgreSQL's sockets get keepalives.)
_MYSQL_TIMEOUTS = {"connect_timeout": 10, "read_timeout": 60, "write_timeout": 60}
_LIBPQ_TIMEOUTS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 10,
                   "keepalives_interval": 5, "keepalives_count": 3}
_NETWORK_TIMEOUTS: dict[str, dict[str, Any]] = {  # by driver
    "pymysql": _MYSQL_TIMEOUTS, "mysqldb": _MYSQL_TIMEOUTS,
    "psycopg": _LIBPQ_TIMEOUTS, "psycopg2": _LIBPQ_TIMEOUTS,
}


_SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database


def _sqlite_file(parsed: URL) -> Path | None:
    """The file of a SQLite URL, given as a path or as SQLite's `file:` URI; None for a
    database in memory."""
    database = parsed.database or ""
    if sa.util.asbool(parsed.query.get("uri", False)):
        if parsed.query.get("mode") == "memory" or not database.startswith("file:"):
            return None
        database = unquote(urlsplit(database).path)
    return None if database in ("", ":memory:") else Path(os.path.abspath(database))


def _open_sqlite(url: str, parsed: URL, path: Path, create: bool) -> URL:
    """Check a SQLite file before SQLite opens it, and choose how SQLite opens it.

    SQLite would create a missing file (and folder errors read "unable to open database
    file"), and a file that is not a database fails only at the first statement. A file
    this process may not write, or in a folder it may not write, is opened read-only
    without the -wal and -shm files SQLite would otherwise leave there: owned by this user,
    they would make the database read-only for its owner."""
    if path.is_dir():
        raise StorageError(f"{path} is a folder, not a SQLite database file")
    if not path.parent.is_dir():
        raise StorageError(f"cannot open {path}: the folder {path.parent} does not exist")
    if not path.exists():
        if not create:
            raise NoTunerDatabase(f"{safe_url(url)} holds no tuner studies (there is no file "
                                  f"{path}); nothing was created there")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise StorageError(f"cannot create {path}: the folder {path.parent} is not writable")
        return parsed
    try:
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from None
    if header and header != _SQLITE_HEADER:  # an empty file is a new database to SQLite
        raise StorageError(f"{path} is not a SQLite database (it does not begin with SQLite's "
                           "header); it was left as it was")
    if sa.util.asbool(parsed.query.get("uri", False)):
        return parsed  # the user's own `file:` URI: how to open it is theirs to say
    wal = Path(f"{path}-wal")
    if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK):
        flags = {} if create else {"mode": "rw"}  # rw: never create the file
    elif Path(f"{path}-shm").exists():
        flags = {"mode": "ro"}  # a writer is live: read its log through its -shm
    elif wal.exists() and wal.stat().st_size:
        raise StorageError(
            f"cannot read {path}: it is read-only here and its write-ahead log {wal} holds "
            "changes that only a user who may write the file can finish: open it once as one")
    else:
        # No writer: the file is all there is (one that starts later is not seen).
        flags = {"mode": "ro", "immutable": "1"}
    if not flags:
        return parsed
    return parsed.set(database=f"file:{quote(str(path))}",
                      query={**parsed.query, **flags, "uri": "true"})


def _make_engine(url: str, pool_size: int, create: bool = True) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StorageError(
            f"{url!r} is not a database URL (expected e.g. sqlite:///tuner.db or "
            "postgresql+psycopg://user@host/db)"
        ) from None
    try:
        if parsed.get_backend_name() != "sqlite":
            timeouts = _NETWORK_TIMEOUTS.get(parsed.get_driver_name(), {})
            return sa.create_engine(
                url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max(8, pool_size),
                connect_args={k: v for k, v in timeouts.items() if k not in parsed.query},
            )
        memory = parsed.database in (None, "", ":memory:")
        path = _sqlite_file(parsed) if parsed.get_driver_name() == "pysqlite" else None
        engine = sa.create_engine(
            parsed if path is None else _open_sqlite(url, parsed, path, create),
            connect_args={"timeout": 60, "check_same_thread": False},
            poolclass=StaticPool if memory else None,
        )
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        raise StorageError(f"no driver for {safe_url(url)}: {exc}") from None

    # pysqlite's own transaction handling is off so that a write transaction can start
    # with BEGIN IMMEDIATE: taking the write lock first means no transaction ever has
    # to upgrade a read lock, which is where SQLite would fail instead of waiting.
    # (WAL mode is not set here: it changes the file, see `Storage._use_wal`.)
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        options = conn.get_execution_options()
        if options.get("tuner_bare", False):  # for a PRAGMA SQLite refuses in a transaction
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("tuner_write") else "BEGIN")

    return engine


class TransientStorageError(StorageError):
    """A deadlock, serialization failure or lock timeout: the transaction may be retried."""


class ConnectionLost(TransientStorageError):
    """The server went away (a restart, a network cut): retried until it is back, for a while."""


_SCHEMA_LOCK = {  # (take, release) a lock held by the session, not the transaction
    "postgresql": ("SELECT pg_advisory_lock(727361)", "SELECT pg_advisory_unlock(727361)"),
    "mysql": ("SELECT GET_LOCK('tuner_schema', 50)", "SELECT RELEASE_LOCK('tuner_schema')"),
    "mariadb": ("SELECT GET_LOCK('tuner_schema', 50)", "SELECT RELEASE_LOCK('tuner_schema')"),
}
_LOCK_SQLSTATES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock not available
_LOCK_MYSQL = {1205, 1213}  # lock wait timeout, deadlock
# A server shutting down, starting up, crashed or out of connections; a connection killed
# (MariaDB 1927) or cut when idle (4031); a socket already closed (pymysql's 0); 2xxx: the
# client lost the server or could not reach it.
_LOST_SQLSTATES = {"57P01", "57P02", "57P03", "53300"}
_LOST_MYSQL = {0, 1040, 1053, 1927, 4031, *range(2000, 3000)}
# Connect errors without a code that relay a server's refusal rather than its absence.
_REFUSALS = ("does not exist", "authentication", "pg_hba.conf", "permission denied",
             "access denied")
_SQLITE_HINTS = {  # what SQLite's own words leave out
    "SQLITE_READONLY": " (the database is read-only here: writing needs write access to the "
                       "file and its folder)",
    "SQLITE_NOTADB": " (the file is damaged, or not a SQLite database)",
    "SQLITE_CORRUPT": " (the file is damaged)",
}


def _kind(exc: DBAPIError) -> Literal["lock", "lost", "fatal"]:
    """What waiting does for a driver error: another transaction's lock goes ("lock"), a
    server that went away comes back ("lost"); anything else stays as it is ("fatal": a
    read-only, full or damaged database, a missing table, a refused login or privilege, a
    bad statement), and retrying it would only put off the message."""
    orig = exc.orig
    sqlite = getattr(orig, "sqlite_errorname", None)
    if sqlite is not None:  # a file has no connection to lose, only locks to wait for
        return "lock" if sqlite.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) else "fatal"
    state = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    args = getattr(orig, "args", ())
    code = args[0] if args and isinstance(args[0], int) else None
    if state in _LOCK_SQLSTATES or code in _LOCK_MYSQL:
        return "lock"
    if (exc.connection_invalidated or code in _LOST_MYSQL
            or str(state).startswith("08") or state in _LOST_SQLSTATES):
        return "lost"
    if state or code is not None:
        return "fatal"
    # No code: the driver's own word on its socket (refused, reset, timed out), unless it
    # relays the server's refusal of a login or of a database's name.
    refused = any(word in str(orig).lower() for word in _REFUSALS)
    lost = isinstance(exc, (OperationalError, InterfaceError)) and not refused
    return "lost" if lost else "fatal"


def _retrying(method: F) -> F:
    """Run a one-transaction method again on a transient error: up to ten times, with
    jittered backoff, for a lock conflict; until `reconnect_timeout` has passed for a lost
    connection. The method gets `retry=True` on a second attempt if it asks for it."""
    wants_retry_flag = "retry" in inspect.signature(method).parameters

    @functools.wraps(method)
    def wrapper(self: Storage, *args: Any, **kwargs: Any) -> Any:
        deadline = None
        asked = kwargs.get("retry", False)  # a caller's own retry=True is kept
        for attempt in itertools.count():
            if wants_retry_flag:
                kwargs["retry"] = asked or attempt > 0
            try:
                return method(self, *args, **kwargs)
            except ConnectionLost as exc:
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.reconnect_timeout
                    log.warning("%s; retrying for up to %.0f s", exc, self.reconnect_timeout)
                if now >= deadline:
                    raise
                delay = min(0.05 * 2**attempt, 2.0)
            except TransientStorageError:
                if attempt >= 9:
                    raise
                delay = min(0.01 * 2**attempt, 1.0)
            time.sleep(delay * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    return wrapper  # type: ignore[return-value]


class Storage:
    """Studies, trials, epochs and workers in a SQL database given by URL."""

    def __init__(self, url: str = DEFAULT_URL, *, create: bool = True, pool_size: int = 2,
                 reconnect_timeout: float = 120.0) -> None:
        """Open the database at `url`, creating the tuner's schema there or upgrading it.

        With `create=False` (for commands that only read) nothing is created: neither a
        missing SQLite file nor the tables of a database without them (`NoTunerDatabase`);
        an older tuner schema is still upgraded. Another application's database is refused
        either way (`ForeignDatabase`)."""
        self.url = url
        self._create = create
        self.reconnect_timeout = reconnect_timeout
        self.engine = _make_engine(url, pool_size, create)
        self._connected = False  # until then a connection error is the user's, not a blip
        # An in-memory SQLite database lives on one shared connection: one transaction
        # at a time, whichever thread (coordinator, in-process worker) asks.
        self._serial = (threading.RLock() if isinstance(self.engine.pool, StaticPool)
                        else contextlib.nullcontext())
        try:
            self._upgrade_schema()
        except BaseException:
            self.engine.dispose()  # a refused database keeps no connection (nor file) open
            raise

    def __repr__(self) -> str:
        return f"Storage({safe_url(self.url)!r})"

    def dispose(self) -> None:
        self.engine.dispose()

    # -- plumbing -------------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self, write: bool = False, bare: bool = False) -> Iterator[Connection]:
        """One transaction; commits on success, rolls back on error. `bare`: no BEGIN, for
        a PRAGMA that SQLite refuses inside a transaction."""
        try:
            with self._serial, self.engine.connect() as conn:
                if write or bare:
                    conn = conn.execution_options(tuner_write=write, tuner_bare=bare)
                with conn.begin():
                    yield conn
            self._connected = True
        except IntegrityError:
            raise  # a unique constraint's verdict: the methods turn it into their answer
        except DBAPIError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: DBAPIError) -> StorageError:
        """A driver error as one line naming the database, of the class `_retrying` reads:
        a lock is retried soon, a lost connection for a while (once this process has been
        connected: before, it is the user's URL or server that is wrong), the rest never."""
        name = getattr(exc.orig, "sqlite_errorname", "")
        hint = _SQLITE_HINTS.get("_".join(name.split("_")[:2]), "")
        text = " ".join(str(exc.orig).split())  # drivers' messages run over several lines
        message = f"database error on {safe_url(self.url)}: {text}{hint}"
        kind = _kind(exc)
        if kind == "lock":
            return TransientStorageError(message)
        if kind == "lost" and (self._connected or exc.connection_invalidated):
            return ConnectionLost(message)
        return StorageError(message)

    def _upgrade_schema(self) -> None:
        from alembic.command import upgrade
        from alembic.config import Config
        from alembic.script import ScriptDirectory
        from alembic.util import CommandError

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        scripts = ScriptDirectory.from_config(config)
        head = scripts.get_current_head()
        known = {script.revision for script in scripts.walk_revisions()}
        with self._tx() as conn:
            found = self._schema_found(conn)
        if found == (head, _TUNER_TABLES):
            return
        # On MySQL each CREATE TABLE commits on its own: a process creating the schema now
        # shows its tables one by one, so a half schema is judged only under the lock.
        self._judge_schema(*found, known, halfway=self.engine.dialect.name in ("mysql", "mariadb"))
        if self.engine.dialect.name == "sqlite" and not isinstance(self.engine.pool, StaticPool):
            self._use_wal()
        # Processes started together on a new database (a coordinator and its agents)
        # would all create the tables: one does, under a lock; the others then find them.
        with self._schema_lock(), self._tx(write=True) as conn:
            revision, tables = self._schema_found(conn)
            self._judge_schema(revision, tables, known)
            if revision == head:
                return
            config.attributes["connection"] = conn
            log.info("upgrading the schema of %s to %s", safe_url(self.url), head)
            try:
                upgrade(config, "head")
            except CommandError as exc:
                raise StorageError(
                    f"cannot upgrade the schema of {safe_url(self.url)}: {exc}") from exc

    @staticmethod
    def _schema_found(conn: Connection) -> tuple[str | None, frozenset[str]]:
        """The tuner's schema as the database holds it: the Alembic revision (several rows
        are joined into one, which is none of ours) and which of the tuner's tables exist."""
        from alembic.runtime.migration import MigrationContext

        heads = MigrationContext.configure(conn).get_current_heads()
        return ", ".join(heads) or None, _TUNER_TABLES & set(sa.inspect(conn).get_table_names())

    def _judge_schema(self, revision: str | None, tables: frozenset[str], known: set[str],
                      halfway: bool = False) -> None:
        """Refuse another application's database, and a reader's database without the
        tuner's tables, before anything is written there. `halfway`: a schema being created
        may be seen half made, so tables and revision need not match yet."""
        why = None
        if revision is not None and revision not in known:
            why = f"its schema revision {revision!r} (in alembic_version) is none of the tuner's"
        elif revision is None and tables and not halfway:
            why = (f"it has tables named like the tuner's ({', '.join(sorted(tables))}) but "
                   "no tuner schema revision")
        elif revision is not None and tables != _TUNER_TABLES and not halfway:
            why = (f"it is at the tuner's schema revision {revision!r} but lacks the tables "
                   f"{', '.join(sorted(_TUNER_TABLES - tables))}")
        if why:
            raise ForeignDatabase(
                f"{safe_url(self.url)} is not a tuner database: {why}. It is another "
                "application's (or a newer tuner's, or damaged) and was left as it was; give "
                "the tuner a database of its own")
        if revision is None and not tables and not self._create:
            raise NoTunerDatabase(f"{safe_url(self.url)} holds no tuner studies (no tuner "
                                  "tables); nothing was created there")

    def _use_wal(self) -> None:
        """Put a SQLite file in WAL mode, where readers go on while a worker writes. The
        mode belongs to the file, so it is set once the file is known to be the tuner's
        (or new): on another application's file it would be a change."""
        with self._tx(bare=True) as conn:
            if conn.exec_driver_sql("PRAGMA journal_mode").scalar() != "wal":
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")

    @contextlib.contextmanager
    def _schema_lock(self) -> Iterator[None]:
        """A lock across processes, on its own connection, for changing the schema.
        (SQLite needs none: the upgrade's BEGIN IMMEDIATE already excludes the others.)"""
        statements = _SCHEMA_LOCK.get(self.engine.dialect.name)
        if statements is None:
            yield
            return
        lock, unlock = statements
        try:
            with self.engine.connect() as conn:
                conn.exec_driver_sql(lock)
                try:
                    yield
                finally:
                    conn.exec_driver_sql(unlock)
        except DBAPIError as exc:  # the lock's own statements: the body raises StorageErrors
            raise self._error(exc) from exc

    # -- studies --------------------------------------------------------------------
    @_retrying
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
                    studies.insert().values(
                        name=name, metric=metric, direction=direction, strategy=strategy,
                        seed=seed, space=dict(space), settings=dict(settings),
                        definition=definition, definition_hash=definition_hash,
                        created_at=db_now(),
                    )
                )
        except IntegrityError:
            raise StudyExists(f"a study named {name!r} already exists") from None
        return self.get_study(name)

    @_retrying
    def get_study(self, name: str) -> StudyRecord:
        with self._tx() as conn:
            row = conn.execute(sa.select(studies).where(studies.c.name == name)).first()
            if row is None:
                known = conn.execute(sa.select(studies.c.name).order_by(studies.c.id)).scalars()
                names = ", ".join(known) or "none"
                raise StudyNotFound(
                    f"no study named {name!r} in {safe_url(self.url)} (studies there: {names})"
                )
        return StudyRecord(**row._mapping)

    @_retrying
    def study_by_id(self, study_id: int) -> StudyRecord:
        with self._tx() as conn:
            row = conn.execute(sa.select(studies).where(studies.c.id == study_id)).first()
        if row is None:
            raise StudyNotFound(f"no study with id {study_id} in {safe_url(self.url)}")
        return StudyRecord(**row._mapping)

    @_retrying
    def list_studies(self, study_id: int | None = None) -> list[StudySummary]:
        """Every study (or the one with `study_id`) with its trials by state, best value
        and last activity."""
        def only(query: Any, column: Any) -> Any:
            return query if study_id is None else query.where(column == study_id)

        with self._tx() as conn:
            rows = conn.execute(only(sa.select(studies), studies.c.id).order_by(studies.c.id)).all()
            counts = conn.execute(
                only(sa.select(trials.c.study_id, trials.c.state, func.count()), trials.c.study_id)
                .group_by(trials.c.study_id, trials.c.state)
            ).all()
            activity = dict(
                conn.execute(
                    only(sa.select(
                        trials.c.study_id,
                        func.max(func.coalesce(trials.c.finished_at, trials.c.started_at,
                                               trials.c.queued_at)),
                    ), trials.c.study_id).group_by(trials.c.study_id)
                ).all()
            )
            best = {}
            for direction, agg in (("maximize", func.max), ("minimize", func.min)):
                best.update(
                    conn.execute(
                        only(sa.select(trials.c.study_id, agg(trials.c.value)), trials.c.study_id)
                        .join(studies, studies.c.id == trials.c.study_id)
                        .where(studies.c.direction == direction,
                               trials.c.state == TrialState.COMPLETE.value)
                        .group_by(trials.c.study_id)
                    ).all()
                )
        by_study: dict[int, dict[TrialState, int]] = {}
        for study_id, state, count in counts:
            by_study.setdefault(study_id, {})[TrialState(state)] = count
        return [
            StudySummary(
                study=StudyRecord(**row._mapping),
                counts=by_study.get(row.id, {}),
                best_value=best.get(row.id),
                last_activity=activity.get(row.id),
            )
            for row in rows
        ]

    @_retrying
    def delete_study(self, name: str, *, grace: float = LEASE_GRACE) -> None:
        """Delete a study with its trials, refused (`StudyBusy`) while a coordinator or a
        worker that heartbeat within `grace` seconds holds it: it would crash mid-run."""
        study = self.get_study(name)
        with self._tx(write=True) as conn:
            holders = self._holders(conn, study.id, grace)
            if holders:
                raise StudyBusy(
                    f"study {name!r} is in use by {' and '.join(holders)}; stop them first "
                    f"(Ctrl-C on `tuner run`; a killed one lets go after {grace:.0f} s)")
            # Explicit deletes, children first: MySQL and SQLite without the pragma
            # would not cascade on their own.
            trial_ids = sa.select(trials.c.id).where(trials.c.study_id == study.id)
            conn.execute(epochs.delete().where(epochs.c.trial_id.in_(trial_ids)))
            conn.execute(trials.delete().where(trials.c.study_id == study.id))
            conn.execute(
                workers.update().where(workers.c.study_id == study.id).values(study_id=None)
            )
            conn.execute(studies.delete().where(studies.c.id == study.id))

    @staticmethod
    def _holders(conn: Connection, study_id: int, grace: float) -> list[str]:
        """Who holds the study now: its coordinator and the workers serving it, if their
        heartbeat is fresh and (on this host) their process is alive."""
        now = conn.execute(sa.select(db_now())).scalar_one()
        here = socket.gethostname()

        def alive(host: str, pid: int) -> bool:
            return host != here or pid_alive(pid)

        found = []
        row = conn.execute(sa.select(studies.c.coordinator, studies.c.coordinator_beat_at)
                           .where(studies.c.id == study_id)).one()
        if row.coordinator and row.coordinator_beat_at >= now - grace:
            host, _, rest = row.coordinator.partition(":")
            pid = rest.partition(":")[0]
            if not pid.isdigit() or alive(host, int(pid)):
                found.append(f"its coordinator {host}:{pid} "
                             f"(renewed {now - row.coordinator_beat_at:.1f} s ago)")
        serving = conn.execute(
            sa.select(workers.c.host, workers.c.pid).distinct()
            .outerjoin(trials, sa.and_(trials.c.worker_id == workers.c.id,
                                       trials.c.state == TrialState.RUNNING.value))
            .where(workers.c.stopped_at.is_(None), workers.c.heartbeat_at >= now - grace,
                   sa.or_(workers.c.study_id == study_id, trials.c.study_id == study_id))
        ).all()
        live = [f"{host}:{pid}" for host, pid in serving if alive(host, pid)]
        if live:
            found.append(f"{len(live)} worker{'s' if len(live) > 1 else ''} "
                         f"({', '.join(live[:5])}{', …' if len(live) > 5 else ''})")
        return found

    @_retrying
    def find_study(self, name: str) -> StudyRecord | None:
        """The study of that name, or None."""
        with self._tx() as conn:
            row = conn.execute(sa.select(studies).where(studies.c.name == name)).first()
        return None if row is None else StudyRecord(**row._mapping)

    @_retrying
    def record_changed_definition(
        self, study_id: int, *, path: str | None, source_hash: str | None,
        space: Mapping[str, Any], settings: Mapping[str, Any], change: Mapping[str, Any],
    ) -> StudyRecord:
        """Accept a changed study file for a study (the user said so): its path and hash,
        its space (changed parameters replaced, new ones appended, those it no longer
        declares kept for earlier trials) and settings; `change` is kept in the study's
        settings under "file_changes", stamped with the time."""
        with self._tx(write=True) as conn:
            row = conn.execute(sa.select(studies.c.space, studies.c.settings)
                               .where(studies.c.id == study_id).with_for_update()).one()
            at = conn.execute(sa.select(db_now())).scalar_one()
            history = [*row.settings.get("file_changes", []), {**change, "at": at}]
            conn.execute(studies.update().where(studies.c.id == study_id).values(
                definition=path, definition_hash=source_hash,
                space={**row.space, **space},
                settings={**row.settings, **settings, "file_changes": history}))
        return self.study_by_id(study_id)

    @_retrying
    def update_settings(self, study_id: int, values: Mapping[str, Any]) -> None:
        """Merge `values` into the study's settings (keys given replace those stored)."""
        with self._tx(write=True) as conn:
            current = conn.execute(
                sa.select(studies.c.settings).where(studies.c.id == study_id).with_for_update()
            ).scalar_one()
            conn.execute(studies.update().where(studies.c.id == study_id)
                         .values(settings={**current, **values}))

    @_retrying
    def update_space(self, study_id: int, space: Mapping[str, Any]) -> None:
        """Store a grown space (parameters met during trials are appended in order)."""
        with self._tx(write=True) as conn:
            current = conn.execute(
                sa.select(studies.c.space).where(studies.c.id == study_id).with_for_update()
            ).scalar_one()
            merged = {**current, **{k: v for k, v in space.items() if k not in current}}
            if merged != current:
                conn.execute(
                    studies.update().where(studies.c.id == study_id).values(space=merged)
                )

    # -- trials: the coordinator's side --------------------------------------------------
    @_retrying
    def next_number(self, study_id: int) -> int:
        with self._tx() as conn:
            last = conn.execute(
                sa.select(func.max(trials.c.number)).where(trials.c.study_id == study_id)
            ).scalar()
        return 0 if last is None else last + 1

    def enqueue_trial(
        self, study_id: int, number: int, params: Mapping[str, Any], *,
        budget: int | None = None, attrs: Mapping[str, Any] | None = None,
    ) -> Trial | None:
        """Queue trial `number`; None if it is past the budget (numbers run 0, 1, ...) or
        taken (by another coordinator, or by an earlier attempt of this one whose
        acknowledgement a dropped connection lost)."""
        if budget is not None and number >= budget:
            return None
        attrs = dict(attrs) if attrs else None
        ids = self.enqueue_trials(study_id, [(number, params, attrs)])
        if not ids:
            return None
        return Trial(id=ids[0], number=number, state=TrialState.QUEUED, params=dict(params),
                     attrs=attrs, study_id=study_id)

    @_retrying
    def enqueue_trials(
        self, study_id: int,
        trials_: Iterable[tuple[int, Mapping[str, Any], Mapping[str, Any] | None]],
    ) -> list[int]:
        """Queue (number, params, attrs) trials in one transaction: their ids, or none of
        them (an empty list) if any number is taken."""
        ids = []
        try:
            with self._tx(write=True) as conn:
                for number, params, attrs in trials_:
                    ids.append(conn.execute(
                        trials.insert().values(
                            study_id=study_id, number=number, state=TrialState.QUEUED.value,
                            params=dict(params), queued_at=db_now(), epochs=0, retries=0,
                            attrs=dict(attrs) if attrs else None,
                        )
                    ).inserted_primary_key[0])
        except IntegrityError:
            return []
        return ids

    @_retrying
    def update_queued_params(self, trial_id: int, params: Mapping[str, Any]) -> bool:
        """Replace a QUEUED trial's values (completed for parameters met since it was queued);
        False if a worker claimed it meanwhile: a trial keeps the values it was claimed with."""
        with self._tx(write=True) as conn:
            updated = conn.execute(
                trials.update()
                .where(trials.c.id == trial_id, trials.c.state == TrialState.QUEUED.value)
                .values(params=dict(params))
            ).rowcount
        return bool(updated)

    @_retrying
    def counts(self, study_id: int, *,
               states: Iterable[TrialState] | None = None) -> dict[TrialState, int]:
        """Trials by state (of `states` only, when given: an index range, however large
        the study)."""
        query = sa.select(trials.c.state, func.count()).where(trials.c.study_id == study_id)
        if states is not None:
            states = [TrialState(s) for s in states]
            query = query.where(trials.c.state.in_([s.value for s in states]))
        with self._tx() as conn:
            rows = conn.execute(query.group_by(trials.c.state)).all()
        counts = {state: 0 for state in (states if states is not None else TrialState)}
        counts.update({TrialState(state): n for state, n in rows})
        return counts

    @_retrying
    def requeue_lost(self, study_id: int, *, grace: float, max_retries: int) -> list[int]:
        """Requeue RUNNING trials whose worker stopped or stopped heartbeating; returns numbers."""
        with self._tx(write=True) as conn:
            stale = sa.select(workers.c.id).where(
                sa.or_(workers.c.stopped_at.is_not(None),
                       workers.c.heartbeat_at < db_now() - grace)
            )
            lost = conn.execute(
                sa.select(trials.c.id).where(
                    trials.c.study_id == study_id,
                    trials.c.state == TrialState.RUNNING.value,
                    sa.or_(trials.c.worker_id.is_(None), trials.c.worker_id.in_(stale)),
                )
            ).scalars().all()
            return self._requeue(conn, lost, "its worker stopped heartbeating", max_retries)

    def release_dead_local_workers(self, host: str, *, max_retries: int) -> list[int]:
        """Requeue trials of this host's workers whose process is gone (a killed run), at
        once rather than after the lease's grace; returns the trial numbers."""
        numbers = []
        for worker in self.workers(alive_only=True):
            if worker.host == host and not pid_alive(worker.pid):
                numbers += self.release_worker(worker.id, reason="worker process is gone",
                                               max_retries=max_retries)
        return numbers

    @_retrying
    def release_worker(
        self, worker_id: int, *, reason: str, max_retries: int | None = None
    ) -> list[int]:
        """Mark a worker stopped and requeue its RUNNING trials; a retry is counted when
        `max_retries` is given (a crash), not for a clean stop such as Ctrl-C."""
        with self._tx(write=True) as conn:
            conn.execute(
                workers.update()
                .where(workers.c.id == worker_id, workers.c.stopped_at.is_(None))
                .values(stopped_at=db_now())
            )
            ids = conn.execute(
                sa.select(trials.c.id).where(
                    trials.c.worker_id == worker_id, trials.c.state == TrialState.RUNNING.value
                )
            ).scalars().all()
            return self._requeue(conn, ids, reason, max_retries)

    def _requeue(
        self, conn: Connection, ids: Iterable[int], reason: str, max_retries: int | None
    ) -> list[int]:
        numbers = []
        for trial_id in ids:
            row = conn.execute(
                sa.select(trials.c.number, trials.c.retries).where(trials.c.id == trial_id)
            ).one()
            running = sa.and_(trials.c.id == trial_id,
                              trials.c.state == TrialState.RUNNING.value)
            if max_retries is not None and row.retries >= max_retries:
                conn.execute(
                    trials.update().where(running).values(
                        state=TrialState.FAILED.value, finished_at=db_now(),
                        error=f"{reason}; gave up after {row.retries + 1} attempts",
                    )
                )
            else:
                conn.execute(
                    trials.update().where(running).values(
                        state=TrialState.QUEUED.value, worker_id=None, started_at=None, epochs=0,
                        retries=trials.c.retries + (0 if max_retries is None else 1),
                    )
                )
                conn.execute(epochs.delete().where(epochs.c.trial_id == trial_id))
            numbers.append(row.number)
        return numbers

    # -- trials: the worker's side --------------------------------------------------------
    @_retrying
    def claim_trial(
        self, study: int | Iterable[int] | None, worker_id: int, *,
        exclude: Iterable[int] = (), retry: bool = False,
    ) -> Trial | None:
        """Atomically take a QUEUED trial for this worker: the lowest-numbered of `study`
        (an id, several, or None for any study but those in `exclude`)."""
        next_queued = sa.select(trials.c.id).where(trials.c.state == TrialState.QUEUED.value)
        if isinstance(study, int):
            next_queued = next_queued.where(trials.c.study_id == study)
        elif study is not None:
            next_queued = next_queued.where(trials.c.study_id.in_(list(study)))
        if exclude:
            next_queued = next_queued.where(trials.c.study_id.not_in(list(exclude)))
        next_queued = (next_queued.order_by(trials.c.number, trials.c.id).limit(1)
                       .with_for_update(skip_locked=True))
        take = dict(state=TrialState.RUNNING.value, worker_id=worker_id, started_at=db_now())
        with self._tx(write=True) as conn:
            if retry:  # the attempt that failed may have committed: never hold two trials
                held = conn.execute(
                    sa.select(trials).where(trials.c.worker_id == worker_id,
                                            trials.c.state == TrialState.RUNNING.value)
                ).first()
                if held is not None:
                    return _trial(held)
            if self.engine.dialect.update_returning and self.engine.dialect.name != "mysql":
                # One statement: the subquery's row lock (or SQLite's write lock) makes it atomic.
                row = conn.execute(
                    trials.update()
                    .where(trials.c.id == next_queued.scalar_subquery())
                    .values(**take)
                    .returning(*trials.c)
                ).first()
            else:
                # MySQL/MariaDB: lock the row (skipping rows others hold), then take it.
                trial_id = conn.execute(next_queued).scalar()
                if trial_id is None:
                    return None
                conn.execute(trials.update().where(trials.c.id == trial_id).values(**take))
                row = conn.execute(sa.select(trials).where(trials.c.id == trial_id)).one()
        return None if row is None else _trial(row)

    @_retrying
    def release_trial(self, trial_id: int, worker_id: int) -> None:
        """Give back a claimed trial this worker cannot run (its study file is not here),
        uncounted as a retry."""
        with self._tx(write=True) as conn:
            owned = conn.execute(
                sa.select(trials.c.id).where(trials.c.id == trial_id,
                                             trials.c.worker_id == worker_id)
            ).scalars().all()
            self._requeue(conn, owned, "released", None)

    @_retrying
    def report_epoch(
        self, trial_id: int, worker_id: int, epoch: int, value: float | None,
        metrics: Mapping[str, float],
    ) -> bool:
        """Store one epoch's metrics (`epoch` counts from the trial's first epoch, or from
        where its checkpoint left off); False when the trial is no longer this worker's."""
        clean = {k: _finite(v) for k, v in metrics.items()}
        try:
            return self._report_epoch(trial_id, worker_id, epoch, _finite(value), clean)
        except IntegrityError:  # stored by an attempt whose acknowledgement was lost
            return True

    def _report_epoch(self, trial_id: int, worker_id: int, epoch: int, value: float | None,
                      metrics: dict[str, float | None]) -> bool:
        with self._tx(write=True) as conn:
            owned = conn.execute(
                trials.update()
                .where(trials.c.id == trial_id, trials.c.worker_id == worker_id,
                       trials.c.state == TrialState.RUNNING.value)
                .values(epochs=trials.c.epochs + 1)
            ).rowcount
            if owned:
                conn.execute(epochs.insert().values(
                    trial_id=trial_id, epoch=epoch, value=value, metrics=metrics))
        return bool(owned)

    @_retrying
    def finish_trial(
        self, trial_id: int, worker_id: int, state: TrialState, *,
        value: float | None = None, best_epoch: int | None = None,
        params: Mapping[str, Any] | None = None, error: str | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> bool:
        """RUNNING -> COMPLETE | PRUNED | FAILED, only if this worker still holds the trial;
        `attrs` are added to the trial's."""
        if not state.is_finished():
            raise ValueError(f"state: {state} is not a final state")
        values: dict[str, Any] = dict(
            state=state.value, value=_finite(value), best_epoch=best_epoch, error=error,
            finished_at=db_now(),
        )
        if params is not None:
            values["params"] = dict(params)
        with self._tx(write=True) as conn:
            if attrs:
                stored = conn.execute(sa.select(trials.c.attrs).where(trials.c.id == trial_id)
                                      ).scalar()
                values["attrs"] = {**(stored or {}), **attrs}
            done = conn.execute(
                trials.update()
                .where(trials.c.id == trial_id, trials.c.worker_id == worker_id,
                       trials.c.state == TrialState.RUNNING.value)
                .values(**values)
            ).rowcount
            if done:
                conn.execute(
                    workers.update().where(workers.c.id == worker_id)
                    .values(trials_done=workers.c.trials_done + 1, heartbeat_at=db_now())
                )
        return bool(done)

    @_retrying
    def restart_trial(self, trial_id: int, worker_id: int) -> bool:
        """Forget the epochs of a RUNNING trial this worker runs again from its start (a
        retry after an error); False when the trial is no longer this worker's."""
        with self._tx(write=True) as conn:
            owned = conn.execute(
                trials.update()
                .where(trials.c.id == trial_id, trials.c.worker_id == worker_id,
                       trials.c.state == TrialState.RUNNING.value)
                .values(epochs=0)
            ).rowcount
            if owned:
                conn.execute(epochs.delete().where(epochs.c.trial_id == trial_id))
        return bool(owned)

    # -- reading trials -------------------------------------------------------------
    @_retrying
    def trial(self, trial_id: int) -> Trial:
        with self._tx() as conn:
            row = conn.execute(sa.select(trials).where(trials.c.id == trial_id)).one()
        return _trial(row)

    @_retrying
    def trials(
        self, study_id: int, *, states: Iterable[TrialState] | None = None,
        numbers: Iterable[int] | None = None,
    ) -> list[Trial]:
        query = sa.select(trials).where(trials.c.study_id == study_id)
        if states is not None:
            query = query.where(trials.c.state.in_([TrialState(s).value for s in states]))
        if numbers is not None:
            query = query.where(trials.c.number.in_(list(numbers)))
        with self._tx() as conn:
            rows = conn.execute(query.order_by(trials.c.number)).all()
        return [_trial(row) for row in rows]

    @_retrying
    def trial_page(
        self, study_id: int, *, sort: str = "number", descending: bool = False,
        states: Iterable[TrialState] | None = None, filters: Iterable[TrialFilter] = (),
        numeric: Iterable[str] = (), offset: int = 0, limit: int = 50,
    ) -> tuple[int, list[Trial]]:
        """One page of the study's trials, filtered and sorted in the database (so a page
        costs an index range and a top-N sort, not the whole study), and how many match.
        `sort` and a filter's `field` are a column (number, value, epochs, duration) or a
        parameter's name; `numeric` names the parameters compared as numbers."""
        numeric = set(numeric)
        where = [trials.c.study_id == study_id]
        if states is not None:
            where.append(trials.c.state.in_([TrialState(s).value for s in states]))
        for f in filters:
            where.append(_compare(_trial_field(f.field, numeric), f.op, f.value))
        key = _trial_field(sort, numeric)
        order = [key.desc() if descending else key.asc()]
        if sort != "number":  # ties, and missing values last whichever the direction
            order = [key.is_(None).asc(), *order, trials.c.number.asc()]
        with self._tx() as conn:
            total = conn.execute(sa.select(func.count()).select_from(trials).where(*where)).scalar()
            # Sort the ids alone, then read the page's rows: a deep page does not sort
            # (and spill to disk) whole rows.
            ids = conn.execute(
                sa.select(trials.c.id).where(*where).order_by(*order).offset(offset).limit(limit)
            ).scalars().all()
            rows = conn.execute(sa.select(trials).where(trials.c.id.in_(ids))).all() if ids else []
        by_id = {row.id: row for row in rows}
        return int(total or 0), [_trial(by_id[i]) for i in ids if i in by_id]

    @_retrying
    def recent_trials(self, study_id: int, *, states: Iterable[TrialState],
                      limit: int) -> list[Trial]:
        """The `limit` highest-numbered trials in these states, in number order."""
        query = (sa.select(trials)
                 .where(trials.c.study_id == study_id,
                        trials.c.state.in_([TrialState(s).value for s in states]))
                 .order_by(trials.c.number.desc()).limit(limit))
        with self._tx() as conn:
            rows = conn.execute(query).all()
        return [_trial(row) for row in reversed(rows)]

    @_retrying
    def finished_values(self, study_id: int) -> list[tuple[int, float, float]]:
        """(number, finished_at, value) of every completed trial with a value, in the order
        they finished: the study's history, without loading whole rows."""
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(trials.c.number, trials.c.finished_at, trials.c.value)
                .where(trials.c.study_id == study_id,
                       trials.c.state == TrialState.COMPLETE.value, trials.c.value.is_not(None))
                .order_by(trials.c.finished_at, trials.c.number)
            ).all()
        return [tuple(row) for row in rows]

    @_retrying
    def trials_by_id(self, ids: Iterable[int]) -> list[Trial]:
        """These trials, looked up by primary key only: the cost does not grow with the
        study (a polling loop's query)."""
        ids = list(ids)
        if not ids:
            return []
        with self._tx() as conn:
            rows = conn.execute(sa.select(trials).where(trials.c.id.in_(ids))).all()
        return sorted((_trial(row) for row in rows), key=lambda t: t.number)

    @_retrying
    def curves(self, study_id: int) -> tuple[dict[int, list[float | None]], frozenset[int]]:
        """Per-epoch values of the study's running and finished (not failed) trials, by
        trial number, and the numbers of those that are finished: what early stopping reads."""
        live = (TrialState.RUNNING.value, TrialState.COMPLETE.value, TrialState.PRUNED.value)
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(trials.c.number, trials.c.state, epochs.c.epoch, epochs.c.value)
                .join(epochs, epochs.c.trial_id == trials.c.id)
                .where(trials.c.study_id == study_id, trials.c.state.in_(live))
                .order_by(trials.c.number, epochs.c.epoch)
            ).all()
        values: dict[int, list[float | None]] = {}
        finished = set()
        for number, state, _epoch, value in rows:
            values.setdefault(number, []).append(value)
            if state != TrialState.RUNNING.value:
                finished.add(number)
        return values, frozenset(finished)

    @_retrying
    def best_trial(self, study: StudyRecord) -> Trial | None:
        order = trials.c.value.desc() if study.sign > 0 else trials.c.value.asc()
        with self._tx() as conn:
            row = conn.execute(
                sa.select(trials)
                .where(trials.c.study_id == study.id, trials.c.state == TrialState.COMPLETE.value,
                       trials.c.value.is_not(None))
                .order_by(order, trials.c.number)
                .limit(1)
            ).first()
        return None if row is None else _trial(row)

    @_retrying
    def epochs(self, trial_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
        """Per-epoch metrics of these trials: {trial_id: [{epoch, value, metrics}, ...]}."""
        ids = list(trial_ids)
        result: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        with self._tx() as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    sa.select(epochs).where(epochs.c.trial_id.in_(ids[start:start + 500]))
                    .order_by(epochs.c.trial_id, epochs.c.epoch)
                ).all()
                for row in rows:
                    result[row.trial_id].append(
                        {"epoch": row.epoch, "value": row.value, "metrics": row.metrics}
                    )
        return result

    # -- workers --------------------------------------------------------------------
    @_retrying
    def register_worker(self, *, host: str, pid: int, device: str, study_id: int | None) -> int:
        with self._tx(write=True) as conn:
            return conn.execute(
                workers.insert().values(
                    host=host, pid=pid, device=device, study_id=study_id,
                    started_at=db_now(), heartbeat_at=db_now(), trials_done=0,
                )
            ).inserted_primary_key[0]

    @_retrying
    def heartbeat(self, worker_id: int) -> None:
        with self._tx(write=True) as conn:
            conn.execute(
                workers.update().where(workers.c.id == worker_id).values(heartbeat_at=db_now())
            )

    @_retrying
    def stop_worker(self, worker_id: int) -> None:
        with self._tx(write=True) as conn:
            conn.execute(
                workers.update()
                .where(workers.c.id == worker_id, workers.c.stopped_at.is_(None))
                .values(stopped_at=db_now())
            )

    @_retrying
    def workers(self, *, alive_only: bool = False) -> list[WorkerRecord]:
        """Workers with the study and number of the trial each runs now (if any)."""
        running = trials.c.state == TrialState.RUNNING.value
        query = (
            sa.select(workers, studies.c.name.label("study"), trials.c.number.label("trial"))
            .outerjoin(trials, sa.and_(trials.c.worker_id == workers.c.id, running))
            .outerjoin(studies, studies.c.id == trials.c.study_id)
            .order_by(workers.c.id)
        )
        if alive_only:
            query = query.where(workers.c.stopped_at.is_(None))
        with self._tx() as conn:
            return [WorkerRecord(**row._mapping) for row in conn.execute(query).all()]

    @_retrying
    def active_workers(self, study_id: int, *, grace: float) -> int:
        """Live workers that may take this study's trials (its own, and any-study agents)."""
        with self._tx() as conn:
            return conn.execute(
                sa.select(func.count()).where(
                    workers.c.stopped_at.is_(None),
                    workers.c.heartbeat_at >= db_now() - grace,
                    sa.or_(workers.c.study_id.is_(None), workers.c.study_id == study_id),
                )
            ).scalar_one()

    # -- the coordinator's lease ----------------------------------------------------------
    @_retrying
    def acquire_coordinator(self, study_id: int, owner: str, *, grace: float) -> str | None:
        """Take (or renew) the study's coordinator lease for `owner`. Returns None when
        `owner` holds it, else the holder: one active coordinator per study."""
        with self._tx(write=True) as conn:
            taken = conn.execute(
                studies.update()
                .where(studies.c.id == study_id,
                       sa.or_(studies.c.coordinator.is_(None), studies.c.coordinator == owner,
                              studies.c.coordinator_beat_at < db_now() - grace))
                .values(coordinator=owner, coordinator_beat_at=db_now())
            ).rowcount
            if taken:
                return None
            holder = conn.execute(
                sa.select(studies.c.coordinator).where(studies.c.id == study_id)
            ).first()
        if holder is None:
            raise StudyNotFound(f"the study with id {study_id} was deleted")
        return holder.coordinator

    @_retrying
    def release_coordinator(self, study_id: int, owner: str) -> None:
        with self._tx(write=True) as conn:
            conn.execute(
                studies.update()
                .where(studies.c.id == study_id, studies.c.coordinator == owner)
                .values(coordinator=None, coordinator_beat_at=None)
            )

    @_retrying
    def update_definition(self, study_id: int, path: str | None, source_hash: str | None) -> None:
        """Record the coordinator's copy of the study file: the one workers must match."""
        with self._tx(write=True) as conn:
            conn.execute(studies.update().where(studies.c.id == study_id)
                         .values(definition=path, definition_hash=source_hash))

    @_retrying
    def now(self) -> float:
        with self._tx() as conn:
            return conn.execute(sa.select(db_now())).scalar_one()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    # A killed process whose parent died too stays a zombie where nothing reaps orphans
    # (a container whose first process is not an init): it runs nothing, so it is dead.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS), or it just went away
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


@dataclass(frozen=True)
class TrialFilter:
    """`field op value`, e.g. value >= 0.9 or units = 64 (a column or a parameter)."""
    field: str
    op: str
    value: float | str


_COLUMNS = {"number": trials.c.number, "value": trials.c.value, "epochs": trials.c.epochs,
            "duration": trials.c.finished_at - trials.c.started_at}
_OPS: dict[str, Callable[[Any, Any], Any]] = {
    "=": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def _trial_field(field: str, numeric: set[str]) -> Any:
    if field in _COLUMNS:
        return _COLUMNS[field]
    element = trials.c.params[field]  # JSON path: the same on SQLite, PostgreSQL and MySQL
    return element.as_float() if field in numeric else element.as_string()


def _compare(column: Any, op: str, value: float | str) -> Any:
    if op not in _OPS:
        raise ValueError(f"unknown comparison {op!r} (use one of {' '.join(_OPS)})")
    return _OPS[op](column, value)


def _trial(row: Any) -> Trial:
    data = dict(row._mapping)
    data["state"] = TrialState(data["state"])
    return Trial(**data)
