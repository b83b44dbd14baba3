"""plan_booking: what a booking becomes in the CRM under the default mapping (contract §4)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adapter.booking import Booking, parse_booking
from adapter.errors import MappingError
from adapter.mapping import MappingConfig, company_key, load_mapping, load_mapping_text
from adapter.mapping import plan_booking as plan

DEFAULT = Path(__file__).resolve().parents[2] / "mappings" / "default.yaml"
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

# The seed's curl example (shared/samples/seed-workshop.json).
SEED: dict[str, Any] = {
    "bookingId": "test-123",
    "eventType": "workshop",
    "name": "Test Person",
    "email": "test@example.com",
    "scheduledDate": "2027-02-15T10:00:00Z",
    "duration": 120,
    "source": "bookme",
}

# A consultation with every optional field (shared/samples/consultation-with-company.json).
CONSULTATION: dict[str, Any] = {
    "bookingId": "bk_9f3a21",
    "eventType": "30min-consultation",
    "name": "Anna Lindqvist",
    "email": "anna.lindqvist@nordkap.se",
    "phone": "+46 70 123 45 67",
    "company": "Nordkap Konsult AB",
    "scheduledDate": "2027-03-04T09:30:00+01:00",
    "duration": 30,
    "meetingUrl": "https://meet.example.com/abc-defg-hij",
    "notes": "Vill prata om AI-strategi för säljteamet.",
    "source": "bookme",
    "createdAt": "2026-11-23T14:02:11.000Z",
    "timezone": "Europe/Stockholm",
}


@pytest.fixture(scope="module")
def mapping() -> MappingConfig:
    """The shipped default mapping."""
    return load_mapping(DEFAULT)


def booking(base: dict[str, Any] = SEED, /, **changes: Any) -> Booking:
    """A validated booking: ``base`` with ``changes`` (None removes a field)."""
    body = {**base, **changes}
    return parse_booking({key: value for key, value in body.items() if value is not None})


def test_seed_workshop_plan_matches_the_seed(mapping: MappingConfig) -> None:
    """The seed's booking gets the seed's lead, contact, meeting and both workshop tasks."""
    result = plan(booking(), mapping, now=NOW)

    assert result.lead.title == "workshop - Test Person"
    assert result.lead.stage == "CONTACTED"
    assert result.lead.source == "BookMe"
    assert result.lead.source_details == "BookMe booking test-123"
    assert result.lead.estimated_value == 15000
    assert result.lead.lead_score == 60
    assert result.lead.tags == ("bookme", "workshop")
    assert result.lead.lead_key == "contact:test@example.com|workshop"
    assert result.contact.tags == ("bookme",)
    assert (result.contact.first_name, result.contact.last_name) == ("Test", "Person")
    assert result.company is None
    assert result.meeting.subject == "workshop - Scheduled"
    assert result.meeting.start == datetime(2027, 2, 15, 10, 0, tzinfo=UTC)
    assert result.meeting.end == datetime(2027, 2, 15, 12, 0, tzinfo=UTC)
    assert (result.meeting.outcome, result.meeting.source) == ("SCHEDULED", "BookMe")
    assert [(t.key, t.title, t.due, t.priority) for t in result.tasks] == [
        ("prep-info", "Send workshop prep info", datetime(2027, 2, 8, 10, 0, tzinfo=UTC), "high"),
        ("follow-up", "Workshop follow-up", datetime(2027, 2, 16, 10, 0, tzinfo=UTC), "medium"),
    ]
    assert {task.status for task in result.tasks} == {"todo"}
    assert (result.event, result.lifecycle) == ("booking.created", "active")
    assert (result.lead.cancelled_stage, result.lead.no_show_stage) == ("LOST", None)
    assert result.skipped_tasks == ()


def test_company_titles_the_lead_and_owns_its_identity(mapping: MappingConfig) -> None:
    """With a company, title and lead key use it (spaces tidied), and a company is planned."""
    result = plan(booking(company="  Nordkap   Konsult AB "), mapping, now=NOW)

    assert result.lead.title == "workshop - Nordkap Konsult AB"
    assert result.lead.lead_key == "company:nordkap konsult ab|workshop"
    assert result.company is not None
    assert result.company.name == "Nordkap Konsult AB"
    assert result.company.name_key == "nordkap konsult ab"
    assert result.company.tags == ("bookme",)


def test_blank_company_is_no_company(mapping: MappingConfig) -> None:
    """A blank company string plans no company, and the lead belongs to the contact."""
    result = plan(booking(company="   "), mapping, now=NOW)
    assert result.company is None
    assert result.lead.title == "workshop - Test Person"


def test_passed_prep_moment_leaves_only_the_follow_up(mapping: MappingConfig) -> None:
    """Booked 3 days ahead, the 7-days-before prep task is skipped with its reason."""
    result = plan(booking(), mapping, now=datetime(2027, 2, 12, 9, 0, tzinfo=UTC))

    assert [task.key for task in result.tasks] == ["follow-up"]
    assert [(s.key, s.title, s.reason) for s in result.skipped_tasks] == [
        ("prep-info", "Send workshop prep info", "due 2027-02-08T10:00:00Z has passed"),
    ]


def test_prep_due_exactly_now_counts_as_passed(mapping: MappingConfig) -> None:
    """A due moment equal to now has passed: nobody can act on it before it is due."""
    result = plan(booking(), mapping, now=datetime(2027, 2, 8, 10, 0, tzinfo=UTC))
    assert [s.key for s in result.skipped_tasks] == ["prep-info"]


def test_consultation_gets_the_summary_two_hours_after_start(mapping: MappingConfig) -> None:
    """A consultation plans "Send consultation summary" 2 h after start, value 5000."""
    result = plan(booking(CONSULTATION), mapping, now=NOW)

    assert result.lead.estimated_value == 5000
    assert result.lead.title == "30min-consultation - Nordkap Konsult AB"
    assert [(t.key, t.title, t.due, t.priority) for t in result.tasks] == [
        ("summary", "Send consultation summary", datetime(2027, 3, 4, 10, 30, tzinfo=UTC), "high"),
    ]


def test_unknown_event_type_is_a_mapping_error(mapping: MappingConfig) -> None:
    """An eventType the mapping lacks raises MappingError naming it and the known ones."""
    with pytest.raises(
        MappingError,
        match=r"^eventType 'yoga' is not in the mapping \(known: 30min-consultation, workshop\)$",
    ):
        plan(booking(eventType="yoga"), mapping, now=NOW)


def test_a_new_event_type_needs_only_yaml() -> None:
    """An event type added in the YAML alone gets its overrides, inherited defaults and tasks."""
    text = DEFAULT.read_text(encoding="utf-8") + (
        "  webinar:\n"
        "    lead:\n"
        "      stage: QUALIFIED\n"
        "      tags: [bookme, webinar, '{company}']\n"
        "    meeting:\n"
        "      subject: 'Webinar with {firstName}'\n"
        "    tasks:\n"
        "      - key: recording\n"
        "        title: 'Send {firstName} the recording'\n"
        "        offset: +30m\n"
        "        anchor: end\n"
    )
    mapping = load_mapping_text(text, "extended.yaml")

    result = plan(booking(eventType="webinar"), mapping, now=NOW)

    assert result.lead.stage == "QUALIFIED"
    assert result.lead.lead_score == 60
    assert result.lead.estimated_value == 0
    assert result.lead.tags == ("bookme", "webinar")
    assert result.meeting.subject == "Webinar with Test"
    assert result.meeting.description.startswith("Bokning via BookMe (webinar)\n")
    assert [(t.title, t.due, t.priority) for t in result.tasks] == [
        ("Send Test the recording", datetime(2027, 2, 15, 12, 30, tzinfo=UTC), "medium"),
    ]


def test_description_drops_lines_of_absent_fields(mapping: MappingConfig) -> None:
    """No phone, company, notes or link: their lines are left out, the rest stays."""
    result = plan(booking(), mapping, now=NOW)

    assert result.meeting.description == (
        "Bokning via BookMe (workshop)\n"
        "Datum: 2027-02-15 10:00 (UTC)\n"
        "Längd: 120 minuter\n"
        "Bokning: test-123"
    )


def test_description_has_every_line_when_every_field_is_given(mapping: MappingConfig) -> None:
    """A full booking's description has all lines, its date in the booking's timezone."""
    result = plan(booking(CONSULTATION), mapping, now=NOW)

    assert result.meeting.description == (
        "Bokning via BookMe (30min-consultation)\n"
        "Datum: 2027-03-04 09:30 (Europe/Stockholm)\n"
        "Längd: 30 minuter\n"
        "Möteslänk: https://meet.example.com/abc-defg-hij\n"
        "Telefon: +46 70 123 45 67\n"
        "Företag: Nordkap Konsult AB\n"
        "Anteckningar: Vill prata om AI-strategi för säljteamet.\n"
        "Bokning: bk_9f3a21"
    )
    assert result.meeting.meeting_url == "https://meet.example.com/abc-defg-hij"


def test_description_shows_the_reason_of_a_cancellation(mapping: MappingConfig) -> None:
    """A cancelled booking's reason is a line before the booking id; other events omit it."""
    cancelled = plan(
        booking(event="booking.cancelled", cancellationReason="Krock i kalendern"),
        mapping,
        now=NOW,
    )
    created = plan(booking(cancellationReason="Krock i kalendern"), mapping, now=NOW)

    assert cancelled.meeting.description.endswith(
        "Längd: 120 minuter\nAvbokad: Krock i kalendern\nBokning: test-123"
    )
    assert "Avbokad" not in created.meeting.description


