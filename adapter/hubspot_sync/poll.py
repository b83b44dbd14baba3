"""The poll: every ``HUBSPOT_POLL_SECONDS``, the meetings, tasks and deals this service made
that changed since the last poll, read back and recorded (``record``).

Per object type, a search (the search budget only) for objects carrying the
type's ``bookme_*`` key whose ``hs_lastmodifieddate`` is at or after the
position minus ``HUBSPOT_SEARCH_LAG_SECONDS`` (search lags writes: an object
changed just before the last poll may only now be searchable; reading it twice
is harmless, the changes are deduplicated), oldest first, 100 a page. Each page
is read back in one batch read with ``propertiesWithHistory`` and recorded in
one transaction, which also moves the position to the page's newest
modification: a process killed anywhere reads the page again after a restart,
and nothing is skipped. Past HubSpot's 10,000 results per query, the search
starts again from the newest modification seen. At most ``max_pages`` pages
per type per round, so the search budget stays available to the backend.

One process polls at a time: a round runs only while it holds the lease row
(``store.take_lease``), renewed before each page and released at the end; a
killed poller's lease expires after ``lease_seconds``.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from adapter.backends.hubspot.client import (
    LAST_MODIFIED,
    MAX_SEARCH_RESULTS,
    Found,
    HubSpotApi,
)
from adapter.changes.store import crm_field_state
from adapter.errors import AdapterError, PausedError
from adapter.hubspot_sync import store as poll_store
from adapter.hubspot_sync.reading import TRACKED, Tracked
from adapter.hubspot_sync.record import NOTES, Tally, normaliser, record_objects
from adapter.metrics import Metrics
from adapter.timeutil import as_utc, utcnow
from outbox.store import OutboxStore

log = logging.getLogger(__name__)

PAGE_SIZE = 100


@dataclass
class PollReport:
    """One round: per object type, pages read and what they recorded."""

    pages: dict[str, int] = field(default_factory=dict)
    tally: Tally = field(default_factory=Tally)
    positions: dict[str, int] = field(default_factory=dict)


def epoch_ms(moment: datetime) -> int:
    moment = as_utc(moment)
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, UTC)


def modified_at(found: Found, fallback: datetime) -> datetime:
    """The object's ``hs_lastmodifieddate`` (ISO or epoch ms), else ``fallback``."""
    raw = found.properties.get(LAST_MODIFIED)
    if not raw:
        return fallback
    text = str(raw).strip()
    if text.isdigit():
        return from_ms(int(text))
    return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))


