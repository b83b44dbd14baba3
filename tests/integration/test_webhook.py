"""The webhook of contract §3 through the real app on a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from adapter.services import Services
from tests.conftest import (
    SAMPLES,
    SIGNING_SECRET,
    SIGNING_SECRET_OLD,
    WEBHOOK_SECRET,
    seed_booking,
    sign,
)

URL = "/api/bookings/incoming"
SECRET = {"X-Webhook-Secret": WEBHOOK_SECRET}


def post(client: TestClient, body: Any, headers: dict[str, str] | None = None) -> Any:
    return client.post(URL, json=body, headers=headers if headers is not None else SECRET)


def stored(services: Services) -> int:
    return sum(services.store.counts().values())


def test_seed_curl_example_answers_200_with_the_seed_shape(client: TestClient) -> None:
    """The seed's example syncs within SYNC_WAIT_MS and answers with the CRM's ids."""
    response = post(client, seed_booking())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["status"] == "synced"
    assert body["eventId"]
    assert body["lead"]["title"] == "workshop - Test Person"
    assert body["lead"]["id"]
    assert body["contact"] == {"id": body["contact"]["id"], "email": "test@example.com"}
    assert body["company"] is None
    assert body["activity"]["id"]
    assert [(t["title"], t["dueDate"]) for t in body["tasks"]] == [
        ("Send workshop prep info", "2027-02-08T10:00:00.000Z"),
        ("Workshop follow-up", "2027-02-16T10:00:00.000Z"),
    ]


def test_prep_task_is_skipped_when_its_moment_has_passed(client: TestClient) -> None:
    """A workshop three days away gets only the follow-up task."""
    soon = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    response = post(client, seed_booking(bookingId="soon-1", scheduledDate=soon.isoformat()))
    assert response.status_code == 200, response.text
    assert [t["title"] for t in response.json()["tasks"]] == ["Workshop follow-up"]


def test_consultation_with_company(client: TestClient, admin: dict[str, str]) -> None:
    """The fuller sample lands with its company and the consultation's task."""
    body = json.loads((SAMPLES / "consultation-with-company.json").read_text())
    response = post(client, body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["lead"]["title"] == "30min-consultation - Nordkap Konsult AB"
    assert result["company"]["name"] == "Nordkap Konsult AB"
    assert [(t["title"], t["dueDate"]) for t in result["tasks"]] == [
        ("Send consultation summary", "2027-03-04T10:30:00.000Z")
    ]
    (contact,) = client.get(
        "/api/contacts", params={"email": "ANNA.lindqvist@nordkap.se"}, headers=admin
    ).json()
    assert (contact["firstName"], contact["lastName"]) == ("Anna", "Lindqvist")
    assert contact["companyId"] == result["company"]["id"]


_MISSING = ["bookingId", "eventType", "name", "email", "scheduledDate", "duration", "source"]
_BAD: list[tuple[str, Any]] = [
    ("bookingId", 123),
    ("bookingId", ""),
    ("bookingId", "x" * 201),
    ("eventType", ["workshop"]),
    ("name", None),
    ("name", "   "),
    ("email", "not-an-email"),
    ("email", "a@"),
    ("scheduledDate", "2027-02-15T10:00:00"),
    ("scheduledDate", "next tuesday"),
    ("scheduledDate", "2027-02-31T10:00:00Z"),
    ("scheduledDate", 1700000000),
    ("duration", -30),
    ("duration", 0),
    ("duration", 1441),
    ("duration", "120"),
    ("duration", 1.5),
    ("source", "calendly"),
    ("meetingUrl", "ftp://example.com/x"),
    ("meetingUrl", "not a url"),
    ("createdAt", "yesterday"),
    ("event", "booking.exploded"),
    ("timezone", "Mars/Olympus"),
]


@pytest.mark.parametrize("field", _MISSING)
def test_missing_required_field_is_400_and_stores_nothing(
    client: TestClient, services: Services, field: str
) -> None:
    """Every required field is required, and the error names it."""
    body = seed_booking()
    del body[field]
    response = post(client, body)
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid payload"
    assert {"field": field, "message": "is required"} in response.json()["details"]
    assert stored(services) == 0


@pytest.mark.parametrize(("field", "value"), _BAD)
def test_bad_field_is_400_naming_the_field(
    client: TestClient, services: Services, field: str, value: Any
) -> None:
    """Wrong types and values are refused with the field and a reason."""
    body = seed_booking()
    body[field] = value
    response = post(client, body)
    assert response.status_code == 400, response.text
    details = response.json()["details"]
    assert any(d["field"] == field and d["message"] for d in details), details
    assert stored(services) == 0


def test_body_that_is_not_an_object_is_400(client: TestClient, services: Services) -> None:
    """A JSON array is not a booking."""
    response = post(client, [seed_booking()])
    assert response.status_code == 400
    assert response.json()["details"] == [{"field": "body", "message": "must be a JSON object"}]
    assert stored(services) == 0


def test_body_over_64_kib_is_413(client: TestClient, services: Services) -> None:
    """The size limit holds whatever the content."""
    response = post(client, seed_booking(notes="x" * (64 * 1024)))
    assert response.status_code == 413
    assert stored(services) == 0


@pytest.mark.parametrize(
    ("content", "content_type"),
    [(b"bookingId=1", "application/x-www-form-urlencoded"), (b"{not json", "application/json")],
)
def test_non_json_is_415(
    client: TestClient, services: Services, content: bytes, content_type: str
) -> None:
    """A body that is not JSON is refused as such."""
    response = client.post(URL, content=content, headers={**SECRET, "content-type": content_type})
    assert response.status_code == 415
    assert stored(services) == 0


def _raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Webhook-Secret": "wrong-secret-wrong-secret"},
        {"X-Webhook-Secret": ""},
        {"X-Webhook-Secret": WEBHOOK_SECRET[:-1]},
    ],
    ids=["missing", "wrong", "empty", "prefix"],
)
def test_wrong_or_missing_secret_is_401(
    client: TestClient, services: Services, headers: dict[str, str]
) -> None:
    """Only the configured shared secret is accepted."""
    response = post(client, seed_booking(), headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}
    assert stored(services) == 0


