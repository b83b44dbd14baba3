"""Calendar feeds: the CRM's meetings and open tasks as iCalendar subscriptions, behind tokens."""

from adapter.calendar.feed import Feed, FeedCache, build_feed
from adapter.calendar.tokens import CalendarToken, TokenStore, calendar_metadata, feed_urls

__all__ = [
    "CalendarToken",
    "Feed",
    "FeedCache",
    "TokenStore",
    "build_feed",
    "calendar_metadata",
    "feed_urls",
]
