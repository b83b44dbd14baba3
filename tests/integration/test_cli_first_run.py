"""First-run friction: send-test's URL and secret messages, read commands' database, plain help."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from adapter.cli import app
from tests.conftest import DEFAULT_MAPPING, WEBHOOK_SECRET, LiveServer

runner = CliRunner()


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A fresh folder with no .env, no DATABASE_URL and no secrets unless a test sets them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAPPINGS_PATH", str(DEFAULT_MAPPING))
    for name in (
        "CRM_WEBHOOK_SECRET",
        "CRM_WEBHOOK_SIGNING_SECRETS",
        "DATA_DIR",
        "ADMIN_TOKEN",
        "DATABASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)


def send_test(url: str) -> Any:
    return runner.invoke(app, ["send-test", "--url", url])


def test_send_test_takes_the_base_url(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A base URL (as BookMe's CRM_WEBHOOK_URL is) gets the webhook path added, and posts."""
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", WEBHOOK_SECRET)
    for url in (live.url, live.url + "/"):
        result = send_test(url)
        assert result.exit_code == 0, result.output
        assert f"POST {live.url}/api/bookings/incoming " in result.stdout
        assert "HTTP 200" in result.stdout


def test_send_test_404_names_the_url_and_the_webhook(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A URL with a wrong path: the 404 is explained with the URL tried and the path expected."""
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", WEBHOOK_SECRET)
    result = send_test(live.url + "/webhooks/bookme")
    assert result.exit_code == 1
    assert "HTTP 404" in result.stdout
    assert f"nothing takes a booking at {live.url}/webhooks/bookme" in result.stderr
    assert "POST /api/bookings/incoming" in result.stderr


def test_send_test_refuses_a_url_that_is_not_http() -> None:
    """--url without a scheme is a usage error naming the flag, not a traceback."""
    result = send_test("localhost:8000")
    assert result.exit_code == 2
    assert "--url" in result.stderr


@pytest.mark.parametrize("where", ["variable", "dotenv", "data folder"])
def test_a_401_says_where_the_secret_was_read(
    where: str, live: LiveServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A refused secret: send-test names its source (variable, .env file or data folder)."""
    wrong = "not-the-right-secret-0123"
    if where == "variable":
        monkeypatch.setenv("CRM_WEBHOOK_SECRET", wrong)
        expected = "the CRM_WEBHOOK_SECRET variable"
    elif where == "dotenv":
        (tmp_path / ".env").write_text(f"CRM_WEBHOOK_SECRET={wrong}\n")
        expected = f"CRM_WEBHOOK_SECRET in {tmp_path.resolve() / '.env'}"
    else:
        (tmp_path / "var").mkdir()
        (tmp_path / "var" / "webhook-secret").write_text(wrong)
        expected = f"the data folder's {tmp_path.resolve() / 'var' / 'webhook-secret'}"
    result = send_test(live.url)
    assert result.exit_code == 1
    assert "HTTP 401" in result.stdout
    assert f"refused the secret from {expected}" in result.stderr
    assert wrong not in result.output


@pytest.mark.parametrize("command", [["outbox", "status"], ["outbox", "list"]])
def test_read_commands_refuse_a_missing_sqlite_file(command: list[str], tmp_path: Path) -> None:
    """Run from a folder without the database, they create nothing and say how to fix it."""
    result = runner.invoke(app, command)
    assert result.exit_code == 2
    assert f"no database at {tmp_path.resolve() / 'var' / 'bookme_crm.db'}" in result.stderr
    assert "DATABASE_URL" in result.stderr
    assert "bookme-crm migrate" in result.stderr
    assert not (tmp_path / "var").exists()


def test_read_commands_name_the_database_they_read(tmp_path: Path) -> None:
    """outbox status and list say which database they read, as an absolute path."""
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    for command in (["outbox", "status"], ["outbox", "list"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
        assert f"database: sqlite:///{tmp_path.resolve() / 'var' / 'bookme_crm.db'}" in (
            result.stderr
        )


def _commands(group: Any, path: list[str]) -> list[list[str]]:
    found = [path]
    for name, command in getattr(group, "commands", {}).items():
        found += _commands(command, [*path, name])
    return found


def test_every_help_reads_as_plain_text() -> None:
    """No --flag <bool> placeholder, no <str>-style type, no reST ``markup``, no box drawing."""
    commands = _commands(typer.main.get_command(app), [])
    assert len(commands) > 10
    for path in commands:
        result = runner.invoke(app, [*path, "--help"], terminal_width=100)
        assert result.exit_code == 0, (path, result.output)
        text = result.output
        for bad in ("<bool>", "<str>", "<int", "<float", "<path>", "<list", "``", "╭", "│"):
            assert bad not in text, (path, bad, text)