@pytest.mark.parametrize("secret", [SIGNING_SECRET, SIGNING_SECRET_OLD], ids=["new", "old"])
def test_standard_webhooks_signature_from_any_configured_secret(
    client: TestClient, secret: str
) -> None:
    """Both secrets of a rotation verify."""
    raw = _raw(seed_booking())
    response = client.post(URL, content=raw, headers=sign(raw, secret))
    assert response.status_code == 200, response.text


def _tamper(headers: dict[str, str], **changes: str | None) -> dict[str, str]:
    out = dict(headers)
    for key, value in changes.items():
        name = key.replace("_", "-")
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


_OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
_BAD_SIGNATURES: list[tuple[str, Callable[[bytes], dict[str, str]]]] = [
    ("unknown-secret", lambda raw: sign(raw, _OTHER_SECRET)),
    (
        "stale",
        lambda raw: _tamper(
            sign(raw), webhook_timestamp=str(int(datetime.now(UTC).timestamp()) - 360)
        ),
    ),
    (
        "future",
        lambda raw: _tamper(
            sign(raw), webhook_timestamp=str(int(datetime.now(UTC).timestamp()) + 360)
        ),
    ),
    ("timestamp-not-a-number", lambda raw: _tamper(sign(raw), webhook_timestamp="soon")),
    ("signature-garbage", lambda raw: _tamper(sign(raw), webhook_signature="garbage")),
    ("signature-bad-base64", lambda raw: _tamper(sign(raw), webhook_signature="v1,!!!notbase64")),
    (
        "signature-wrong-version",
        lambda raw: _tamper(
            sign(raw), webhook_signature="v2," + sign(raw)["webhook-signature"][3:]
        ),
    ),
    ("signature-empty", lambda raw: _tamper(sign(raw), webhook_signature="")),
    ("missing-signature", lambda raw: _tamper(sign(raw), webhook_signature=None)),
    ("missing-timestamp", lambda raw: _tamper(sign(raw), webhook_timestamp=None)),
    ("missing-id", lambda raw: _tamper(sign(raw), webhook_id=None)),
    ("other-id", lambda raw: _tamper(sign(raw), webhook_id="msg_other")),
    ("non-ascii", lambda raw: _tamper(sign(raw), webhook_signature="v1,åäö")),
]


@pytest.mark.parametrize(
    "make_headers", [m for _, m in _BAD_SIGNATURES], ids=[n for n, _ in _BAD_SIGNATURES]
)
def test_bad_stale_or_malformed_signature_is_401_never_5xx(
    client: TestClient, services: Services, make_headers: Callable[[bytes], dict[str, str]]
) -> None:
    """Every broken Standard Webhooks header set is a plain 401."""
    raw = _raw(seed_booking())
    headers = {k: v.encode() for k, v in make_headers(raw).items()}
    response = client.post(URL, content=raw, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "Unauthorized"}
    assert stored(services) == 0


def test_tampered_body_fails_the_signature(client: TestClient, services: Services) -> None:
    """A signature covers the exact bytes."""
    raw = _raw(seed_booking())
    headers = sign(raw)
    response = client.post(URL, content=raw.replace(b"Test", b"Evil"), headers=headers)
    assert response.status_code == 401
    assert stored(services) == 0


