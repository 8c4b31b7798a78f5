"""Databases a user can get wrong: each is one clear `StorageError` at once, and nothing in
the database (or the file given as one) is created, changed or lost."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.conftest import SERVER_URLS
from tuner.errors import ForeignDatabase, NoTunerDatabase, StorageError
from tuner.storage import Storage
from tuner.storage.engine import TransientStorageError

TUNER_TABLES = {"studies", "trials", "trial_epochs", "workers"}


def make_study(storage: Storage, name: str = "kept") -> None:
    storage.create_study(name, metric="val_accuracy", direction="maximize", strategy="random",
                         seed=1, space={}, settings={})


def snapshot(url: str) -> dict[str, list[tuple]]:
    """Every table with its rows, sorted: what must be the same before and after."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            names = sorted(sa.inspect(conn).get_table_names())
            return {name: sorted(map(tuple, conn.exec_driver_sql(f"SELECT * FROM {name}")),
                                 key=repr) for name in names}
    finally:
        engine.dispose()


def folder_state(folder: Path) -> dict[str, str]:
    """Each file of a folder with its hash: nothing written, nothing added (-wal, -shm).
    (A -shm's bytes are SQLite's bookkeeping of who reads, which readers may update.)"""
    return {p.name: "" if p.name.endswith("-shm") else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.iterdir()}


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message
    return message


# -- 1. a file that is not a SQLite database ------------------------------------------------
NOT_SQLITE = {
    "text": b"name,score\nalice,3\nbob,5\n",
    "random bytes": random.Random(7).randbytes(8192),
    # SQLite's header followed by garbage: only SQLite itself can tell it is damaged
    "damaged": b"SQLite format 3\x00" + random.Random(8).randbytes(8192 - 16),
}


@pytest.mark.parametrize("create", [True, False])
@pytest.mark.parametrize("kind", list(NOT_SQLITE))
def test_a_file_that_is_not_sqlite_is_refused_and_left_unchanged(kind, create, tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(NOT_SQLITE[kind])
    before = folder_state(tmp_path)
    with pytest.raises(StorageError) as raised:
        Storage(f"sqlite:///{path}", create=create)
    message = one_line(raised)
    assert str(path) in message
    assert re.search(r"not a SQLite database|damaged", message), message
    assert folder_state(tmp_path) == before  # same bytes, no journal or -wal beside it


# -- 2. a database of another application ---------------------------------------------------
@pytest.fixture
def foreign(storage_url: str) -> Iterator[str]:
    """The database of an application that also uses Alembic: its own revision id and table."""
    meta = sa.MetaData()
    version = sa.Table("alembic_version", meta,
                       sa.Column("version_num", sa.String(32), primary_key=True))
    ledger = sa.Table("ledger_entries", meta, sa.Column("id", sa.Integer, primary_key=True),
                      sa.Column("amount", sa.Integer))
    engine = sa.create_engine(storage_url)
    with engine.begin() as conn:
        meta.create_all(conn)
        conn.execute(version.insert().values(version_num="be1f2a9c0d11"))
        conn.execute(ledger.insert().values(id=1, amount=42))
    try:
        yield storage_url
    finally:  # the servers are shared: leave them as the fixture found them
        with engine.begin() as conn:
            meta.drop_all(conn)
        engine.dispose()


@pytest.mark.parametrize("create", [True, False])
def test_a_database_of_another_application_is_refused_untouched(foreign, create):
    before = snapshot(foreign)
    with pytest.raises(ForeignDatabase) as raised:
        Storage(foreign, create=create)
    message = one_line(raised)
    assert "'be1f2a9c0d11'" in message and "another application" in message
    assert "database of its own" in message
    assert snapshot(foreign) == before


def test_a_foreign_sqlite_database_keeps_its_bytes(tmp_path):
    """Not even SQLite's journal mode (WAL is set only on a tuner database) may change."""
    path = tmp_path / "app.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('be1f2a9c0d11')")
    engine.dispose()
    before = folder_state(tmp_path)
    for create in (True, False):
        with pytest.raises(ForeignDatabase):
            Storage(f"sqlite:///{path}", create=create)
    assert folder_state(tmp_path) == before


