"""Booking → planned CRM writes: a pure function of the booking, the mapping and ``now``.

The plan is absolute (see ``BookingPlan``): every event kind plans the
booking's whole meeting and task set from its snapshot, so the newest
snapshot alone decides what the CRM ends with.

====================  =========  ================  ==================================
event                 lifecycle  meeting outcome   tasks
====================  =========  ================  ==================================
created, updated      active     SCHEDULED         mapped, todo (skip_if_past skips)
rescheduled           active     on_reschedule     mapped, todo (skip_if_past skips)
cancelled             cancelled  CANCELED          mapped, cancelled; on_cancel todo
no_show               no_show    NO_SHOW           mapped, cancelled if
                                                   cancel_open_tasks else todo;
                                                   on_no_show todo
====================  =========  ================  ==================================

A mapped task planned as ``cancelled`` is never skipped: its moment having
passed changes nothing for a task nobody will act on, and an open one in the
CRM must end ``cancelled`` (contract §5), not removed. Lifecycle tasks
(``on_cancel``/``on_no_show``) skip only with ``skip_if_past``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from adapter.booking import Booking
from adapter.errors import MappingError
from adapter.mapping.dates import apply_offset, format_swedish, format_time
from adapter.mapping.models import (
    UTM_FIELDS,
    MappingConfig,
    PropertySpec,
    ResolvedEventType,
    TaskConfig,
    Template,
)
from adapter.plan import (
    BookingPlan,
    CompanyPlan,
    ContactPlan,
    LeadPlan,
    Lifecycle,
    MeetingOutcome,
    MeetingPlan,
    OwnerPlan,
    PlannedProperty,
    PlannedTaskStatus,
    Properties,
    PropertyValue,
    SendPlan,
    SkippedTask,
    TaskPlan,
)
from adapter.timeutil import as_utc, trusted_stamp


def plan_booking(
    booking: Booking,
    mapping: MappingConfig,
    *,
    now: datetime,
    received_at: datetime | None = None,
) -> BookingPlan:
    """What ``booking`` must become in the CRM under ``mapping``, as of ``now``.

    ``booking.event`` picks the lifecycle, the meeting's outcome and the
    tasks' statuses (module docstring). No I/O and no clock: ``now`` decides
    which ``skip_if_past`` tasks are skipped, and with ``received_at`` stands
    in for the timestamps a booking may lack. Raises ``MappingError`` for an
    eventType the mapping lacks.
    """
    settings = mapping.event_type(booking.event_type)
    try:
        return _plan(booking, settings, as_utc(now), received_at)
    except OverflowError:
        # Only a date near year 1 or 9999 gets here; no retry can fix that.
        raise MappingError("a date of this booking is outside the supported range") from None


def _plan(
    booking: Booking,
    settings: ResolvedEventType,
    now: datetime,
    received_at: datetime | None,
) -> BookingPlan:
    received = as_utc(received_at) if received_at is not None else None
    tz = ZoneInfo(booking.timezone) if booking.timezone else None
    values = template_values(booking, tz)
    typed = typed_values(booking, values)
    lifecycle = settings.lifecycle

    company_name_key = company_key(booking.company)
    contact = ContactPlan(
        email_key=booking.email_key,
        email=booking.email,
        first_name=values["firstName"],
        last_name=values["lastName"],
        phone=booking.phone,
        tags=_tags(settings.contact.tags, values),
        properties=plan_properties(settings.contact.properties, values, typed),
    )
    company = None
    if company_name_key:
        company = CompanyPlan(
            name_key=company_name_key,
            name=values["company"],
            tags=_tags(settings.company.tags, values),
            properties=plan_properties(settings.company.properties, values, typed),
        )

    lead_settings = settings.lead
    lead_owner = f"company:{company_name_key}" if company else f"contact:{booking.email_key}"
    lead = LeadPlan(
        lead_key=f"{lead_owner}|{booking.event_type}",
        title=lead_settings.title.render(values),
        stage=lead_settings.stage,
        source=lead_settings.source,
        source_details=lead_settings.source_details.render(values),
        estimated_value=lead_settings.estimated_value,
        lead_score=lead_settings.lead_score,
        tags=_tags(lead_settings.tags, values),
        activity_at=as_utc(
            trusted_stamp(booking.updated_at or booking.created_at, received or now)
            or received
            or now
        ),
        cancelled_stage=lifecycle.on_cancel.lead_stage,
        no_show_stage=lifecycle.on_no_show.lead_stage,
        properties=plan_properties(lead_settings.properties, values, typed),
    )

    state: Lifecycle
    outcome: MeetingOutcome
    mapped_status: PlannedTaskStatus = "todo"
    extra_tasks: Sequence[TaskConfig] = ()
    if booking.event == "booking.cancelled":
        state, outcome, mapped_status = "cancelled", "CANCELED", "cancelled"
        extra_tasks = lifecycle.on_cancel.tasks
    elif booking.event == "booking.no_show":
        state, outcome = "no_show", "NO_SHOW"
        if lifecycle.on_no_show.cancel_open_tasks:
            mapped_status = "cancelled"
        extra_tasks = lifecycle.on_no_show.tasks
    elif booking.event == "booking.rescheduled":
        state, outcome = "active", lifecycle.on_reschedule.meeting_outcome
    else:  # booking.created, booking.updated
        state, outcome = "active", "SCHEDULED"

    start = booking.scheduled_date.astimezone(UTC)
    end = start + timedelta(minutes=booking.duration)
    meeting = MeetingPlan(
        booking_id=booking.booking_id,
        subject=settings.meeting.subject.render(values),
        description=settings.meeting.description.render(values),
        start=start,
        duration_minutes=booking.duration,
        end=end,
        meeting_url=values["meetingUrl"] or None,
        outcome=outcome,
        source=lead.source,
        properties=plan_properties(settings.meeting.properties, values, typed),
    )

    tasks: list[TaskPlan] = []
    skipped: list[SkippedTask] = []
    planned = [(task, mapped_status) for task in settings.tasks]
    planned += [(task, "todo") for task in extra_tasks]
    for task, status in planned:
        title = task.title.render(values)
        due = apply_offset(start if task.anchor == "start" else end, task.offset, tz)
        if status == "todo" and task.skip_if_past and due <= now:
            skipped.append(
                SkippedTask(key=task.key, title=title, reason=f"due {_iso(due)} has passed")
            )
            continue
        tasks.append(
            TaskPlan(
                key=task.key,
                title=title,
                description=task.description.render(values),
                due=due,
                priority=task.priority,
                status=status,
                properties=plan_properties(
                    {**settings.task.properties, **task.properties}, values, typed
                ),
                send=_send(task, values),
            )
        )

    return BookingPlan(
        booking_id=booking.booking_id,
        event_type=booking.event_type,
        event=booking.event,
        lifecycle=state,
        # Ordered as the outbox orders it (``ingest``): a far-future stamp cannot win.
        snapshot_at=as_utc(trusted_stamp(booking.updated_at, received or now) or received or now),
        contact=contact,
        company=company,
        lead=lead,
        meeting=meeting,
        tasks=tuple(tasks),
        skipped_tasks=tuple(skipped),
        owner=_owner(settings),
    )


def _send(task: TaskConfig, values: dict[str, str]) -> SendPlan | None:
    """The task's mail, its recipient resolved; a subject cannot carry CR/LF into headers."""
    send = task.send
    if send is None:
        return None
    return SendPlan(
        template=send.template,
        to=values["email"] if send.to == "{email}" else send.to,
        subject=" ".join(send.subject.render(values).split()),
        reply_to=send.reply_to,
        window_hours=send.window_hours,
    )


