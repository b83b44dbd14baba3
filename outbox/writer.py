"""The single writer: one thread commits every enqueued event, in groups.

An async request handler hands its ``NewEvent`` over and awaits the answer;
it never holds a thread while the database works. Whatever queued up while a
commit was under way goes into the next transaction together (one durable
commit for many webhooks), and no request thread ever waits on a commit lock
or on SQLite's busy handler: only this thread writes events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable

from outbox.store import Event, NewEvent, OutboxStore

log = logging.getLogger(__name__)

Answer = tuple[Event, bool] | BaseException
_Item = tuple[NewEvent, Callable[[Answer], None]]


def _resolve(future: asyncio.Future[tuple[Event, bool]], answer: Answer) -> None:
    if future.done():  # the awaiting request was cancelled (its client left)
        return
    if isinstance(answer, BaseException):
        future.set_exception(answer)
    else:
        future.set_result(answer)


class OutboxWriter:
    """Commits events for many callers on one thread; started on first use."""

    def __init__(self, store: OutboxStore, *, max_group: int = 512) -> None:
        self.store = store
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        self._committing = False

    async def enqueue(self, new: NewEvent) -> tuple[Event, bool]:
        """``OutboxStore.enqueue_committed`` without a thread: returns once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Event, bool]] = loop.create_future()

        def done(answer: Answer) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody awaits it
                loop.call_soon_threadsafe(_resolve, future, answer)

        self.submit(new, done)
        return await future

    def busy(self) -> bool:
        """Whether webhooks are waiting for a commit now (queued, or being committed)."""
        return self._committing or not self._queue.empty()

    def submit(self, new: NewEvent, done: Callable[[Answer], None]) -> None:
        """Queue ``new``; ``done`` is called on the writer thread with its answer."""
        if self._closed:
            raise RuntimeError("the outbox writer is closed")
        self._ensure_started()
        self._queue.put((new, done))

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="outbox-writer", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                break
            group = [first]
            while len(group) < self.max_group:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True  # commit what came before the stop, then end
                    break
                group.append(item)
            self._committing = True
            try:
                answers = self.store.enqueue_group([new for new, _ in group])
            except Exception as exc:  # the writer must outlive any one bad group
                log.exception("outbox writer: a group commit failed")
                answers = [exc] * len(group)
            finally:
                self._committing = False
            for (_, done), answer in zip(group, answers, strict=True):
                try:
                    done(answer)
                except Exception:  # one caller's callback must not stop the writer
                    log.exception("outbox writer: answering a caller failed")

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the thread."""
        self._closed = True
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
