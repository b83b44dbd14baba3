"""Mapped CRM properties: the booking's extension fields reach templates and typed values."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from adapter.booking import parse_booking
from adapter.errors import MappingFileError
from adapter.mapping import load_mapping_text, plan_booking
from adapter.plan import PlannedProperty

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LIFECYCLE_ORDER = (
    "subscriber, lead, marketingqualifiedlead, salesqualifiedlead, "
    "opportunity, customer, evangelist, other"
)

MAPPING = f"""\
version: 1
defaults:
  lead:
    title: "{{eventType}} - {{name}}"
    stage: CONTACTED
    source: BookMe
    properties:
      budget: "{{answers.budget}}"
      campaign_note: "Campaign {{utm.campaign}} ({{utm.source}})"
  meeting:
    subject: "{{eventType}} with {{attendees.0.name}} <{{attendees.0.email}}>"
    properties:
      start_at: "{{start}}"
      start_day: "{{startDate}}"
  contact:
    properties:
      jobtitle: "{{answers.role}}"
      newsletter: "{{answers.newsletter}}"
      interests: {{value: "{{answers.interests}}", policy: append}}
      preferred_language: {{value: "{{locale}}", policy: if_empty}}
      lifecyclestage:
        value: lead
        policy: forward_only
        order: [{LIFECYCLE_ORDER}]
  task:
    properties:
      hs_task_type: CALL
event_types:
  workshop:
    lead:
      properties:
        budget: {{value: "{{answers.budget}}", policy: if_empty}}
        score_fixed: 7
    tasks:
      - key: follow-up
        title: Follow up
        offset: +1d
        properties:
          hs_task_type: EMAIL
  other: {{}}
"""

BOOKING: dict[str, Any] = {
    "bookingId": "b-1",
    "eventType": "workshop",
    "name": "Test Person",
    "email": "test@example.com",
    "scheduledDate": "2027-02-15T23:30:00Z",
    "duration": 60,
    "source": "bookme",
    "timezone": "Europe/Stockholm",
    "answers": {"budget": 25000, "role": "CTO", "newsletter": True, "interests": ["crm", "ai"]},
    "utm": {"source": "linkedin", "campaign": "spring-27"},
    "locale": "sv-SE",
    "attendees": [{"name": "Guest One", "email": "guest@example.com"}],
}


def plan(**overrides: Any) -> Any:
    mapping = load_mapping_text(MAPPING, "m.yaml")
    return plan_booking(parse_booking({**BOOKING, **overrides}), mapping, now=NOW)


def test_templates_reach_answers_utm_attendees_and_locale() -> None:
    """{answers.x}, {utm.x} and {attendees.n.x} render inside text templates."""
    planned = plan()
    assert planned.meeting.subject == "workshop with Guest One <guest@example.com>"
    assert planned.lead.properties["campaign_note"].value == "Campaign spring-27 (linkedin)"


def test_absent_extension_fields_render_empty() -> None:
    """A booking without the extensions renders their placeholders empty, as before."""
    planned = plan(answers=None, utm=None, attendees=None, locale=None)
    assert planned.meeting.subject == "workshop with  <>"
    assert planned.lead.properties["campaign_note"].value == "Campaign  ()"


def test_a_whole_placeholder_keeps_its_type() -> None:
    """A property that is one placeholder keeps the number, boolean or joined list."""
    contact = plan().contact.properties
    assert contact["newsletter"].value is True
    assert contact["interests"] == PlannedProperty(value="crm;ai", policy="append")
    assert plan().lead.properties["budget"].value == 25000


def test_dates_in_the_booking_zone_and_utc() -> None:
    """{start} is the UTC datetime; {startDate} is the day in the booking's own zone."""
    meeting = plan().meeting.properties
    assert meeting["start_at"].value == "2027-02-15T23:30:00Z"
    assert meeting["start_day"].value == "2027-02-16"


def test_event_type_properties_override_by_name() -> None:
    """An event type's properties replace the defaults' of the same name and add new ones."""
    lead = plan().lead.properties
    assert lead["budget"].policy == "if_empty"
    assert lead["score_fixed"].value == 7
    assert "campaign_note" in lead
    other = plan(eventType="other").lead.properties
    assert other["budget"].policy == "always"
    assert "score_fixed" not in other


def test_task_properties_layer_over_the_defaults() -> None:
    """A task's own properties win over defaults.task's."""
    (task,) = plan().tasks
    assert task.properties["hs_task_type"].value == "EMAIL"


def test_an_empty_value_is_not_planned() -> None:
    """A booking that lacks a field plans no write for it, so it never clears the CRM's value."""
    contact = plan(answers={"role": "CTO"}, locale=None).contact.properties
    assert "interests" not in contact
    assert "preferred_language" not in contact
    assert contact["lifecyclestage"].order[:2] == ("subscriber", "lead")


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ('x: "{utm.nope}"', "m.yaml:8: defaults.lead.properties.x.value: unknown placeholder"),
        ('x: "{attendees.a.email}"', "unknown placeholder '{attendees.a.email}'"),
        ("x: {value: 3, policy: append}", "policy append needs a text value"),
        ("x: {value: a, policy: forward_only}", "policy forward_only needs an 'order'"),
        ("x: {value: z, policy: forward_only, order: [a, b]}", "value 'z' is not in 'order'"),
        ("x: {value: a, order: [a]}", "'order' goes with policy forward_only"),
        ("x: {value: a, policy: sometimes}", "Input should be 'always'"),
        ("Bad-Name: a", "property 'Bad-Name' is not a CRM property name"),
        ("dealstage: a", "property 'dealstage' is written by the sync itself"),
        ("bookme_lead_key: a", "property 'bookme_lead_key' is written by the sync itself"),
    ],
)
def test_mappings_check_reports_bad_properties_with_file_and_line(
    entry: str, expected: str
) -> None:
    """A bad placeholder, policy or property name is refused with file:line and key path."""
    text = (
        "version: 1\ndefaults:\n  lead:\n    title: t\n    stage: S\n    source: B\n"
        f"    properties:\n      {entry}\n  meeting:\n    subject: s\nevent_types:\n  w: {{}}\n"
    )
    with pytest.raises(MappingFileError) as caught:
        load_mapping_text(text, "m.yaml")
    assert expected in str(caught.value)
    assert "m.yaml:8:" in str(caught.value)


def test_mappings_check_sample_shows_each_property_with_its_policy() -> None:
    """`mappings check --sample` prints every mapped property's value, policy and order."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from adapter.cli import app

    samples = Path(__file__).resolve().parents[1] / "samples"
    result = CliRunner().invoke(
        app,
        [
            "mappings",
            "check",
            str(samples / "mapping-properties.yaml"),
            "--sample",
            str(samples / "booking-with-answers.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout[result.stdout.index("{") :])
    contact = plan["contact"]["properties"]
    assert contact["interests"] == {"value": "crm;ai", "policy": "append", "order": []}
    assert contact["hs_lead_status"]["policy"] == "if_empty"
    assert contact["lifecyclestage"]["order"][0] == "subscriber"
    assert plan["lead"]["properties"]["budget"] == {"value": 25000, "policy": "always", "order": []}
    assert plan["lead"]["properties"]["utm_campaign"]["value"] == "spring-27"
