"""The bookme-crm command line, run in-process on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapter.cli import app
from tests.conftest import DEFAULT_MAPPING, SAMPLES, WEBHOOK_SECRET

runner = CliRunner()


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("MAPPINGS_PATH", str(DEFAULT_MAPPING))
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", WEBHOOK_SECRET)


def test_mappings_check_prints_the_planned_writes() -> None:
    """A sample booking dry-runs into the CRM writes it would make."""
    result = runner.invoke(
        app,
        [
            "mappings",
            "check",
            str(DEFAULT_MAPPING),
            "--sample",
            str(SAMPLES / "seed-workshop.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    first, _, rest = result.output.partition("\n")
    assert "valid; event types: 30min-consultation, workshop" in first
    plan = json.loads(rest)
    assert plan["lead"]["title"] == "workshop - Test Person"
    assert [t["title"] for t in plan["tasks"]] == ["Send workshop prep info", "Workshop follow-up"]


def test_mappings_check_names_file_line_and_key(tmp_path: Path) -> None:
    """An invalid mapping exits 1 with the file, line and key."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(DEFAULT_MAPPING.read_text().replace("lead_score: 60", "lead_scor: 60"))
    result = runner.invoke(app, ["mappings", "check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:" in result.output
    assert "defaults.lead.lead_scor: unknown key" in result.output


def test_mappings_check_reports_an_unplaceable_sample(tmp_path: Path) -> None:
    """A sample of an unknown event type says it would be quarantined."""
    sample = tmp_path / "yoga.json"
    sample.write_text(
        json.dumps(
            {**json.loads((SAMPLES / "seed-workshop.json").read_text()), "eventType": "yoga"}
        )
    )
    result = runner.invoke(app, ["mappings", "check", "--sample", str(sample)])
    assert result.exit_code == 1
    assert "would be quarantined" in result.output


def test_migrate_then_outbox_status_list_and_replay() -> None:
    """migrate creates the schema; the outbox commands read and replay it."""
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert "database at revision" in result.output
    status = runner.invoke(app, ["outbox", "status"])
    assert status.exit_code == 0
    assert "queued      0" in status.output
    assert "oldest pending: none" in status.output
    assert runner.invoke(app, ["outbox", "list", "--state", "nope"]).exit_code == 2
    missing = runner.invoke(app, ["outbox", "replay", "no-such-id"])
    assert missing.exit_code == 1
    assert "no event" in missing.output


def test_placeholder_secret_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI names the bad variable and exits 2."""
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", "your-webhook-secret")
    result = runner.invoke(app, ["worker", "--drain"])
    assert result.exit_code == 2
    assert "CRM_WEBHOOK_SECRET" in result.output
