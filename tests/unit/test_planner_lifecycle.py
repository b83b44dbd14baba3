"""plan_booking across a booking's lifecycle: reschedule, update, cancel, no-show (contract §5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from adapter.booking import Booking, parse_booking
from adapter.mapping import MappingConfig, load_mapping, load_mapping_text
from adapter.mapping import plan_booking as plan
from adapter.plan import BookingPlan

DEFAULT = Path(__file__).resolve().parents[2] / "mappings" / "default.yaml"
NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
STOCKHOLM = ZoneInfo("Europe/Stockholm")

# A workshop well ahead of NOW: both of its tasks are planned.
WORKSHOP: dict[str, Any] = {
    "bookingId": "bk-1",
    "eventType": "workshop",
    "name": "Test Person",
    "email": "test@example.com",
    "scheduledDate": "2027-03-20T10:00:00+01:00",
    "duration": 120,
    "source": "bookme",
    "timezone": "Europe/Stockholm",
    "updatedAt": "2027-03-01T08:00:00Z",
}
EVENTS = (
    "booking.created",
    "booking.updated",
    "booking.rescheduled",
    "booking.cancelled",
    "booking.no_show",
)


@pytest.fixture(scope="module")
def mapping() -> MappingConfig:
    """The shipped default mapping."""
    return load_mapping(DEFAULT)


def booking(base: dict[str, Any] = WORKSHOP, /, **changes: Any) -> Booking:
    """A validated booking: ``base`` with ``changes`` (None removes a field)."""
    body = {**base, **changes}
    return parse_booking({key: value for key, value in body.items() if value is not None})


def statuses(result: BookingPlan) -> list[tuple[str, str]]:
    """(key, status) of every planned task, in plan order."""
    return [(task.key, task.status) for task in result.tasks]


def test_created_is_active_and_scheduled_with_open_tasks(mapping: MappingConfig) -> None:
    """booking.created: lifecycle active, outcome SCHEDULED, the mapped tasks todo."""
    result = plan(booking(), mapping, now=NOW)

    assert (result.event, result.lifecycle) == ("booking.created", "active")
    assert result.meeting.outcome == "SCHEDULED"
    assert statuses(result) == [("prep-info", "todo"), ("follow-up", "todo")]
    assert result.skipped_tasks == ()


def test_lead_carries_the_stage_rules_on_every_event(mapping: MappingConfig) -> None:
    """Every plan names the live, cancelled (LOST) and no-show (keep: None) stages."""
    for event in EVENTS:
        lead = plan(booking(event=event), mapping, now=NOW).lead
        assert (lead.stage, lead.cancelled_stage, lead.no_show_stage) == (
            "CONTACTED",
            "LOST",
            None,
        ), event


def test_updated_is_the_same_meeting_still_scheduled(mapping: MappingConfig) -> None:
    """booking.updated: the same meeting re-planned from the snapshot, outcome SCHEDULED."""
    created = plan(booking(), mapping, now=NOW)
    updated = plan(booking(event="booking.updated", notes="Bring laptops"), mapping, now=NOW)

    assert updated.lifecycle == "active"
    assert updated.meeting.outcome == "SCHEDULED"
    assert updated.meeting.booking_id == created.meeting.booking_id
    assert "Anteckningar: Bring laptops" in updated.meeting.description
    assert statuses(updated) == statuses(created)


def test_rescheduled_moves_meeting_and_open_tasks(mapping: MappingConfig) -> None:
    """booking.rescheduled: outcome RESCHEDULED; meeting and todo tasks follow the new date."""
    result = plan(
        booking(event="booking.rescheduled", scheduledDate="2027-03-22T13:00:00+01:00"),
        mapping,
        now=NOW,
    )

    assert (result.lifecycle, result.meeting.outcome) == ("active", "RESCHEDULED")
    assert result.meeting.start == datetime(2027, 3, 22, 12, 0, tzinfo=UTC)
    assert (
        result.meeting.description.splitlines()[1] == "Datum: 2027-03-22 13:00 (Europe/Stockholm)"
    )
    assert [(t.key, t.status, t.due) for t in result.tasks] == [
        ("prep-info", "todo", datetime(2027, 3, 15, 12, 0, tzinfo=UTC)),
        ("follow-up", "todo", datetime(2027, 3, 23, 12, 0, tzinfo=UTC)),
    ]


def test_reschedule_across_dst_keeps_local_wall_clock_times(mapping: MappingConfig) -> None:
    """Moved from 20 Mar (CET) to 3 Apr (CEST) 10:00: prep 27 Mar 10:00 CET = 09:00Z."""
    before = plan(booking(), mapping, now=NOW)
    after = plan(
        booking(event="booking.rescheduled", scheduledDate="2027-04-03T10:00:00+02:00"),
        mapping,
        now=NOW,
    )

    assert [t.due for t in before.tasks] == [
        datetime(2027, 3, 13, 9, 0, tzinfo=UTC),
        datetime(2027, 3, 21, 9, 0, tzinfo=UTC),
    ]
    assert after.meeting.start == datetime(2027, 4, 3, 8, 0, tzinfo=UTC)
    assert [t.due for t in after.tasks] == [
        datetime(2027, 3, 27, 9, 0, tzinfo=UTC),  # still CET: DST starts 28 March
        datetime(2027, 4, 4, 8, 0, tzinfo=UTC),
    ]
    assert {t.due.astimezone(STOCKHOLM).strftime("%H:%M") for t in after.tasks} == {"10:00"}


def test_reschedule_across_the_prep_threshold_skips_then_restores_prep(
    mapping: MappingConfig,
) -> None:
    """Moved to 3 days ahead the passed prep task is skipped; moved back out it is todo again."""
    near = plan(
        booking(event="booking.rescheduled", scheduledDate="2027-03-04T10:00:00+01:00"),
        mapping,
        now=NOW,
    )
    far = plan(
        booking(event="booking.rescheduled", scheduledDate="2027-03-25T10:00:00+01:00"),
        mapping,
        now=NOW,
    )

    assert statuses(near) == [("follow-up", "todo")]
    assert [(s.key, s.reason) for s in near.skipped_tasks] == [
        ("prep-info", "due 2027-02-25T09:00:00Z has passed"),
    ]
    assert statuses(far) == [("prep-info", "todo"), ("follow-up", "todo")]
    assert far.skipped_tasks == ()


def test_cancelled_cancels_every_mapped_task(mapping: MappingConfig) -> None:
    """booking.cancelled: outcome CANCELED, mapped tasks cancelled, the passed prep included."""
    late = NOW.replace(month=3, day=18)  # prep (13 Mar) has passed
    result = plan(booking(event="booking.cancelled"), mapping, now=late)

    assert (result.lifecycle, result.meeting.outcome) == ("cancelled", "CANCELED")
    assert statuses(result) == [("prep-info", "cancelled"), ("follow-up", "cancelled")]
    assert result.skipped_tasks == ()
    assert result.lead.cancelled_stage == "LOST"


def test_cancellation_reason_is_shown_on_the_cancelled_meeting(mapping: MappingConfig) -> None:
    """A cancelled booking's reason becomes an "Avbokad:" line; without one there is none."""
    with_reason = plan(
        booking(event="booking.cancelled", cancellationReason="Sjuk"), mapping, now=NOW
    )
    without = plan(booking(event="booking.cancelled"), mapping, now=NOW)

    assert with_reason.meeting.description.splitlines()[-2:] == ["Avbokad: Sjuk", "Bokning: bk-1"]
    assert "Avbokad" not in without.meeting.description


