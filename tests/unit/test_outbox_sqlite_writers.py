"""SQLite writers of one process queue on the engine's writer lock (``outbox.db``)."""

from __future__ import annotations

import threading
from pathlib import Path

from sqlalchemy import text

from outbox.db import make_engine


def _write_in_thread(engine: object, value: int) -> threading.Thread:
    def write() -> None:
        with engine.begin() as conn:  # type: ignore[attr-defined]
            conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": value})

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_a_connection_lost_mid_transaction_does_not_hold_up_later_writers(
    tmp_path: Path,
) -> None:
    """A write transaction whose connection is invalidated (never committed nor rolled
    back through the dialect) gives the writer lock back; the next writer goes at once,
    not after the 30 s busy timeout."""
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        lost = engine.connect()
        lost.begin()
        lost.execute(text("INSERT INTO t VALUES (1)"))
        lost.invalidate()
        lost.close()
        writer = _write_in_thread(engine, 2)
        writer.join(10)
        assert not writer.is_alive(), "the next writer waited on a lock nobody holds"
        with engine.connect() as conn:
            assert conn.execute(text("SELECT x FROM t")).scalars().all() == [2]
    finally:
        engine.dispose()


def test_writers_of_one_process_take_turns(tmp_path: Path) -> None:
    """Eight threads writing at once all commit: none fails with "database is locked"."""
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        threads = [_write_in_thread(engine, n) for n in range(8) for _ in range(5)]
        for thread in threads:
            thread.join(30)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM t")).scalar_one() == 40
    finally:
        engine.dispose()
