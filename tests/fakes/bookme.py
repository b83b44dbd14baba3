"""A fake BookMe API on 127.0.0.1: real sockets, the booking resource's JSON shapes.

What it serves (``Authorization: Bearer <token>`` on every call; 401 otherwise)
------------------------------------------------------------------------------
- ``GET /api/bookings/{id}`` → the booking resource (``adapter/bookme/client.py``);
  404 ``{"error": "not_found", "message": …}`` for an unknown id;
- ``GET /api/bookings?since=…[&cursor=…]`` → ``{"data": [resource, …], "nextCursor"}``
  (``page_size`` per page, bookings created on or after ``since``, by id);
- ``POST /api/bookings/{id}/reschedule`` with ``{"scheduledStart": iso, "duration": minutes}``
  → 200 and the updated resource (``status: "rescheduled"``, a new ``updatedAt``);
- ``POST /api/bookings/{id}/cancel`` with ``{"reason": text}`` → 200 and the resource
  (``status: "cancelled"``, ``cancellationReason``).

The push endpoints are an assumption (BookMe has not published them; see the
README's "Pushing back to BookMe"). The fake refuses what such an API would:

- a body that is not a JSON object, a ``scheduledStart`` that is not an ISO 8601
  datetime with an offset, a ``duration`` that is not a whole number 1–1440, a
  ``reason`` that is not a string of at most 1,000 characters: 422
  ``{"error": "invalid_request", "message": "<field>: <why>", "field": "<field>"}``;
- a slot another booking holds (``take_slot(start)``, or any booking's own
  start and span), or a booking that is cancelled: 409
  ``{"error": "slot_taken" | "booking_cancelled", "message": …}``;
- ``refuse(status=409|422, message=…, times=1)``: the next push(es) are refused so.

``Idempotency-Key``: the first answer (2xx or 4xx) to a key is stored with the
request's method, path and body; the same key with the same request gets that
answer again (header ``Idempotent-Replayed: true``) and changes nothing; the
same key with another request is a 422 ``idempotency_key_reused``. An injected
5xx, a drop or a refusal before the work is not stored (the work did not run).

Faults (each fires ``times`` times; ``None`` is forever): ``fail(status=503)``
(a 5xx before any work), ``slow(seconds)`` (the answer waits), ``drop()`` (a
hang-up before any work) and ``drop_after_commit()`` (the work is done and
stored under its idempotency key, then the connection is cut: the client sees
a timeout or a reset, as when BookMe's answer is lost). ``path`` globs select
the requests a fault applies to (default: the push endpoints).

BookMe's webhook: when ``webhook_url`` is set, an accepted reschedule or cancel
is followed, after ``webhook_delay`` seconds and from another thread, by
``booking.rescheduled`` / ``booking.cancelled`` posted there as the contract's
webhook body, signed with Standard Webhooks (``signing_secret``, ``whsec_…``)
or sent with ``X-Webhook-Secret`` (``shared_secret``). ``deliveries`` records
each delivery's status code.

Counters: ``calls`` (``Counter`` of ``"POST reschedule"``, ``"POST cancel"``,
``"GET booking"``, ``"GET list"``), ``applied`` (pushes that changed a
booking), ``requests`` (every push request: method, path, headers, JSON body).
"""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

PUSH_PATHS = "/api/bookings/*/*"


