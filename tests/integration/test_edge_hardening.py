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


WEBHOOK = "/api/bookings/incoming"
# Tiny windows so a test can watch the wait grow: 3 failures in 2 s, then 5 in 30 s.
LIMITS = "3/2second;5/30second"


def _from(services: Any, address: str, **kwargs: Any) -> Any:
    from fastapi.testclient import TestClient

    from adapter.api.app import create_app

    return TestClient(
        create_app(services=services, embedded_workers=1), client=(address, 40000), **kwargs
    )


def _throttled_services(make_settings: Callable[..., Any]) -> Any:
    from adapter.services import build_services

    return build_services(make_settings(auth_failure_limits=LIMITS))


def test_wrong_webhook_secrets_are_throttled_per_address_with_a_growing_wait(
    make_settings: Callable[..., Any],
) -> None:
    """After a handful of wrong secrets: 429 + Retry-After, growing on repeat; others unslowed."""
    import time

    from tests.conftest import WEBHOOK_SECRET, seed_booking

    services = _throttled_services(make_settings)
    wrong = {"X-Webhook-Secret": "not-the-secret-not-the-secret"}
    right = {"X-Webhook-Secret": WEBHOOK_SECRET}
    try:
        with _from(services, "203.0.113.7") as guesser, _from(services, "198.51.100.1") as bookme:
            for _ in range(3):
                assert guesser.post(WEBHOOK, json=seed_booking(), headers=wrong).status_code == 401
            first = guesser.post(WEBHOOK, json=seed_booking(), headers=wrong)
            assert first.status_code == 429
            assert 1 <= int(first.headers["retry-after"]) <= 2
            # Even the right secret waits from the guessing address (or guesses would leak)...
            assert guesser.post(WEBHOOK, json=seed_booking(), headers=right).status_code == 429
            # ...while the sender at another address is never slowed.
            assert bookme.post(WEBHOOK, json=seed_booking(), headers=right).status_code == 200

            time.sleep(float(first.headers["retry-after"]) + 0.2)
            for _ in range(2):
                assert guesser.post(WEBHOOK, json=seed_booking(), headers=wrong).status_code == 401
            second = guesser.post(WEBHOOK, json=seed_booking(), headers=wrong)
            assert second.status_code == 429
            assert int(second.headers["retry-after"]) > int(first.headers["retry-after"]) + 10
            metrics = bookme.get("/metrics").text
            assert 'bookme_auth_throttled_total{surface="webhook"} 3.0' in metrics
            assert 'bookme_auth_failures_total{surface="webhook"} 5.0' in metrics
    finally:
        services.close()


def test_wrong_admin_bearer_tokens_are_throttled_per_address(
    make_settings: Callable[..., Any],
) -> None:
    """Guessing the admin token gets 429 with Retry-After; the right token elsewhere works."""
    from tests.conftest import ADMIN_TOKEN

    services = _throttled_services(make_settings)
    try:
        with _from(services, "203.0.113.8") as guesser, _from(services, "198.51.100.2") as ops:
            for _ in range(3):
                answer = guesser.get("/admin/outbox", headers={"Authorization": "Bearer nope"})
                assert answer.status_code == 401
            refused = guesser.get("/admin/outbox", headers={"Authorization": "Bearer nope"})
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            good = ops.get("/admin/outbox", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert good.status_code == 200
    finally:
        services.close()


def test_wrong_dashboard_logins_are_throttled_per_address(
    make_settings: Callable[..., Any],
) -> None:
    """The login form answers 429 with Retry-After after a few wrong tokens from one address."""
    from tests.integration.test_dashboard import log_in

    services = _throttled_services(make_settings)
    try:
        with (
            _from(services, "203.0.113.9", base_url="https://testserver") as guesser,
            _from(services, "198.51.100.3", base_url="https://testserver") as admin,
        ):
            for _ in range(3):
                assert log_in(guesser, token="wrong-token-wrong-token").status_code == 401
            refused = log_in(guesser, token="wrong-token-wrong-token")
            assert refused.status_code == 429
            assert int(refused.headers["retry-after"]) >= 1
            assert log_in(admin).status_code == 303
    finally:
        services.close()


def _raw_request(url: str, head: bytes, *, timeout: float) -> bytes:
    """Send ``head`` (request line and headers, no body) on a fresh socket; what comes back."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(head)
        return sock.recv(4096)


def test_a_wrong_shared_secret_is_refused_before_the_body_is_read(live: Any) -> None:
    """The headers alone settle X-Webhook-Secret: a 401 comes back with no body ever sent."""
    head = (
        b"POST /api/bookings/incoming HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 60000\r\n"
        b"X-Webhook-Secret: not-the-secret-not-the-secret\r\n\r\n"
    )
    answer = _raw_request(live.url, head, timeout=3)
    assert answer.startswith(b"HTTP/1.1 401"), answer
