"""``BookMeClient``: BookMe's booking API over httpx, with timeouts, retries and one error map.

Two calls, both ``GET`` with ``Authorization: Bearer <BOOKME_API_TOKEN>``:

- ``{BOOKME_API_URL}/api/bookings/{id}`` → one booking resource (a JSON object);
- ``{BOOKME_API_URL}/api/bookings?since=…[&cursor=…]`` → one page,
  ``{"data": [resource, …], "nextCursor": "…" | null}``; ``null`` (or no
  ``nextCursor``) ends the list.

Every call has a timeout (5 s connect, 15 s read). 5xx, 429, timeouts and
connection errors are retried with tenacity (exponential backoff with
jitter, ``max_attempts`` in all); the failure is then translated, here and
only here, into ``adapter.bookme.errors``. The token is sent in a header only:
it is never part of a URL, a message or a log line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from adapter import __version__
from adapter.booking import FieldError
from adapter.bookme.errors import (
    BookMeError,
    BookMeMalformed,
    BookMeNotFound,
    BookMeRejected,
    BookMeUnavailable,
)

__all__ = [
    "DEFAULT_TIMEOUT",
    "BookMeClient",
    "BookMeHttp",
    "BookingPage",
]

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)


class _Transient(Exception):
    """A failure worth retrying; becomes ``BookMeUnavailable`` when the retries run out."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class BookingPage:
    """One page of BookMe's booking list: the resources, the cursor that fetched it, the next."""

    items: list[Any]
    cursor: str | None
    next_cursor: str | None


def _bookme_message(response: httpx.Response) -> str:
    """BookMe's own error text, if its body has one (shortened)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
    else:
        text = ""
        if isinstance(body, Mapping):
            text = str(body.get("message") or body.get("error") or "")
    return f": {text[:200]}" if text else ""


class BookMeHttp:
    """The HTTP session both BookMe clients use: base URL, bearer token (in a header
    only), timeouts; a context manager, or ``close()`` when done."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: httpx.Timeout | float,
        transport: httpx.BaseTransport | None = None,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": f"bookme-crm/{__version__}"}
        headers.update(extra_headers or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()


class BookMeClient(BookMeHttp):
    """BookMe's booking API. Use as a context manager, or ``close()`` when done."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_attempts: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(base_url, token, timeout=timeout, transport=transport)
        self._max_attempts = max_attempts
        self._wait = wait_random_exponential(multiplier=backoff, max=max_backoff)
        self._sleep = sleep

    # -- the two calls ---------------------------------------------------------

    def get_booking(self, booking_id: str) -> dict[str, Any]:
        """BookMe's resource for ``booking_id`` (a JSON object, not yet validated)."""
        path = f"/api/bookings/{quote(booking_id, safe='')}"
        body = self._get(
            path, not_found=lambda: BookMeNotFound(f"BookMe has no booking {booking_id!r}")
        )
        if not isinstance(body, dict):
            raise BookMeMalformed(
                f"BookMe's answer for booking {booking_id!r} is not a booking resource",
                [FieldError(field="body", message="must be a JSON object")],
            )
        return body

    def pages(self, since: str, cursor: str | None = None) -> Iterator[BookingPage]:
        """The booking list from ``since``, page by page, starting at ``cursor`` (resume)."""
        while True:
            params = {"since": since, **({"cursor": cursor} if cursor else {})}
            body = self._get(
                "/api/bookings",
                params=params,
                not_found=lambda: BookMeRejected(
                    "BookMe answered 404 for its booking list: check BOOKME_API_URL"
                ),
            )
            page = _page(body, cursor)
            yield page
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    # -- plumbing ----------------------------------------------------------------

    def _get(
        self,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        not_found: Callable[[], BookMeError],
    ) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Transient),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            response = retrying(self._attempt, path, params)
        except _Transient as exc:
            raise BookMeUnavailable(
                f"BookMe is unavailable ({exc.reason}) after {self._max_attempts} attempts; "
                "nothing was stored, try again later"
            ) from exc
        if response.status_code == 404:
            raise not_found()
        if response.status_code in (401, 403):
            raise BookMeRejected(
                f"BookMe refused the API token ({response.status_code}): check BOOKME_API_TOKEN"
            )
        if response.status_code >= 400:
            raise BookMeRejected(
                f"BookMe refused the request ({response.status_code}){_bookme_message(response)}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise BookMeMalformed(
                f"BookMe's answer to GET {path} is not JSON",
                [FieldError(field="body", message="must be JSON")],
            ) from exc

    def _attempt(self, path: str, params: Mapping[str, str] | None) -> httpx.Response:
        try:
            response = self._http.get(path, params=params)
        except httpx.TimeoutException as exc:
            raise _Transient(f"timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise _Transient(f"cannot connect: {type(exc).__name__}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise _Transient(f"HTTP {response.status_code}")
        return response


def _page(body: Any, cursor: str | None) -> BookingPage:
    """Check one list page's shape; the resources themselves are checked one by one later."""
    details: list[FieldError] = []
    if not isinstance(body, dict):
        details.append(FieldError(field="body", message="must be a JSON object"))
    else:
        if not isinstance(body.get("data"), list):
            details.append(FieldError(field="data", message="must be a list of bookings"))
        next_cursor = body.get("nextCursor")
        if next_cursor is not None and not isinstance(next_cursor, str):
            details.append(FieldError(field="nextCursor", message="must be a string or null"))
        elif next_cursor and next_cursor == cursor:
            details.append(
                FieldError(field="nextCursor", message="repeats the cursor of this page")
            )
    if details:
        raise BookMeMalformed("BookMe's booking list page is malformed", details)
    assert isinstance(body, dict)
    return BookingPage(
        items=body["data"], cursor=cursor, next_cursor=body.get("nextCursor") or None
    )