def test_day_offsets_keep_local_time_across_dst(mapping: MappingConfig) -> None:
    """A 10:00 CEST workshop's prep is due 10:00 CET a week before, not 7 x 24 h."""
    start = {"scheduledDate": "2027-04-01T10:00:00+02:00", "timezone": "Europe/Stockholm"}
    result = plan(booking(**start), mapping, now=NOW)

    assert result.tasks[0].due == datetime(2027, 3, 25, 9, 0, tzinfo=UTC)


def test_without_timezone_days_are_counted_in_utc(mapping: MappingConfig) -> None:
    """With no timezone the same booking's prep is exactly 7 x 24 h before."""
    result = plan(booking(scheduledDate="2027-04-01T10:00:00+02:00"), mapping, now=NOW)
    assert result.tasks[0].due == datetime(2027, 3, 25, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("changes", "received_at", "activity_at", "snapshot_at"),
    [
        pytest.param(
            {"updatedAt": "2026-11-20T08:00:00Z", "createdAt": "2026-11-19T08:00:00Z"},
            datetime(2026, 11, 21, tzinfo=UTC),
            datetime(2026, 11, 20, 8, tzinfo=UTC),
            datetime(2026, 11, 20, 8, tzinfo=UTC),
            id="updatedAt-wins",
        ),
        pytest.param(
            {"createdAt": "2026-11-19T08:00:00Z"},
            datetime(2026, 11, 21, tzinfo=UTC),
            datetime(2026, 11, 19, 8, tzinfo=UTC),
            datetime(2026, 11, 21, tzinfo=UTC),
            id="createdAt-then-receipt",
        ),
        pytest.param(
            {},
            datetime(2026, 11, 21, tzinfo=UTC),
            datetime(2026, 11, 21, tzinfo=UTC),
            datetime(2026, 11, 21, tzinfo=UTC),
            id="receipt",
        ),
        pytest.param({}, None, NOW, NOW, id="now-last"),
    ],
)
def test_activity_and_snapshot_times_fall_back_in_order(
    mapping: MappingConfig,
    changes: dict[str, str],
    received_at: datetime | None,
    activity_at: datetime,
    snapshot_at: datetime,
) -> None:
    """activity_at: updatedAt, createdAt, receipt, now; snapshot_at: updatedAt, receipt, now."""
    result = plan(booking(**changes), mapping, now=NOW, received_at=received_at)

    assert result.lead.activity_at == activity_at
    assert result.snapshot_at == snapshot_at


