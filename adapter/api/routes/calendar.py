"""Calendar feeds: `/calendar/{token}.ics`, and one owner's `/calendar/{token}/owner/{email}.ics`.

The token in the URL is the credential (calendar apps send no headers), so an
unknown or revoked token is a plain 404, never a hint that the feed exists.
"""

from __future__ import annotations

import threading
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request, status
from fastapi.responses import JSONResponse, Response

from adapter.api.deps import ServicesDep
from adapter.api.schemas import error_responses
from adapter.backends.local.reader import owner_key
from adapter.calendar import Feed, FeedCache, TokenStore
from adapter.timeutil import as_utc

router = APIRouter(tags=["calendar"])
_CACHE_LOCK = threading.Lock()

# No length or pattern rules on the path: a malformed token is just another unknown
# one (404), so a feed URL's validity is decided in one place, the token lookup.
FeedToken = Annotated[str, Path(description="A feed token (`bookme-crm calendar token create`)")]
OwnerEmail = Annotated[
    str, Path(description="The owner's email, as in the mapping (at most 320 characters)")
]
MAX_EMAIL = 320
_FEED_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "An iCalendar (RFC 5545) feed",
        "content": {"text/calendar": {"schema": {"type": "string"}}},
    },
    304: {"description": "Not modified since the `ETag` / `Last-Modified` the client holds"},
    **error_responses(
        400, 404, s400="The owner's email is too long", s404="Unknown or revoked token"
    ),
}


def _cache(request: Request) -> FeedCache:
    """The app's feed cache, made on first use (one per app, so tests never share one)."""
    state = request.app.state
    with _CACHE_LOCK:
        if not hasattr(state, "calendar_feeds"):
            state.calendar_feeds = FeedCache()
        cache: FeedCache = state.calendar_feeds
    return cache


def _not_modified(request: Request, feed: Feed) -> bool:
    """RFC 9110 §13.2.2: ``If-None-Match`` decides when present, else ``If-Modified-Since``."""
    match = request.headers.get("if-none-match")
    if match is not None:
        presented = {tag.strip().removeprefix("W/") for tag in match.split(",")}
        return "*" in presented or feed.etag in presented
    since = request.headers.get("if-modified-since")
    if since is None or feed.last_modified is None:
        return False
    try:
        moment: datetime = parsedate_to_datetime(since)
    except (TypeError, ValueError, IndexError):
        return False  # an unreadable date is ignored, as RFC 9110 says
    if moment.tzinfo is None:
        return False
    return feed.last_modified.replace(microsecond=0) <= as_utc(moment)


def _serve(request: Request, services: ServicesDep, token: str, owner: str | None) -> Response:
    if not TokenStore(services.engine).is_active(token):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="Not found")
    if owner is not None and (len(owner) > MAX_EMAIL or "\x00" in owner):
        message = f"at most {MAX_EMAIL} characters, without NUL"
        return JSONResponse(
            {"error": "Invalid request", "details": [{"field": "email", "message": message}]},
            status_code=status.HTTP_400_BAD_REQUEST,
        )
    # Without the local CRM, the service's own record of the bookings (adapter.calendar.feed).
    recorded = services.mappings.current if services.settings.crm_backend != "local" else None
    feed = _cache(request).get(services.engine, owner=owner, mapping=recorded)
    headers = {
        "ETag": feed.etag,
        # Revalidate on every poll: the 304 makes that cheap, and a change shows at once.
        "Cache-Control": "private, no-cache",
    }
    if feed.last_modified is not None:
        headers["Last-Modified"] = format_datetime(feed.last_modified, usegmt=True)
    if _not_modified(request, feed):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    headers["Content-Disposition"] = 'inline; filename="bookme.ics"'
    return Response(feed.body, media_type="text/calendar; charset=utf-8", headers=headers)


@router.get(
    "/calendar/{token}.ics",
    summary="iCalendar feed of every meeting and open task",
    response_class=Response,
    responses=_FEED_RESPONSES,
)
def calendar_feed(request: Request, services: ServicesDep, token: FeedToken) -> Response:
    return _serve(request, services, token, None)


@router.get(
    "/calendar/{token}/owner/{email}.ics",
    summary="iCalendar feed of one owner's meetings and open tasks",
    response_class=Response,
    responses=_FEED_RESPONSES,
)
def owner_calendar_feed(
    request: Request, services: ServicesDep, token: FeedToken, email: OwnerEmail
) -> Response:
    return _serve(request, services, token, owner_key(email))
