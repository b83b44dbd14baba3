"""The fake HubSpot server speaks HubSpot's JSON over real sockets, to httpx and to the real SDK."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import urllib3
from hubspot import HubSpot
from hubspot.crm.associations.v4 import (
    AssociationSpec,
    BatchInputPublicAssociationMultiPost,
    BatchResponseLabelsBetweenObjectPairWithErrors,
    PublicAssociationMultiPost,
)
from hubspot.crm.associations.v4 import PublicObjectId as AssociationObjectId
from hubspot.crm.contacts import SimplePublicObjectInput
from hubspot.crm.contacts.exceptions import ApiException as ContactsApiException
from hubspot.crm.objects import AssociationSpec as ObjectAssociationSpec
from hubspot.crm.objects import (
    BatchInputSimplePublicObjectBatchInputUpsert,
    Filter,
    FilterGroup,
    PublicAssociationsForObject,
    PublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.objects import SimplePublicObjectInput as ObjectInput
from hubspot.crm.objects.exceptions import ApiException
from hubspot.crm.properties import PropertyCreate, PropertyGroupCreate
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException
from hubspot.discovery.discovery_base import DiscoveryBase

from tests.fakes.hubspot import FakeHubSpot

REPO = Path(__file__).resolve().parents[2]
EXISTING_ID = re.compile(r"Existing ID: (\d+)")
DEAL = {"dealname": "D", "pipeline": "default", "dealstage": "appointmentscheduled"}
"""The properties HubSpot requires on a deal create."""


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    with FakeHubSpot() as server:
        yield server


@pytest.fixture
def http(fake: FakeHubSpot) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=fake.url, headers={"Authorization": f"Bearer {fake.token}"}, timeout=5
    ) as client:
        yield client


SdkFactory = Callable[[FakeHubSpot], HubSpot]


@pytest.fixture
def make_sdk() -> Iterator[SdkFactory]:
    """The real SDK pointed at a fake; every connection pool it opens is closed afterwards."""
    made: list[Any] = []

    def factory(package: Any, api_name: str, config: dict[str, Any]) -> Any:
        api = DiscoveryBase._default_api_factory(package, api_name, config)
        made.append(api)
        return api

    def build(server: FakeHubSpot) -> HubSpot:
        return HubSpot(
            access_token=server.token,
            host=server.url,
            retry=urllib3.Retry(total=0),
            api_factory=factory,
        )

    yield build
    for api in made:
        api.api_client.rest_client.pool_manager.clear()


@pytest.fixture
def sdk(fake: FakeHubSpot, make_sdk: SdkFactory) -> HubSpot:
    return make_sdk(fake)


def _text(exc: Exception) -> str:
    raw = getattr(exc, "body", None) or b""
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _body(exc: Exception) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(_text(exc) or "{}")
    return body


def _existing_id(message: str) -> str | None:
    match = EXISTING_ID.search(message)
    return match.group(1) if match else None


def _search_request(prop: str, value: str, *props: str) -> PublicObjectSearchRequest:
    return PublicObjectSearchRequest(
        filter_groups=[
            FilterGroup(filters=[Filter(property_name=prop, operator="EQ", value=value)])
        ],
        properties=[prop, *props],
        limit=10,
    )


def test_httpx_object_lifecycle_has_hubspot_shapes(fake: FakeHubSpot, http: httpx.Client) -> None:
    """Create, get, patch, list, archive and 404 answer HubSpot's SimplePublicObject JSON."""
    created = http.post(
        "/crm/v3/objects/contacts",
        json={"properties": {"email": "Ana@Example.com", "firstname": "Ana"}},
    )
    assert created.status_code == 201
    obj = created.json()
    assert obj["id"].isdigit()
    assert obj["archived"] is False
    assert obj["properties"]["hs_object_id"] == obj["id"]
    assert obj["properties"]["email"] == "ana@example.com"
    for key in ("createdate", "lastmodifieddate"):
        assert obj["properties"][key].endswith("Z")
    assert obj["createdAt"] == obj["properties"]["createdate"]

    got = http.get(f"/crm/v3/objects/contacts/{obj['id']}", params={"properties": "email,phone"})
    assert got.status_code == 200
    assert got.json()["properties"] == {
        "email": "ana@example.com",
        "phone": None,
        "createdate": obj["properties"]["createdate"],
        "hs_object_id": obj["id"],
        "lastmodifieddate": obj["properties"]["lastmodifieddate"],
    }
    by_email = http.get(
        "/crm/v3/objects/contacts/ana@example.com", params={"idProperty": "email"}
    ).json()
    assert by_email["id"] == obj["id"]

    patched = http.patch(
        f"/crm/v3/objects/contacts/{obj['id']}", json={"properties": {"lastname": "Lima"}}
    )
    assert patched.status_code == 200
    assert patched.json()["properties"]["lastname"] == "Lima"
    second = http.post("/crm/v3/objects/deals", json={"properties": DEAL}).json()
    assert int(second["id"]) > int(obj["id"])  # one id sequence across types

    listed = http.get("/crm/v3/objects/contacts", params={"limit": 1, "archived": "false"}).json()
    assert [o["id"] for o in listed["results"]] == [obj["id"]]

    assert http.delete(f"/crm/v3/objects/contacts/{obj['id']}").status_code == 204
    missing = http.get(f"/crm/v3/objects/contacts/{obj['id']}")
    assert missing.status_code == 404
    assert missing.json()["category"] == "OBJECT_NOT_FOUND"
    assert fake.objects("contacts") == []
    assert fake.objects("contacts", include_archived=True)[0]["archived"] is True
    assert fake.calls["GET /crm/v3/objects/contacts/{id}"] == 3
    assert fake.calls["POST /crm/v3/objects/contacts"] == 1
    assert fake.total_calls == 8