class Poller:
    """Polls HubSpot for changes to the objects this service made (module docstring)."""

    def __init__(
        self,
        api: HubSpotApi,
        engine: Engine,
        store: OutboxStore,
        deal_stages: Callable[[], Mapping[str, str]],
        *,
        interval: float = 60.0,
        lag_seconds: float = 60.0,
        lease_seconds: float | None = None,
        max_pages: int = 20,
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.api = api
        self.metrics = metrics
        self.engine = engine
        # Reads need no write lock (SQLite begins IMMEDIATE by default).
        self._reader = engine.execution_options(sqlite_begin="DEFERRED")
        self.store = store
        self.deal_stages = deal_stages
        self.interval = interval
        self.lag = timedelta(seconds=lag_seconds)
        # Long enough to outlive a slow page, short enough for a restart to take over soon.
        self.lease_seconds = lease_seconds or min(max(2 * interval, 10.0), 300.0)
        self.max_pages = max_pages
        self.clock = clock
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()

    # --- the loop -----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set (a failed round is logged)."""
        while not stop.is_set():
            try:
                self.poll_once()
            except PausedError as exc:
                self._count("failed")
                log.info("HubSpot poll skipped: %s", exc)
            except Exception:
                self._count("failed")
                log.exception("HubSpot poll failed; trying again next round")
            self._wake.wait(self.interval)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def poll_once(self) -> PollReport | None:
        """One round over meetings, tasks and deals; ``None`` when another process polls."""
        if not self._lease():
            log.debug("HubSpot poll: another process holds the lease")
            self._count("skipped")
            return None
        report = PollReport()
        try:
            for tracked in TRACKED.values():
                if not self._poll_type(tracked, report):
                    break  # the lease was lost: another process goes on
        finally:
            with self.engine.begin() as conn:
                poll_store.release_lease(conn, self.owner, self.clock())
        self._count("done")
        if self.metrics is not None:
            count_changes(self.metrics, "poll", report.tally)
        if report.tally.read:
            log.info(
                "HubSpot poll: %d object(s) read, %d change(s), %d push(es), %d superseded",
                report.tally.read,
                report.tally.changes,
                report.tally.pushes,
                report.tally.superseded,
            )
        return report

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.hubspot_polls.labels(outcome).inc()

    def _lease(self) -> bool:
        with self.engine.begin() as conn:
            return poll_store.take_lease(conn, self.owner, self.lease_seconds, self.clock())

    # --- one object type ------------------------------------------------------------

    def _start(self, tracked: Tracked) -> int:
        """Where a type's poll starts: its position, else the first write we recorded."""
        with self._reader.connect() as conn:
            found = poll_store.position(conn, tracked.hubspot_type)
            if found is not None:
                return found
            first = conn.execute(
                select(func.min(crm_field_state.c.written_at)).where(
                    crm_field_state.c.object_type == tracked.object_type
                )
            ).scalar()
        return epoch_ms(as_utc(first) if first is not None else self.clock())

    def _poll_type(self, tracked: Tracked, report: PollReport) -> bool:
        """Read the type's changed objects page by page; ``False`` if the lease was lost."""
        lag_ms = int(self.lag.total_seconds() * 1000)
        since_ms = self._start(tracked) - lag_ms
        window_from = from_ms(since_ms)
        after: str | None = None
        consumed = 0
        newest_ms: int | None = None
        pages = 0
        while pages < self.max_pages:
            if not self._lease():
                return False
            page = self.api.search_modified(
                tracked.hubspot_type,
                tracked.key_property,
                since_ms,
                [LAST_MODIFIED],
                after=after,
                limit=PAGE_SIZE,
            )
            if not page.results:
                break
            pages += 1
            now = self.clock()
            moments = {found.id: modified_at(found, now) for found in page.results}
            page_newest = max(epoch_ms(moment) for moment in moments.values())
            ours = self._ours(tracked, [found.id for found in page.results])
            extra = [NOTES] if tracked.object_type == "meeting" else []
            objects = (
                self.api.read_with_history(
                    tracked.hubspot_type,
                    ours,
                    [*tracked.properties, *extra],
                    tracked.properties,
                )
                if ours
                else {}
            )
            tally = self._record(tracked, objects, window_from, moments, page_newest)
            report.tally.add(tally)
            newest_ms = page_newest if newest_ms is None else max(newest_ms, page_newest)
            consumed += len(page.results)
            if page.after is None:
                break
            if consumed + PAGE_SIZE > MAX_SEARCH_RESULTS:
                # HubSpot pages through 10,000 results at most: query again from here.
                if page_newest <= since_ms:
                    log.warning(
                        "HubSpot poll of %s: more than %d objects modified in one millisecond; "
                        "the rest are read when they change again",
                        tracked.hubspot_type,
                        MAX_SEARCH_RESULTS,
                    )
                    break
                since_ms, after, consumed = page_newest, None, 0
            else:
                after = page.after
        report.pages[tracked.hubspot_type] = pages
        if newest_ms is not None:
            report.positions[tracked.hubspot_type] = newest_ms
        return True

    def _ours(self, tracked: Tracked, ids: list[str]) -> list[str]:
        """The ids among ``ids`` the service recorded writes to (only those are read back)."""
        with self._reader.connect() as conn:
            found = set(
                conn.execute(
                    select(crm_field_state.c.crm_id).where(
                        crm_field_state.c.object_type == tracked.object_type,
                        crm_field_state.c.crm_id.in_(ids),
                    )
                ).scalars()
            )
        return [object_id for object_id in ids if object_id in found]

    def _record(
        self,
        tracked: Tracked,
        objects: Mapping[str, Found],
        since: datetime,
        moments: Mapping[str, datetime],
        position_ms: int,
    ) -> Tally:
        """Record one page and move the position, in one transaction. A concurrent
        recording of the same change (a webhook's) makes it fail once: read again."""
        normalise_value = normaliser(self.deal_stages())
        for attempt in (1, 2):
            now = self.clock()
            try:
                with self.engine.begin() as conn:
                    tally = record_objects(
                        conn,
                        tracked,
                        objects,
                        since=since,
                        modified=functools.partial(_moment_of, moments, now),
                        source="poll",
                        normalise_value=normalise_value,
                        store=self.store,
                        now=now,
                    )
                    poll_store.advance(conn, tracked.hubspot_type, position_ms, now)
                return tally
            except IntegrityError:
                if attempt == 2:
                    raise
                log.info("HubSpot poll: a change was recorded concurrently; recording again")
        raise AssertionError("unreachable")


def count_changes(metrics: Metrics, source: str, tally: Tally) -> None:
    """Count a read's changes in ``bookme_hubspot_changes_total``."""
    recorded = metrics.hubspot_changes.labels(source, "recorded")
    recorded.inc(tally.changes)
    metrics.hubspot_changes.labels(source, "superseded").inc(tally.superseded)


def _moment_of(moments: Mapping[str, datetime], fallback: datetime, found: Found) -> datetime:
    return moments.get(found.id, fallback)


def poll_error(exc: Exception) -> str:
    """A poll failure for the CLI: the adapter's message, never a traceback."""
    return str(exc) if isinstance(exc, AdapterError) else f"{type(exc).__name__}: {exc}"