def iso_ms(moment: datetime) -> str:
    """``2027-01-20T08:00:00.000Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


@dataclass
class Fault:
    kind: str  # fail | slow | drop | drop_after_commit | refuse
    path: str = PUSH_PATHS
    times: int | None = 1
    status: int = 503
    seconds: float = 0.0
    message: str = ""

    def matches(self, path: str) -> bool:
        return fnmatch.fnmatchcase(path, self.path)


@dataclass(frozen=True)
class Recorded:
    """One push request as the fake received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class _Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    cut: bool = False  # hang up instead of answering


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeBookMe) -> None:
        self.fake = fake
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (timeouts, drops) are normal here: stay quiet."""

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    def do_POST(self) -> None:
        self.server.fake._serve(self)


class FakeBookMe:
    """BookMe's booking API in memory, behind a real HTTP server on 127.0.0.1."""

    def __init__(
        self,
        *,
        token: str | None = "fake-bookme-token",  # noqa: S107
        host: str = "127.0.0.1",
        port: int = 0,
        page_size: int = 50,
        webhook_url: str | None = None,
        signing_secret: str | None = None,
        shared_secret: str | None = None,
        webhook_delay: float = 0.0,
    ) -> None:
        self.token = token
        self.page_size = page_size
        self.webhook_url = webhook_url
        self.signing_secret = signing_secret
        self.shared_secret = shared_secret
        self.webhook_delay = webhook_delay
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._senders: list[threading.Thread] = []
        self.url = ""
        self.reset()

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> str:
        if self._server is not None:
            return self.url
        self._server = _Server((self._host, self._port), self)
        port = self._server.server_address[1]
        self.url = f"http://{self._host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-bookme-{port}",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self.wait_for_webhooks()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeBookMe:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- state ------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.bookings: dict[str, dict[str, Any]] = {}
            self.taken: set[tuple[datetime, int]] = set()
            self.calls: Counter[str] = Counter()
            self.applied = 0
            self.requests: list[Recorded] = []
            self.deliveries: list[tuple[str, int | str]] = []  # (event, status or error)
            self._faults: list[Fault] = []
            self._keys: dict[str, tuple[str, _Answer]] = {}

    def add_booking(self, resource: Mapping[str, Any]) -> dict[str, Any]:
        """Hold ``resource`` (BookMe's shape: ``id``, ``scheduledStart``, ``duration``…)."""
        with self._lock:
            stored = copy.deepcopy(dict(resource))
            stored.setdefault("status", "confirmed")
            stored.setdefault("createdAt", iso_ms(datetime.now(UTC)))
            self.bookings[str(stored["id"])] = stored
            return copy.deepcopy(stored)

    def booking(self, booking_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self.bookings[booking_id])

    def take_slot(self, start: str | datetime, minutes: int = 30) -> None:
        """Another customer holds ``start`` for ``minutes``: a reschedule overlapping it is 409."""
        moment = start if isinstance(start, datetime) else _parse_iso(start)
        assert moment is not None, start
        with self._lock:
            self.taken.add((moment.astimezone(UTC), minutes))

    def fail(self, status: int = 503, *, times: int | None = 1, path: str = PUSH_PATHS) -> None:
        self._add(Fault("fail", path, times, status=status))

    def slow(self, seconds: float, *, times: int | None = 1, path: str = PUSH_PATHS) -> None:
        self._add(Fault("slow", path, times, seconds=seconds))

    def drop(self, *, times: int | None = 1, path: str = PUSH_PATHS) -> None:
        self._add(Fault("drop", path, times))

    def drop_after_commit(self, *, times: int | None = 1, path: str = PUSH_PATHS) -> None:
        self._add(Fault("drop_after_commit", path, times))

    def refuse(
        self,
        message: str = "The requested time is no longer available",
        *,
        status: int = 409,
        times: int | None = 1,
        path: str = PUSH_PATHS,
    ) -> None:
        self._add(Fault("refuse", path, times, status=status, message=message))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_faults(self, path: str) -> list[Fault]:
        fired: list[Fault] = []
        with self._lock:
            for fault in list(self._faults):
                if not fault.matches(path):
                    continue
                fired.append(fault)
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
        return fired

    def wait_for_webhooks(self, timeout: float = 10.0) -> None:
        """Until every webhook this fake started sending has been delivered (or failed)."""
        deadline = time.monotonic() + timeout
        for sender in list(self._senders):
            sender.join(max(deadline - time.monotonic(), 0.01))

    # --- serving ----------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        split = urlsplit(handler.path)
        path = split.path
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        answer = self._route(handler, handler.command, path, split.query, raw)
        if answer.cut:
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return
        data = json.dumps(answer.body).encode()
        handler.send_response(answer.status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        for name, value in answer.headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        with contextlib.suppress(OSError):
            handler.wfile.write(data)

    def _route(self, handler: _Handler, method: str, path: str, query: str, raw: bytes) -> _Answer:
        if self.token is not None and handler.headers.get("authorization") != (
            f"Bearer {self.token}"
        ):
            return _Answer(401, {"error": "unauthorized", "message": "invalid API token"})
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if method == "GET" and parts[:2] == ["api", "bookings"]:
            if len(parts) == 2:
                self.calls["GET list"] += 1
                return self._list(parse_qs(query))
            if len(parts) == 3:
                self.calls["GET booking"] += 1
                with self._lock:
                    found = self.bookings.get(parts[2])
                    if found is None:
                        return _not_found(parts[2])
                    return _Answer(200, copy.deepcopy(found))
        if (
            method == "POST"
            and len(parts) == 4
            and parts[:2] == ["api", "bookings"]
            and parts[3] in ("reschedule", "cancel")
        ):
            return self._push(handler, path, parts[2], parts[3], raw)
        return _Answer(404, {"error": "not_found", "message": f"no route {method} {path}"})

    def _list(self, params: Mapping[str, list[str]]) -> _Answer:
        since = (params.get("since") or [""])[0]
        cursor = (params.get("cursor") or [""])[0]
        with self._lock:
            items = sorted(
                (b for b in self.bookings.values() if str(b.get("createdAt", "")) >= since),
                key=lambda b: str(b["id"]),
            )
            start = int(cursor) if cursor.isdigit() else 0
            page = items[start : start + self.page_size]
            more = start + self.page_size < len(items)
            return _Answer(
                200,
                {
                    "data": copy.deepcopy(page),
                    "nextCursor": str(start + self.page_size) if more else None,
                },
            )

    def _push(
        self, handler: _Handler, path: str, booking_id: str, action: str, raw: bytes
    ) -> _Answer:
        self.calls[f"POST {action}"] += 1
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        headers = {k.lower(): v for k, v in handler.headers.items()}
        with self._lock:
            self.requests.append(Recorded("POST", path, headers, body, time.monotonic()))
        faults = self._take_faults(path)
        for fault in faults:
            if fault.kind == "slow":
                time.sleep(fault.seconds)
        for fault in faults:
            if fault.kind == "drop":
                return _Answer(0, None, cut=True)
            if fault.kind == "fail":
                return _Answer(fault.status, {"error": "internal", "message": "try again later"})
        key = headers.get("idempotency-key")
        fingerprint = json.dumps([path, body], sort_keys=True)
        with self._lock:
            if key is not None and key in self._keys:
                seen, first = self._keys[key]
                if seen != fingerprint:
                    return _Answer(
                        422,
                        {
                            "error": "idempotency_key_reused",
                            "message": "this Idempotency-Key was used for another request",
                        },
                    )
                return _Answer(
                    first.status, first.body, {**first.headers, "Idempotent-Replayed": "true"}
                )
            refusal = next((f for f in faults if f.kind == "refuse"), None)
            if refusal is not None:
                answer = _Answer(
                    refusal.status,
                    {
                        "error": "slot_taken" if refusal.status == 409 else "unprocessable",
                        "message": refusal.message,
                    },
                )
            else:
                answer = self._apply(booking_id, action, body)
            if key is not None and answer.status < 500:
                self._keys[key] = (fingerprint, answer)
        if answer.status == 200:
            self._announce(answer.body, action)
        if any(f.kind == "drop_after_commit" for f in faults):
            return _Answer(0, None, cut=True)
        return answer

    def _apply(self, booking_id: str, action: str, body: Any) -> _Answer:
        """Validate and apply one push, under the lock."""
        booking = self.bookings.get(booking_id)
        if booking is None:
            return _not_found(booking_id)
        if not isinstance(body, dict):
            return _invalid("body", "must be a JSON object")
        if booking.get("status") in ("cancelled", "canceled"):
            return _Answer(
                409,
                {"error": "booking_cancelled", "message": f"booking {booking_id} is cancelled"},
            )
        now = datetime.now(UTC)
        if action == "cancel":
            reason = body.get("reason")
            if reason is not None and (not isinstance(reason, str) or len(reason) > 1000):
                return _invalid("reason", "must be a string of at most 1000 characters")
            booking["status"] = "cancelled"
            if reason:
                booking["cancellationReason"] = reason
        else:
            start = _parse_iso(body.get("scheduledStart"))
            if start is None:
                return _invalid("scheduledStart", "must be an ISO 8601 datetime with an offset")
            duration = body.get("duration", booking.get("duration"))
            if (
                not isinstance(duration, int)
                or isinstance(duration, bool)
                or not 1 <= duration <= 1440
            ):
                return _invalid("duration", "must be a whole number of minutes, 1-1440")
            clash = self._clash(booking_id, start, duration)
            if clash is not None:
                return _Answer(409, {"error": "slot_taken", "message": clash})
            booking["scheduledStart"] = iso_ms(start)
            booking["duration"] = duration
            booking["status"] = "rescheduled"
        # Strictly after any earlier stamp, so each answer orders after the last.
        previous = _parse_iso(booking.get("updatedAt"))
        stamp = now if previous is None or now > previous else previous + timedelta(milliseconds=1)
        booking["updatedAt"] = iso_ms(stamp)
        self.applied += 1
        return _Answer(200, copy.deepcopy(booking))

    def _clash(self, booking_id: str, start: datetime, minutes: int) -> str | None:
        end = start + timedelta(minutes=minutes)
        held = [
            (slot, span)
            for slot, span in self.taken
            if slot < end and start < slot + timedelta(minutes=span)
        ]
        for other_id, other in self.bookings.items():
            other_start = _parse_iso(other.get("scheduledStart"))
            if (
                other_id == booking_id
                or other_start is None
                or other.get("status") in ("cancelled", "canceled")
            ):
                continue
            other_end = other_start + timedelta(minutes=int(other.get("duration") or 0))
            if other_start < end and start < other_end:
                held.append((other_start, 0))
        if not held:
            return None
        return f"the slot at {iso_ms(start)} is already booked"

    # --- BookMe's own webhook ---------------------------------------------------------

    def webhook_body(self, resource: Mapping[str, Any], event: str) -> dict[str, Any]:
        """The contract's webhook body BookMe posts for ``resource``."""
        body: dict[str, Any] = {
            "event": event,
            "bookingId": str(resource["id"]),
            "scheduledDate": resource["scheduledStart"],
            "source": "bookme",
        }
        for name in (
            "eventType",
            "name",
            "email",
            "phone",
            "company",
            "duration",
            "meetingUrl",
            "notes",
            "createdAt",
            "updatedAt",
            "timezone",
            "cancellationReason",
        ):
            if resource.get(name) is not None:
                body[name] = resource[name]
        return body

    def _announce(self, resource: Any, action: str) -> None:
        if self.webhook_url is None or not isinstance(resource, dict):
            return
        event = "booking.cancelled" if action == "cancel" else "booking.rescheduled"
        body = self.webhook_body(resource, event)
        sender = threading.Thread(
            target=self._deliver, args=(event, body), name="fake-bookme-webhook", daemon=True
        )
        self._senders.append(sender)
        sender.start()

    def _deliver(self, event: str, body: dict[str, Any]) -> None:
        if self.webhook_delay:
            time.sleep(self.webhook_delay)
        data = json.dumps(body)
        headers = {"content-type": "application/json"}
        if self.signing_secret is not None:
            msg_id = f"msg_{uuid.uuid4().hex}"
            now = datetime.now(UTC)
            headers.update(
                {
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(int(now.timestamp())),
                    "webhook-signature": Webhook(self.signing_secret).sign(msg_id, now, data),
                }
            )
        elif self.shared_secret is not None:
            headers["x-webhook-secret"] = self.shared_secret
        assert self.webhook_url is not None
        try:
            response = httpx.post(self.webhook_url, content=data, headers=headers, timeout=10)
            outcome: int | str = response.status_code
        except httpx.HTTPError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.deliveries.append((event, outcome))


def _not_found(booking_id: str) -> _Answer:
    return _Answer(404, {"error": "not_found", "message": f"no booking {booking_id}"})


def _invalid(field_name: str, why: str) -> _Answer:
    return _Answer(
        422,
        {"error": "invalid_request", "message": f"{field_name}: {why}", "field": field_name},
    )
