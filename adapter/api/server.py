"""The HTTP server's stack and its guards against slow and idle clients (``serve``'s
uvicorn options).

The stack is uvicorn's fast one (``uvicorn[standard]``): httptools parses
HTTP and uvloop runs the event loop; together about 1.15× the requests per
second of h11 on asyncio. h11 stays as the fallback where they are missing.

uvicorn closes a connection that idles *between* requests (``timeout_keep_alive``)
but has no deadline for a request itself: a connection that sends nothing, or
its headers or body a byte at a time, stays open for ever (and any byte cancels
the keep-alive timer). ``guarded_protocol`` adds the missing deadlines to
uvicorn's httptools (or h11) protocol: the request head must arrive within
``HTTP_HEADER_TIMEOUT_SECONDS`` of the connection opening (or the previous
response ending), and its body within ``HTTP_BODY_TIMEOUT_SECONDS`` of the
head; past either, the client gets ``408`` (when no response has started) and
the connection is closed. Only the client's side is timed: a handler still
working on a complete request is never cut off.

Bodies are read on the event loop before any handler thread is taken (the
webhook's secret is even checked from the headers first), so slow clients hold
a socket each, never a request thread.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    import uvloop  # noqa: F401  (only its presence is checked: uvicorn loads it)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] is a dependency
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from adapter.settings import Settings

log = logging.getLogger(__name__)


def _timeout_response() -> bytes:
    body = b'{"error": "Request sent too slowly"}'
    head = (
        b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


class _GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with deadlines on the client's side of each request."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def _arm(self, seconds: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        # IDLE: the request head is not complete; SEND_BODY: the body is not. DONE
        # (the handler is working) or a closed connection is left alone.
        if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
            return
        log.info(
            "closed a connection that sent its request too slowly",
            extra={"client": self.client[0] if self.client else None},
        )
        if self.cycle is None or not self.cycle.response_started:
            self.transport.write(_timeout_response())
        self.transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request head arrived: now its body is timed
            self._arm(self.body_timeout)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self.header_timeout)  # the next request's head

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)


class _HttpToolsDeadlines:
    """The same deadlines on uvicorn's httptools protocol, driven by its parser callbacks.

    ``_waiting`` is what the client still owes: ``"head"``, ``"body"``, or ``None``
    while a complete request is being handled (never cut off).
    """

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._due: float | None = None  # loop time the client's part must arrive by
        self._timer_at = 0.0  # when ``_deadline`` wakes
        self._waiting: str | None = "head"

    def _arm(self, seconds: float | None) -> None:
        """Move the deadline. Lazily: a request moves it three times, and a timer made
        and cancelled each time was ~5% of the event loop's time per webhook (issue 14),
        so one timer per connection wakes at the old moment and sleeps on if moved
        later (a deadline moved earlier gets a new timer)."""
        loop: asyncio.AbstractEventLoop = self.loop  # type: ignore[attr-defined]
        if seconds is None:
            self._due = None
            return
        self._due = loop.time() + seconds
        if self._deadline is None or self._due < self._timer_at:
            self._wake_at(self._due)

    def _wake_at(self, moment: float) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        loop: asyncio.AbstractEventLoop = self.loop  # type: ignore[attr-defined]
        self._deadline, self._timer_at = loop.call_at(moment, self._expire), moment

    def _expire(self) -> None:
        self._deadline = None
        if self._due is None:
            return
        loop: asyncio.AbstractEventLoop = self.loop  # type: ignore[attr-defined]
        if loop.time() < self._due:  # moved since: sleep on until then
            self._wake_at(self._due)
            return
        self._due = None
        transport: asyncio.Transport = self.transport  # type: ignore[attr-defined]
        if transport.is_closing() or self._waiting is None:
            return
        log.info(
            "closed a connection that sent its request too slowly",
            extra={"client": self.client[0] if self.client else None},  # type: ignore[attr-defined]
        )
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle is None or not cycle.response_started:
            transport.write(_timeout_response())
        transport.close()

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._arm(self.header_timeout)

    def on_message_begin(self) -> None:
        super().on_message_begin()  # type: ignore[misc]
        self._waiting = "head"

    def on_headers_complete(self) -> None:
        super().on_headers_complete()  # type: ignore[misc]
        self._waiting = "body"
        self._arm(self.body_timeout)

    def on_message_complete(self) -> None:
        super().on_message_complete()  # type: ignore[misc]
        self._waiting = None
        self._arm(None)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        transport: asyncio.Transport = self.transport  # type: ignore[attr-defined]
        # A pipelined request that already arrived whole is the handler's, not the client's.
        if transport.is_closing() or (self._waiting is None and self.pipeline):  # type: ignore[attr-defined]
            return
        if self._waiting is None:
            self._waiting = "head"
        self._arm(self.header_timeout if self._waiting == "head" else self.body_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._due = None
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        super().connection_lost(exc)  # type: ignore[misc]


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """The HTTP protocol class with these deadlines (uvicorn builds one per connection):
    httptools' when installed, else h11's."""
    deadlines = {"header_timeout": header_timeout, "body_timeout": body_timeout}
    if HttpToolsProtocol is not None:
        return type("GuardedHttpToolsProtocol", (_HttpToolsDeadlines, HttpToolsProtocol), deadlines)
    return type("GuardedH11Protocol", (_GuardedH11Protocol,), deadlines)  # pragma: no cover


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn keyword arguments: the fast stack, and the timeouts in ``settings``."""
    return {
        "http": guarded_protocol(
            settings.http_header_timeout_seconds, settings.http_body_timeout_seconds
        ),
        "loop": "uvloop" if HttpToolsProtocol is not None else "asyncio",
        "timeout_keep_alive": settings.http_keep_alive_seconds,
    }
