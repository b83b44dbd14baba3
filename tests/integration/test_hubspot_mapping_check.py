"""``bookme-crm mappings check --hubspot`` and ``hubspot setup``: a mapping's properties checked
against the fake portal's definitions before it goes live, one line per problem."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapter.cli import app
from tests.conftest import DEFAULT_MAPPING
from tests.fakes.hubspot import FakeHubSpot

CONTACT = """
    properties:
      jobtitle: "{answers.role}"
      lifecyclestage: {value: lead, policy: forward_only, order: [subscriber, lead, client]}
      favourite_colour: "{answers.colour}"
      interests: {value: "crm;quantum", policy: append}"""
LEAD = """
    properties:
      budget_band: "{answers.budget}"
      amount_guess: true
      closedate: next week"""


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    with FakeHubSpot(rate_limit=None, search_rate_limit=None) as server:
        server.define_property(
            "contacts",
            "interests",
            type="enumeration",
            field_type="checkbox",
            options=["crm", "ai"],
        )
        server.define_property("deals", "budget_band", type="number", field_type="number")
        server.define_property("deals", "amount_guess", type="number", field_type="number")
        yield server


def _mapping(tmp_path: Path, contact: str, lead: str) -> Path:
    """The default mapping with ``properties:`` added to its contact and lead defaults."""
    text = DEFAULT_MAPPING.read_text()
    contact_tags = "  contact:\n    tags: [bookme]"
    lead_tags = '    tags: [bookme, "{eventType}"]'
    text = text.replace(contact_tags, contact_tags + contact, 1)
    text = text.replace(lead_tags, lead_tags + lead, 1)
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    return path


def _env(fake: FakeHubSpot, tmp_path: Path, mapping: Path) -> dict[str, str]:
    return {
        "HUBSPOT_ACCESS_TOKEN": fake.token or "",
        "HUBSPOT_BASE_URL": fake.url,
        "MAPPINGS_PATH": str(mapping),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bookme.db'}",
    }


def test_check_hubspot_names_each_property_the_portal_cannot_take(
    fake: FakeHubSpot, tmp_path: Path
) -> None:
    """A missing property, a wrong type, a fixed value that is no option, and a
    forward_only order outside the options: one line each, naming the key; exit 1."""
    mapping = _mapping(tmp_path, CONTACT, LEAD)
    result = CliRunner().invoke(
        app, ["mappings", "check", str(mapping), "--hubspot"], env=_env(fake, tmp_path, mapping)
    )
    assert result.exit_code == 1, result.output
    problems = sorted(line for line in result.output.splitlines() if line.startswith("PORTAL"))
    assert (
        problems
        == [
            "PORTAL   defaults.contact.properties.bookme_nickname: HubSpot contacts have no "
            "property 'bookme_nickname'",
            "PORTAL   defaults.contact.properties.interests: contacts.interests value 'quantum' "
            "is not an option (options: crm, ai)",
            "PORTAL   defaults.contact.properties.lifecyclestage: contacts.lifecyclestage order "
            "names client, not options of the property (options: subscriber, lead, "
            "marketingqualifiedlead, salesqualifiedlead, opportunity, customer, evangelist, other)",
            "PORTAL   defaults.lead.properties.amount_guess: deals.amount_guess takes number "
            "values, the mapping writes a boolean",
            "PORTAL   defaults.lead.properties.closedate: deals.closedate takes datetime values, "
            "the mapping writes 'next week'",
        ]
        or problems
    )


def test_check_hubspot_passes_a_mapping_that_fits(fake: FakeHubSpot, tmp_path: Path) -> None:
    """The default mapping, and properties that fit the portal, check clean: exit 0."""
    mapping = _mapping(
        tmp_path,
        """
    properties:
      jobtitle: "{answers.role}"
      interests: {value: "crm;ai", policy: append}""",
        """
    properties:
      budget_band: '{answers.budget}'""",
    )
    result = CliRunner().invoke(
        app, ["mappings", "check", str(mapping), "--hubspot"], env=_env(fake, tmp_path, mapping)
    )
    assert result.exit_code == 0, result.output
    assert "every mapped property fits" in result.output


def test_hubspot_setup_reports_the_mapping_problems_too(fake: FakeHubSpot, tmp_path: Path) -> None:
    """``hubspot setup`` runs the same check: a property the portal lacks fails setup."""
    mapping = _mapping(tmp_path, CONTACT, LEAD)
    result = CliRunner().invoke(app, ["hubspot", "setup"], env=_env(fake, tmp_path, mapping))
    assert result.exit_code == 1, result.output
    assert "favourite_colour" in result.output


def test_check_hubspot_names_owners_the_portal_does_not_have(
    fake: FakeHubSpot, tmp_path: Path
) -> None:
    """Every owner email of the mapping, fixed or in a round robin, must be an active owner;
    an archived user or an unknown email is one line naming the mapping key."""
    fake.add_owner("ada@example.com", "Ada", "Lovelace")
    fake.add_owner("gone@example.com", "Gone", "User", archived=True)
    text = DEFAULT_MAPPING.read_text().replace(
        "  workshop:\n",
        "  workshop:\n    owner:\n      round_robin: [ada@example.com, gone@example.com, "
        "nobody@example.com]\n",
        1,
    )
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(text)
    result = CliRunner().invoke(
        app, ["mappings", "check", str(mapping), "--hubspot"], env=_env(fake, tmp_path, mapping)
    )
    assert result.exit_code == 1, result.output
    problems = [line for line in result.output.splitlines() if line.startswith("PORTAL")]
    assert problems == [
        "PORTAL   event_types.workshop.owner.round_robin[1]: gone@example.com is not an active "
        "owner of the portal (1 active; add the user in HubSpot or fix the email)",
        "PORTAL   event_types.workshop.owner.round_robin[2]: nobody@example.com is not an "
        "active owner of the portal (1 active; add the user in HubSpot or fix the email)",
    ]
