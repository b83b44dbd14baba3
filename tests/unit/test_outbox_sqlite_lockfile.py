"""SQLite writers in different processes take turns on a lock file, not the busy handler."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from sqlalchemy import text

from outbox.db import make_engine


def _try_lock(path: Path) -> bool:
    """Whether another open file (as another process has) gets the writer lock now."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing the descriptor releases a lock it took
    return True


def test_a_write_transaction_holds_the_shared_writer_lock(tmp_path: Path) -> None:
    """While a write transaction is open, the database's writer lock file is taken (other
    processes' writers wait in the kernel); after commit or rollback it is free."""
    database = tmp_path / "outbox.db"
    lock = Path(f"{database}-writer.lock")
    engine = make_engine(f"sqlite:///{database}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            assert not _try_lock(lock)
        assert _try_lock(lock)
        conn = engine.connect()
        transaction = conn.begin()
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert not _try_lock(lock)
        transaction.rollback()
        conn.close()
        assert _try_lock(lock)
        reader = engine.connect().execution_options(sqlite_begin="DEFERRED")
        with reader, reader.begin():
            reader.execute(text("SELECT count(*) FROM t"))
            assert _try_lock(lock)  # readers never queue behind writers
    finally:
        engine.dispose()
    assert lock.stat().st_mode & 0o777 == 0o600