def test_signature_headers_never_fall_back_to_the_shared_secret(client: TestClient) -> None:
    """A bad signature is refused even beside a correct shared secret."""
    raw = _raw(seed_booking())
    headers = {**_tamper(sign(raw), webhook_signature="v1,AAAA"), **SECRET}
    assert client.post(URL, content=raw, headers=headers).status_code == 401


def test_repeated_delivery_answers_with_the_first(client: TestClient, services: Services) -> None:
    """Same webhook-id, or same body, stores nothing new and answers the first event."""
    raw = _raw(seed_booking())
    headers = sign(raw)
    first = client.post(URL, content=raw, headers=headers).json()
    again = client.post(URL, content=raw, headers=headers).json()
    same_body = post(client, seed_booking()).json()
    assert first == again == same_body
    assert stored(services) == 1


def test_sync_wait_zero_answers_202_with_location(
    make_settings: Callable[..., Any], admin: dict[str, str]
) -> None:
    """With SYNC_WAIT_MS=0 the answer is 202 queued; the status URL shows it sync."""
    import time

    from adapter.api.app import create_app
    from adapter.services import build_services

    services = build_services(make_settings(sync_wait_ms=0))
    try:
        with TestClient(create_app(services=services, embedded_workers=1)) as client:
            response = post(client, seed_booking())
            assert response.status_code == 202
            body = response.json()
            assert body == {"success": True, "eventId": body["eventId"], "status": "queued"}
            location = response.headers["location"]
            assert location == f"/api/bookings/events/{body['eventId']}"
            deadline = time.monotonic() + 10
            while (status := client.get(location, headers=admin).json())["status"] != "synced":
                assert time.monotonic() < deadline, status
                time.sleep(0.05)
            assert status["bookingId"] == "test-123"
            assert status["attempts"] == 1
            assert status["lastError"] is None
            assert status["receivedAt"].endswith("Z")
            assert status["syncedAt"].endswith("Z")
            assert status["result"]["lead"]["title"] == "workshop - Test Person"
    finally:
        services.close()


def test_event_status_needs_the_admin_token(client: TestClient, admin: dict[str, str]) -> None:
    """The status endpoint is behind ADMIN_TOKEN and 404s unknown ids."""
    event_id = post(client, seed_booking()).json()["eventId"]
    url = f"/api/bookings/events/{event_id}"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get(url, headers=admin).json()["status"] == "synced"
    assert client.get("/api/bookings/events/nope", headers=admin).status_code == 404


# Regressions found by fuzzing (tests/acceptance/test_api_fuzz.py).

NUL_URLS = [
    "/api/contacts?email=a%00b",
    "/api/tasks?bookingId=%00",
    "/api/activities?type=%00",
    "/api/leads/%00",
    "/api/leads/%00/activities",
    "/api/bookings/events/%00",
]


@pytest.mark.parametrize("field", ["bookingId", "name", "notes", "company", "phone", "eventType"])
def test_nul_in_a_booking_field_is_a_400(
    client: TestClient, services: Services, field: str
) -> None:
    """A NUL in a string field is refused up front (PostgreSQL text cannot hold one)."""
    response = post(client, seed_booking(**{field: "a\x00b"}))
    assert response.status_code == 400, response.text
    assert response.json()["details"] == [
        {"field": field, "message": "must not contain NUL characters"}
    ]
    assert stored(services) == 0


def test_read_api_refuses_a_huge_offset_and_nul_filters(
    client: TestClient, admin: dict[str, str]
) -> None:
    """An offset past 64 bits or a NUL in an id or filter is a 400, not a 500."""
    huge = client.get(f"/api/companies?offset={2**100}", headers=admin)
    assert huge.status_code == 400, huge.text
    assert huge.json()["details"][0]["field"] == "offset"
    assert client.get("/api/companies?offset=2147483647", headers=admin).json() == []
    for url in NUL_URLS:
        assert client.get(url, headers=admin).status_code == 400, url


def test_task_patch_checks_the_token_before_the_body(
    client: TestClient, admin: dict[str, str]
) -> None:
    """A malformed PATCH body without credentials is a 401; with them, a 400 with details."""
    json_type = {"content-type": "application/json"}
    assert client.patch("/api/tasks/t1", content=b"{", headers=json_type).status_code == 401
    malformed = client.patch("/api/tasks/t1", content=b"{", headers={**json_type, **admin})
    assert malformed.status_code == 400
    assert malformed.json()["details"][0]["field"] == "body"
    wrong = client.patch("/api/tasks/t1", json={"status": "nope"}, headers=admin)
    assert wrong.status_code == 400
    assert wrong.json()["details"][0]["field"] == "status"
    assert client.patch("/api/tasks/t1", json={"status": "done"}, headers=admin).status_code == 404


