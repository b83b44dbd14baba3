"""One batch at a time per deal: the deal's stage is derived and written under a lock.

A deal's stage is derived from the outcomes of all its meetings that we
recorded. Two workers applying bookings of the same deal at once would each
read the other's outcome from before its commit, and the deal could keep a
stage that neither booking alone implies (two cancellations leave it
"scheduled"). So a batch holds a lock on each of its deals from before it
reads the recorded outcomes until its results are committed.

On PostgreSQL the lock is a session-level advisory lock on a connection of its
own (taken in key order, so two batches cannot deadlock; waiting at most
``wait_seconds``, then the batch is retried later). It dies with its
connection, so a killed worker never leaves a deal locked. On SQLite the
lock is per process: the embedded workers of one ``serve`` share it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from adapter.errors import RetryableError

# The two-key advisory lock space (class id, hash of the deal key) is apart from the
# one-key space the outbox's per-booking claim lock uses.
_LOCK_CLASS = 4_711

_local: dict[tuple[str, str], threading.Lock] = {}
_local_guard = threading.Lock()


class DealBusy(RetryableError):
    """Another worker held one of the batch's deals for longer than the wait; retry later."""


class DealLocks:
    """``hold(keys)``: the batch's deals, locked in this process and on the database."""

    def __init__(self, engine: Engine, *, wait_seconds: float = 30.0) -> None:
        self._engine = engine
        self._wait = wait_seconds
        self._postgres = engine.dialect.name == "postgresql"

    @contextmanager
    def hold(self, keys: Iterable[str]) -> Iterator[None]:
        ordered = sorted(set(keys))
        with self._database(ordered) if self._postgres else self._process(ordered):
            yield

    @contextmanager
    def _process(self, keys: list[str]) -> Iterator[None]:
        url = str(self._engine.url)
        with _local_guard:
            locks = [_local.setdefault((url, key), threading.Lock()) for key in keys]
        held: list[threading.Lock] = []
        deadline = time.monotonic() + self._wait
        try:
            for key, lock in zip(keys, locks, strict=True):
                if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                    raise DealBusy(f"deal {key!r} is being written by another worker")
                held.append(lock)
            yield
        finally:
            for lock in reversed(held):
                lock.release()

    @contextmanager
    def _database(self, keys: list[str]) -> Iterator[None]:
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        healthy = True
        try:
            conn.execute(text(f"SET lock_timeout = {int(self._wait * 1000)}"))
            for key in keys:
                try:
                    self._lock(conn, key)
                except DBAPIError as exc:
                    if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
                        raise DealBusy(f"deal {key!r} is being written by another worker") from exc
                    raise
            yield
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock_all()"))
                conn.execute(text("RESET lock_timeout"))
            except DBAPIError:
                healthy = False
            if not healthy:
                conn.invalidate()  # the session ends, and every lock it held with it
            conn.close()

    @staticmethod
    def _lock(conn: Connection, key: str) -> None:
        conn.execute(
            text("SELECT pg_advisory_lock(:cls, hashtext(:key))"),
            {"cls": _LOCK_CLASS, "key": key},
        )
