"""The engine under `Storage`: connection options, transactions, retries and the schema.

A URL becomes a SQLAlchemy engine set up for the tuner (SQLite files checked before
SQLite opens them, network timeouts, BEGIN IMMEDIATE on SQLite); one transaction per
call (`Database._tx`); driver errors sorted into what waiting heals (`retrying` runs the
call again) and what it does not; the schema created or upgraded with Alembic, and
another application's database refused before anything is written to it.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, unquote, urlsplit

import sqlalchemy as sa
from sqlalchemy import event
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

from tuner.errors import ForeignDatabase, NoTunerDatabase, StorageError
from tuner.storage.clock import db_now
from tuner.storage.models import TUNER_TABLES

log = logging.getLogger(__name__)

DEFAULT_URL = "sqlite:///tuner.db"
F = TypeVar("F", bound=Callable[..., Any])
MIGRATIONS = Path(__file__).with_name("migrations")


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
    # (WAL mode is not set here: it changes the file, see `Database._use_wal`.)
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


def retrying(method: F) -> F:
    """Run a one-transaction method again on a transient error: up to ten times, with
    jittered backoff, for a lock conflict; until `reconnect_timeout` has passed for a lost
    connection. The method gets `retry=True` on a second attempt if it asks for it."""
    wants_retry_flag = "retry" in inspect.signature(method).parameters

    @functools.wraps(method)
    def wrapper(self: Database, *args: Any, **kwargs: Any) -> Any:
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


class Database:
    """A connection to the database at a URL: transactions, retries and the schema.
    The concerns of `Storage` (studies, the trial queue, the read side) build on it."""

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
        return f"{type(self).__name__}({safe_url(self.url)!r})"

    def dispose(self) -> None:
        self.engine.dispose()

    @retrying
    def now(self) -> float:
        """The database's clock: every time stored is read from it."""
        with self._tx() as conn:
            return conn.execute(sa.select(db_now())).scalar_one()

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
        """A driver error as one line naming the database, of the class `retrying` reads:
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
        config.set_main_option("script_location", str(MIGRATIONS))
        scripts = ScriptDirectory.from_config(config)
        head = scripts.get_current_head()
        known = {script.revision for script in scripts.walk_revisions()}
        with self._tx() as conn:
            found = self._schema_found(conn)
        if found == (head, TUNER_TABLES):
            return
        # Another process may be creating the schema now: on MySQL each CREATE TABLE commits
        # on its own, and on PostgreSQL the revision and the tables are read in two
        # statements, each seeing what has committed by then. So a half schema is judged
        # only under the lock; SQLite reads one snapshot and changes nothing before the lock.
        self._judge_schema(*found, known, halfway=self.engine.dialect.name != "sqlite")
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
        return ", ".join(heads) or None, TUNER_TABLES & set(sa.inspect(conn).get_table_names())

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
        elif revision is not None and tables != TUNER_TABLES and not halfway:
            why = (f"it is at the tuner's schema revision {revision!r} but lacks the tables "
                   f"{', '.join(sorted(TUNER_TABLES - tables))}")
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