@pytest.mark.parametrize(
    ("name", "first", "last"),
    [("Cher", "Cher", ""), ("Anna Maria Lindqvist", "Anna", "Maria Lindqvist")],
)
def test_first_name_is_the_first_word(
    mapping: MappingConfig, name: str, first: str, last: str
) -> None:
    """firstName is the first word of the name, lastName the rest ('' for a single word)."""
    contact = plan(booking(name=name), mapping, now=NOW).contact
    assert (contact.first_name, contact.last_name) == (first, last)


def test_contact_identity_is_the_trimmed_lower_cased_email(mapping: MappingConfig) -> None:
    """Emails differing in case share one contact key, and one lead key."""
    result = plan(booking(email="Test@Example.COM"), mapping, now=NOW)
    assert result.contact.email_key == "test@example.com"
    assert result.lead.lead_key == "contact:test@example.com|workshop"


def test_templated_tags_are_deduplicated_in_order() -> None:
    """A tag rendering to one already present (or to nothing) is dropped, order kept."""
    text = DEFAULT.read_text(encoding="utf-8").replace(
        'tags: [bookme, "{eventType}"]', 'tags: [bookme, "{eventType}", "{company}", bookme]'
    )
    mapping = load_mapping_text(text, "tags.yaml")

    result = plan(booking(eventType="workshop"), mapping, now=NOW)

    assert result.lead.tags == ("bookme", "workshop")


def test_planning_is_deterministic(mapping: MappingConfig) -> None:
    """The same booking, mapping and now give an equal plan: nothing reads a clock."""
    assert plan(booking(CONSULTATION), mapping, now=NOW) == plan(
        booking(CONSULTATION), mapping, now=NOW
    )


def test_company_key_is_case_and_space_insensitive() -> None:
    """Company identity folds case and collapses whitespace; blank means no company."""
    assert company_key("  Nordkap   KONSULT\tAB ") == "nordkap konsult ab"
    assert company_key("Straße") == company_key("STRASSE")
    assert company_key("   ") is None
    assert company_key(None) is None
