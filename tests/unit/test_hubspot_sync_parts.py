"""The HubSpot sync's pure parts: v3 signatures, delivery parsing, reading a history."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from adapter.backends.hubspot.client import Found, Revision
from adapter.hubspot_sync.events import DeliveryInvalid, delivery_hash, parse_delivery
from adapter.hubspot_sync.reading import TRACKED, read_object
from adapter.hubspot_sync.record import normaliser
from adapter.hubspot_sync.signature import BadSignature, signed_uri, verify
from tests.fakes.hubspot import sign_v3, webhook_headers

SECRET = "app-client-secret-0123456789"
URI = "https://crm.example.com/api/hubspot/webhooks?portal=1"
BODY = b'[{"eventId":1,"objectId":5}]'


def _now() -> datetime:
    return datetime.now(UTC)


def test_a_delivery_signed_as_hubspot_signs_is_accepted() -> None:
    """The fake's signer (written from HubSpot's docs) and the SDK's hash agree."""
    headers = {k.lower(): v for k, v in webhook_headers(SECRET, URI, BODY).items()}
    verify(headers, method="POST", uri=URI, body=BODY, client_secret=SECRET, now=_now())


def test_the_uri_is_signed_with_hubspots_listed_escapes_decoded() -> None:
    """HubSpot decodes %3A, %2F, %40… in the URI before signing; we do the same."""
    encoded = "https://crm.example.com/api/hubspot/webhooks?next=%2Fa%3Ab%40c"
    assert signed_uri(encoded) == "https://crm.example.com/api/hubspot/webhooks?next=/a:b@c"
    stamp = int(time.time() * 1000)
    signature = sign_v3(SECRET, "POST", encoded, BODY, stamp)
    headers = {"x-hubspot-signature-v3": signature, "x-hubspot-request-timestamp": str(stamp)}
    verify(headers, method="POST", uri=encoded, body=BODY, client_secret=SECRET, now=_now())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"secret": "another-secret-0123456789"}, "does not match"),
        ({"age": 301}, "old"),
        ({"age": -120}, "ahead"),
        ({"drop": "x-hubspot-signature-v3"}, "no X-HubSpot-Signature-v3"),
        ({"drop": "x-hubspot-request-timestamp"}, "no X-HubSpot-Signature-v3"),
        ({"body": b'[{"eventId":2,"objectId":5}]'}, "does not match"),
        ({"uri": "https://evil.example.com/api/hubspot/webhooks?portal=1"}, "does not match"),
    ],
)
def test_forged_stale_or_unsigned_deliveries_are_refused(change: dict, reason: str) -> None:
    """Wrong secret, body, URI; older than five minutes or from the future; no headers."""
    stamp = int((time.time() - change.get("age", 0)) * 1000)
    headers = webhook_headers(change.get("secret", SECRET), URI, BODY, timestamp_ms=stamp)
    lowered = {k.lower(): v for k, v in headers.items() if k.lower() != change.get("drop")}
    with pytest.raises(BadSignature, match=reason):
        verify(
            lowered,
            method="POST",
            uri=change.get("uri", URI),
            body=change.get("body", BODY),
            client_secret=SECRET,
            now=_now(),
        )


def test_a_delivery_is_read_into_changes_on_watched_objects() -> None:
    """Meetings, tasks and deals (classic or generic); other events counted as ignored."""
    events, ignored = parse_delivery(
        [
            {"eventId": 1, "subscriptionType": "object.propertyChange", "objectTypeId": "0-47",
             "objectId": 11, "occurredAt": 1000, "propertyName": "hs_meeting_start_time",
             "changeSource": "CRM_UI", "sourceId": "userId:1", "attemptNumber": 0},
            {"eventId": 2, "subscriptionType": "deal.propertyChange", "objectId": 12,
             "occurredAt": 1001, "propertyName": "dealstage"},
            {"eventId": 3, "subscriptionType": "object.propertyChange", "objectTypeId": "0-27",
             "objectId": "13", "occurredAt": "1002"},
            {"eventId": 4, "subscriptionType": "contact.propertyChange", "objectId": 14,
             "occurredAt": 1003},
            {"eventId": 5, "subscriptionType": "object.creation", "objectTypeId": "0-47",
             "objectId": 15, "occurredAt": 1004},
        ]
    )  # fmt: skip
    assert [(e.object_type, e.object_id) for e in events] == [
        ("meetings", "11"),
        ("deals", "12"),
        ("tasks", "13"),
    ]
    assert ignored == 2
    assert events[0].change_source == "CRM_UI"


def test_a_retried_delivery_hashes_as_the_first() -> None:
    """HubSpot's retry raises attemptNumber only: the same job key."""
    item = {"eventId": 1, "subscriptionType": "deal.propertyChange", "objectId": 1,
            "occurredAt": 5, "attemptNumber": 0}  # fmt: skip
    first, _ = parse_delivery([item])
    again, _ = parse_delivery([{**item, "attemptNumber": 3}])
    assert delivery_hash(first) == delivery_hash(again)


