"""``bookme-crm send-test`` against the real app on loopback, in both authentication schemes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import MetaData, select
from typer.testing import CliRunner

from adapter.cli import app
from adapter.services import Services, build_services
from adapter.settings import Settings
from tests.conftest import SIGNING_SECRET, WEBHOOK_SECRET, LiveServer, free_port

runner = CliRunner()


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what send-test reads: no .env, no secrets unless a test sets them."""
    monkeypatch.chdir(tmp_path)
    for name in ("CRM_WEBHOOK_SECRET", "CRM_WEBHOOK_SIGNING_SECRETS", "DATA_DIR", "ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def send(url: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["send-test", "--url", f"{url}/api/bookings/incoming", *args])
    return result.exit_code, result.stdout, result.stderr


def answer(stdout: str) -> dict[str, object]:
    """The JSON answer send-test printed after its POST and HTTP lines."""
    parsed: dict[str, object] = json.loads(stdout.split("\n", 2)[2])
    return parsed


def test_shared_secret_delivery_is_synced(
    live: LiveServer, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With CRM_WEBHOOK_SECRET, the test booking is accepted and synced: 200 with CRM ids."""
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", WEBHOOK_SECRET)
    code, out, err = send(live.url)
    assert code == 0, out + err
    assert "(X-Webhook-Secret)" in out
    assert "HTTP 200" in out
    body = answer(out)
    assert body["status"] == "synced"
    assert body["lead"] == {"id": body["lead"]["id"], "title": "30min-consultation - Send Test"}  # type: ignore[index]
    event = services.store.get(str(body["eventId"]))
    assert event is not None
    assert event.webhook_id is None
    assert event.payload["email"] == "send-test@example.com"


def test_signed_delivery_is_synced(
    live: LiveServer, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --sign, a Standard Webhooks signature is sent and accepted (the event has its id)."""
    monkeypatch.setenv("CRM_WEBHOOK_SIGNING_SECRETS", SIGNING_SECRET)
    code, out, err = send(live.url, "--sign")
    assert code == 0, out + err
    assert "(Standard Webhooks signature)" in out
    body = answer(out)
    assert body["status"] == "synced"
    event = services.store.get(str(body["eventId"]))
    assert event is not None
    assert event.webhook_id is not None
    assert event.webhook_id.startswith("msg_")


def test_the_first_run_secret_from_the_data_folder_is_used(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No secret set: send-test reads the one serve generated in DATA_DIR, as serve does."""
    from adapter.api.app import create_app

    data_dir = tmp_path / "generated"
    services = build_services(
        make_settings(crm_webhook_secret=None, crm_webhook_signing_secrets=None, data_dir=data_dir)
    )
    try:
        assert services.generated, "serve would have generated a webhook secret"
        monkeypatch.setenv("DATA_DIR", str(data_dir))
        with LiveServer(create_app(services=services, embedded_workers=1)) as server:
            code, out, err = send(server.url)
        assert code == 0, out + err
        assert answer(out)["status"] == "synced"
    finally:
        services.close()


def test_a_cancellation_of_an_earlier_test_booking_reaches_the_crm(
    live: LiveServer, services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--event cancelled with the same --booking-id cancels the meeting made by the first."""
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", WEBHOOK_SECRET)
    assert send(live.url, "--booking-id", "send-test-1")[0] == 0
    code, out, err = send(live.url, "--booking-id", "send-test-1", "--event", "cancelled")
    assert code == 0, out + err
    assert "booking.cancelled  booking send-test-1" in out
    meta = MetaData()
    meta.reflect(services.engine)
    with services.engine.connect() as conn:
        outcomes = conn.execute(select(meta.tables["crm_activities"].c.outcome)).scalars().all()
    assert outcomes == ["CANCELED"]


def test_a_wrong_secret_prints_the_401_and_exits_1(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret the service does not accept: the 401 is printed and the exit code is 1."""
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", "not-the-right-secret-0123")
    code, out, _ = send(live.url)
    assert code == 1
    assert "HTTP 401" in out
    assert answer(out) == {"error": "Unauthorized"}


def test_missing_secrets_are_configuration_errors(tmp_path: Path) -> None:
    """No shared secret (nor a stored one), or --sign without signing secrets: exit 2."""
    code, _, err = send("http://127.0.0.1:9")
    assert code == 2
    assert "set CRM_WEBHOOK_SECRET" in err
    code, _, err = send("http://127.0.0.1:9", "--sign")
    assert code == 2
    assert "--sign needs CRM_WEBHOOK_SIGNING_SECRETS" in err


def test_an_unreachable_service_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing listening on the URL: 'cannot reach' and exit 1."""
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", WEBHOOK_SECRET)
    code, _, err = send(f"http://127.0.0.1:{free_port()}")
    assert code == 1
    assert "cannot reach" in err
