"""The insights report: frozen dataclasses, the one shape the API, the CLI and the page read.

Field names are an interface (the dashboard's charts read them): add fields, never
rename. Every metric carries its definition (the page prints it) and, where the
booking design sets one, its target and whether it is met. Times are UTC; a day is
a UTC calendar day (``YYYY-MM-DD``), a month ``YYYY-MM``; durations are seconds.

Built by ``adapter.insights.compute.build_report(services, filters)`` (``Services``
from ``adapter.services``); ``to_json`` gives the API's JSON.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

# The booking design's targets (its "success metrics").
TARGET_WEBHOOK_SUCCESS = 0.99  # share, strictly above
TARGET_SYNC_MEAN_SECONDS = 2.0  # average, strictly below
TARGET_DUPLICATES = 0  # exactly
TARGET_FOLLOW_UPS = 1.0  # share, all of them
TARGET_RESPONSE_SECONDS = 24 * 3600.0  # median, strictly below

REFUSAL_REASONS = ("invalid", "quarantined", "dead")
"""Why a delivery did not reach the CRM: refused at the webhook (400/409/415 after
authentication), stored but unplaceable by the mapping, or failed for good."""

DUPLICATE_RULES = ("contacts", "companies", "leads", "meetings", "tasks")
"""The identity rules checked: contacts per email, companies per name, leads per key,
meetings per booking, tasks per (booking, key)."""


@dataclass(frozen=True)
class Target:
    """A target of the booking design and whether the figure meets it.

    ``met`` is ``None`` when there is nothing to judge yet (no data in the period).
    """

    text: str  # "> 99 %", "< 2 s", "= 0", "= 100 %", "< 24 h"
    value: float  # the threshold, in the metric's unit (share, seconds, count)
    met: bool | None


@dataclass(frozen=True)
class Filters:
    """The period (``start`` inclusive, ``end`` exclusive, UTC days) and the event type."""

    start: date
    end: date  # exclusive: the day after the last day shown
    event_type: str | None = None


# -- webhook success ---------------------------------------------------------------


@dataclass(frozen=True)
class RefusedEvent:
    """A delivery that did not reach the CRM; ``event_id`` is the outbox event's id
    (``None`` for one refused at the webhook, which stored no event)."""

    reason: str  # one of REFUSAL_REASONS
    received_at: datetime
    event_id: str | None
    booking_id: str | None
    detail: str | None  # the outbox's last error, or the fields the webhook refused


@dataclass(frozen=True)
class WebhookDay:
    """One day of deliveries. ``success_rate`` is ``None`` on a day without any settled."""

    day: date
    deliveries: int  # accepted + refused (pending ones are not counted yet)
    accepted: int  # synced to the CRM, or superseded by a newer snapshot of the booking
    refused: dict[str, int]  # reason -> count, every reason of REFUSAL_REASONS present
    pending: int  # stored, not settled yet (queued or retrying)
    success_rate: float | None


@dataclass(frozen=True)
class WebhookSuccess:
    definition: str
    target: Target
    deliveries: int
    accepted: int
    refused: dict[str, int]
    pending: int
    success_rate: float | None
    days: tuple[WebhookDay, ...]
    refused_events: tuple[RefusedEvent, ...]  # the newest first, at most ``refused_limit``
    refused_limit: int


# -- sync time ---------------------------------------------------------------------


@dataclass(frozen=True)
class SyncStats:
    """Receipt → CRM write committed, in seconds, over ``count`` synced events."""

    count: int
    p50: float | None
    mean: float | None
    p95: float | None
    p99: float | None
    max: float | None


@dataclass(frozen=True)
class SyncDay:
    day: date
    stats: SyncStats


@dataclass(frozen=True)
class SyncTime:
    definition: str
    target: Target  # on the mean
    overall: SyncStats
    days: tuple[SyncDay, ...]


# -- duplicates --------------------------------------------------------------------


@dataclass(frozen=True)
class DuplicateGroup:
    """Records that break one identity rule: they share ``key``."""

    rule: str  # one of DUPLICATE_RULES
    key: str  # the shared identity (an email, a name key, a lead key, a booking id, …)
    record_ids: tuple[str, ...]  # the CRM's ids (local rows or HubSpot objects)


@dataclass(frozen=True)
class Duplicates:
    definition: str
    target: Target
    count: int  # extra records: in each group, every record but one
    per_rule: dict[str, int]  # rule -> extra records
    groups: tuple[DuplicateGroup, ...]
    checked_at: datetime | None  # when the check ran (HubSpot: at most once an hour)
    backend: str  # "local" | "hubspot"
    # Why the last check could not run (``count`` is then that of the last good one).
    error: str | None = None


# -- follow-ups --------------------------------------------------------------------


@dataclass(frozen=True)
class MissingFollowUp:
    booking_id: str
    event_type: str
    missing_keys: tuple[str, ...]


@dataclass(frozen=True)
class FollowUpsByType:
    event_type: str
    bookings: int  # bookings that expect at least one task
    complete: int  # … whose expected tasks all exist in the CRM
    share: float | None
    expected_keys: tuple[str, ...]


@dataclass(frozen=True)
class FollowUps:
    definition: str
    target: Target
    bookings: int
    complete: int
    share: float | None
    per_event_type: tuple[FollowUpsByType, ...]
    missing: tuple[MissingFollowUp, ...]  # at most ``missing_limit``
    missing_limit: int


# -- response time -----------------------------------------------------------------


@dataclass(frozen=True)
class ResponseStats:
    bookings: int  # bookings received in the period, old enough to judge or answered
    answered: int
    median: float | None  # seconds, over answered bookings
    under_24h: int
    share_under_24h: float | None  # under_24h / bookings


@dataclass(frozen=True)
class OwnerResponse:
    owner: str  # an owner's email, or "" for bookings without an owner
    stats: ResponseStats


@dataclass(frozen=True)
class ResponseTime:
    definition: str
    target: Target  # on the median
    overall: ResponseStats
    per_owner: tuple[OwnerResponse, ...]


# -- funnel ------------------------------------------------------------------------

FUNNEL_STEPS = ("bookings", "held", "consultations", "won")


@dataclass(frozen=True)
class FunnelRow:
    """One cohort: bookings first received in ``month`` of ``event_type``."""

    month: str  # YYYY-MM
    event_type: str
    bookings: int
    held: int
    consultations: int
    won: int
    # step -> conversion from the step before: held/bookings, consultations/held, won/consultations
    conversion: dict[str, float | None]
    won_rate: float | None  # won / bookings
    median_days_to_won: float | None  # booking received → stage WON, in days


@dataclass(frozen=True)
class Funnel:
    definition: str
    steps: tuple[str, ...]
    totals: FunnelRow  # month "", event_type "" : the whole period
    rows: tuple[FunnelRow, ...]  # by month, then event type


# -- cancellations -----------------------------------------------------------------

WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


@dataclass(frozen=True)
class CancellationRow:
    event_type: str
    weekday: str  # one of WEEKDAYS, of the meeting's start in UTC
    bookings: int
    cancelled: int
    no_show: int


@dataclass(frozen=True)
class Cancellations:
    definition: str
    bookings: int
    cancelled: int
    no_show: int
    cancel_rate: float | None
    no_show_rate: float | None
    rows: tuple[CancellationRow, ...]


# -- the whole report ----------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    filters: Filters
    generated_at: datetime
    backend: str
    event_types: tuple[str, ...]  # every event type seen (for the form's choices)
    webhook: WebhookSuccess
    sync: SyncTime
    duplicates: Duplicates
    follow_ups: FollowUps
    response: ResponseTime
    funnel: Funnel
    cancellations: Cancellations
    timings: dict[str, float] = field(default_factory=dict)  # part -> seconds to compute


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {_camel(f.name): _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_json(report: Report) -> dict[str, Any]:
    """The report as JSON-ready data: the fields' names in camelCase (as the other APIs),
    ISO dates, seconds; a dict's own keys (reasons, rules, steps) as they are."""
    result: dict[str, Any] = _plain(report)
    return result
