"""``BookMePusher``: changes made in the CRM sent back to BookMe (reschedule, cancel).

BookMe has not published this part of its API. This module is written against
a small assumption, and it is the one file to change if the real API differs
(README, "Pushing back to BookMe")::

    POST {BOOKME_API_URL}/api/bookings/{id}/reschedule  {"scheduledStart": iso, "duration": min}
    POST {BOOKME_API_URL}/api/bookings/{id}/cancel      {"reason": text}

with ``Authorization: Bearer <BOOKME_API_TOKEN>`` and an ``Idempotency-Key``
header; 2xx answers with the booking resource. We assume BookMe honours the key
as Stripe-style APIs do: a repeated key with the same request returns the first
answer and changes nothing. That is what makes a push whose answer was lost (a
timeout after the request was sent) safe to repeat.

One attempt per call: the outbox retries a push with backoff (the same key),
so retrying here too would only multiply the calls. Answers are translated
here and only here:

- 2xx → the resource (a dict; ``{}`` if the body is not one);
- 409 / 422 → ``BookMeRefused`` with BookMe's reason (the slot is taken…);
- 404 → ``BookMeNotFound``; 401 / 403 and other 4xx → ``BookMeRejected``;
- 5xx, 429, timeouts, connection errors → ``BookMeUnavailable`` (retryable).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from adapter.bookme.client import BookMeHttp
from adapter.bookme.errors import (
    BookMeNotConfigured,
    BookMeNotFound,
    BookMeRefused,
    BookMeRejected,
    BookMeUnavailable,
)
from adapter.timeutil import iso_z

if TYPE_CHECKING:
    from adapter.settings import Settings

__all__ = ["PUSH_TIMEOUT", "BookMePusher", "pusher_for"]

PUSH_TIMEOUT = httpx.Timeout(10.0, connect=5.0)
REFUSALS = (409, 422)


def _reason(response: httpx.Response) -> str:
    """BookMe's own words for a refusal (its ``message``, else ``error``, else the text)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
    else:
        text = ""
        if isinstance(body, Mapping):
            text = str(body.get("message") or body.get("error") or "")
        elif isinstance(body, str):
            text = body
    return text[:500] or f"HTTP {response.status_code}"


def pusher_for(settings: Settings) -> BookMePusher:
    """A pusher for ``BOOKME_API_URL``; ``BookMeNotConfigured`` when it is not set."""
    if settings.bookme_api_url is None:
        raise BookMeNotConfigured(
            "the BookMe API is not configured: set BOOKME_API_URL (and BOOKME_API_TOKEN) "
            "to push changes made in the CRM back to BookMe"
        )
    token = settings.bookme_api_token
    return BookMePusher(
        settings.bookme_api_url,
        token.get_secret_value() if token is not None else None,
        timeout=httpx.Timeout(settings.bookme_push_timeout_seconds, connect=5.0),
    )


class BookMePusher(BookMeHttp):
    """Sends reschedules and cancellations to BookMe. A context manager, or ``close()``."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = PUSH_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            base_url,
            token,
            timeout=timeout,
            transport=transport,
            extra_headers={"Content-Type": "application/json"},
        )

    def reschedule(
        self, booking_id: str, *, start: datetime, duration: int | None, idempotency_key: str
    ) -> dict[str, Any]:
        """Ask BookMe to move ``booking_id`` to ``start`` (UTC, to the millisecond) for
        ``duration`` minutes (left out when ``None``: BookMe keeps the booking's)."""
        body: dict[str, Any] = {"scheduledStart": iso_z(start)}
        if duration is not None:
            body["duration"] = duration
        return self._post(booking_id, "reschedule", body, idempotency_key)

    def cancel(
        self, booking_id: str, *, reason: str | None, idempotency_key: str
    ) -> dict[str, Any]:
        """Ask BookMe to cancel ``booking_id``, giving ``reason`` (may be empty)."""
        return self._post(booking_id, "cancel", {"reason": reason or ""}, idempotency_key)

    def _post(
        self, booking_id: str, action: str, body: dict[str, Any], idempotency_key: str
    ) -> dict[str, Any]:
        path = f"/api/bookings/{quote(booking_id, safe='')}/{action}"
        try:
            response = self._http.post(
                path, json=body, headers={"Idempotency-Key": idempotency_key}
            )
        except httpx.TimeoutException as exc:
            raise BookMeUnavailable(
                f"BookMe did not answer the {action} of booking {booking_id!r} in time "
                f"({type(exc).__name__}); it may have been applied: repeated with the same "
                "Idempotency-Key"
            ) from exc
        except httpx.TransportError as exc:
            raise BookMeUnavailable(
                f"cannot reach BookMe for the {action} of booking {booking_id!r} "
                f"({type(exc).__name__})"
            ) from exc
        status = response.status_code
        if status >= 500 or status == 429:
            raise BookMeUnavailable(
                f"BookMe answered {status} to the {action} of booking {booking_id!r}: "
                f"{_reason(response)}"
            )
        if status in REFUSALS:
            reason = _reason(response)
            raise BookMeRefused(
                f"BookMe refused the {action} of booking {booking_id!r} ({status}): {reason}",
                reason=reason,
                status=status,
            )
        if status == 404:
            raise BookMeNotFound(f"BookMe has no booking {booking_id!r} to {action}")
        if status in (401, 403):
            raise BookMeRejected(f"BookMe refused the API token ({status}): check BOOKME_API_TOKEN")
        if status >= 400:
            raise BookMeRejected(
                f"BookMe refused the {action} of booking {booking_id!r} ({status}): "
                f"{_reason(response)}"
            )
        try:
            answer = response.json()
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {}