def _owner(settings: ResolvedEventType) -> OwnerPlan | None:
    owner = settings.owner
    if owner is None:
        return None
    return OwnerPlan(
        email=owner.email,
        round_robin=tuple(owner.round_robin or ()),
        keep_existing=owner.keep_existing,
    )


def template_values(booking: Booking, tz: ZoneInfo | None) -> dict[str, str]:
    """Every template placeholder's value for ``booking``; an absent field is ``""``.

    ``date`` and ``time`` are the start in ``tz`` (UTC without one), and
    ``timezone`` names that zone, so a rendered date is never ambiguous.
    ``cancellationReason`` is given only for ``booking.cancelled``: a reason
    left on a snapshot that is live again must not label its meeting.
    """
    cancelled = booking.event == "booking.cancelled"
    first_name, *rest = booking.name.split(maxsplit=1)
    return {
        "eventType": booking.event_type,
        "bookingId": booking.booking_id,
        "name": booking.name,
        "firstName": first_name,
        "lastName": rest[0] if rest else "",
        "email": booking.email,
        "phone": booking.phone or "",
        # Stray inner spaces would otherwise reach titles and the company's name.
        "company": " ".join((booking.company or "").split()),
        "notes": booking.notes or "",
        "date": format_swedish(booking.scheduled_date, tz),
        "time": format_time(booking.scheduled_date, tz),
        "duration": str(booking.duration),
        "meetingUrl": str(booking.meeting_url) if booking.meeting_url is not None else "",
        "timezone": booking.timezone or "UTC",
        "cancellationReason": (booking.cancellation_reason or "") if cancelled else "",
        "locale": booking.locale or "",
        "start": _iso(booking.scheduled_date),
        "startLocal": _local(booking.scheduled_date, tz).isoformat(timespec="seconds"),
        "startDate": _local(booking.scheduled_date, tz).date().isoformat(),
        "end": _iso(booking.scheduled_date + timedelta(minutes=booking.duration)),
        **{f"answers.{key}": _text(value) for key, value in (booking.answers or {}).items()},
        **{f"utm.{name}": getattr(booking.utm, name) or "" for name in UTM_FIELDS if booking.utm},
        **{
            f"attendees.{index}.{part}": getattr(attendee, part)
            for index, attendee in enumerate(booking.attendees or ())
            for part in ("name", "email")
        },
    }


