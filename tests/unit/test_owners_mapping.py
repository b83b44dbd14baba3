"""The mapping's ``owner`` key: loading, overriding, file:line faults, and the plan it makes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapter.booking import parse_booking
from adapter.errors import MappingFileError
from adapter.mapping import load_mapping, load_mapping_text, plan_booking
from adapter.plan import OwnerPlan
from tests.conftest import seed_booking

DEFAULT = Path(__file__).resolve().parents[2] / "mappings" / "default.yaml"
NAME = "mappings/owners.yaml"
NOW = datetime(2026, 11, 1, tzinfo=UTC)


def with_owner(defaults_owner: str, workshop_owner: str = "") -> str:
    """The default mapping with ``owner`` YAML under ``defaults`` (and the workshop)."""
    text = DEFAULT.read_text(encoding="utf-8")
    text = text.replace("\ndefaults:\n", f"\ndefaults:\n{defaults_owner}", 1)
    if workshop_owner:
        text = text.replace("\n  workshop:\n", f"\n  workshop:\n{workshop_owner}", 1)
    return text


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first non-comment line containing ``needle``."""
    lines = enumerate(text.splitlines(), 1)
    return next(n for n, line in lines if needle in line and not line.lstrip().startswith("#"))


def load_error(text: str) -> str:
    with pytest.raises(MappingFileError) as caught:
        load_mapping_text(text, NAME)
    return str(caught.value)


def test_owner_defaults_and_an_event_type_replaces_them() -> None:
    """defaults.owner applies to every event type unless one names its own section."""
    text = with_owner(
        "  owner:\n    round_robin: [Ada@Example.com, bo@example.com]\n    keep_existing: true\n",
        "    owner:\n      email: lead@example.com\n",
    )
    mapping = load_mapping_text(text, NAME)

    consultation = mapping.event_type("30min-consultation").owner
    workshop = mapping.event_type("workshop").owner
    assert consultation is not None
    assert workshop is not None
    assert consultation.round_robin == ["ada@example.com", "bo@example.com"]
    assert consultation.keep_existing is True
    assert (workshop.email, workshop.round_robin, workshop.keep_existing) == (
        "lead@example.com",
        None,
        False,
    )


@pytest.mark.parametrize(
    ("owner", "needle", "expected"),
    [
        (
            "  owner:\n    email: not-an-email\n",
            "email: not-an-email",
            "defaults.owner.email: 'not-an-email' is not a valid email address",
        ),
        (
            "  owner:\n    round_robin: []\n",
            "round_robin: []",
            "defaults.owner.round_robin: List should have at least 1 item",
        ),
        (
            "  owner:\n    round_robin:\n      - a@example.com\n      - bad@\n",
            "- bad@",
            "defaults.owner.round_robin[1]: 'bad@' is not a valid email address",
        ),
        (
            "  owner:\n    round_robin:\n      - a@example.com\n      - A@example.com\n",
            "- A@example.com",
            "defaults.owner.round_robin[1]: owner a@example.com is listed twice",
        ),
        (
            "  owner:\n    emails: a@example.com\n",
            "emails:",
            "defaults.owner.emails: unknown key 'emails' (did you mean 'email'?",
        ),
        (
            "  owner:\n    email: a@example.com\n    round_robin: [b@example.com]\n",
            "owner:",
            "defaults.owner: give either email or round_robin, not both",
        ),
        (
            "  owner:\n    keep_existing: false\n",
            "owner:",
            "defaults.owner: give email, round_robin or keep_existing: true",
        ),
    ],
)
def test_each_owner_fault_names_file_line_and_key(owner: str, needle: str, expected: str) -> None:
    """A bad owner email, an empty or repeated list, an unknown key: file:line: key: why."""
    text = with_owner(owner)
    message = load_error(text)
    assert message.startswith(f"{NAME}:{line_of(text, needle)}: {expected}"), message


def test_an_event_types_owner_fault_points_at_its_own_line() -> None:
    """A fault in an event type's owner section names that event type's key path."""
    text = with_owner("", "    owner:\n      round_robin: [x@example.com, nope]\n")
    message = load_error(text)
    line = line_of(text, "round_robin: [x@")
    assert message.startswith(f"{NAME}:{line}: event_types.workshop.owner.round_robin[1]: ")


def test_the_plan_carries_the_owner_and_none_without_one() -> None:
    """The planner copies the owner into the plan; without the key the plan has none."""
    booking = parse_booking(seed_booking())
    text = with_owner("  owner:\n    round_robin: [a@example.com, b@example.com]\n")
    plan = plan_booking(booking, load_mapping_text(text, NAME), now=NOW)
    assert plan.owner == OwnerPlan(round_robin=("a@example.com", "b@example.com"))
    assert plan_booking(booking, load_mapping(DEFAULT), now=NOW).owner is None


def test_mappings_check_sample_shows_the_owner(tmp_path: Path) -> None:
    """--sample prints the plan's owner in its JSON and says who it will be on stderr."""
    from typer.testing import CliRunner

    from adapter.cli import app
    from tests.conftest import SAMPLES

    mapping = tmp_path / "owners.yaml"
    mapping.write_text(
        with_owner("  owner:\n    email: zed@example.com\n    keep_existing: true\n"),
        encoding="utf-8",
    )
    sample = str(SAMPLES / "seed-workshop.json")
    result = CliRunner().invoke(app, ["mappings", "check", str(mapping), "--sample", sample])

    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == "owner: the contact's existing owner, else zed@example.com"
    plan = json.loads(result.stdout.partition("\n")[2])
    assert plan["owner"] == {
        "email": "zed@example.com",
        "round_robin": [],
        "keep_existing": True,
    }