def test_a_live_snapshot_ignores_a_leftover_cancellation_reason(mapping: MappingConfig) -> None:
    """A reason on a rescheduled (live again) snapshot does not label its meeting cancelled."""
    result = plan(booking(event="booking.rescheduled", cancellationReason="Sjuk"), mapping, now=NOW)
    assert "Avbokad" not in result.meeting.description


def test_no_show_cancels_follow_ups_and_adds_the_reach_out(mapping: MappingConfig) -> None:
    """booking.no_show: outcome NO_SHOW, mapped tasks cancelled, reach-out todo 1 h after end."""
    after_meeting = datetime(2027, 3, 20, 13, 0, tzinfo=UTC)
    result = plan(booking(event="booking.no_show"), mapping, now=after_meeting)

    assert (result.lifecycle, result.meeting.outcome) == ("no_show", "NO_SHOW")
    assert statuses(result) == [
        ("prep-info", "cancelled"),
        ("follow-up", "cancelled"),
        ("no-show-reach-out", "todo"),
    ]
    reach_out = result.tasks[-1]
    assert (reach_out.title, reach_out.priority) == ("Reach out after no-show", "high")
    assert reach_out.due == datetime(2027, 3, 20, 12, 0, tzinfo=UTC)  # 11:00Z end + 1 h
    assert reach_out.description.startswith(
        "Test Person (test@example.com) did not show up for the workshop on 2027-03-20 10:00"
    )
    assert result.skipped_tasks == ()
    assert result.lead.no_show_stage is None


def test_no_show_of_a_consultation_cancels_its_summary(mapping: MappingConfig) -> None:
    """The consultation's summary task is cancelled and the same reach-out task added."""
    consultation = booking(
        eventType="30min-consultation", event="booking.no_show", timezone=None, duration=30
    )
    result = plan(consultation, mapping, now=NOW)

    assert statuses(result) == [("summary", "cancelled"), ("no-show-reach-out", "todo")]
    assert result.tasks[-1].due == datetime(2027, 3, 20, 10, 30, tzinfo=UTC)


