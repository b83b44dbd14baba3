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


class CompanyPlan(_Frozen):
    """Upsert by ``name_key`` (case- and whitespace-insensitive name)."""

    name_key: str
    name: str
    tags: tuple[str, ...]


class LeadPlan(_Frozen):
    """Upsert by ``lead_key``: (company if given, else contact) x eventType.

    A repeat booking only moves ``activity_at`` forward and adds tags; title,
    stage, value and score are those of the first booking.
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


class TaskPlan(_Frozen):
    """Upsert by (booking_id, key): one follow-up task per mapping task key."""

    key: str
    title: str
    description: str
    due: datetime
    priority: Priority


class SkippedTask(_Frozen):
    """A task the mapping names but does not create for this booking, and why."""

    key: str
    title: str
    reason: str


class BookingPlan(_Frozen):
    """Everything one booking snapshot must become in the CRM."""

    booking_id: str
    event_type: str
    event: str
    snapshot_at: datetime
    contact: ContactPlan
    company: CompanyPlan | None
    lead: LeadPlan
    meeting: MeetingPlan
    tasks: tuple[TaskPlan, ...]
    skipped_tasks: tuple[SkippedTask, ...] = ()