def test_httpx_batches_create_read_update_archive(fake: FakeHubSpot, http: httpx.Client) -> None:
    """Batch endpoints answer HubSpot's BatchResponse; a read with missing ids is a 207."""
    created = http.post(
        "/crm/v3/objects/companies/batch/create",
        json={"inputs": [{"properties": {"name": "A"}}, {"properties": {"name": "B"}}]},
    )
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "COMPLETE"
    assert {"startedAt", "completedAt"} <= body.keys()
    ids = [r["id"] for r in body["results"]]

    updated = http.post(
        "/crm/v3/objects/companies/batch/update",
        json={"inputs": [{"id": ids[0], "properties": {"domain": "a.example"}}]},
    )
    assert updated.status_code == 200
    assert updated.json()["results"][0]["properties"]["domain"] == "a.example"

    read = http.post(
        "/crm/v3/objects/companies/batch/read",
        json={
            "inputs": [{"id": ids[0]}, {"id": "999999"}],
            "properties": ["domain"],
            "propertiesWithHistory": [],  # required by HubSpot's BatchReadInputSimplePublicObjectId
        },
    )
    assert read.status_code == 207
    assert read.json()["numErrors"] == 1
    assert read.json()["errors"][0]["context"] == {"ids": ["999999"]}
    assert read.json()["results"][0]["properties"]["domain"] == "a.example"

    archived = http.post(
        "/crm/v3/objects/companies/batch/archive", json={"inputs": [{"id": ids[1]}]}
    )
    assert archived.status_code == 204
    assert [c["id"] for c in fake.objects("companies")] == [ids[0]]
    assert fake.find("companies", name="A")[0]["id"] == ids[0]

    twins = [{"properties": {"email": "t@example.com"}}, {"properties": {"email": "T@example.com"}}]
    duplicate = http.post("/crm/v3/objects/contacts/batch/create", json={"inputs": twins})
    assert duplicate.status_code == 400
    assert fake.objects("contacts") == []


def test_sdk_host_recipe_create_get_update_search(fake: FakeHubSpot, sdk: HubSpot) -> None:
    """``HubSpot(access_token=..., host=fake.url)`` drives objects, contacts and search APIs."""
    basic = sdk.crm.objects.basic_api
    created = basic.create(
        "contacts",
        SimplePublicObjectInputForCreate(properties={"email": "bo@example.com", "firstname": "Bo"}),
    )
    assert created.properties["email"] == "bo@example.com"

    contacts = sdk.crm.contacts.basic_api
    fetched = contacts.get_by_id(created.id, properties=["firstname"])
    assert fetched.properties["firstname"] == "Bo"
    contacts.update(created.id, SimplePublicObjectInput(properties={"firstname": "Bob"}))
    assert fake.get("contacts", created.id)["properties"]["firstname"] == "Bob"  # type: ignore[index]

    fake.flush_search_index()  # search lags writes by default; this test is about the SDK
    found = sdk.crm.objects.search_api.do_search(
        "contacts", _search_request("email", "BO@example.com", "firstname")
    )
    assert found.total == 1
    assert found.results[0].id == created.id
    assert found.results[0].properties["firstname"] == "Bob"

    meeting = basic.create(
        "meetings",
        SimplePublicObjectInputForCreate(
            properties={
                "hs_meeting_title": "Intro",
                "hs_timestamp": "2027-02-15T10:00:00Z",
                "hs_meeting_start_time": "2027-02-15T10:00:00Z",
                "hs_meeting_outcome": "SCHEDULED",
            },
            associations=[
                PublicAssociationsForObject(
                    to=PublicObjectId(id=created.id),
                    types=[
                        ObjectAssociationSpec(
                            association_category="HUBSPOT_DEFINED", association_type_id=200
                        )
                    ],
                )
            ],
        ),
    )
    assert meeting.properties["hs_timestamp"] == "2027-02-15T10:00:00.000Z"
    assert fake.associations("meetings", meeting.id, "contacts") == [(created.id, [200])]
    assert fake.associations("contacts", created.id, "meetings") == [(meeting.id, [199])]

    pipelines = sdk.crm.pipelines.pipelines_api.get_all("deals")
    assert pipelines.results[0].id == "default"
    assert [s.id for s in pipelines.results[0].stages][-2:] == ["closedwon", "closedlost"]


def test_sdk_batch_upsert_reports_new(fake: FakeHubSpot, sdk: HubSpot) -> None:
    """Batch upsert by email and by a hasUniqueValue property answers ``new`` per input."""
    batch = sdk.crm.objects.batch_api

    def upsert(object_type: str, prop: str, *keys: str) -> list[tuple[str, bool]]:
        inputs = [
            SimplePublicObjectBatchInputUpsert(
                id=key, id_property=prop, properties={**extra, prop: key}
            )
            for key in keys
            for extra in [{**DEAL, "dealname": key} if object_type == "deals" else {}]
        ]
        answer = batch.upsert(
            object_type, BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs)
        )
        return [(r.properties[prop], r.new) for r in answer.results]

    assert upsert("contacts", "email", "a@example.com") == [("a@example.com", True)]
    assert upsert("contacts", "email", "A@example.com", "b@example.com") == [
        ("a@example.com", False),
        ("b@example.com", True),
    ]
    assert len(fake.objects("contacts")) == 2

    sdk.crm.properties.core_api.create(
        "deals",
        PropertyCreate(
            name="lead_key",
            label="Lead key",
            type="string",
            field_type="text",
            group_name="dealinformation",
            has_unique_value=True,
        ),
    )
    assert upsert("deals", "lead_key", "k1", "k2") == [("k1", True), ("k2", True)]
    assert upsert("deals", "lead_key", "k2") == [("k2", False)]
    assert [d["properties"]["lead_key"] for d in fake.objects("deals")] == ["k1", "k2"]


