"""Engine construction: SQLite tuned for several processes, or PostgreSQL as is.

SQLite runs in WAL mode with a busy timeout, and every transaction begins with
``BEGIN IMMEDIATE`` so that a writer takes the write lock up front instead of
failing with "database is locked" when it upgrades from a read. A read-only
caller may use ``engine.execution_options(sqlite_begin="DEFERRED")``.

Writers also queue on a lock before ``BEGIN IMMEDIATE``: SQLite's busy
handler polls with sleeps of up to 100 ms, so dozens of request threads
contending for the file lock through it spent most of their time asleep
(ingest fell to ~35 webhooks/s). Within one process that is a thread lock;
between processes (``serve --no-worker`` beside a ``worker``) an exclusive
``flock`` on a ``<database>-writer.lock`` file beside the database, which the
kernel hands to the next waiter the moment it is released: the API's commits
waited up to 0.5 s in the busy handler behind the worker's transactions
without it. A process that dies holding it releases it with its file. Programs
that do not take it (the ``sqlite3`` shell) still meet the busy timeout.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

BUSY_TIMEOUT_MS = 30_000


def _create_private(path: Path) -> None:
    """Create the SQLite file (0600) and any missing folders (0700): it holds customer
    data. SQLite gives its -wal and -shm files the database file's mode. An existing
    file or folder is left as its owner set it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _writer_lock_file(database: Path) -> int | None:
    """The open descriptor of the database's writer lock file (0600), or ``None`` for a
    ``file:`` URI or a folder we cannot write (then only the busy timeout coordinates)."""
    if str(database).startswith("file:"):
        return None
    try:
        return os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return None


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite files get their folder created and the pragmas above."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(url, **kwargs)

    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        _create_private(Path(database))
    connect_args = kwargs.pop("connect_args", {})
    connect_args.setdefault("timeout", BUSY_TIMEOUT_MS / 1000)
    connect_args.setdefault("check_same_thread", False)
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    writer = threading.Lock()
    shared = _writer_lock_file(Path(database)) if database and database != ":memory:" else None
    if shared is not None:
        weakref.finalize(engine, os.close, shared)
    holder: list[Any] = [None]  # the raw DBAPI connection that holds ``writer``

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN, not pysqlite.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        dbapi = conn.connection.dbapi_connection
        if mode == "IMMEDIATE" and writer.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
            holder[0] = dbapi
            if shared is not None:
                fcntl.flock(shared, fcntl.LOCK_EX)  # other processes' writers, one at a time
        try:
            conn.exec_driver_sql(f"BEGIN {mode}")
        except BaseException:
            _release(dbapi)
            raise

    # Released once COMMIT / ROLLBACK has run (the "commit" event fires before it),
    # and in any case when the connection is invalidated or goes back to the pool:
    # a connection lost mid-transaction must not keep every later writer waiting.
    def _release(dbapi: Any) -> None:
        dbapi = getattr(dbapi, "dbapi_connection", dbapi)  # a pool proxy, or the raw one
        if holder[0] is not None and holder[0] is dbapi:
            holder[0] = None
            if shared is not None:
                fcntl.flock(shared, fcntl.LOCK_UN)
            writer.release()

    @event.listens_for(engine, "invalidate")
    def _on_invalidate(dbapi_connection: Any, _record: Any, _exc: Any) -> None:
        _release(dbapi_connection)

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, _record: Any) -> None:
        _release(dbapi_connection)

    dialect = engine.dialect
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi: Any) -> None:
        try:
            commit(dbapi)
        finally:
            _release(dbapi)

    def do_rollback(dbapi: Any) -> None:
        try:
            rollback(dbapi)
        finally:
            _release(dbapi)

    dialect.do_commit = do_commit  # type: ignore[method-assign, assignment]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign, assignment]
    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
