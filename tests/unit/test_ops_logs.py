"""Structured logs: one JSON object a line, job ids bound by the worker, secrets masked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from structlog.contextvars import bound_contextvars

from adapter.booking import parse_booking
from adapter.ingest import accept_booking
from adapter.logs import REDACTED, configure_logging, resolve_format
from tests.conftest import seed_booking

if TYPE_CHECKING:
    from adapter.services import Services


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """JSON logging configured onto a buffer; the root logger restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("json", stream=stream)
    yield stream
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_stdlib_records_become_json_with_bound_ids(captured: io.StringIO) -> None:
    """A plain ``logging`` call renders as one JSON object with the contextvars bound."""
    with bound_contextvars(event_id="ev-1", booking_id="bk-1"):
        logging.getLogger("adapter.test").warning("event %s retrying", "ev-1", extra={"n": 2})
    logging.getLogger("somelib.server").info("Started server process")
    first, second = lines(captured)
    assert first["event"] == "event ev-1 retrying"
    assert (first["level"], first["logger"]) == ("warning", "adapter.test")
    assert (first["event_id"], first["booking_id"], first["n"]) == ("ev-1", "bk-1", 2)
    assert first["timestamp"].endswith("Z")
    assert second["logger"] == "somelib.server"
    assert "event_id" not in second


def test_secrets_are_masked_at_any_depth(captured: io.StringIO) -> None:
    """Secret-looking keys and credentials inside text never reach the output."""
    logging.getLogger("adapter.test").error(
        "call failed with Bearer abc123def and whsec_c2VjcmV0c2VjcmV0",
        extra={
            "webhook_secret": "s3cr3t-value-1234",
            "headers": {"Authorization": "Bearer tok-987", "x": [{"api_token": "tok-555"}]},
            "url": "postgresql+psycopg://app:hunter22@db/bookme",
        },
    )
    structlog.get_logger("adapter.native").info("native", password="pw-4242", booking_id="b")
    out = captured.getvalue()
    for secret in ("abc123def", "c2VjcmV0", "s3cr3t", "tok-987", "tok-555", "hunter22", "pw-4242"):
        assert secret not in out
    first, second = lines(captured)
    assert first["webhook_secret"] == REDACTED
    assert first["headers"]["Authorization"] == REDACTED
    assert first["headers"]["x"][0]["api_token"] == REDACTED
    assert first["url"] == f"postgresql+psycopg://app:{REDACTED}@db/bookme"
    assert (second["event"], second["password"], second["booking_id"]) == ("native", REDACTED, "b")


def test_worker_logs_carry_event_and_booking_ids(captured: io.StringIO, services: Services) -> None:
    """Each job's log lines name its event and booking; nothing stays bound afterwards."""
    raw = seed_booking(bookingId="bk-log-1")
    event, _ = accept_booking(services.store, parse_booking(raw), raw, services.mappings.current)
    assert services.new_worker().drain() == 1
    synced = [line for line in lines(captured) if line["event"] == "event synced"]
    assert len(synced) == 1
    assert (synced[0]["event_id"], synced[0]["booking_id"]) == (event.id, "bk-log-1")
    assert structlog.contextvars.get_contextvars() == {}


def test_log_format_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """LOG_FORMAT is a setting; without one a non-terminal gets JSON; junk is refused."""
    from adapter.settings import Settings

    assert resolve_format(None, io.StringIO()) == "json"
    assert resolve_format("console", io.StringIO()) == "console"
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        resolve_format("xml")
    monkeypatch.setenv("LOG_FORMAT", "console")
    assert Settings(_env_file=None).log_format == "console"
