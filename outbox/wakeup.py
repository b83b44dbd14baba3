"""Waking the workers of other processes when events commit: PostgreSQL's LISTEN/NOTIFY.

The writer's transaction sends ``NOTIFY bookme_outbox`` (delivered by
PostgreSQL at its commit, folded to one per transaction); a ``Listener``
thread in each worker process waits on the channel and wakes its workers,
so an event is picked up within milliseconds instead of at the next poll.
Polling stays as the fallback: a notification lost with a dropped
connection only delays an event until then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import Connection, Engine, text

log = logging.getLogger(__name__)

CHANNEL = "bookme_outbox"
_NOTIFY = text(f"NOTIFY {CHANNEL}")


def announce(conn: Connection) -> None:
    """Notify the listeners when ``conn``'s transaction commits (PostgreSQL only)."""
    if conn.dialect.name == "postgresql":
        conn.execute(_NOTIFY)


def conninfo(engine: Engine) -> str:
    """A libpq connection string for ``engine``'s database (psycopg's own, not SQLAlchemy's)."""
    url = engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Listener:
    """A daemon thread that calls ``on_notify`` for each notification on ``CHANNEL``."""

    def __init__(
        self,
        engine: Engine,
        on_notify: Callable[[], None],
        *,
        retry_seconds: float = 5.0,
    ) -> None:
        self._conninfo = conninfo(engine)
        self._on_notify = on_notify
        self._retry = retry_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-listener", daemon=True)
        self.listening = threading.Event()  # set while LISTEN is in force (tests)

    def start(self) -> Listener:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.listening.set()
                    # A wake-up on start: events committed before LISTEN are not announced.
                    self._on_notify()
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=0.5):
                            self._on_notify()
            except Exception as exc:  # the poll still finds the events; try again later
                self.listening.clear()
                log.warning("outbox listener: %s; polling only for %.0fs", exc, self._retry)
                self._stop.wait(self._retry)
        self.listening.clear()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
