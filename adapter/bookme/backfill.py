"""Backfill: page through BookMe's booking list from a date and import every booking.

Resumable: the position (next page's cursor) is saved in the database after
each page (``adapter.bookme.store``), so a run interrupted by Ctrl-C, a crash
or BookMe failing continues where it stopped when started again with the same
``since``. Idempotent: each booking goes through ``import_resource``, which
stores nothing for a snapshot the outbox already holds, so a second complete
run finds every booking already present.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from adapter.bookme.client import BookMeClient
from adapter.bookme.errors import BookMeMalformed
from adapter.bookme.importer import import_resource
from adapter.bookme.store import BackfillStore
from adapter.timeutil import iso_z
from outbox.store import QUARANTINED

if TYPE_CHECKING:
    from adapter.services import Services

__all__ = ["Backfill", "BackfillReport", "parse_since"]


def parse_since(value: str) -> str:
    """``--since`` as BookMe is sent it: ``YYYY-MM-DD``, or an ISO datetime in UTC with ``Z``.

    Raises ``ValueError`` with a message for the user.
    """
    text = value.strip()
    try:
        return date.fromisoformat(text).isoformat()
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValueError(
            f"--since {value!r}: give a date (2026-11-01) or an ISO datetime with an offset"
        )
    return str(iso_z(moment))


@dataclass
class BackfillReport:
    """Counts of one run: ``fetched`` = ``new`` + ``present`` + ``quarantined`` + ``failed``."""

    since: str
    resumed: bool = False
    pages: int = 0
    fetched: int = 0
    new: int = 0
    present: int = 0
    quarantined: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (booking id, message)
    completed: bool = False

    def summary(self) -> str:
        return (
            f"fetched {self.fetched}, new {self.new}, already present {self.present}, "
            f"quarantined {self.quarantined}, failed {len(self.failed)} "
            f"({self.pages} page(s){', resumed' if self.resumed else ''})"
        )


class Backfill:
    """One backfill run for ``since``; ``report`` holds its counts even when it stops early."""

    def __init__(self, services: Services, client: BookMeClient, since: str) -> None:
        self.services = services
        self.client = client
        self.since = since
        self.positions = BackfillStore(services.engine)
        self.report = BackfillReport(since=since)

    def run(self, on_booking: Callable[[BackfillReport], None] | None = None) -> BackfillReport:
        """Import every booking from the saved position on; ``BookMeError`` stops the run.

        A booking BookMe sends malformed is counted as failed (with its message)
        and skipped; a failing page stops the run with the position kept.
        """
        position = self.positions.begin(self.since)
        self.report.resumed = position.resumed
        for page in self.client.pages(self.since, position.cursor):
            for item in page.items:
                self._one(item)
                if on_booking is not None:
                    on_booking(self.report)
            self.positions.advance(self.since, page.next_cursor)
            self.report.pages += 1
        self.positions.complete(self.since)
        self.report.completed = True
        return self.report

    def _one(self, item: Any) -> None:
        report = self.report
        report.fetched += 1
        try:
            outcome = import_resource(self.services, item)
        except BookMeMalformed as exc:
            report.failed.append((_item_id(item), exc.message))
            return
        if not outcome.new:
            report.present += 1
        elif outcome.state == QUARANTINED:
            report.quarantined += 1
        else:
            report.new += 1


def _item_id(item: Any) -> str:
    if isinstance(item, dict) and isinstance(item.get("id"), str | int):
        return str(item["id"])
    return "?"