def typed_values(booking: Booking, values: dict[str, str]) -> dict[str, PropertyValue]:
    """Placeholder values that keep their type when a property's value is that placeholder
    alone: numbers and booleans as such, a list ``;``-joined (a multi-select's format);
    every other placeholder is its text."""
    typed: dict[str, PropertyValue] = {**values, "duration": booking.duration}
    for key, value in (booking.answers or {}).items():
        typed[f"answers.{key}"] = ";".join(value) if isinstance(value, list) else value
    return typed


def plan_properties(
    specs: dict[str, PropertySpec], values: dict[str, str], typed: dict[str, PropertyValue]
) -> Properties:
    """The CRM properties ``specs`` ask for, rendered; an empty value is left out, so a
    booking that lacks a field never clears what the CRM holds for it."""
    planned: Properties = {}
    for name, spec in specs.items():
        value: PropertyValue
        if not isinstance(spec.value, Template):
            value = spec.value
        elif (placeholder := spec.value.placeholder) is not None:
            value = typed.get(placeholder, "")
        else:
            value = spec.value.render(values)
        if isinstance(value, str):
            value = value.strip()
            if not value:
                continue
        planned[name] = PlannedProperty(
            value=value, policy=spec.policy, order=tuple(spec.order or ())
        )
    return planned


def _text(value: bool | int | float | str | list[str]) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(value)
    return str(value)


def _local(moment: datetime, tz: ZoneInfo | None) -> datetime:
    return moment.astimezone(tz or UTC)


def company_key(name: str | None) -> str | None:
    """The company identity: case-folded, inner whitespace collapsed; ``None`` when blank."""
    if name is None:
        return None
    return " ".join(name.split()).casefold() or None


def _tags(templates: Iterable[Template], values: dict[str, str]) -> tuple[str, ...]:
    rendered = (template.render(values).strip() for template in templates)
    return tuple(dict.fromkeys(tag for tag in rendered if tag))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
