"""``bookme-crm hubspot verify`` run as a user would (the real CLI), against the fake portal
over real HTTP in each of its modes; never against the internet."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapter.backends.hubspot.verify import ASSUMPTIONS, ROW_ARCHIVE
from adapter.cli import app
from tests.conftest import DEFAULT_MAPPING
from tests.fakes.hubspot import OBJECT_TYPES, FakeHubSpot, error_body

CONFLICT_ROW = 6
MISSING_ID_ROW = 7
ARCHIVE_ROW = 10


@dataclass(frozen=True)
class Run:
    exit_code: int
    output: str

    def rows(self) -> dict[int, tuple[str, bool]]:
        """Row number -> (the row's text, wrapped lines joined; handled?)."""
        rows: dict[int, tuple[str, bool]] = {}
        current = 0
        for line in self.output.splitlines():
            first = line.split(" ", 1)[0]
            if first.isdigit():
                current = int(first)
                rows[current] = (line.rsplit(" ", 1)[0], line.endswith(" yes"))
            elif current and line.startswith(" ") and line.strip():
                text, handled = rows[current]
                rows[current] = (f"{text} {line.strip()}", handled)
            elif not line.strip():
                current = 0
        return rows


def _env(fake: FakeHubSpot, tmp_path: Path) -> dict[str, str]:
    return {
        "HUBSPOT_ACCESS_TOKEN": fake.token or "",
        "HUBSPOT_BASE_URL": fake.url,
        "MAPPINGS_PATH": str(DEFAULT_MAPPING),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bookme.db'}",
    }


def verify(fake: FakeHubSpot, tmp_path: Path, *args: str, **env: str) -> Run:
    result = CliRunner().invoke(
        app, ["hubspot", "verify", *args], env={**_env(fake, tmp_path), **env}
    )
    return Run(result.exit_code, result.output)


@pytest.fixture
def ready(fake: FakeHubSpot, tmp_path: Path) -> FakeHubSpot:
    """The fake after ``bookme-crm hubspot setup``."""
    result = CliRunner().invoke(app, ["hubspot", "setup"], env=_env(fake, tmp_path))
    assert result.exit_code == 0, result.output
    return fake


def live(fake: FakeHubSpot) -> dict[str, int]:
    return {t: n for t in OBJECT_TYPES if (n := len(fake.objects(t)))}


def test_verify_passes_on_a_set_up_portal(ready: FakeHubSpot, tmp_path: Path) -> None:
    """Against today's fake every row is handled, exit 0, nothing is left behind, no token shown."""
    ready.configure(search_lag=0.0)
    run = verify(ready, tmp_path)
    assert run.exit_code == 0, run.output
    rows = run.rows()
    assert [rows[n][0].split("  ")[1].strip() for n in sorted(rows)] == [
        *ASSUMPTIONS,
        ROW_ARCHIVE,
    ]
    assert all(handled for _, handled in rows.values()), run.output
    assert "409 naming the existing id" in rows[CONFLICT_ROW][0]
    assert "207 with errors" in rows[MISSING_ID_ROW][0]
    assert "found at once" in rows[5][0]
    assert "INTEGRATION:" in rows[9][0]  # the source the poll learns as its own
    assert "archived 6" in rows[ARCHIVE_ROW][0]
    assert "every assumption holds" in run.output
    assert ready.token is not None
    assert ready.token not in run.output
    assert live(ready) == {}
    made = [o for t in OBJECT_TYPES for o in ready.objects(t, include_archived=True)]
    assert len(made) == 6
    assert all("bookme-verify-" in " ".join(str(v) for v in o["properties"].values()) for o in made)


@pytest.mark.parametrize(
    ("shape", "answer"),
    [
        ("409_existing_id", "409 naming the existing id"),
        ("409_no_id", "409 without the existing id"),
        ("400_validation", "400 'already has that value'"),
    ],
)
def test_verify_handles_each_conflict_shape(
    ready: FakeHubSpot, tmp_path: Path, shape: str, answer: str
) -> None:
    """Each documented unique-value conflict answer is named in row 6 and handled (exit 0)."""
    ready.configure(conflict_shape=shape)
    run = verify(ready, tmp_path)
    assert run.exit_code == 0, run.output
    text, handled = run.rows()[CONFLICT_ROW]
    assert answer in text
    assert handled
    assert live(ready) == {}


def test_verify_fails_when_the_conflict_is_a_plain_bad_value(
    ready: FakeHubSpot, tmp_path: Path
) -> None:
    """A duplicate key refused as an ordinary 400 (not a conflict) fails row 6: exit 1, NO."""
    ready.fail(
        "POST",
        "/crm/v3/objects/deals",
        400,
        body=error_body("Property values were not valid: bad value", "VALIDATION_ERROR"),
    )
    run = verify(ready, tmp_path)
    assert run.exit_code == 1, run.output
    text, handled = run.rows()[CONFLICT_ROW]
    assert not handled
    assert "400, not read as a conflict" in text
    assert "bad value" in text
    assert run.output.splitlines()[-1].startswith("1 assumption(s) do not hold")
    assert live(ready) == {}


def test_verify_handles_a_batch_update_refused_as_a_whole(
    ready: FakeHubSpot, tmp_path: Path
) -> None:
    """Should HubSpot refuse the whole batch for a missing id (404), row 7 names the per-item
    fallback and still finds the missing id and updates the rest."""
    ready.fail("POST", "/crm/v3/objects/tasks/batch/update", 404)
    run = verify(ready, tmp_path)
    assert run.exit_code == 0, run.output
    text, handled = run.rows()[MISSING_ID_ROW]
    assert "whole batch refused, then one by one" in text
    assert "updated" in text
    assert handled


def test_verify_refuses_a_portal_whose_keys_are_not_unique(
    fake: FakeHubSpot, tmp_path: Path
) -> None:
    """A portal that lets a second deal take the same key is caught in row 2 (exit 2, setup)."""
    for object_type, name in (
        ("companies", "bookme_company_key"),
        ("deals", "bookme_lead_key"),
        ("meetings", "bookme_booking_id"),
        ("tasks", "bookme_task_key"),
    ):
        fake.define_property(object_type, name, has_unique_value=False)
    run = verify(fake, tmp_path)
    assert run.exit_code == 2, run.output
    text, handled = run.rows()[2]
    assert "deals.bookme_lead_key not unique-valued" in text
    assert not handled


def test_verify_before_setup_exits_2_and_creates_nothing(fake: FakeHubSpot, tmp_path: Path) -> None:
    """Without setup's properties verify says to run setup first, exits 2 and writes nothing."""
    run = verify(fake, tmp_path)
    assert run.exit_code == 2, run.output
    assert "run `bookme-crm hubspot setup` first" in run.output
    assert "deals.bookme_lead_key missing" in run.rows()[2][0]
    assert sum(fake.calls[k] for k in fake.calls if k.startswith(("POST", "PATCH"))) == 0


def test_verify_with_a_refused_token_exits_2(ready: FakeHubSpot, tmp_path: Path) -> None:
    """A token HubSpot refuses fails row 1 and exits 2, the token never printed."""
    run = verify(ready, tmp_path, HUBSPOT_ACCESS_TOKEN="pat-na1-not-the-right-token")
    assert run.exit_code == 2, run.output
    text, handled = run.rows()[1]
    assert "401" in text
    assert not handled
    assert "pat-na1-not-the-right-token" not in run.output
    assert "check HUBSPOT_ACCESS_TOKEN" in run.output


def test_verify_without_a_token_exits_2(fake: FakeHubSpot, tmp_path: Path) -> None:
    """No HUBSPOT_ACCESS_TOKEN is a configuration error, before any call."""
    run = verify(fake, tmp_path, HUBSPOT_ACCESS_TOKEN="")
    assert run.exit_code == 2
    assert "HUBSPOT_ACCESS_TOKEN is not set" in run.output
    assert fake.total_calls == 0


def test_verify_reports_the_search_lag(ready: FakeHubSpot, tmp_path: Path) -> None:
    """A lagging search index is reported with its lag, or as not found within --search-wait;
    informational, so still exit 0."""
    ready.configure(search_lag=1.5)
    lagging = verify(ready, tmp_path, "--search-wait", "10")
    assert lagging.exit_code == 0, lagging.output
    assert "found after 2 s" in lagging.rows()[5][0]
    impatient = verify(ready, tmp_path, "--search-wait", "0")
    assert impatient.exit_code == 0, impatient.output
    text, handled = impatient.rows()[5]
    assert "not found within 0 s" in text
    assert handled


def test_verify_keep_leaves_the_records(ready: FakeHubSpot, tmp_path: Path) -> None:
    """--keep archives nothing but the throwaway task and lists what it kept."""
    run = verify(ready, tmp_path, "--keep")
    assert run.exit_code == 0, run.output
    assert "kept (--keep)" in run.rows()[ARCHIVE_ROW][0]
    assert live(ready) == {"contacts": 1, "companies": 1, "deals": 1, "meetings": 1, "tasks": 1}


def test_verify_names_what_it_could_not_archive(ready: FakeHubSpot, tmp_path: Path) -> None:
    """An archive HubSpot refuses fails row 9 with the ids to delete by hand (exit 1)."""
    ready.fail("DELETE", "/crm/v3/objects/meetings/*", 400, times=None)
    run = verify(ready, tmp_path)
    assert run.exit_code == 1, run.output
    text, handled = run.rows()[ARCHIVE_ROW]
    assert not handled
    (meeting,) = ready.objects("meetings")
    assert f"delete by hand: meeting {meeting['id']}" in text
    assert live(ready) == {"meetings": 1}
