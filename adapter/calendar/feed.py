"""The iCalendar feed (RFC 5545): the local CRM's meetings and open tasks, built with ``icalendar``.

What a subscribed calendar sees:

- each meeting is a ``VEVENT`` with ``UID`` ``booking-<bookingId>@bookme-crm``, the
  booking's times in UTC, its join link (``URL``, ``LOCATION`` and the description)
  and ``STATUS:CONFIRMED``; a cancelled booking stays ``CANCELLED_KEPT`` with
  ``STATUS:CANCELLED`` (a calendar that polls at least that often removes it),
  then leaves;
- each open (``todo``) task is a ``TASK_MINUTES`` ``VEVENT`` at its due time, its
  summary starting ``Task:`` (Google Calendar ignores ``VTODO``); done and
  cancelled tasks leave the feed;
- ``SEQUENCE`` is the number of the booking's snapshots the service has settled,
  less one: the outbox never deletes an event and each change of a booking is one
  (``synced`` or ``superseded``), so it grows with every change and never falls,
  without a counter of its own;
- meetings that started more than ``HISTORY`` ago leave the feed, so it stays small.

An owner feed keeps only records whose ``owner_email`` is that owner's: a record
with another owner, or none, is never in it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from icalendar import Calendar, Event
from sqlalchemy import Engine, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from adapter.backends.local.models import activities, leads, tasks
from adapter.timeutil import as_utc, utcnow
from outbox.schema import events
from outbox.store import SUPERSEDED, SYNCED

HISTORY = timedelta(days=90)
CANCELLED_KEPT = timedelta(days=30)
TASK_MINUTES = 15
PRODID = "-//bookme-crm//Calendar feed//EN"
REFRESH = timedelta(minutes=15)
_SETTLED = (SYNCED, SUPERSEDED)


@dataclass(frozen=True)
class Feed:
    """A feed's bytes, its ``ETag`` (a hash of them) and when its records last changed."""

    body: bytes
    etag: str
    last_modified: datetime | None


def meeting_uid(booking_id: str) -> str:
    return f"booking-{quote(booking_id, safe='')}@bookme-crm"


def task_uid(booking_id: str, key: str) -> str:
    return f"task-{quote(booking_id, safe='')}-{quote(key, safe='')}@bookme-crm"


def _owned(column: Any, owner: str | None) -> list[ColumnElement[bool]]:
    return [] if owner is None else [column == owner]


def _sequences(conn: Any, booking_ids: Iterable[str]) -> dict[str, int]:
    keys = sorted(set(booking_ids))
    found: dict[str, int] = {}
    # Chunks keep the IN list inside every dialect's parameter limit.
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        rows = conn.execute(
            select(events.c.key, func.count())
            .where(events.c.key.in_(chunk), events.c.state.in_(_SETTLED))
            .group_by(events.c.key)
        )
        found.update({key: max(count - 1, 0) for key, count in rows})
    return found


def _meeting(row: Any, sequence: int) -> Event:
    start = as_utc(row.activity_date)
    event = Event()
    event.add("uid", meeting_uid(row.booking_id))
    event.add("dtstamp", as_utc(row.updated_at))
    event.add("last-modified", as_utc(row.updated_at))
    event.add("dtstart", start)
    event.add("dtend", start + timedelta(minutes=row.duration_minutes))
    event.add("sequence", sequence)
    event.add("summary", f"{row.subject} · {row.lead_title}")
    cancelled = row.outcome == "CANCELED"
    event.add("status", "CANCELLED" if cancelled else "CONFIRMED")
    description = row.description
    if row.meeting_url:
        event.add("url", row.meeting_url)
        event.add("location", row.meeting_url)
        description = f"Join: {row.meeting_url}\n\n{description}"
    event.add("description", description)
    event.add("categories", ["BookMe", "Meeting"])
    return event


def _task(row: Any, sequence: int) -> Event:
    due = as_utc(row.due_date)
    event = Event()
    event.add("uid", task_uid(row.booking_id, row.key))
    event.add("dtstamp", as_utc(row.updated_at))
    event.add("last-modified", as_utc(row.updated_at))
    event.add("dtstart", due)
    event.add("dtend", due + timedelta(minutes=TASK_MINUTES))
    event.add("sequence", sequence)
    event.add("summary", f"Task: {row.title} · {row.lead_title}")
    event.add("status", "CONFIRMED")
    # Free: a reminder to do something must not block the salesperson's time.
    event.add("transp", "TRANSPARENT")
    event.add("description", f"{row.description}\n\nPriority: {row.priority}".strip())
    event.add("categories", ["BookMe", "Task"])
    return event


def build_feed(engine: Engine, *, owner: str | None = None, now: datetime | None = None) -> Feed:
    """The feed of every meeting and open task, or of ``owner``'s (a lower-cased email) only."""
    now = now or utcnow()
    meetings_query = (
        select(
            activities.c.booking_id,
            activities.c.subject,
            activities.c.description,
            activities.c.activity_date,
            activities.c.duration_minutes,
            activities.c.outcome,
            activities.c.meeting_url,
            activities.c.updated_at,
            leads.c.title.label("lead_title"),
        )
        .join(leads, leads.c.id == activities.c.lead_id)
        .where(
            activities.c.type == "MEETING",
            activities.c.activity_date >= now - HISTORY,
            or_(
                activities.c.outcome != "CANCELED", activities.c.updated_at >= now - CANCELLED_KEPT
            ),
            *_owned(activities.c.owner_email, owner),
        )
        .order_by(activities.c.activity_date, activities.c.booking_id)
    )
    tasks_query = (
        select(
            tasks.c.booking_id,
            tasks.c.key,
            tasks.c.title,
            tasks.c.description,
            tasks.c.due_date,
            tasks.c.priority,
            tasks.c.updated_at,
            leads.c.title.label("lead_title"),
        )
        .join(leads, leads.c.id == tasks.c.lead_id)
        .where(tasks.c.status == "todo", *_owned(tasks.c.owner_email, owner))
        .order_by(tasks.c.due_date, tasks.c.booking_id, tasks.c.key)
    )
    # Whatever left the feed (a task done, a meeting past its history) still changed it.
    changed = [
        select(func.max(activities.c.updated_at)).where(
            activities.c.type == "MEETING", *_owned(activities.c.owner_email, owner)
        ),
        select(func.max(tasks.c.updated_at)).where(*_owned(tasks.c.owner_email, owner)),
    ]
    reads = engine.execution_options(sqlite_begin="DEFERRED")
    with reads.connect() as conn, conn.begin():  # one snapshot for every read below
        meetings = conn.execute(meetings_query).all()
        open_tasks = conn.execute(tasks_query).all()
        sequences = _sequences(
            conn, [row.booking_id for row in meetings] + [row.booking_id for row in open_tasks]
        )
        stamps = [conn.execute(query).scalar() for query in changed]

    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    name = "BookMe bookings" + (f" · {owner}" if owner else "")
    calendar.add("x-wr-calname", name)
    calendar.add("name", name)
    # How often a subscriber should poll (RFC 7986, and Outlook's older property).
    calendar.add("refresh-interval", REFRESH, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", REFRESH)
    for meeting in meetings:
        calendar.add_component(_meeting(meeting, sequences.get(meeting.booking_id, 0)))
    for task in open_tasks:
        calendar.add_component(_task(task, sequences.get(task.booking_id, 0)))
    body = calendar.to_ical()
    known = [as_utc(stamp) for stamp in stamps if stamp is not None]
    return Feed(
        body=body,
        etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
        last_modified=max(known) if known else None,
    )
