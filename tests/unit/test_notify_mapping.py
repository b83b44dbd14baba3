"""The mapping's send: key, and the mail mappings check --sample renders from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from adapter.cli import app
from adapter.errors import MappingFileError
from adapter.mapping import load_mapping_text
from tests.conftest import DEFAULT_MAPPING, SAMPLES

runner = CliRunner()


def _examples_on() -> str:
    return DEFAULT_MAPPING.read_text().replace("#| ", "")


def test_default_mappings_send_example_is_valid_and_off_by_default() -> None:
    """The commented send: example loads once uncommented; commented, no task is automatic."""
    on = load_mapping_text(_examples_on(), "default.yaml (examples on)")
    off = load_mapping_text(DEFAULT_MAPPING.read_text(), "default.yaml")
    (prep_on,) = [t for t in on.event_type("workshop").tasks if t.key == "prep-info"]
    (prep_off,) = [t for t in off.event_type("workshop").tasks if t.key == "prep-info"]
    assert prep_on.send is not None
    assert prep_on.send.to == "{email}"
    assert prep_off.send is None


@pytest.mark.parametrize("to", ["{answers.email}", "{email}, boss@example.com", "not-an-email"])
def test_send_to_must_be_the_bookings_email_or_a_fixed_address(to: str) -> None:
    """A templated or malformed recipient is refused at load, naming file:line and the key."""
    text = _examples_on().replace('to: "{email}"', f'to: "{to}"')
    with pytest.raises(MappingFileError) as caught:
        load_mapping_text(text, "default.yaml")
    assert "default.yaml:" in str(caught.value)
    assert "send.to" in str(caught.value)


def test_mappings_check_sample_renders_the_mail(tmp_path: Path) -> None:
    """--sample prints each automatic task's mail (headers, text and HTML) on stderr."""
    folder = tmp_path / "mappings"
    shutil.copytree(DEFAULT_MAPPING.parent, folder)
    (folder / "default.yaml").write_text(
        _examples_on().replace("        skip_if_past: true\n", "", 1)
    )
    result = runner.invoke(
        app,
        [
            "mappings",
            "check",
            str(folder / "default.yaml"),
            "--sample",
            str(SAMPLES / "seed-workshop.json"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "--- mail for task prep-info" in result.stderr
    assert "Subject: Prep for your workshop on 2027-" in result.stderr
    assert "To: test@example.com" in result.stderr
    assert "Content-Type: text/html" in result.stderr