def test_associations_are_typed_idempotent_and_two_way(
    fake: FakeHubSpot, sdk: HubSpot, http: httpx.Client
) -> None:
    """v4 associations (labelled, default, batch) never duplicate and store the inverse type."""
    basic = sdk.crm.objects.basic_api
    contact = basic.create("contacts", SimplePublicObjectInputForCreate(properties={})).id
    company = basic.create("companies", SimplePublicObjectInputForCreate(properties={})).id
    deal = basic.create("deals", SimplePublicObjectInputForCreate(properties=DEAL)).id
    assoc = sdk.crm.associations.v4.basic_api

    spec = [AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=279)]
    for _ in range(2):
        pair = assoc.create("contacts", contact, "companies", company, spec)
    assert (pair.from_object_type_id, pair.to_object_type_id) == ("0-1", "0-2")
    assert fake.associations("contacts", contact, "companies") == [(company, [279])]
    assert fake.associations("companies", company, "contacts") == [(contact, [280])]

    default = assoc.create_default("deals", deal, "contacts", contact)
    assert {r.association_spec.association_type_id for r in default.results} == {3, 4}
    assoc.create_default("deals", deal, "contacts", contact)
    assert fake.associations("contacts", contact, "deals") == [(deal, [4])]

    primary = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}]
    for _ in range(2):
        made = http.post(
            "/crm/v4/associations/deals/companies/batch/create",
            json={"inputs": [{"from": {"id": deal}, "to": {"id": company}, "types": primary}]},
        )
        assert made.status_code == 201
    assert made.json()["results"][0]["labels"] == ["Primary"]
    assert fake.associations("deals", deal, "companies") == [(company, [5])]
    http.post(
        "/crm/v4/associations/deals/companies/batch/associate/default",
        json={"inputs": [{"from": {"id": deal}, "to": {"id": company}}]},
    )
    assert fake.associations("companies", company, "deals") == [(deal, [6, 342])]

    listed = assoc.get_page("contacts", contact, "companies")
    assert [(r.to_object_id, [t.type_id for t in r.association_types]) for r in listed.results] == [
        (company, [279])
    ]
    bad = http.put(
        f"/crm/v4/objects/contacts/{contact}/associations/companies/{company}",
        json=[{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 4}],
    )
    assert bad.status_code == 400
    gone = http.put(f"/crm/v4/objects/contacts/{contact}/associations/default/companies/424242")
    assert gone.status_code == 404


def test_contact_email_conflict_409_names_existing_id(fake: FakeHubSpot, sdk: HubSpot) -> None:
    """A taken email (any case) is HubSpot's 409 CONFLICT with a parseable existing id."""
    contacts = sdk.crm.contacts.basic_api
    first = contacts.create(
        SimplePublicObjectInputForCreate(properties={"email": "dup@example.com"})
    )
    with pytest.raises(ContactsApiException) as caught:
        contacts.create(SimplePublicObjectInputForCreate(properties={"email": "DUP@example.com"}))
    assert caught.value.status == 409
    body = _body(caught.value)
    assert set(body) == {"status", "message", "correlationId", "category"}
    assert body["message"] == f"Contact already exists. Existing ID: {first.id}"
    assert body["category"] == "CONFLICT"
    assert body["status"] == "error"

    other = contacts.create(SimplePublicObjectInputForCreate(properties={"email": "o@example.com"}))
    with pytest.raises(ContactsApiException) as caught:
        contacts.update(other.id, SimplePublicObjectInput(properties={"email": "dup@example.com"}))
    assert caught.value.status == 409
    assert _existing_id(_body(caught.value)["message"]) == first.id
    assert len(fake.objects("contacts")) == 2


def test_unique_value_property_conflict_409(fake: FakeHubSpot, http: httpx.Client) -> None:
    """A hasUniqueValue property is enforced on create and update with a parseable id."""
    group = {"name": "bookme", "label": "BookMe"}
    assert http.post("/crm/v3/properties/deals/groups", json=group).status_code == 201
    again = http.post("/crm/v3/properties/deals/groups", json=group)
    assert again.status_code == 409
    assert again.json()["category"] == "OBJECT_ALREADY_EXISTS"
    spec = {
        "name": "lead_key",
        "label": "Lead key",
        "type": "string",
        "fieldType": "text",
        "groupName": "bookme",
        "hasUniqueValue": True,
    }
    made = http.post("/crm/v3/properties/deals", json=spec)
    assert made.status_code == 201
    assert made.json()["hasUniqueValue"] is True
    conflict = http.post("/crm/v3/properties/deals", json=spec)
    assert conflict.status_code == 409
    assert conflict.json()["message"] == "Property named 'lead_key' already exists."
    assert http.get("/crm/v3/properties/deals/lead_key").json()["groupName"] == "bookme"
    assert http.get("/crm/v3/properties/deals/nope").status_code == 404

    first = http.post("/crm/v3/objects/deals", json={"properties": {**DEAL, "lead_key": "k1"}})
    first = first.json()
    dup = http.post("/crm/v3/objects/deals", json={"properties": {**DEAL, "lead_key": "k1"}})
    assert dup.status_code == 409
    assert (
        dup.json()["message"]
        == f"A deal with lead_key k1 already exists. Existing ID: {first['id']}"
    )
    assert dup.json()["category"] == "CONFLICT"
    other = http.post("/crm/v3/objects/deals", json={"properties": {**DEAL, "lead_key": "k2"}})
    other = other.json()
    moved = http.patch(
        f"/crm/v3/objects/deals/{other['id']}", json={"properties": {"lead_key": "k1"}}
    )
    assert moved.status_code == 409
    assert _existing_id(moved.json()["message"]) == first["id"]
    assert [d["properties"]["lead_key"] for d in fake.objects("deals")] == ["k1", "k2"]


