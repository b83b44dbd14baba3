"""The portal's account info (EU and other data centres): ``hubspot setup`` prints and
stores it, ``serve``/``worker`` refresh it, the dashboard links into its UI domain."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from typer.testing import CliRunner

from adapter.backends.hubspot import account, build_api
from adapter.backends.hubspot.client import DEFAULT_UI_DOMAIN
from adapter.cli import app
from adapter.services import build_services
from adapter.settings import Settings
from tests.conftest import DEFAULT_MAPPING
from tests.fakes.hubspot import PORTAL_ID, FakeHubSpot
from tests.integration.test_dashboard import book, log_in

EU = "app-eu1.hubspot.com"


@pytest.fixture
def eu_fake() -> Iterator[FakeHubSpot]:
    with FakeHubSpot(
        rate_limit=None, search_rate_limit=None, ui_domain=EU, data_hosting_location="eu1"
    ) as server:
        yield server


def _setup(fake: FakeHubSpot, tmp_path: Path, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app,
        ["hubspot", "setup"],
        env={
            "HUBSPOT_ACCESS_TOKEN": fake.token or "",
            "HUBSPOT_BASE_URL": fake.url,
            "HUBSPOT_RATE_LIMIT": "90/10s",
            "MAPPINGS_PATH": str(DEFAULT_MAPPING),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'bookme.db'}",
            **env,
        },
    )
    return result.exit_code, result.output


def _stored(engine: Engine) -> account.StoredAccount:
    with engine.connect() as conn:
        return account.load(conn)


def test_setup_prints_and_stores_an_eu_portal(
    eu_fake: FakeHubSpot, tmp_path: Path, engine: Engine
) -> None:
    """`hubspot setup` on an EU portal prints its id, UI domain, data centre and the rate
    limit it uses, and stores the UI domain for the dashboard."""
    code, output = _setup(eu_fake, tmp_path)
    assert code == 0, output
    assert f"portal        {PORTAL_ID} (STANDARD)" in output
    assert f"UI domain     {EU}" in output
    assert "data hosting  eu1" in output
    assert "rate limit    90 requests per 10 s (HUBSPOT_RATE_LIMIT), 4 searches per 1 s" in output
    assert "HubSpot is ready" in output
    assert eu_fake.token not in output
    assert _stored(engine) == account.StoredAccount(str(PORTAL_ID), EU, "eu1")


def test_setup_warns_when_the_portal_setting_names_another_portal(
    eu_fake: FakeHubSpot, tmp_path: Path
) -> None:
    """A HUBSPOT_PORTAL_ID that is not the token's portal is pointed out (the links use it)."""
    code, output = _setup(eu_fake, tmp_path, HUBSPOT_PORTAL_ID="4242")
    assert code == 0, output
    assert f"HUBSPOT_PORTAL_ID=4242 but the token belongs to portal {PORTAL_ID}" in output


def test_refresh_stores_a_move_and_a_failure_keeps_what_was_stored(
    eu_fake: FakeHubSpot, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """The start-up refresh stores the portal's current domain; when HubSpot fails it only
    logs, and the stored domain stays (the defaults before anything was stored)."""
    assert _stored(engine) == account.StoredAccount()
    assert account.StoredAccount().ui_domain == DEFAULT_UI_DOMAIN
    api = build_api(eu_fake.token or "", eu_fake.url, (100, 10.0), max_attempts=1)
    try:
        assert account.refresh(api, engine) == account.StoredAccount(str(PORTAL_ID), EU, "eu1")
        eu_fake.fail("GET", "/account-info/*", 403)
        with caplog.at_level(logging.WARNING, logger="adapter.backends.hubspot.account"):
            assert account.refresh(api, engine) is None
        eu_fake.configure(ui_domain="https://evil.example/x?")
        assert account.refresh(api, engine) is None
    finally:
        api.close()
    assert "could not refresh the HubSpot account info" in caplog.text
    assert _stored(engine).ui_domain == EU


def test_services_refresh_once_in_the_background(
    eu_fake: FakeHubSpot, make_settings: Callable[..., Settings]
) -> None:
    """What serve and worker call at start: one account-info read, stored, off the start path."""
    services = build_services(
        make_settings(
            crm_backend="hubspot",
            hubspot_access_token=eu_fake.token,
            hubspot_base_url=eu_fake.url,
        )
    )
    try:
        thread = services.refresh_crm_account()
        assert thread is not None
        thread.join(timeout=30)
        assert _stored(services.engine).ui_domain == EU
        assert eu_fake.calls["GET /account-info/v3/details"] == 1
    finally:
        services.close()


def test_sync_page_links_into_the_eu_app(
    eu_fake: FakeHubSpot, tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """After setup stored an EU portal, the sync page's HubSpot links go to app-eu1 with the
    token's portal id (no HUBSPOT_PORTAL_ID needed)."""
    code, output = _setup(eu_fake, tmp_path)
    assert code == 0, output
    services = build_services(
        make_settings(
            crm_backend="hubspot",
            hubspot_access_token=eu_fake.token,
            hubspot_base_url=eu_fake.url,
        )
    )
    try:
        from adapter.api.app import create_app

        with TestClient(
            create_app(services=services, embedded_workers=1), base_url="https://testserver"
        ) as ui:
            assert book(ui, bookingId="eu-1", company="Acme GmbH")["status"] == "synced"
            log_in(ui)
            page = ui.get("/ui/sync").text
    finally:
        services.close()
    (contact,) = eu_fake.objects("contacts")
    (deal,) = eu_fake.objects("deals")
    assert f'href="https://{EU}/contacts/{PORTAL_ID}/record/0-1/{contact["id"]}"' in page
    assert f'href="https://{EU}/contacts/{PORTAL_ID}/record/0-3/{deal["id"]}"' in page
    assert "app.hubspot.com" not in page


def test_migration_matches_the_account_table(engine: Engine) -> None:
    """Migration 0010 creates ``hubspot_account`` exactly as ``account`` defines it."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), account.account_metadata)
    assert [d for d in diff if "hubspot_account" in repr(d)] == []
