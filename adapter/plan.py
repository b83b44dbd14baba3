"""Planned CRM writes: what the mapping says one booking must become in the CRM.

The mapping produces a ``BookingPlan`` with no I/O; every backend consumes the
same plan, and ``mappings check --sample`` prints it. Identity keys (contract
§4) are computed here once, so every backend enforces the same rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

Priority = Literal["low", "medium", "high"]
MeetingOutcome = Literal["SCHEDULED", "RESCHEDULED", "COMPLETED", "CANCELED", "NO_SHOW"]
TaskStatus = Literal["todo", "done", "cancelled"]
PlannedTaskStatus = Literal["todo", "cancelled"]
Lifecycle = Literal["active", "cancelled", "no_show"]
PropertyPolicy = Literal["always", "if_empty", "append", "forward_only"]
PropertyValue = bool | int | float | str
"""A CRM property's value: typed where the mapping's value was one placeholder."""


class PlannedProperty(BaseModel):
    """One mapped CRM property and how it may change what the CRM holds.

    ``always`` writes ``value``; ``if_empty`` only where the record has no value
    yet (a salesperson's own entry is kept); ``append`` adds ``value``'s
    ``;``-separated items to those held; ``forward_only`` writes only a value
    later in ``order`` than the one held (one outside ``order`` is never moved).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: PropertyValue
    policy: PropertyPolicy = "always"
    order: tuple[str, ...] = ()


Properties = dict[str, PlannedProperty]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ContactPlan(_Frozen):
    """Upsert by ``email_key`` (the email trimmed, lower-cased)."""

    email_key: str
    email: str
    first_name: str
    last_name: str
    phone: str | None
    tags: tuple[str, ...]
    properties: Properties = {}


class CompanyPlan(_Frozen):
    """Upsert by ``name_key`` (case- and whitespace-insensitive name)."""

    name_key: str
    name: str
    tags: tuple[str, ...]
    properties: Properties = {}


class LeadPlan(_Frozen):
    """Upsert by ``lead_key``: (company if given, else contact) x eventType.

    Descriptive fields (title, source, value, score) follow the newest snapshot
    of any of the lead's bookings; ``activity_at`` only moves forward; tags are
    a union. The stage is derived from the outcomes of all the lead's meetings,
    so it does not depend on the order bookings arrive in:

    - any meeting live (SCHEDULED, RESCHEDULED, COMPLETED): ``stage``;
    - else at least one NO_SHOW: ``no_show_stage`` (``None``: keep ``stage``);
    - else (all CANCELED): ``cancelled_stage`` (``None``: keep ``stage``).
    """

    lead_key: str
    title: str
    stage: str
    source: str
    source_details: str
    estimated_value: int
    lead_score: int
    tags: tuple[str, ...]
    activity_at: datetime
    cancelled_stage: str | None = None
    no_show_stage: str | None = None
    properties: Properties = {}


class MeetingPlan(_Frozen):
    """Upsert by ``booking_id``: one meeting activity per booking."""

    booking_id: str
    subject: str
    description: str
    start: datetime
    duration_minutes: int
    end: datetime
    meeting_url: str | None
    outcome: MeetingOutcome
    source: str
    properties: Properties = {}


class SendPlan(_Frozen):
    """The mail an automatic task sends at its due moment (``adapter.notify``).

    ``to`` is the booking's own email or the mapping's fixed address, never a
    template's output; ``subject`` has no CR or LF (header injection).
    """

    template: str
    to: str
    subject: str
    reply_to: str | None = None
    window_hours: int = 24


class TaskPlan(_Frozen):
    """Upsert by (booking_id, key): one follow-up task per mapping task key.

    ``status`` is what the snapshot asks for; a task the CRM user marked
    ``done`` stays done whatever the snapshot says. ``send``: the task is
    automatic, its mail goes out at ``due`` (``adapter.notify``).
    """

    key: str
    title: str
    description: str
    due: datetime
    priority: Priority
    status: PlannedTaskStatus = "todo"
    properties: Properties = {}
    send: SendPlan | None = None


class OwnerPlan(_Frozen):
    """Who owns the booking's records (lower-cased emails).

    The planner copies the mapping: ``email`` for a fixed owner, or
    ``round_robin`` for a rotation. The worker turns a rotation into the
    booking's assigned ``email`` (``adapter.owners``) before a backend sees
    the plan, so backends only read ``email`` and ``keep_existing``: with
    ``keep_existing`` a contact's existing owner wins over ``email``.
    """

    email: str | None = None
    round_robin: tuple[str, ...] = ()
    keep_existing: bool = False


class SkippedTask(_Frozen):
    """A task the mapping names but does not create for this booking, and why."""

    key: str
    title: str
    reason: str


class BookingPlan(_Frozen):
    """Everything one booking snapshot must become in the CRM.

    A plan is absolute, not a delta: applying it leaves the booking's meeting
    and tasks exactly as planned whatever older snapshots were applied before
    (``tasks`` is the booking's whole task set; any other task of the booking
    that is not ``done`` is removed). That is what makes any order of one
    booking's events converge on the newest snapshot.
    """

    booking_id: str
    event_type: str
    event: str
    lifecycle: Lifecycle = "active"
    snapshot_at: datetime
    contact: ContactPlan
    company: CompanyPlan | None
    lead: LeadPlan
    meeting: MeetingPlan
    tasks: tuple[TaskPlan, ...]
    skipped_tasks: tuple[SkippedTask, ...] = ()
    owner: OwnerPlan | None = None
