"""Shared fixtures: real SQLite files, a fresh PostgreSQL database per test, the app."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import respx
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from standardwebhooks.webhooks import Webhook

from adapter.settings import Settings

if TYPE_CHECKING:
    from adapter.services import Services
    from tests.fakes.hubspot import FakeHubSpot

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "tests" / "samples"  # copies of ../shared/samples
DEFAULT_MAPPING = REPO / "mappings" / "default.yaml"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"
SIGNING_SECRET = "whsec_" + base64.b64encode(b"bookme-test-signing-key-0001").decode()
SIGNING_SECRET_OLD = "whsec_" + base64.b64encode(b"bookme-test-signing-key-0000").decode()
PG_ADMIN_URL = os.environ.get(
    "TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def seed_booking(**overrides: Any) -> dict[str, Any]:
    """The seed's curl example (future date), with overrides."""
    body: dict[str, Any] = {
        "bookingId": "test-123",
        "eventType": "workshop",
        "name": "Test Person",
        "email": "test@example.com",
        "scheduledDate": "2027-02-15T10:00:00Z",
        "duration": 120,
        "source": "bookme",
    }
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def sign(body: bytes, secret: str = SIGNING_SECRET, msg_id: str | None = None) -> dict[str, str]:
    """Standard Webhooks headers for ``body``, signed now."""
    from datetime import UTC, datetime

    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, now, body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bookme.db'}"


@pytest.fixture
def make_settings(tmp_path: Path, sqlite_url: str) -> Callable[..., Settings]:
    """Settings for a test: real SQLite file, test secrets, no .env, overridable."""

    def factory(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": sqlite_url,
            "crm_webhook_secret": WEBHOOK_SECRET,
            "crm_webhook_signing_secrets": f"{SIGNING_SECRET},{SIGNING_SECRET_OLD}",
            "admin_token": ADMIN_TOKEN,
            "mappings_path": DEFAULT_MAPPING,
            "data_dir": tmp_path / "var",
            "sync_wait_ms": 5000,
            "worker_poll_seconds": 0.05,
            # Tests present wrong credentials on purpose; throttling tests set their own.
            "auth_failure_limits": "10000/minute",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)

    return factory


@pytest.fixture
def services(make_settings: Callable[..., Settings]) -> Iterator[Services]:
    from adapter.services import build_services

    svc = build_services(make_settings())
    yield svc
    svc.close()


@pytest.fixture
def client(services: Services) -> Iterator[TestClient]:
    """The app on real SQLite with one embedded worker thread."""
    from adapter.api.app import create_app

    with TestClient(create_app(services=services, embedded_workers=1)) as test_client:
        yield test_client


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for this test, dropped afterwards.

    Outside CI an unreachable server skips the test with the reason; in CI
    (``CI`` set) it fails, so PostgreSQL tests never skip silently there.
    """
    admin_engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"bookme_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin_engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin_engine.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL unreachable in CI at {PG_ADMIN_URL}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {PG_ADMIN_URL}: {exc.orig}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin_engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin_engine.dispose()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """The app served by uvicorn in a thread on 127.0.0.1: real HTTP, real sockets."""

    def __init__(self, app: Any) -> None:
        import threading

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def live(services: Services) -> Iterator[LiveServer]:
    """The app with two embedded worker threads behind a real HTTP server."""
    from adapter.api.app import create_app

    with LiveServer(create_app(services=services, embedded_workers=2)) as server:
        yield server


# --- BookMe's API (import, backfill) ----------------------------------------------------

BOOKME = "http://bookme.test"
BOOKME_TOKEN = "bookme-api-token-0123456789"


@pytest.fixture
def bookme(monkeypatch: pytest.MonkeyPatch) -> Iterator[respx.MockRouter]:
    """BookMe's API on respx (the app's own TestClient transport is not intercepted);
    the client's retry pauses are skipped."""
    import functools

    from adapter.bookme import BookMeClient

    monkeypatch.setattr(
        "adapter.bookme.importer.BookMeClient",
        functools.partial(BookMeClient, sleep=lambda _seconds: None),
    )
    with respx.mock(base_url=BOOKME, assert_all_called=False) as router:
        yield router


@pytest.fixture
def bookme_services(make_settings: Callable[..., Settings]) -> Iterator[Services]:
    """Services with BookMe's API configured (``BOOKME``)."""
    from adapter.services import build_services

    svc = build_services(make_settings(bookme_api_url=BOOKME, bookme_api_token=BOOKME_TOKEN))
    yield svc
    svc.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def outbox_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A bare outbox (its tables only) on a SQLite file, and again on PostgreSQL."""
    from outbox.db import make_engine
    from outbox.schema import outbox_metadata

    url = (
        f"sqlite:///{tmp_path}/outbox.db"
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    eng = make_engine(url)
    outbox_metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """The service's database, migrated, on a real SQLite file."""
    from adapter import db

    engine = db.make_engine(f"sqlite:///{tmp_path / 'bookme.db'}")
    db.upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    """The fake HubSpot on loopback, without rate limits (tests that need them set their own)."""
    from tests.fakes.hubspot import FakeHubSpot

    with FakeHubSpot(rate_limit=None, search_rate_limit=None) as server:
        yield server
