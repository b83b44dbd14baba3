"""Slow and idle clients against a real ``bookme-crm serve`` process on loopback (issue 13)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.test_serve_process import Serve
from tests.conftest import ADMIN_TOKEN, WEBHOOK_SECRET, seed_booking

pytestmark = pytest.mark.slow

TIMEOUTS = {
    "HTTP_HEADER_TIMEOUT_SECONDS": "1",
    "HTTP_BODY_TIMEOUT_SECONDS": "1.5",
    "HTTP_KEEP_ALIVE_SECONDS": "1",
}
# More slow bodies than the server's 40 request threads: none of them may take one.
SLOW_BODIES = 45
SLOW_HEADS = 5
IDLE = 5
RESET = b"<reset>"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    server = Serve(
        tmp_path,
        {"CRM_WEBHOOK_SECRET": WEBHOOK_SECRET, "ADMIN_TOKEN": ADMIN_TOKEN, **TIMEOUTS},
    )
    yield server
    server.stop()


def _connect(server: Serve) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setblocking(False)  # polled: recv raises BlockingIOError while nothing came
    return sock


def _closed_by_server(sock: socket.socket) -> bytes | None:
    """What the server sent before closing, or ``None`` while the connection is open."""
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except (TimeoutError, BlockingIOError):
        return None
    except ConnectionResetError:
        # Our slowloris dripped a byte after the server's 408 and close: the kernel then
        # answers with a reset, which discards the 408 still unread in our buffer.
        return RESET + received
    return received


def _drip(socks: list[socket.socket], stop: threading.Event) -> None:
    """A slowloris: one more byte on each socket every 0.3 s, until the server hangs up."""
    while not stop.wait(0.3):
        for sock in socks:
            try:
                sock.send(b"x")
            except OSError:
                continue


def test_slow_and_idle_clients_are_cut_off_and_never_hold_request_threads(serve: Serve) -> None:
    """Idle, slowloris-header and slow-body connections close within their timeouts while a
    normal webhook still answers at once."""
    body_head = (
        b"POST /api/bookings/incoming HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-Webhook-Secret: " + WEBHOOK_SECRET.encode() + b"\r\nContent-Length: 4000\r\n\r\n{"
    )
    slow_bodies = [_connect(serve) for _ in range(SLOW_BODIES)]
    for sock in slow_bodies:
        sock.sendall(body_head)
    slow_heads = [_connect(serve) for _ in range(SLOW_HEADS)]
    for sock in slow_heads:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    idle = [_connect(serve) for _ in range(IDLE)]
    stop = threading.Event()
    dripper = threading.Thread(target=_drip, args=(slow_heads + slow_bodies, stop), daemon=True)
    dripper.start()
    started = time.monotonic()
    try:
        # A well-behaved sender is answered at once, all those connections notwithstanding.
        answer = httpx.post(
            f"{serve.url}/api/bookings/incoming",
            json=seed_booking(),
            headers={"X-Webhook-Secret": WEBHOOK_SECRET},
            timeout=5,
        )
        assert answer.status_code in (200, 202), answer.text
        answered = time.monotonic() - started
        assert answered < 1.0

        closed: dict[int, tuple[float, bytes]] = {}
        everyone = slow_bodies + slow_heads + idle
        deadline = started + 6
        while len(closed) < len(everyone) and time.monotonic() < deadline:
            for index, sock in enumerate(everyone):
                if index not in closed and (got := _closed_by_server(sock)) is not None:
                    closed[index] = (time.monotonic() - started, got)
            time.sleep(0.05)
        assert len(closed) == len(everyone), f"{len(everyone) - len(closed)} still open"
        waits = {
            "body": max(closed[i][0] for i in range(SLOW_BODIES)),
            "head": max(closed[i][0] for i in range(SLOW_BODIES, SLOW_BODIES + SLOW_HEADS)),
            "idle": max(closed[i][0] for i in range(SLOW_BODIES + SLOW_HEADS, len(everyone))),
        }
        print(f"webhook answered in {answered:.3f} s; closed after (s):", waits)
        assert waits["body"] < 1.5 + 1.0  # body timeout, plus polling slack
        assert waits["head"] < 1.0 + 1.0
        assert waits["idle"] < 1.0 + 1.0
        # Idle connections are told why (408). A slowloris may race the server's answer
        # with its next byte (a reset discards the unread 408) or meet the close first:
        # for those, being cut off in time is the guarantee.
        idle_answers = [closed[i][1] for i in range(SLOW_BODIES + SLOW_HEADS, len(everyone))]
        assert all(got.startswith(b"HTTP/1.1 408") for got in idle_answers), idle_answers
        dripped = [closed[i][1] for i in range(SLOW_BODIES + SLOW_HEADS)]
        told = sum(got.startswith((b"HTTP/1.1 408", RESET)) for got in dripped)
        print(f"slow connections answered 408 (or reset after it): {told}/{len(dripped)}")
    finally:
        stop.set()
        for sock in slow_bodies + slow_heads + idle:
            sock.close()
    assert "Traceback" not in serve.output()
    assert "Exception" not in serve.output()


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    serve: Serve,
) -> None:
    """After a response, a silent connection is closed after HTTP_KEEP_ALIVE_SECONDS."""
    sock = _connect(serve)
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        time.sleep(0.3)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        while (got := _closed_by_server(sock)) is None:
            assert time.monotonic() - started < 3, "keep-alive connection never closed"
            time.sleep(0.05)
        assert got == b""
        assert 0.8 < time.monotonic() - started < 2.5
    finally:
        sock.close()


def test_a_body_deadline_shorter_than_the_head_deadline_still_cuts_in_time(
    tmp_path: Path,
) -> None:
    """Deadlines move lazily (one timer per connection, ``_HttpToolsDeadlines._arm``); one
    moved earlier than the timer's moment gets its own: a 0.5 s body timeout cuts a
    stalled body at 0.5 s even though the head's 3 s timer was already running."""
    server = Serve(
        tmp_path,
        {
            "CRM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "HTTP_HEADER_TIMEOUT_SECONDS": "3",
            "HTTP_BODY_TIMEOUT_SECONDS": "0.5",
        },
    )
    sock = _connect(server)
    try:
        sock.sendall(
            b"POST /api/bookings/incoming HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nX-Webhook-Secret: " + WEBHOOK_SECRET.encode() + b"\r\nContent-Length: 400"
            b"\r\n\r\n{"
        )
        started = time.monotonic()
        while (got := _closed_by_server(sock)) is None:
            assert time.monotonic() - started < 2.5, "the body's deadline did not cut it"
            time.sleep(0.05)
        assert got.startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 1.5
    finally:
        sock.close()
        server.stop()