def _with_workshop_lifecycle(block: str) -> MappingConfig:
    """The default mapping with ``block`` (indented YAML) as the workshop's lifecycle."""
    text = DEFAULT.read_text(encoding="utf-8")
    anchor = "  workshop:\n"
    assert anchor in text
    return load_mapping_text(text.replace(anchor, anchor + "    lifecycle:\n" + block, 1))


def test_no_show_may_leave_mapped_tasks_open() -> None:
    """cancel_open_tasks: false keeps mapped tasks todo, and a passed prep is then skipped."""
    mapping = _with_workshop_lifecycle("      on_no_show:\n        cancel_open_tasks: false\n")
    result = plan(booking(event="booking.no_show"), mapping, now=NOW.replace(day=21))

    assert statuses(result) == [("follow-up", "todo"), ("no-show-reach-out", "todo")]
    assert [s.key for s in result.skipped_tasks] == ["prep-info"]


def test_lifecycle_tasks_skip_only_with_skip_if_past() -> None:
    """An on_cancel task with skip_if_past whose moment passed is skipped; one without is not."""
    mapping = _with_workshop_lifecycle(
        "      on_cancel:\n"
        "        tasks:\n"
        "          - {key: refund, title: Refund, offset: -5d, skip_if_past: true}\n"
        "          - {key: survey, title: Survey, offset: -5d}\n"
    )
    result = plan(booking(event="booking.cancelled"), mapping, now=NOW.replace(day=18))

    assert statuses(result) == [
        ("prep-info", "cancelled"),
        ("follow-up", "cancelled"),
        ("survey", "todo"),
    ]
    assert [s.key for s in result.skipped_tasks] == ["refund"]


def test_a_new_event_type_overrides_lifecycle_in_yaml_alone() -> None:
    """A YAML-only event type sets its own lifecycle key by key; the rest is inherited."""
    text = DEFAULT.read_text(encoding="utf-8") + (
        "  webinar:\n"
        "    lifecycle:\n"
        "      on_reschedule:\n"
        "        meeting_outcome: SCHEDULED\n"
        "      on_cancel:\n"
        "        lead_stage: null\n"
        "        tasks:\n"
        "          - key: apologise\n"
        "            title: 'Apologise to {firstName}'\n"
        "            offset: +0m\n"
        "      on_no_show:\n"
        "        lead_stage: NURTURE\n"
        "    tasks:\n"
        "      - key: recording\n"
        "        title: Send the recording\n"
        "        offset: +30m\n"
        "        anchor: end\n"
    )
    mapping = load_mapping_text(text, "extended.yaml")

    def webinar(event: str) -> BookingPlan:
        return plan(booking(eventType="webinar", event=event), mapping, now=NOW)

    moved = webinar("booking.rescheduled")
    cancelled = webinar("booking.cancelled")
    no_show = webinar("booking.no_show")

    assert moved.meeting.outcome == "SCHEDULED"
    assert (cancelled.lead.cancelled_stage, cancelled.lead.no_show_stage) == (None, "NURTURE")
    assert [(t.key, t.title, t.status) for t in cancelled.tasks] == [
        ("recording", "Send the recording", "cancelled"),
        ("apologise", "Apologise to Test", "todo"),
    ]
    # on_no_show overrode only lead_stage: the default's reach-out task is inherited.
    assert statuses(no_show) == [("recording", "cancelled"), ("no-show-reach-out", "todo")]
    # The seed event types keep the defaults.
    assert plan(booking(event="booking.cancelled"), mapping, now=NOW).lead.cancelled_stage == (
        "LOST"
    )


def test_a_mapping_without_lifecycle_gets_the_documented_defaults() -> None:
    """An older file with no lifecycle: RESCHEDULED, LOST on cancel, no-show keeps the stage."""
    text = DEFAULT.read_text(encoding="utf-8")
    start = text.index("  lifecycle:\n")
    end = text.index("\nevent_types:")
    mapping = load_mapping_text(text[:start] + text[end:], "old.yaml")

    moved = plan(booking(event="booking.rescheduled"), mapping, now=NOW)
    no_show = plan(booking(event="booking.no_show"), mapping, now=NOW)

    assert moved.meeting.outcome == "RESCHEDULED"
    assert (no_show.lead.cancelled_stage, no_show.lead.no_show_stage) == ("LOST", None)
    assert statuses(no_show) == [("prep-info", "cancelled"), ("follow-up", "cancelled")]


@pytest.mark.parametrize("event", EVENTS)
def test_planning_each_event_is_deterministic(mapping: MappingConfig, event: str) -> None:
    """Equal inputs (the booking re-read from its stored JSON) give equal plans, every event."""
    received = NOW - timedelta(minutes=5)
    snapshot = booking(event=event, cancellationReason="Sjuk", updatedAt=None)

    first = plan(snapshot, mapping, now=NOW, received_at=received)
    again = plan(
        parse_booking(snapshot.model_dump(mode="json", by_alias=True, exclude_none=True)),
        mapping,
        now=NOW,
        received_at=received,
    )

    assert first == again
    assert first.snapshot_at == received