def test_bad_property_values_are_400_validation_errors(http: httpx.Client) -> None:
    """Unknown properties and bad options answer HubSpot's VALIDATION_ERROR text."""
    unknown = http.post("/crm/v3/objects/contacts", json={"properties": {"x": "1"}})
    assert unknown.status_code == 400
    assert unknown.json()["category"] == "VALIDATION_ERROR"
    assert unknown.json()["message"] == (
        'Property values were not valid: [{"isValid":false,"message":"Property \\"x\\" does not '
        'exist","error":"PROPERTY_DOESNT_EXIST","name":"x","localizedErrorMessage":"Property '
        '\\"x\\" does not exist","portalId":1234567}]'
    )
    option = http.post("/crm/v3/objects/tasks", json={"properties": {"hs_task_status": "done"}})
    assert option.status_code == 400
    assert "done was not one of the allowed options: [NOT_STARTED" in option.json()["message"]
    stage = http.post("/crm/v3/objects/deals", json={"properties": {"dealstage": "won"}})
    assert '\\"error\\":\\"INVALID_OPTION\\"' in json.dumps(stage.json()["message"])


def test_search_lags_behind_writes(make_sdk: SdkFactory) -> None:
    """Search sees an object only once its write is older than ``search_lag``, then stale data."""
    with FakeHubSpot(search_lag=0.3, search_rate_limit=None) as fake:
        sdk = make_sdk(fake)
        basic, search = sdk.crm.objects.basic_api, sdk.crm.objects.search_api
        request = _search_request("email", "lag@example.com", "firstname")
        created = basic.create(
            "contacts",
            SimplePublicObjectInputForCreate(
                properties={"email": "lag@example.com", "firstname": "A"}
            ),
        )
        assert search.do_search("contacts", request).total == 0
        time.sleep(0.35)
        assert search.do_search("contacts", request).results[0].id == created.id

        basic.update("contacts", created.id, ObjectInput(properties={"firstname": "B"}))
        assert search.do_search("contacts", request).results[0].properties["firstname"] == "A"
        fake.flush_search_index()
        assert search.do_search("contacts", request).results[0].properties["firstname"] == "B"

        basic.archive("contacts", created.id)
        assert search.do_search("contacts", request).total == 1  # the index still has it
        fake.configure(search_lag=0.0)
        assert search.do_search("contacts", request).total == 0


def test_rate_limit_answers_429_with_hubspot_headers(make_sdk: SdkFactory) -> None:
    """A rolling window limit answers 429 RATE_LIMIT; every non-search answer has the headers."""
    with (
        FakeHubSpot(rate_limit=3, rate_window=10, search_rate_limit=1) as fake,
        httpx.Client(base_url=fake.url, headers={"Authorization": f"Bearer {fake.token}"}) as http,
    ):
        searched = http.post("/crm/v3/objects/deals/search", json={})
        assert searched.status_code == 200
        search_limited = http.post("/crm/v3/objects/deals/search", json={})
        assert search_limited.status_code == 429
        assert search_limited.json()["policyName"] == "SECONDLY"
        for answer in (searched, search_limited):  # search is outside the ten-second limit
            assert not [h for h in answer.headers if h.lower().startswith("x-hubspot-ratelimit")]

        remaining = []
        for _ in range(3):
            answer = http.get("/crm/v3/objects/contacts")
            assert answer.headers["X-HubSpot-RateLimit-Max"] == "3"
            assert answer.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
            remaining.append(answer.headers["X-HubSpot-RateLimit-Remaining"])
        assert remaining == ["2", "1", "0"]

        with pytest.raises(ApiException) as caught:
            make_sdk(fake).crm.objects.basic_api.get_page("contacts", limit=1)
        assert caught.value.status == 429
        assert caught.value.headers["X-HubSpot-RateLimit-Remaining"] == "0"
        body = _body(caught.value)
        assert body["message"] == "You have reached your ten_secondly_rolling limit."
        assert (body["errorType"], body["policyName"]) == ("RATE_LIMIT", "TEN_SECONDLY_ROLLING")
        assert body["correlationId"]
        assert fake.rate_limited == 2
        assert fake.total_calls == 6


def test_auth_needs_the_bearer_token(fake: FakeHubSpot) -> None:
    """No or a wrong bearer token is HubSpot's 401 INVALID_AUTHENTICATION."""
    with httpx.Client(base_url=fake.url) as client:
        missing = client.get("/crm/v3/objects/contacts")
        wrong = client.get("/crm/v3/objects/contacts", headers={"Authorization": "Bearer nope"})
    for answer in (missing, wrong):
        assert answer.status_code == 401
        assert answer.json()["category"] == "INVALID_AUTHENTICATION"


def test_fail_fault_raises_api_exception_with_its_status(fake: FakeHubSpot, sdk: HubSpot) -> None:
    """``fail`` answers the given status (and Retry-After) ``times`` times, then recovers."""
    basic = sdk.crm.objects.basic_api
    create = SimplePublicObjectInputForCreate(properties={"email": "f@example.com"})
    fake.fail("POST", "/crm/v3/objects/contacts", 503, times=1)
    fake.fail("*", "/crm/v3/objects/*", 423, times=1, retry_after=2)
    fake.fail("POST", "/crm/v3/objects/contacts", 429, times=1)
    for status in (503, 423, 429):
        with pytest.raises(ApiException) as caught:
            basic.create("contacts", create)
        assert caught.value.status == status
    assert caught.value.headers["X-HubSpot-RateLimit-Max"] == "100"
    assert _body(caught.value)["policyName"] == "TEN_SECONDLY_ROLLING"
    assert fake.rate_limited == 1
    assert fake.objects("contacts") == []
    assert basic.create("contacts", create).properties["email"] == "f@example.com"

    fake.fail("GET", "/crm/v3/objects/contacts*", 502, body="<html>Bad gateway</html>")
    with pytest.raises(ApiException) as caught:
        basic.get_page("contacts")
    assert caught.value.status == 502
    assert "Bad gateway" in _text(caught.value)


