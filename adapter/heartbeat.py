"""A worker process's heartbeat, and the take-over of dead processes' claims.

One thread per process that runs workers refreshes the process's row in
``outbox_workers`` every ``WORKER_HEARTBEAT_SECONDS`` and, on each beat, frees
the claims of any process whose heartbeat is older than
``WORKER_STALE_SECONDS`` (``OutboxStore.take_over_stale``). The heartbeat has
a thread of its own, apart from the claim loops, so a long CRM batch never
makes a live process look dead; the batch's leases are still renewed as before.
This is the scheme of procrastinate's workers table and PgQueuer's heartbeat.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

from outbox.store import OutboxStore

log = logging.getLogger(__name__)

_process: tuple[int, str] | None = None


def process_worker_id() -> str:
    """This process's worker id: ``host:pid:nonce``.

    The nonce is new on every start: a restarted container often runs under the
    same host name and pid, and must not inherit (and keep alive) the dead
    process's row and claims.
    """
    global _process
    pid = os.getpid()
    if _process is None or _process[0] != pid:  # a forked child is a process of its own
        _process = (pid, f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}")
    return _process[1]


class Heartbeat:
    """Beats for ``worker_id`` every ``interval`` seconds in a daemon thread until ``stop``."""

    def __init__(
        self,
        store: OutboxStore,
        worker_id: str,
        *,
        interval: float,
        stale_after: float,
        on_take_over: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.interval = interval
        self.stale_after = stale_after
        self.on_take_over = on_take_over
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def beat_once(self) -> dict[str, int]:
        """Refresh our row, then free the claims of stale processes; returns those freed."""
        self.store.beat(self.worker_id)
        freed = self.store.take_over_stale(self.stale_after)
        for dead, claims in freed.items():
            log.warning(
                "worker %s silent for over %.0fs: took over its %d claim(s)",
                dead,
                self.stale_after,
                claims,
                extra={"dead_worker": dead, "claims": claims},
            )
        if any(freed.values()) and self.on_take_over is not None:
            self.on_take_over()  # claim them now, not at the next poll
        return freed

    def start(self) -> None:
        """Beat at once, then every ``interval`` seconds."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.beat_once()
            except Exception:  # the database may be back by the next beat; stale_after allows it
                log.warning("heartbeat failed", exc_info=True)
            if self._done.wait(self.interval):
                return

    def stop(self, *, forget: bool) -> None:
        """Stop beating; with ``forget`` drop our row (every claim released: a clean stop).

        Without it the row stays and goes stale, so claims still held by a batch
        that outlived the shutdown deadline are taken over a few heartbeats after
        the process exits rather than a whole lease later.
        """
        self._done.set()
        if self._thread is not None:
            self._thread.join(self.interval + 5)
        if forget:
            try:
                self.store.forget_worker(self.worker_id)
            except Exception:  # the row goes stale and is pruned by the next live process
                log.warning("could not remove this worker's heartbeat row", exc_info=True)
