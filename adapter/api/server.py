"""The HTTP server's guards against slow and idle clients (``serve``'s uvicorn options).

uvicorn closes a connection that idles *between* requests (``timeout_keep_alive``)
but has no deadline for a request itself: a connection that sends nothing, or
its headers or body a byte at a time, stays open for ever (and any byte cancels
the keep-alive timer). ``guarded_protocol`` adds the missing deadlines to
uvicorn's h11 protocol: the request head must arrive within
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


def guarded_protocol(header_timeout: float, body_timeout: float) -> type[H11Protocol]:
    """The h11 protocol class with these deadlines (uvicorn builds one per connection)."""
    return type(
        "GuardedH11Protocol",
        (_GuardedH11Protocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn keyword arguments for the timeouts in ``settings``."""
    return {
        "http": guarded_protocol(
            settings.http_header_timeout_seconds, settings.http_body_timeout_seconds
        ),
        "timeout_keep_alive": settings.http_keep_alive_seconds,
    }