@pytest.mark.parametrize(
    ("raw", "fields"),
    [
        ({"not": "a list"}, {"body"}),
        ([1], {"[0]"}),
        ([{"objectId": 1, "occurredAt": 1}], {"[0].subscriptionType"}),
        ([{"subscriptionType": "deal.propertyChange", "objectId": True, "occurredAt": -1}],
         {"[0].objectId", "[0].occurredAt"}),
        ([{"subscriptionType": "x", "objectId": 1, "occurredAt": 1}] * 101, {"body"}),
    ],
)  # fmt: skip
def test_a_delivery_of_another_shape_names_its_fields(raw: object, fields: set[str]) -> None:
    with pytest.raises(DeliveryInvalid) as refused:
        parse_delivery(raw)
    assert {field for field, _ in refused.value.details} == fields


T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
OURS = ("INTEGRATION", "3141592")
PERSON = ("CRM_UI", "userId:7")


def _rev(value: str, minutes: int, source: tuple[str, str]) -> Revision:
    return Revision(value, T0 + timedelta(minutes=minutes), source[0], source[1])


def _meeting(start: list[Revision], end: list[Revision]) -> Found:
    return Found(
        "1001",
        {
            "hs_meeting_start_time": start[0].value,
            "hs_meeting_end_time": end[0].value,
            "hs_meeting_outcome": "SCHEDULED",
        },
        {
            "hs_meeting_start_time": start,
            "hs_meeting_end_time": end,
            "hs_meeting_outcome": [_rev("SCHEDULED", 0, OURS)],
        },
    )


WRITTEN_A = {"start": "2027-01-20T08:00:00.000Z", "duration": "60", "outcome": "SCHEDULED"}


def test_a_person_moving_the_meeting_reads_as_the_current_start_and_duration() -> None:
    """Start and end moved together: one instant, the person's id as actor."""
    found = _meeting(
        [_rev("2027-01-21T08:00:00Z", 5, PERSON), _rev("2027-01-20T08:00:00Z", 0, OURS)],
        [_rev("2027-01-21T09:30:00Z", 5, PERSON), _rev("2027-01-20T09:00:00Z", 0, OURS)],
    )
    reading = read_object(
        found, TRACKED["meetings"], normaliser({}), written=WRITTEN_A,
        own=":".join(OURS), since=T0, modified_at=T0,
    )  # fmt: skip
    current = {c.field: c for c in reading.current}
    assert current["start"].value == "2027-01-21T08:00:00.000Z"
    assert current["duration"].value == "90"
    assert (
        current["start"].changed_at == current["duration"].changed_at == T0 + timedelta(minutes=5)
    )
    assert current["start"].actor == "userId:7"
    assert not current["start"].ours
    assert reading.overwritten == []


def test_a_persons_value_our_later_write_replaced_is_overwritten() -> None:
    """Person moved it (an hour long still), then our write (BookMe's newer time): the
    person's start is found, replaced by ours; the unchanged length is not a change."""
    found = _meeting(
        [
            _rev("2027-01-22T08:00:00Z", 9, OURS),
            _rev("2027-01-21T08:00:00Z", 5, PERSON),
            _rev("2027-01-20T08:00:00Z", 0, OURS),
        ],
        [
            _rev("2027-01-22T09:00:00Z", 9, OURS),
            _rev("2027-01-21T09:00:00Z", 5, PERSON),
            _rev("2027-01-20T09:00:00Z", 0, OURS),
        ],
    )
    written = {**WRITTEN_A, "start": "2027-01-22T08:00:00.000Z"}
    reading = read_object(
        found, TRACKED["meetings"], normaliser({}), written=written,
        own=None, since=T0, modified_at=T0,
    )  # fmt: skip
    assert reading.learned == ":".join(OURS)
    (lost,) = reading.overwritten
    assert (lost.field, lost.value, lost.actor) == ("start", "2027-01-21T08:00:00.000Z", "userId:7")
    assert lost.changed_at == T0 + timedelta(minutes=5)
    assert lost.replaced_by == "2027-01-22T08:00:00.000Z"
    # Before ``since`` it is an old story, already seen by an earlier read.
    later = read_object(
        found, TRACKED["meetings"], normaliser({}), written=written,
        own=":".join(OURS), since=T0 + timedelta(minutes=6), modified_at=T0,
    )  # fmt: skip
    assert later.overwritten == []


def test_our_own_write_not_yet_settled_is_ours_not_a_change() -> None:
    """A value newer than what we recorded as written, set by our source: ours."""
    found = _meeting(
        [_rev("2027-01-23T08:00:00Z", 9, OURS), _rev("2027-01-20T08:00:00Z", 0, OURS)],
        [_rev("2027-01-23T09:00:00Z", 9, OURS), _rev("2027-01-20T09:00:00Z", 0, OURS)],
    )
    reading = read_object(
        found, TRACKED["meetings"], normaliser({}), written=WRITTEN_A,
        own=":".join(OURS), since=T0, modified_at=T0,
    )  # fmt: skip
    assert {c.field for c in reading.current if c.ours} == {"start", "duration", "outcome"}