def test_tables_named_like_the_tuners_without_its_version_are_refused(storage_url):
    """Another application's `studies` table: creating ours next to it would fail halfway
    (and on MySQL leave an alembic_version behind, DDL commits on its own)."""
    engine = sa.create_engine(storage_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE studies (id INTEGER PRIMARY KEY, title VARCHAR(20))")
        conn.exec_driver_sql("INSERT INTO studies VALUES (1, 'theirs')")
    try:
        before = snapshot(storage_url)
        with pytest.raises(ForeignDatabase) as raised:
            Storage(storage_url)
        assert "studies" in one_line(raised)
        assert snapshot(storage_url) == before
    finally:  # the servers are shared: leave no foreign `studies` behind
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE studies")
        engine.dispose()


# -- 3. readers create nothing --------------------------------------------------------------
def test_a_reader_does_not_create_a_missing_sqlite_file(tmp_path):
    path = tmp_path / "typo.db"
    with pytest.raises(NoTunerDatabase) as raised:
        Storage(f"sqlite:///{path}", create=False)
    message = one_line(raised)
    assert str(path) in message and "nothing was created" in message
    assert list(tmp_path.iterdir()) == []


def test_a_reader_does_not_create_tables_in_a_database_without_them(storage_url):
    before = snapshot(storage_url)
    assert not TUNER_TABLES & set(before)
    with pytest.raises(NoTunerDatabase, match="holds no tuner studies .no tuner tables."):
        Storage(storage_url, create=False)
    assert snapshot(storage_url) == before


def test_a_reader_leaves_an_empty_sqlite_file_empty(tmp_path):
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(NoTunerDatabase):
        Storage(f"sqlite:///{path}", create=False)
    assert folder_state(tmp_path) == {"empty.db": hashlib.sha256(b"").hexdigest()}


def test_a_reader_opens_a_tuner_database_and_upgrades_an_older_one(storage_url):
    from alembic.command import upgrade
    from alembic.config import Config

    from tuner.storage.engine import MIGRATIONS

    engine = sa.create_engine(storage_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:  # a database made by the first release
        config.attributes["connection"] = conn
        upgrade(config, "0001")
    engine.dispose()
    reader = Storage(storage_url, create=False)
    make_study(reader)
    assert [s.study.name for s in Storage(storage_url, create=False).list_studies()] == ["kept"]
    assert snapshot(storage_url)["alembic_version"] == [("0005",)]


# -- 4. a read-only database ----------------------------------------------------------------
def read_only_url(url: str) -> str:
    """The same database, opened so that the server (or SQLite) refuses every write."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"sqlite:///file:{parsed.database}?mode=ro&uri=true"
    option = ({"options": "-c default_transaction_read_only=on"}
              if parsed.get_backend_name() == "postgresql"
              else {"init_command": "SET SESSION TRANSACTION READ ONLY"})
    return parsed.update_query_dict(option).render_as_string(hide_password=False)


def test_writes_to_a_read_only_database_fail_at_once(storage_url):
    make_study(Storage(storage_url))
    reader = Storage(read_only_url(storage_url), reconnect_timeout=30)
    assert [s.study.name for s in reader.list_studies()] == ["kept"]  # reads work
    start = time.monotonic()
    with pytest.raises(StorageError) as raised:
        make_study(reader, "new")
    assert time.monotonic() - start < 5  # not retried: a read-only database stays so
    assert not isinstance(raised.value, TransientStorageError)
    assert re.search(r"read.?only", one_line(raised), re.IGNORECASE)
    assert [s.study.name for s in Storage(storage_url).list_studies()] == ["kept"]


def test_a_table_dropped_under_a_running_process_is_an_error_at_once(storage_url):
    storage = Storage(storage_url)
    make_study(storage)
    engine = sa.create_engine(storage_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE trial_epochs")
    engine.dispose()
    start = time.monotonic()
    with pytest.raises(StorageError) as raised:
        storage.epochs([1])
    assert time.monotonic() - start < 5
    assert not isinstance(raised.value, TransientStorageError)
    assert "trial_epochs" in one_line(raised)


def _read_then_write(url: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for create in (False, True):
        storage = Storage(url, create=create)
        out[f"read (create={create})"] = [s.study.name for s in storage.list_studies()]
    start = time.monotonic()
    try:
        make_study(storage, "new")
        out["write"] = "written"
    except StorageError as exc:
        out["write"] = f"{type(exc).__name__}: {exc}"
    out["seconds"] = time.monotonic() - start
    storage.dispose()
    return out


def _as_nobody(url: str) -> dict[str, object]:
    """`_read_then_write` in a forked child that dropped root for `nobody` (a fork, not a
    new interpreter: that one may live where `nobody` may not go, under /root)."""
    nobody = pwd.getpwnam("nobody")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.close(read)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            result: dict[str, object] = _read_then_write(url)
        except BaseException as exc:
            result = {"error": repr(exc)}
        with os.fdopen(write, "w") as pipe:
            json.dump(result, pipe)
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        out = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(out)


@pytest.mark.parametrize("folder_mode, file_mode, file_owner, live_writer", [
    (0o777, 0o444, "root", False),  # a chmod 444 file: SQLite would leave -wal and -shm behind
    (0o555, 0o644, "root", False),  # a read-only folder: no -shm can be made
    (0o555, 0o644, "user", False),  # a writable file whose folder is read-only
    (0o555, 0o644, "root", True),  # its owner is writing: its last commit is only in the -wal
], ids=["file-444", "folder-555", "writable-file-in-read-only-folder", "live-writer"])
def test_a_read_only_sqlite_file_is_read_and_left_unchanged(
        folder_mode, file_mode, file_owner, live_writer):
    """A real permission check needs a user the kernel refuses: as root (who may write
    anything) the check runs as `nobody` in a child process, otherwise as ourselves."""
    root = os.geteuid() == 0
    if root:
        try:
            user = pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and there is no user 'nobody' to drop to")
    base = Path(tempfile.mkdtemp(prefix="tuner-ro-"))  # tmp_path is 0700: nobody can't enter
    folder = base / "db"
    writer = None
    try:
        base.chmod(0o755)
        folder.mkdir()
        path = folder / "tuner.db"
        storage = Storage(f"sqlite:///{path}")
        make_study(storage)
        storage.dispose()
        assert sorted(p.name for p in folder.iterdir()) == ["tuner.db"]  # WAL checkpointed
        expected = ["kept"]
        if live_writer:
            writer = Storage(f"sqlite:///{path}")
            make_study(writer, "late")
            expected.append("late")
            assert (folder / "tuner.db-wal").stat().st_size > 0
        if root and file_owner == "user":
            os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(file_mode)
        folder.chmod(folder_mode)
        before = folder_state(folder)
        out = _as_nobody(f"sqlite:///{path}") if root else _read_then_write(f"sqlite:///{path}")
        assert "error" not in out, out["error"]
        assert out["read (create=False)"] == out["read (create=True)"] == expected
        assert out["write"].startswith("StorageError: ") and "read-only" in out["write"]
        assert out["seconds"] < 5
        assert folder_state(folder) == before  # no -wal or -shm left to break its owner
    finally:
        if writer is not None:
            writer.dispose()
        folder.chmod(0o755)
        shutil.rmtree(base)


def test_a_new_sqlite_database_is_in_wal_mode(tmp_path):
    """WAL (readers go on while a worker writes) is set when the tuner creates a file."""
    Storage(f"sqlite:///{tmp_path / 'new.db'}").dispose()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'new.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


# -- 5. other databases that cannot be used --------------------------------------------------
@pytest.mark.parametrize("url, message", [
    ("postgresql+psycopg://postgres@127.0.0.1/tuner_no_such_db",
     'database "tuner_no_such_db" does not exist'),
    ("postgresql+psycopg://tuner_no_such_role@127.0.0.1/test",
     'role "tuner_no_such_role" does not exist'),
    ("postgresql+psycopg://postgres@127.0.0.1:1/test", "Connection refused"),
    ("mysql+pymysql://root@127.0.0.1/tuner_no_such_db", "Unknown database 'tuner_no_such_db'"),
    ("mysql+pymysql://tuner_no_such_user@127.0.0.1/test", "Access denied"),
    ("mysql+pymysql://root:wrong-secret@127.0.0.1/test", "Access denied for user 'root'"),
    ("postgresql+nosuchdriver://postgres@127.0.0.1/test", "no driver"),
])
def test_servers_that_refuse_give_one_line_at_once(url, message):
    start = time.monotonic()
    with pytest.raises(StorageError) as raised:
        Storage(url)
    assert message in one_line(raised) and "wrong-secret" not in one_line(raised)
    assert time.monotonic() - start < 15


@pytest.mark.parametrize("create", [True, False])
def test_a_folder_given_as_the_sqlite_file(tmp_path, create):
    with pytest.raises(StorageError, match="is a folder, not a SQLite database file"):
        Storage(f"sqlite:///{tmp_path}", create=create)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("create", [True, False])
def test_a_sqlite_file_in_a_missing_folder(tmp_path, create):
    path = tmp_path / "missing" / "tuner.db"
    with pytest.raises(StorageError, match="the folder .*missing does not exist"):
        Storage(f"sqlite:///{path}", create=create)
    assert list(tmp_path.iterdir()) == []


def _kind(exc: sa.exc.DBAPIError) -> str:
    from tuner.storage.engine import _kind

    return _kind(exc)


def _caught(conn: sa.Connection, sql: str) -> sa.exc.DBAPIError:
    with pytest.raises(sa.exc.DBAPIError) as raised:
        conn.exec_driver_sql(sql)
    return raised.value


@pytest.mark.parametrize("backend", ["postgresql", "mariadb"])
def test_server_errors_are_classified_by_whether_waiting_heals_them(backend):
    """Real errors from real servers: only a lock or a lost connection is worth waiting for."""
    url = SERVER_URLS[backend]
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)  # no session setting carries
    try:
        with engine.connect() as conn:
            assert _kind(_caught(conn, "SELECT * FROM tuner_no_such_table")) == "fatal"
        with engine.connect() as conn:
            conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY" if backend == "mariadb"
                                 else "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            conn.commit()
            assert _kind(_caught(conn, "CREATE TABLE tuner_ro_probe (x INTEGER)")) == "fatal"
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS tuner_lock_probe")
            conn.exec_driver_sql("CREATE TABLE tuner_lock_probe (x INTEGER PRIMARY KEY)")
            conn.exec_driver_sql("INSERT INTO tuner_lock_probe VALUES (1)")
        with engine.connect() as holder, engine.connect() as waiter:  # a lock wait times out
            holder.exec_driver_sql("SELECT x FROM tuner_lock_probe FOR UPDATE").all()
            waiter.exec_driver_sql("SET lock_timeout = '50ms'" if backend == "postgresql"
                                   else "SET SESSION innodb_lock_wait_timeout = 1")
            lock = _caught(waiter, "SELECT x FROM tuner_lock_probe FOR UPDATE")
            assert _kind(lock) == "lock"
            holder.rollback()
        with engine.connect() as victim, engine.connect() as killer:  # the server drops us
            pid = victim.exec_driver_sql("SELECT pg_backend_pid()" if backend == "postgresql"
                                         else "SELECT CONNECTION_ID()").scalar()
            killer.exec_driver_sql(f"SELECT pg_terminate_backend({pid})"
                                   if backend == "postgresql" else f"KILL {pid}")
            killer.commit()
            time.sleep(0.2)
            assert _kind(_caught(victim, "SELECT 1")) == "lost"
        dead = sa.create_engine(make_url(url).set(port=1))  # nothing listens there
        with pytest.raises(sa.exc.DBAPIError) as refused:
            dead.connect()
        assert _kind(refused.value) == "lost"  # a server mid-restart refuses, then is back
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS tuner_lock_probe")
        engine.dispose()


def test_sqlite_errors_are_classified_by_whether_waiting_heals_them(tmp_path):
    path = tmp_path / "t.db"
    holder = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    with holder.connect() as conn, holder.connect() as other:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.commit()
        assert _kind(_caught(conn, "SELECT * FROM missing")) == "fatal"
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")  # holds the write lock
        assert _kind(_caught(other, "INSERT INTO t VALUES (2)")) == "lock"
        conn.rollback()
    holder.dispose()
    reader = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    with reader.connect() as conn:
        assert _kind(_caught(conn, "INSERT INTO t VALUES (3)")) == "fatal"
    reader.dispose()