def test_fail_fault_retry_after_header(fake: FakeHubSpot, http: httpx.Client) -> None:
    """An injected 429 carries HubSpot's rate headers and the requested Retry-After."""
    fake.fail("GET", "/crm/v3/pipelines/*", 429, times=1, retry_after=1.5)
    limited = http.get("/crm/v3/pipelines/deals")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1.5"
    assert "X-HubSpot-RateLimit-Remaining" in limited.headers
    assert http.get("/crm/v3/pipelines/deals").status_code == 200


def test_drop_closes_the_connection_before_doing_anything(fake: FakeHubSpot, sdk: HubSpot) -> None:
    """``drop`` hangs up without an answer: urllib3 raises and nothing was written."""
    basic = sdk.crm.objects.basic_api
    fake.drop("/crm/v3/objects/contacts", times=1)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        basic.create("contacts", SimplePublicObjectInputForCreate(properties={"email": "d@x.io"}))
    assert fake.objects("contacts") == []
    assert basic.create(
        "contacts", SimplePublicObjectInputForCreate(properties={"email": "d@x.io"})
    )
    assert fake.calls["POST /crm/v3/objects/contacts"] == 2


def test_crash_after_commit_writes_then_hangs_up(fake: FakeHubSpot, sdk: HubSpot) -> None:
    """``crash_after_commit`` keeps the write; the retry then meets HubSpot's 409."""
    basic = sdk.crm.objects.basic_api
    create = SimplePublicObjectInputForCreate(properties={"email": "c@example.com"})
    fake.crash_after_commit("/crm/v3/objects/contacts", times=1)
    with pytest.raises(urllib3.exceptions.ProtocolError):
        basic.create("contacts", create)
    [written] = fake.find("contacts", email="C@example.com")
    with pytest.raises(ApiException) as conflict:
        basic.create("contacts", create)
    assert conflict.value.status == 409
    assert _existing_id(_body(conflict.value)["message"]) == written["id"]


def test_slow_fault_times_out_the_client_but_commits(fake: FakeHubSpot, sdk: HubSpot) -> None:
    """``slow`` delays the answer past the client's timeout; the write still lands."""
    fake.slow("/crm/v3/objects/companies", seconds=0.5, times=1)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        sdk.crm.objects.basic_api.create(
            "companies",
            SimplePublicObjectInputForCreate(properties={"name": "Slow Co"}),
            _request_timeout=(1.0, 0.1),
        )
    deadline = time.monotonic() + 3
    while not fake.find("companies", name="Slow Co") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(fake.find("companies", name="Slow Co")) == 1


def test_properties_and_groups_via_sdk(fake: FakeHubSpot, sdk: HubSpot) -> None:
    """Seeded properties list; a missing one is 404; re-creating a group is 409."""
    core = sdk.crm.properties.core_api
    names = {p.name: p for p in core.get_all("contacts").results}
    assert {"email", "firstname", "lastname", "phone", "hs_object_id"} <= names.keys()
    meeting_props = {p.name for p in core.get_all("meetings").results}
    assert {"hs_timestamp", "hs_meeting_outcome", "hs_meeting_external_url"} <= meeting_props
    with pytest.raises(PropertiesApiException) as caught:
        core.get_by_name("tasks", "bookme_task_key")
    assert caught.value.status == 404
    groups = sdk.crm.properties.groups_api
    groups.create("tasks", PropertyGroupCreate(name="bookme", label="BookMe", display_order=-1))
    with pytest.raises(PropertiesApiException) as caught:
        groups.create("tasks", PropertyGroupCreate(name="bookme", label="BookMe"))
    assert caught.value.status == 409
    assert "bookme" in {g.name for g in groups.get_all("tasks").results}


