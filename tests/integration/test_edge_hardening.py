"""Issue 13 from the outside: owner-only data, server-side sessions, throttled credentials."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_file_and_data_folder_are_created_owner_only(
    tmp_path: Path, make_settings: Callable[..., Any]
) -> None:
    """A fresh SQLite database (and its WAL) is 0600 in a new 0700 folder, as the secrets are."""
    from adapter.services import build_services

    folder = tmp_path / "fresh" / "var"
    services = build_services(
        make_settings(
            database_url=f"sqlite:///{folder / 'bookme_crm.db'}",
            data_dir=folder,
            crm_webhook_secret=None,
            admin_token=None,
            crm_webhook_signing_secrets=None,
        )
    )
    try:
        with services.engine.begin() as conn:
            conn.execute(text("CREATE TABLE probe (x INTEGER)"))
        assert _mode(folder) == 0o700
        assert _mode(folder / "bookme_crm.db") == 0o600
        assert _mode(folder / "bookme_crm.db-wal") == 0o600
        assert _mode(folder / "webhook-secret") == 0o600
    finally:
        services.close()


def test_a_copied_session_cookie_is_refused_after_logout(services: Any) -> None:
    """Logout ends the session on the server: the same cookie, replayed, gets the login form."""
    from tests.integration.test_dashboard import COOKIE, _client, log_in, page_csrf

    with _client(services) as browser, _client(services) as thief:
        assert log_in(browser).status_code == 303
        copied = browser.cookies.get(COOKIE, path="/ui")
        assert copied
        thief.cookies.set(COOKIE, copied, domain="testserver.local", path="/ui")
        assert thief.get("/ui", follow_redirects=False).status_code == 200  # the copy works...
        logout = browser.post("/ui/logout", data={"csrf": page_csrf(browser)})
        assert logout.status_code == 200  # followed to the login form
        refused = thief.get("/ui", follow_redirects=False)  # ...until its owner logs out
        assert refused.status_code == 303
        assert refused.headers["location"].startswith("/ui/login")