@pytest.mark.postgres
def test_nul_values_are_400s_on_postgresql(
    make_settings: Callable[..., Any], pg_url: str, admin: dict[str, str]
) -> None:
    """On PostgreSQL a NUL in an id, a filter or a booking was a 500 or a dead event."""
    from adapter.api.app import create_app
    from adapter.services import build_services

    pg_services = build_services(make_settings(database_url=pg_url))
    try:
        with TestClient(create_app(services=pg_services, embedded_workers=0)) as pg_client:
            for url in NUL_URLS:
                assert pg_client.get(url, headers=admin).status_code == 400, url
            assert post(pg_client, seed_booking(name="N\x00")).status_code == 400
            assert stored(pg_services) == 0
    finally:
        pg_services.close()


# Issue 13: bodies that json.loads accepts (or nearly) but the service could not hold.
HOSTILE = {
    "deep-nesting": (b'{"extra": ' + b"[" * 1500 + b"]" * 1500 + b"}", "body"),
    "huge-integer": (b'{"duration": ' + b"9" * 5000 + b"}", "duration"),
    "lone-surrogate": (b'{"name": "\\udfff"}', "name"),
    "huge-timezone": (json.dumps({"timezone": "E" * 60_000}).encode(), "timezone"),
}


def hostile_body(case: str) -> bytes:
    """A seed booking with the hostile part spliced in as one of its fields."""
    fragment, _field = HOSTILE[case]
    seed = json.dumps(seed_booking()).encode()
    return seed[:-1] + b", " + fragment[1:]


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_bodies_are_400_naming_the_field_and_logged_without_the_value(
    client: TestClient, services: Services, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Deep nesting, a 5,000-digit int, a lone surrogate, a 60,000-char timezone: 400, not 500."""
    caplog.set_level("INFO", logger="adapter")
    body = hostile_body(case)
    headers = {**SECRET, "content-type": "application/json"}
    response = client.post(URL, content=body, headers=headers)
    assert response.status_code == 400, response.text
    field = HOSTILE[case][1]
    assert any(d["field"].startswith(field) for d in response.json()["details"]), response.text
    assert stored(services) == 0
    refused = [r for r in caplog.records if "webhook refused" in r.getMessage()]
    assert len(refused) == 1
    assert len(refused[0].getMessage()) < 1000  # the oversized value is not in it


def test_reused_webhook_id_with_another_body_is_409_and_stores_nothing(
    client: TestClient, services: Services
) -> None:
    """One webhook-id, two bodies: the second is a 409 naming the id, not the first's answer."""
    first = _raw(seed_booking())
    headers = sign(first, msg_id="msg_reused")
    assert client.post(URL, content=first, headers=headers).status_code == 200
    second = _raw(seed_booking(bookingId="test-456", name="Other Person"))
    response = client.post(URL, content=second, headers=sign(second, msg_id="msg_reused"))
    assert response.status_code == 409, response.text
    detail = response.json()["details"][0]
    assert detail["field"] == "webhook-id"
    assert "msg_reused" in detail["message"]
    assert "different body" in detail["message"]
    assert stored(services) == 1
    metrics = client.get("/metrics").text
    assert 'bookme_webhook_requests_total{outcome="conflict"} 1.0' in metrics
    # The same id with the same body stays a harmless repeat.
    again = client.post(URL, content=first, headers=sign(first, msg_id="msg_reused"))
    assert again.status_code == 200


def test_shared_secret_with_a_relay_webhook_id_is_accepted_and_dedupes(
    client: TestClient, services: Services
) -> None:
    """X-Webhook-Secret plus a relay's webhook-id (no signature) is accepted; the id dedupes."""
    headers = {**SECRET, "webhook-id": "relay-0001"}
    first = post(client, seed_booking(), headers=headers)
    assert first.status_code == 200, first.text
    assert post(client, seed_booking(), headers=headers).json() == first.json()
    other = post(client, seed_booking(bookingId="test-789"), headers=headers)
    assert other.status_code == 409
    assert stored(services) == 1


def test_an_unexpected_failure_is_logged_and_answered_500_without_details(
    client: TestClient,
    services: Services,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The webhook is answered before FastAPI's stack (``BookMeApp``): a bug there is still
    a logged 500 with no traceback or secret in the answer, and the next webhook is fine."""

    async def broken(*_args: object, **_kwargs: object) -> object:
        raise RuntimeError("a bug with a secret inside: s3cr3t")

    monkeypatch.setattr(services.writer, "enqueue", broken)
    answer = post(client, seed_booking(bookingId="bug-1"))
    assert answer.status_code == 500
    assert answer.json() == {"error": "Internal Server Error"}
    assert "s3cr3t" not in answer.text
    assert any(r.message == "webhook failed" and r.exc_info for r in caplog.records)
    monkeypatch.undo()
    assert post(client, seed_booking(bookingId="bug-2")).status_code in (200, 202)