@pytest.mark.slow
def test_runs_as_a_process_with_remote_faults_and_state(tmp_path: Path) -> None:
    """``python -m tests.fakes.hubspot`` serves, takes faults over HTTP, writes its state file."""
    state_file = tmp_path / "state.json"
    command = [sys.executable, "-m", "tests.fakes.hubspot", "--port", "0"]
    with subprocess.Popen(
        [*command, "--state-file", str(state_file), "--token", "t0k"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            ready = process.stdout.readline().split()
            assert ready[:1] == ["FAKE_HUBSPOT_READY"], ready
            url = ready[1]
            with httpx.Client(base_url=url, headers={"Authorization": "Bearer t0k"}) as http:
                faults = [
                    {"kind": "drop", "path": "/crm/v3/objects/contacts"},
                    {"kind": "fail", "method": "GET", "path": "/crm/v3/pipelines/*", "status": 500},
                ]
                assert http.post("/_fake/faults", json=faults).status_code == 200
                with pytest.raises(httpx.RemoteProtocolError):
                    http.post("/crm/v3/objects/contacts", json={"properties": {"email": "p@x.io"}})
                assert http.get("/crm/v3/pipelines/deals").status_code == 500
                made = http.post(
                    "/crm/v3/objects/contacts", json={"properties": {"email": "p@x.io"}}
                )
                assert made.status_code == 201

                state = http.get("/_fake/state").json()
                assert [o["id"] for o in state["objects"]["contacts"]] == [made.json()["id"]]
                assert state["calls"]["POST /crm/v3/objects/contacts"] == 2
                saved = json.loads(state_file.read_text())
                assert saved["objects"]["contacts"][0]["properties"]["email"] == "p@x.io"

                assert http.post("/_fake/config", json={"search_lag": 5}).json()["search_lag"] == 5
                assert http.post("/_fake/reset").status_code == 200
                assert http.get("/_fake/state").json()["objects"]["contacts"] == []
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0


def test_creates_without_required_properties_are_400(fake: FakeHubSpot, http: httpx.Client) -> None:
    """Deals need dealname/pipeline/dealstage, meetings and tasks hs_timestamp, on every create."""
    deal = http.post("/crm/v3/objects/deals", json={"properties": {"dealname": "D"}})
    assert deal.status_code == 400
    assert deal.json()["category"] == "VALIDATION_ERROR"
    assert deal.json()["message"] == "Error creating DEAL.  Some required properties were not set."
    assert deal.json()["context"] == {"properties": ["pipeline", "dealstage"]}

    start = {"hs_meeting_title": "Intro", "hs_meeting_start_time": "2027-02-15T10:00:00Z"}
    meeting = http.post("/crm/v3/objects/meetings", json={"properties": start})
    assert meeting.status_code == 400  # no hs_timestamp filled in from the start time
    assert meeting.json()["context"] == {"properties": ["hs_timestamp"]}

    tasks = [{"properties": {"hs_task_subject": "a", "hs_timestamp": "2027-02-15T10:00:00Z"}}]
    tasks.append({"properties": {"hs_task_subject": "b", "hs_timestamp": ""}})
    batch = http.post("/crm/v3/objects/tasks/batch/create", json={"inputs": tasks})
    assert batch.status_code == 400  # one bad input refuses the whole batch
    assert batch.json()["message"].startswith("Error creating TASK.")

    fake.define_property("deals", "lead_key", has_unique_value=True)
    upsert = {"id": "k1", "idProperty": "lead_key", "properties": {"dealname": "D"}}
    created = http.post("/crm/v3/objects/deals/batch/upsert", json={"inputs": [upsert]})
    assert created.status_code == 400
    assert created.json()["context"] == {"properties": ["pipeline", "dealstage"]}
    assert fake.objects("deals") == fake.objects("meetings") == fake.objects("tasks") == []

    full = {**upsert, "properties": DEAL}
    assert http.post("/crm/v3/objects/deals/batch/upsert", json={"inputs": [full]}).is_success
    renamed = {**upsert, "properties": {"dealname": "E"}}  # the update branch needs nothing
    assert http.post("/crm/v3/objects/deals/batch/upsert", json={"inputs": [renamed]}).is_success
    assert [d["properties"]["dealname"] for d in fake.objects("deals")] == ["E"]
    for name, bad in (
        ("hs_meeting_outcome", "NOSHOW"),
        ("hs_task_status", "CANCELLED"),
        ("hs_task_priority", "URGENT"),
        ("hs_task_type", "MEETING"),
    ):
        kind = "meetings" if name.startswith("hs_meeting") else "tasks"
        props = {"hs_timestamp": "2027-02-15T10:00:00Z", name: bad}
        refused = http.post(f"/crm/v3/objects/{kind}", json={"properties": props})
        assert refused.status_code == 400
        assert '\\"error\\":\\"INVALID_OPTION\\"' in json.dumps(refused.json()["message"])


@pytest.mark.parametrize("shape", ["409_existing_id", "409_no_id", "400_validation"])
def test_unique_value_conflict_shapes(shape: str, http: httpx.Client) -> None:
    """``conflict_shape`` picks how a taken hasUniqueValue value is answered, on every write."""
    assert (
        http.post("/_fake/config", json={"conflict_shape": shape}).json()["conflict_shape"] == shape
    )
    for name in ("lead_key", "ext_key"):
        spec = {"name": name, "label": name, "type": "string", "fieldType": "text"}
        spec |= {"groupName": "dealinformation", "hasUniqueValue": True}
        assert http.post("/crm/v3/properties/deals", json=spec).status_code == 201
    first = http.post(
        "/crm/v3/objects/deals", json={"properties": {**DEAL, "lead_key": "k1", "ext_key": "e1"}}
    ).json()
    other = http.post("/crm/v3/objects/deals", json={"properties": {**DEAL, "lead_key": "k2"}})
    taken = {**DEAL, "lead_key": "k1"}
    upsert = {"id": "k3", "idProperty": "lead_key", "properties": {**DEAL, "ext_key": "e1"}}
    answers = [
        http.post("/crm/v3/objects/deals", json={"properties": taken}),
        http.post("/crm/v3/objects/deals/batch/create", json={"inputs": [{"properties": taken}]}),
        http.patch(f"/crm/v3/objects/deals/{other.json()['id']}", json={"properties": taken}),
        http.post("/crm/v3/objects/deals/batch/upsert", json={"inputs": [upsert]}),
    ]
    for answer in answers:
        body = answer.json()
        if shape == "400_validation":
            assert answer.status_code == 400
            assert body["category"] == "VALIDATION_ERROR"
            assert body["message"].startswith("Property values were not valid: [")
            assert "already has that value" in body["message"]
            assert '"error":"INVALID_VALUE"' in body["message"]
        else:
            assert answer.status_code == 409
            assert body["category"] == "CONFLICT"
            found = _existing_id(body["message"])
            assert found == (first["id"] if shape == "409_existing_id" else None)
            if shape == "409_no_id":
                assert first["id"] not in json.dumps(body)
    assert len(http.get("/crm/v3/objects/deals").json()["results"]) == 2

    email = {"properties": {"email": "e@example.com"}}
    contact = http.post("/crm/v3/objects/contacts", json=email).json()
    again = http.post("/crm/v3/objects/contacts", json=email)
    assert again.status_code == 409  # a contact's email keeps HubSpot's documented answer
    assert _existing_id(again.json()["message"]) == contact["id"]
    assert http.post("/_fake/config", json={"conflict_shape": "418"}).status_code == 400


def test_association_batches_answer_207_for_missing_or_archived_ends(
    fake: FakeHubSpot, sdk: HubSpot, http: httpx.Client
) -> None:
    """v4 batch create and read link what exists and list each bad id in a 207's errors."""
    made = http.post(
        "/crm/v3/objects/companies/batch/create",
        json={"inputs": [{"properties": {"name": n}} for n in ("A", "B")]},
    ).json()["results"]
    live, archived = (c["id"] for c in made)
    contact = http.post("/crm/v3/objects/contacts", json={"properties": {}}).json()["id"]
    assert http.delete(f"/crm/v3/objects/companies/{archived}").status_code == 204
    spec = AssociationSpec(association_category="HUBSPOT_DEFINED", association_type_id=279)
    inputs = [
        PublicAssociationMultiPost(
            _from=AssociationObjectId(id=contact), to=AssociationObjectId(id=to), types=[spec]
        )
        for to in (live, "424242", archived)
    ]
    answer = sdk.crm.associations.v4.batch_api.create(
        "contacts", "companies", BatchInputPublicAssociationMultiPost(inputs=inputs)
    )
    assert isinstance(answer, BatchResponseLabelsBetweenObjectPairWithErrors)  # a 207
    assert [str(r.to_object_id) for r in answer.results] == [live]
    assert answer.num_errors == 2
    errors = [e.to_dict() for e in answer.errors]
    assert [e["context"]["toObjectId"] for e in errors] == [["424242"], [archived]]
    for error in errors:
        assert (error["status"], error["category"]) == ("error", "VALIDATION_ERROR")
        assert error["message"].startswith("No company with id ")
    assert fake.associations("contacts", contact, "companies") == [(live, [279])]

    read = http.post(
        "/crm/v4/associations/contacts/companies/batch/read",
        json={"inputs": [{"id": contact}, {"id": "999999"}]},
    )
    assert read.status_code == 207
    assert read.json()["results"][0]["to"][0]["toObjectId"] == int(live)
    [error] = read.json()["errors"]
    assert (error["category"], error["context"]) == ("OBJECT_NOT_FOUND", {"ids": ["999999"]})
    assert {"status", "message", "errors", "links"} <= error.keys()


def test_documented_failures_from_helpers_and_json(
    fake: FakeHubSpot, sdk: HubSpot, http: httpx.Client
) -> None:
    """477 migration, DAILY 429 and 423 come from helpers or /_fake/faults with HubSpot's bodies."""
    fake.migration_in_progress("/crm/v3/objects/contacts*", retry_after=7200)
    with pytest.raises(ApiException) as caught:
        sdk.crm.objects.basic_api.get_page("contacts")
    assert caught.value.status == 477
    assert caught.value.headers["Retry-After"] == "7200"
    assert _body(caught.value)["category"] == "MIGRATION_IN_PROGRESS"

    fake.daily_limit(times=1)
    limited = http.get("/crm/v3/pipelines/deals")
    assert limited.status_code == 429
    assert limited.json()["policyName"] == "DAILY"
    assert limited.json()["message"] == "You have reached your daily limit."
    assert limited.json()["errorType"] == "RATE_LIMIT"
    assert limited.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
    assert "X-HubSpot-RateLimit-Daily" in limited.headers

    fake.locked("/crm/v3/objects/companies", retry_after=2)
    locked = http.post("/crm/v3/objects/companies", json={"properties": {"name": "L"}})
    assert (locked.status_code, locked.headers["Retry-After"]) == (423, "2")
    assert fake.objects("companies") == []

    faults = [
        {"kind": "migration", "path": "/crm/v3/pipelines/*", "retry_after": 60},
        {"kind": "daily_limit"},
        {"kind": "locked", "method": "GET"},
        {"kind": "fail", "status": 477, "path": "*"},
    ]
    assert http.post("/_fake/faults", json=faults).status_code == 200
    assert http.get("/crm/v3/pipelines/deals").headers["Retry-After"] == "60"
    assert http.get("/crm/v3/objects/deals").json()["policyName"] == "DAILY"
    assert http.get("/crm/v3/objects/deals").status_code == 423
    injected = http.get("/crm/v3/objects/deals")
    assert (injected.status_code, injected.json()["category"]) == (477, "MIGRATION_IN_PROGRESS")
    assert http.get("/crm/v3/objects/deals").status_code == 200


def test_search_pages_stop_at_ten_thousand_and_lag_by_default(http: httpx.Client) -> None:
    """Search refuses a page past 10,000 results, and by default lags writes by seconds."""
    assert http.get("/_fake/state").json()["config"]["search_lag"] == 2.0
    http.post("/_fake/config", json={"search_rate_limit": None})  # five searches in a row
    made = http.post("/crm/v3/objects/companies", json={"properties": {"name": "Lagging"}})
    assert made.status_code == 201
    assert http.post("/crm/v3/objects/companies/search", json={}).json()["total"] == 0

    last = http.post("/crm/v3/objects/companies/search", json={"after": 9990, "limit": 10})
    assert last.status_code == 200
    past = http.post("/crm/v3/objects/companies/search", json={"after": 9990, "limit": 11})
    assert past.status_code == 400
    assert past.json()["category"] == "VALIDATION_ERROR"
    assert http.post("/crm/v3/objects/companies/search", json={"after": 10000}).status_code == 400
    assert http.post("/_fake/flush-search").status_code == 200
    assert http.post("/crm/v3/objects/companies/search", json={}).json()["total"] == 1


def test_rate_windows_and_daily_budget_belong_to_the_portal(make_sdk: SdkFactory) -> None:
    """Separate clients share the portal's windows; a spent daily_limit answers DAILY 429s."""
    with FakeHubSpot(rate_limit=4, search_rate_limit=None, daily_limit=6) as fake:
        auth = {"Authorization": f"Bearer {fake.token}"}
        with (
            httpx.Client(base_url=fake.url, headers=auth) as one,
            httpx.Client(base_url=fake.url, headers=auth) as two,
        ):
            assert (
                one.get("/crm/v3/objects/contacts").headers["X-HubSpot-RateLimit-Remaining"] == "3"
            )
            answer = two.get("/crm/v3/objects/contacts")
            assert answer.headers["X-HubSpot-RateLimit-Remaining"] == "2"
            assert answer.headers["X-HubSpot-RateLimit-Daily"] == "6"
            assert answer.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "4"
            make_sdk(fake).crm.objects.basic_api.get_page("contacts")
            assert (
                one.get("/crm/v3/objects/contacts").headers["X-HubSpot-RateLimit-Remaining"] == "0"
            )
            assert (
                two.get("/crm/v3/objects/contacts").json()["policyName"] == "TEN_SECONDLY_ROLLING"
            )

            fake.configure(rate_limit=None)
            assert one.post("/crm/v3/objects/contacts/search", json={}).status_code == 200
            spent = two.get("/crm/v3/objects/contacts")
            assert spent.status_code == 429
            assert spent.json()["policyName"] == "DAILY"
            assert spent.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
            assert fake.daily_used == 6
            fake.configure(daily_limit=None)
            assert one.get("/crm/v3/objects/contacts").status_code == 200


def test_writes_echo_what_was_sent_and_system_properties(http: httpx.Client) -> None:
    """Create, update and batch writes answer the properties sent plus HubSpot's own, no more."""
    full = {"email": "echo@example.com", "firstname": "E", "lastname": "Cho", "phone": "1"}
    created = http.post("/crm/v3/objects/contacts", json={"properties": full}).json()
    system = {"createdate", "hs_object_id", "lastmodifieddate"}
    assert created["properties"].keys() == full.keys() | system

    patched = http.patch(
        f"/crm/v3/objects/contacts/{created['id']}",
        json={"properties": {"firstname": "F", "phone": ""}},
    ).json()
    assert patched["properties"] == {
        "firstname": "F",
        "phone": "",
        "hs_object_id": created["id"],
        "lastmodifieddate": patched["properties"]["lastmodifieddate"],
    }
    updated = http.post(
        "/crm/v3/objects/contacts/batch/update",
        json={"inputs": [{"id": created["id"], "properties": {"lastname": "Ko"}}]},
    ).json()["results"][0]
    assert updated["properties"].keys() == {"lastname", "hs_object_id", "lastmodifieddate"}
    made = http.post(
        "/crm/v3/objects/tasks/batch/create",
        json={"inputs": [{"properties": {"hs_timestamp": "2027-01-01T00:00:00Z"}}]},
    ).json()["results"][0]
    assert made["properties"].keys() == {
        "hs_timestamp", "hs_createdate", "hs_lastmodifieddate", "hs_object_id"
    }  # fmt: skip
    upserted = http.post(
        "/crm/v3/objects/contacts/batch/upsert",
        json={"inputs": [{"id": "echo@example.com", "idProperty": "email", "properties": {}}]},
    ).json()["results"][0]
    assert upserted["properties"].keys() == {"email", "hs_object_id", "lastmodifieddate"}
    assert (
        http.get(f"/crm/v3/objects/contacts/{created['id']}?properties=lastname").json()[
            "properties"
        ]["lastname"]
        == "Ko"
    )


def test_bodies_must_fit_the_sdk_models(fake: FakeHubSpot, http: httpx.Client) -> None:
    """A body the SDK's generated model refuses is HubSpot's 400 "Invalid input JSON"."""
    refused = [
        ("POST", "/crm/v3/objects/contacts", {"properties": "email=a@b.c"}),
        ("POST", "/crm/v3/objects/contacts", {"associations": []}),
        ("PATCH", "/crm/v3/objects/contacts/1", {"properties": {"email": {"v": 1}}}),
        ("POST", "/crm/v3/objects/contacts/batch/create", {"inputs": {"properties": {}}}),
        ("POST", "/crm/v3/objects/contacts/batch/read", {"inputs": [], "properties": []}),
        ("POST", "/crm/v3/objects/contacts/batch/update", {"inputs": [{"properties": {}}]}),
        ("POST", "/crm/v3/objects/contacts/batch/upsert", {"inputs": [{"id": "x"}]}),
        ("POST", "/crm/v3/objects/contacts/batch/archive", {"inputs": [{}]}),
        ("POST", "/crm/v3/objects/contacts/search", {"filterGroups": [{"filters": [{}]}]}),
        (
            "POST",
            "/crm/v3/objects/contacts/search",
            {"filterGroups": [{"filters": [{"propertyName": "a", "operator": "LIKE"}]}]},
        ),
        ("POST", "/crm/v3/objects/contacts/search", {"limit": "ten"}),
        (
            "POST",
            "/crm/v4/associations/contacts/companies/batch/create",
            {"inputs": [{"from": {"id": "1"}, "to": {"id": "2"}}]},
        ),
        (
            "POST",
            "/crm/v4/associations/contacts/companies/batch/create",
            {
                "inputs": [
                    {
                        "from": {"id": "1"},
                        "to": {"id": "2"},
                        "types": [{"associationCategory": "MINE", "associationTypeId": 1}],
                    }
                ]
            },
        ),
        ("POST", "/crm/v4/associations/contacts/companies/batch/read", {"inputs": [{}]}),
        ("POST", "/crm/v3/properties/deals/groups", {"name": "g"}),
        ("POST", "/crm/v3/objects/contacts", None),
    ]
    for method, path, body in refused:
        answer = http.request(method, path, json=body)
        assert answer.status_code == 400, (path, body, answer.text)
        assert answer.json()["category"] == "VALIDATION_ERROR"
        assert answer.json()["message"].startswith(("Invalid input JSON", "Invalid JSON input"))
    assert fake.objects("contacts") == []
    assert (
        http.post(
            "/crm/v3/objects/contacts", json={"properties": {"email": "n@example.com", "x_n": 1}}
        ).status_code
        == 400
    )  # fits the model (a number is a string to HubSpot), unknown property
    taken = http.post("/crm/v3/objects/contacts", json={"properties": {"phone": 5}})
    assert taken.status_code == 201
    assert taken.json()["properties"]["phone"] == "5"
