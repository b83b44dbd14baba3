"""Feed tokens from the command line, and feed URLs kept out of the logs."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect
from typer.testing import CliRunner

from adapter.cli import app
from adapter.services import Services
from tests.unit.test_ops_logs import captured  # noqa: F401 - the fixture


def _cli(services: Services, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        ["calendar", "token", *args],
        env={"DATABASE_URL": services.settings.database_url},
    )
    return result.exit_code, result.output


def test_cli_creates_lists_and_revokes_a_token(client: TestClient, services: Services) -> None:
    """`create` prints working feed URLs once (https and webcal), `list` shows the id and label
    but never the token, and after `revoke` the feed is a 404."""
    code, out = _cli(
        services, "create", "--label", "Ada's phone", "--url", "https://crm.example.com/"
    )
    assert code == 0, out
    found = re.search(r"https://crm\.example\.com/calendar/(bcal_[\w-]+)\.ics", out)
    assert found, out
    secret = found.group(1)
    assert f"webcal://crm.example.com/calendar/{secret}.ics" in out
    assert client.get(f"/calendar/{secret}.ics").status_code == 200

    code, listed = _cli(services, "list")
    assert code == 0, listed
    token_id = re.search(r"token (\w+) created", out).group(1)  # type: ignore[union-attr]
    assert re.search(rf"^{token_id}\s.*active\s+Ada's phone$", listed, re.M), listed
    assert secret not in listed

    code, out = _cli(services, "revoke", token_id)
    assert (code, f"token {token_id} revoked") == (0, out.strip().splitlines()[-1])
    assert client.get(f"/calendar/{secret}.ics").status_code == 404
    assert "revoked" in _cli(services, "list")[1]
    code, out = _cli(services, "revoke", "no-such-id")
    assert code == 1
    assert "no feed token 'no-such-id'" in out


def test_create_prints_an_owner_feed_url_in_lower_case(services: Services, tmp_path: Path) -> None:
    """`--owner` adds that owner's feed URL, the email lower-cased as the mapping stores it."""
    code, out = _cli(services, "create", "--owner", "Ada@Example.com")
    assert code == 0, out
    assert re.search(
        r"http://127\.0\.0\.1:8000/calendar/bcal_[\w-]+/owner/ada@example\.com\.ics", out
    )


def test_a_feed_url_in_an_access_log_line_is_masked(captured: io.StringIO) -> None:  # noqa: F811
    """uvicorn's access line for a feed names the path without the token."""
    secret = "bcal_AbC-123_xyz"
    access = logging.getLogger("uvicorn.access")
    # An in-process uvicorn run earlier (LiveServer) leaves this logger at WARNING.
    level, disabled = access.level, access.disabled
    access.setLevel(logging.INFO)
    access.disabled = False
    try:
        access.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            f"/calendar/{secret}.ics",
            "1.1",
            200,
        )
    finally:
        access.setLevel(level)
        access.disabled = disabled
    out = captured.getvalue()
    assert "/calendar/" in out
    assert secret not in out
    assert "AbC-123_xyz" not in out


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_migration_0018_makes_the_tokens_table_and_downgrades(
    request: pytest.FixtureRequest, tmp_path: Path, database: str
) -> None:
    """On SQLite and PostgreSQL, 0018 creates calendar_tokens as the store declares it (a unique
    hash), the store works on it, and downgrading to 0017 drops it."""
    from alembic import command

    from adapter import db
    from adapter.calendar import TokenStore

    url = (
        f"sqlite:///{tmp_path / 'm.db'}"
        if database == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    engine = db.make_engine(url)
    try:
        db.upgrade(engine)
        columns = {c["name"] for c in inspect(engine).get_columns("calendar_tokens")}
        assert columns == {"id", "token_hash", "label", "created_at", "revoked_at"}
        made, secret = TokenStore(engine).create("m")
        assert TokenStore(engine).is_active(secret)
        with engine.begin() as conn:
            config = db._config()
            config.attributes["connection"] = conn
            command.downgrade(config, "0017_notify_sends")
        assert "calendar_tokens" not in inspect(engine).get_table_names()
        assert made.id
    finally:
        engine.dispose()
