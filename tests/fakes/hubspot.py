"""A fake HubSpot CRM API on 127.0.0.1: real sockets, HubSpot's v3/v4 JSON shapes.

Use it in-process (``with FakeHubSpot() as fake: ...``) or as a separate process
(``python -m tests.fakes.hubspot --port 0 [--state-file F]``, which prints
``FAKE_HUBSPOT_READY http://127.0.0.1:PORT`` and serves until killed) so a test can
SIGKILL a worker that talks to it.

Pointing the real SDK (``hubspot-api-client`` 12, urllib3 underneath) at the fake
---------------------------------------------------------------------------------
``HubSpot(**kwargs)`` copies every keyword onto each generated API's
``Configuration`` (``hubspot.discovery.discovery_base.DiscoveryBase._default_api_factory``
does ``setattr(configuration, key, value)``), and ``Configuration.host`` is a
property whose setter replaces the server list. So ``host=`` is all it takes, for
every API (``crm.objects``, ``crm.contacts``, ``crm.associations.v4``,
``crm.properties``, ``crm.pipelines``, ...)::

    import urllib3
    from hubspot import HubSpot

    with FakeHubSpot() as fake:
        sdk = HubSpot(
            access_token=fake.token,            # sent as "Authorization: Bearer <token>"
            host=fake.url,                      # "http://127.0.0.1:PORT", no trailing slash
            retry=urllib3.Retry(total=0),       # optional: switch urllib3's own retries off
        )
        basic = sdk.crm.objects.basic_api       # build once: EVERY attribute access builds
        basic.create("contacts", ...)           # a new ApiClient with its own urllib3 pool
        basic.api_client.rest_client.pool_manager.clear()   # close its sockets when done

``HubSpot(api_factory=f)`` replaces the factory (``f(package, api_name, config)``
returns the API object); wrapping ``DiscoveryBase._default_api_factory`` lets a
test collect every API built and close all their pools at teardown (see
``tests/unit/test_fake_hubspot.py``). Without ``retry=``, urllib3 retries a dropped
GET up to 3 times (POST/PATCH are never retried), so ``drop(times=1)`` on a GET is
invisible to the SDK.

What it serves (all JSON; ``{type}`` is contacts, companies, deals, meetings or
tasks, also as ``contact``/``0-1`` etc.)
-------------------------------------------------------------------------------
- ``POST/GET /crm/v3/objects/{type}``; ``GET/PATCH/DELETE /crm/v3/objects/{type}/{id}``
  (``?properties=a,b``, ``?idProperty=``, ``?associations=``, ``?archived=``);
- ``POST /crm/v3/objects/{type}/batch/{create,read,update,upsert,archive}``;
- ``POST /crm/v3/objects/{type}/search`` (EQ, NEQ, IN, NOT_IN, HAS_PROPERTY,
  NOT_HAS_PROPERTY, GT/GTE/LT/LTE, BETWEEN, CONTAINS_TOKEN; sorts; paging), with
  an index lag (``search_lag`` seconds, 2 by default, minutes if you like: a
  search sees each object as it was ``search_lag`` ago, or not at all if it is
  younger; ``flush_search_index()`` catches up now). As on HubSpot, a page past
  the first 10,000 results (``after + limit > 10000``) is a 400, and search is
  outside the ten-second limit: it counts only against the per-second search
  limit and its answers carry no ``X-HubSpot-RateLimit-*`` headers;
- associations v4: ``PUT .../associations/default/{toType}/{toId}``, labelled
  ``PUT``/``DELETE .../associations/{toType}/{toId}``, ``GET .../associations/{toType}``,
  ``POST /crm/v4/associations/{from}/{to}/batch/{create,associate/default,read,archive}``;
  inline ``associations`` on create. Associations are stored both ways (the
  inverse HUBSPOT_DEFINED type id, e.g. 279 <-> 280) and are idempotent;
- properties and groups (``/crm/v3/properties/{type}[/{name}|/groups[/{name}]]``),
  deal pipelines (``/crm/v3/pipelines/deals[/{id}[/stages]]``);
- ``GET /account-info/v3/details`` (portal id, ``ui_domain``, ``data_hosting_location``,
  ``time_zone``: configurable, an EU portal is ``ui_domain="app-eu1.hubspot.com"``);
- owners: ``GET /crm/v3/owners`` (``email=``, ``after=``, ``limit=`` up to 500,
  ``archived=``; paged) and ``GET /crm/v3/owners/{id}``, seeded with ``add_owner()``.
  ``hubspot_owner_id`` on contacts, deals, meetings and tasks accepts only the id
  of an active owner (400 VALIDATION_ERROR ``INVALID_OWNER_ID`` otherwise).

Errors use HubSpot's bodies: 401 INVALID_AUTHENTICATION; 400 VALIDATION_ERROR
("Property values were not valid: [...]" with PROPERTY_DOESNT_EXIST /
INVALID_OPTION / INVALID_LONG items); 404 OBJECT_NOT_FOUND; 409 CONFLICT
("Contact already exists. Existing ID: 123" for a contact email); 429 RATE_LIMIT
(policy TEN_SECONDLY_ROLLING, SECONDLY for search, or DAILY once the optional
``daily_limit`` budget is spent; with a budget every answer carries
``X-HubSpot-RateLimit-Daily`` and ``-Daily-Remaining``). Every API answer but a
search's carries the ten-second X-HubSpot-RateLimit-* headers. The rate windows
and the daily budget are the portal's: one per fake, shared by every client and
process that talks to it.

As strict as the portal
-----------------------
- Required properties on create (single, batch, and an upsert that creates):
  deals ``dealname``, ``pipeline``, ``dealstage``; meetings and tasks
  ``hs_timestamp`` (never filled in for you). Missing: 400 VALIDATION_ERROR
  "Error creating DEAL.  Some required properties were not set." with
  ``context.properties`` naming them. One bad input refuses a whole batch.
- A taken ``hasUniqueValue`` value (create, batch create, update, upsert) is
  answered in the shape ``conflict_shape`` names: ``"409_existing_id"`` (default:
  409 CONFLICT "A deal with bookme_lead_key k already exists. Existing ID: 123"),
  ``"409_no_id"`` (the same without the id) or ``"400_validation"`` (400
  VALIDATION_ERROR, an INVALID_VALUE item "bookme_lead_key already has that
  value"). A contact's email is always the documented 409 with its existing id.
- 207 Multi-Status, with an ``errors`` item per problem (HubSpot's
  ``StandardError``: ``status``, ``category``, ``message``, ``context``,
  ``errors``, ``links``): object batch read/update for ids that do not exist;
  v4 association batch create and associate/default for an end that does not
  exist or is archived (the rest are associated); v4 association batch read for
  a missing or archived ``from`` id. An object batch create with one invalid
  input is refused whole (400).
- Writes echo what HubSpot echoes: a create (single, batch, upsert that creates)
  answers the properties sent plus ``createdate``/``hs_createdate``,
  ``hs_object_id`` and the last-modified date; an update answers the properties
  sent (a cleared one as ``""``) plus ``hs_object_id`` and the last-modified
  date. Everything else needs a read.
- Request bodies must fit the SDK's generated models (``hubspot.crm.objects``,
  ``.associations.v4``, ``.properties``: e.g. ``SimplePublicObjectInputForCreate``,
  ``BatchReadInputSimplePublicObjectId`` with its required
  ``propertiesWithHistory``, ``PublicObjectSearchRequest``,
  ``BatchInputPublicAssociationMultiPost``): a missing required field, a value
  outside an enum, or an object/array where the model wants something else is a
  400 VALIDATION_ERROR "Invalid input JSON: <where>: <why>"; no body where one is
  expected is "Invalid JSON input: a request body was expected, but none found".

Sales staff, property history and webhooks
------------------------------------------
- Every create and update sets ``hs_lastmodifieddate`` (and ``updatedAt``) to the
  write's moment, to the millisecond. Each property keeps its history: a value
  that changes (create, update, batch, upsert, or an edit below) adds an entry
  ``{"value", "timestamp", "sourceType", "sourceId"}``; writes through the API
  token are ``sourceType`` INTEGRATION with the app's id (``app_id``) as
  ``sourceId``. A batch read with ``propertiesWithHistory`` (and GET with
  ``?propertiesWithHistory=``) answers ``propertiesWithHistory: {name: [entries,
  newest first]}`` (HubSpot's ``ValueWithTimestamp``). A write that leaves a value
  as it was adds no entry (HubSpot documents history as a property's values over
  time; the fake records changes).
- Edits "by a salesperson" in HubSpot's UI: ``edit(type, id, user_id=, **props)``
  and its shorthands ``reschedule_meeting(id, start[, end])`` (moves
  ``hs_timestamp``, start and end; keeps the length), ``set_meeting_outcome(id,
  outcome, notes=)``, ``set_deal_stage(id, stage_id)``, ``set_task_status(id,
  status)``: validated like API writes, ``sourceType`` CRM_UI and ``sourceId``
  ``userId:<n>`` (also ``POST /_fake/edit {"type", "id", "userId", "properties"}``).
- App webhooks: ``subscribe(type, property)`` (deals ``deal.propertyChange``,
  meetings and tasks the generic ``object.propertyChange`` with ``objectTypeId``
  0-47 / 0-27) queues an event per change of that property, by any source:
  ``eventId, subscriptionId, portalId, appId, occurredAt`` (epoch ms of the
  change), ``subscriptionType, attemptNumber, objectId, propertyName,
  propertyValue, changeSource`` (CRM_UI or INTEGRATION) and ``sourceId``.
  ``deliver_webhooks(url=webhook_url)`` POSTs them, 100 at most per request, as a
  JSON array signed as HubSpot signs (``sign_v3``: ``X-HubSpot-Signature-v3`` =
  base64 HMAC-SHA256 with the app's ``client_secret`` over method + URI (its
  listed escapes decoded) + body + ``X-HubSpot-Request-Timestamp`` in ms); a
  request answered other than 2xx leaves its events queued with ``attemptNumber``
  raised. ``post_webhook``/``webhook_headers`` build deliveries by hand (stale
  timestamps, wrong secrets) (also ``POST /_fake/subscribe`` and
  ``/_fake/webhooks/deliver``).
- Search takes one sort at most (HubSpot: "you can only sort by one property");
  date-times sort and compare by instant (``GT``/``GTE`` take epoch ms or ISO).

Documented failures, on demand (each fires ``times`` times; ``None`` is forever)
------------------------------------------------------------------------------
- ``fail(method, path_glob, status, times=1, body=None, retry_after=None)``: any
  status (5xx, 423, 429, 477, ...) with HubSpot's body for it;
- ``migration_in_progress(path_glob="*", retry_after=3600, times=1, method="*")``:
  477 with ``Retry-After`` (HubSpot documents the status and header, not the body;
  ours is category MIGRATION_IN_PROGRESS);
- ``daily_limit(times=1, path_glob="*", method="*")``: 429 "You have reached your
  daily limit." with ``policyName`` DAILY and ``X-HubSpot-RateLimit-Daily`` /
  ``-Daily-Remaining: 0``;
- ``locked(path_glob="*", times=1, method="*", retry_after=None)``: 423 LOCKED;
- ``spend(n)``: other apps on the portal use ``n`` requests of the ten-second window
  now (``X-HubSpot-RateLimit-Remaining`` drops, a 429 comes sooner);
- ``slow(path_glob, seconds)``, ``drop(path_glob)``, ``crash_after_commit(path_glob)``
  (also ``times=``, ``method=``): a slow answer, a hang-up before doing anything,
  a hang-up after the write.

Settings (constructor keywords; ``configure(**settings)`` or ``POST /_fake/config``
while running; the process takes ``--search-lag``, ``--rate-limit``,
``--rate-window``, ``--search-rate-limit``, ``--conflict-shape``, ``--daily-limit``,
``--token``):
``token="fake-hubspot-token"`` (``None`` disables auth), ``search_lag=2.0``,
``rate_limit=100`` per ``rate_window=10.0`` s, ``search_rate_limit=4`` per
``search_window=1.0`` s (``None`` disables either), ``conflict_shape=
"409_existing_id"``, ``daily_limit=None`` (requests per day; ``None``: no budget).

Test controls (no auth, not counted): ``GET /_fake/state``, ``POST /_fake/reset``,
``POST /_fake/faults`` (one fault or a list: ``{"kind": "fail"|"slow"|"drop"|
"crash_after_commit", "method": "*", "path": "<glob>", "times": 1, "status": 503,
"body": ..., "retry_after": 2, "seconds": 0.5}``, or a preset ``{"kind":
"migration"|"daily_limit"|"locked", "path": "*", "retry_after": ...}``; ``times:
null`` is forever),
``DELETE /_fake/faults``, ``POST /_fake/config`` (``search_lag``, ``rate_limit``,
``rate_window``, ``search_rate_limit``, ``search_window``, ``token``,
``conflict_shape``, ``daily_limit``, ``ui_domain``, ``data_hosting_location``,
``time_zone``, ``app_id``, ``client_secret``, ``webhook_url``, ``datetime_answers``:
``"iso"`` or ``"epoch_ms"``, how date-time properties are answered) and
``POST /_fake/flush-search`` (make every write searchable now).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fnmatch
import hashlib
import hmac
import http.client
import importlib
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

PORTAL_ID = 1234567
APP_ID = 3141592
"""The app (private or public) whose token writes: the ``sourceId`` of its writes' history."""
CLIENT_SECRET = "fake-hubspot-client-secret-0123456789"
"""The app's client secret: webhook deliveries are signed with it (v3)."""
MAX_WEBHOOK_BATCH = 100
"""HubSpot sends at most 100 events in one webhook request."""
# The characters HubSpot decodes in the URI before signing it (request validation, v3).
_URI_DECODE = {
    "%3A": ":", "%2F": "/", "%3F": "?", "%40": "@", "%21": "!", "%24": "$",
    "%27": "'", "%28": "(", "%29": ")", "%2A": "*", "%2C": ",", "%3B": ";",
}  # fmt: skip
MAX_BATCH = 100
MAX_SEARCH_LIMIT = 200
MAX_SEARCH_RESULTS = 10_000
"""HubSpot's search pages through at most this many results; a page past it is a 400."""
AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication "
    "and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)

OBJECT_TYPES = ("contacts", "companies", "deals", "meetings", "tasks")
OWNER_PROPERTY = "hubspot_owner_id"
OWNED_TYPES = {
    "contacts": "Contact owner",
    "deals": "Deal owner",
    "meetings": "Activity assigned to",
    "tasks": "Assigned to",
}
"""The objects with HubSpot's owner property, and its label on each."""
TYPE_IDS = {
    "contacts": "0-1",
    "companies": "0-2",
    "deals": "0-3",
    "tasks": "0-27",
    "meetings": "0-47",
}
SINGULAR = {
    "contacts": "contact",
    "companies": "company",
    "deals": "deal",
    "meetings": "meeting",
    "tasks": "task",
}
_TYPE_ALIASES = {
    **{t: t for t in OBJECT_TYPES},
    **{s: t for t, s in SINGULAR.items()},
    **{i: t for t, i in TYPE_IDS.items()},
}
DEFAULT_PROPERTIES = {
    "contacts": [
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    ],
    "companies": ["createdate", "domain", "hs_lastmodifieddate", "hs_object_id", "name"],
    "deals": [
        "amount",
        "closedate",
        "createdate",
        "dealname",
        "dealstage",
        "hs_lastmodifieddate",
        "hs_object_id",
        "pipeline",
    ],
    "meetings": ["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
    "tasks": ["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
}
"""What GET returns when no ``properties`` are asked for."""
ALWAYS_PROPERTIES = {
    "contacts": ["createdate", "hs_object_id", "lastmodifieddate"],
    "companies": ["createdate", "hs_lastmodifieddate", "hs_object_id"],
    "deals": ["createdate", "hs_lastmodifieddate", "hs_object_id"],
    "meetings": ["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
    "tasks": ["hs_createdate", "hs_lastmodifieddate", "hs_object_id"],
}
"""Returned alongside whatever ``properties`` were asked for."""
SYSTEM_PROPERTIES = frozenset(
    {"hs_object_id", "createdate", "hs_createdate", "lastmodifieddate", "hs_lastmodifieddate"}
)
"""Set by the fake itself; values written to them are ignored."""

# (from, to) -> {association type id: label}; the first id is the default (unlabelled) one.
# Ids from hubspot.crm.association_type.AssociationType (HUBSPOT_DEFINED).
ASSOCIATION_TYPES: dict[tuple[str, str], dict[int, str | None]] = {
    ("contacts", "companies"): {279: None, 1: "Primary"},
    ("companies", "contacts"): {280: None, 2: "Primary"},
    ("deals", "contacts"): {3: None},
    ("contacts", "deals"): {4: None},
    ("deals", "companies"): {341: None, 5: "Primary"},
    ("companies", "deals"): {342: None, 6: "Primary"},
    ("companies", "meetings"): {187: None},
    ("meetings", "companies"): {188: None},
    ("companies", "tasks"): {191: None},
    ("tasks", "companies"): {192: None},
    ("contacts", "meetings"): {199: None},
    ("meetings", "contacts"): {200: None},
    ("contacts", "tasks"): {203: None},
    ("tasks", "contacts"): {204: None},
    ("deals", "meetings"): {211: None},
    ("meetings", "deals"): {212: None},
    ("deals", "tasks"): {215: None},
    ("tasks", "deals"): {216: None},
}
_INVERSE_PAIRS = [
    (1, 2), (3, 4), (5, 6), (187, 188), (191, 192), (199, 200),
    (203, 204), (211, 212), (215, 216), (279, 280), (341, 342),
]  # fmt: skip
INVERSE_TYPE = {**dict(_INVERSE_PAIRS), **{b: a for a, b in _INVERSE_PAIRS}}
_V3_ASSOCIATION_NAMES = {1: "contact_to_company", 2: "company_to_contact"}
_V3_UNLABELED = {279, 280, 341, 342}

DEAL_STAGES = [
    ("appointmentscheduled", "Appointment Scheduled", "0.2", False),
    ("qualifiedtobuy", "Qualified To Buy", "0.4", False),
    ("presentationscheduled", "Presentation Scheduled", "0.6", False),
    ("decisionmakerboughtin", "Decision Maker Bought-In", "0.8", False),
    ("contractsent", "Contract Sent", "0.9", False),
    ("closedwon", "Closed Won", "1.0", True),
    ("closedlost", "Closed Lost", "0.0", True),
]

_GROUPS = {
    "contacts": ("contactinformation", "Contact information"),
    "companies": ("companyinformation", "Company information"),
    "deals": ("dealinformation", "Deal information"),
    "meetings": ("meeting", "Meeting information"),
    "tasks": ("task", "Task information"),
}

# name, label, type, fieldType, options
_SeedSpec = tuple[str, str, str, str, list[str]]
_SEED_PROPERTIES: dict[str, list[_SeedSpec]] = {
    "contacts": [
        ("email", "Email", "string", "text", []),
        ("firstname", "First Name", "string", "text", []),
        ("lastname", "Last Name", "string", "text", []),
        ("jobtitle", "Job Title", "string", "text", []),
        ("phone", "Phone Number", "string", "phonenumber", []),
        ("company", "Company Name", "string", "text", []),
        (
            "lifecyclestage",
            "Lifecycle Stage",
            "enumeration",
            "radio",
            [
                "subscriber",
                "lead",
                "marketingqualifiedlead",
                "salesqualifiedlead",
                "opportunity",
                "customer",
                "evangelist",
                "other",
            ],
        ),
    ],
    "companies": [
        ("name", "Company name", "string", "text", []),
        ("domain", "Company Domain Name", "string", "text", []),
        ("phone", "Phone Number", "string", "phonenumber", []),
    ],
    "deals": [
        ("dealname", "Deal Name", "string", "text", []),
        ("amount", "Amount", "number", "number", []),
        ("pipeline", "Pipeline", "enumeration", "select", []),
        ("dealstage", "Deal Stage", "enumeration", "radio", []),
        ("closedate", "Close Date", "datetime", "date", []),
    ],
    "meetings": [
        ("hs_timestamp", "Activity date", "datetime", "date", []),
        ("hs_meeting_title", "Meeting name", "string", "text", []),
        ("hs_meeting_body", "Meeting description", "string", "html", []),
        ("hs_internal_meeting_notes", "Internal notes", "string", "html", []),
        ("hs_meeting_start_time", "Meeting start time", "datetime", "date", []),
        ("hs_meeting_end_time", "Meeting end time", "datetime", "date", []),
        ("hs_meeting_external_url", "External URL", "string", "text", []),
        ("hs_meeting_location", "Location", "string", "text", []),
        (
            "hs_meeting_outcome",
            "Meeting outcome",
            "enumeration",
            "select",
            ["SCHEDULED", "COMPLETED", "RESCHEDULED", "NO_SHOW", "CANCELED"],
        ),
    ],
    "tasks": [
        ("hs_timestamp", "Due date", "datetime", "date", []),
        ("hs_task_subject", "Task Title", "string", "text", []),
        ("hs_task_body", "Notes", "string", "html", []),
        (
            "hs_task_status",
            "Task Status",
            "enumeration",
            "select",
            ["NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"],
        ),
        (
            "hs_task_priority",
            "Priority",
            "enumeration",
            "select",
            ["NONE", "LOW", "MEDIUM", "HIGH"],
        ),
        (
            "hs_task_type",
            "Task Type",
            "enumeration",
            "select",
            ["TODO", "CALL", "EMAIL", "LINKED_IN", "LINKED_IN_CONNECT", "LINKED_IN_MESSAGE"],
        ),
    ],
}
# The enumerations above carry the options a HubSpot portal defines for these properties
# (https://developers.hubspot.com/docs/api/crm/tasks documents COMPLETED/NOT_STARTED,
# LOW/MEDIUM/HIGH and EMAIL/CALL/TODO; the portal's definitions add the rest), so any
# other token is refused with INVALID_OPTION.
REQUIRED_ON_CREATE = {
    "deals": ("dealname", "pipeline", "dealstage"),
    "meetings": ("hs_timestamp",),
    "tasks": ("hs_timestamp",),
}
"""Properties a create must set (an empty value does not count)."""
# --- emails: the engagement adapter.notify logs for each sent mail --------------------
# https://developers.hubspot.com/docs/api/crm/email: POST /crm/v3/objects/emails with
# hs_timestamp (required), hs_email_direction, hs_email_status, hs_email_subject,
# hs_email_text; associated to contacts (198/197) and deals (210/209).
OBJECT_TYPES = (*OBJECT_TYPES, "emails")
TYPE_IDS["emails"] = "0-49"
SINGULAR["emails"] = "email"
_TYPE_ALIASES.update({"emails": "emails", "email": "emails", "0-49": "emails"})
DEFAULT_PROPERTIES["emails"] = ["hs_createdate", "hs_lastmodifieddate", "hs_object_id"]
ALWAYS_PROPERTIES["emails"] = ["hs_createdate", "hs_lastmodifieddate", "hs_object_id"]
ASSOCIATION_TYPES.update(
    {
        ("contacts", "emails"): {197: None},
        ("emails", "contacts"): {198: None},
        ("deals", "emails"): {209: None},
        ("emails", "deals"): {210: None},
        ("companies", "emails"): {185: None},
        ("emails", "companies"): {186: None},
    }
)
INVERSE_TYPE.update({197: 198, 198: 197, 209: 210, 210: 209, 185: 186, 186: 185})
_GROUPS["emails"] = ("email", "Email information")
_SEED_PROPERTIES["emails"] = [
    ("hs_timestamp", "Activity date", "datetime", "date", []),
    (
        "hs_email_direction",
        "Email direction",
        "enumeration",
        "select",
        ["EMAIL", "INCOMING_EMAIL", "FORWARDED_EMAIL"],
    ),
    (
        "hs_email_status",
        "Email send status",
        "enumeration",
        "select",
        ["BOUNCED", "FAILED", "SCHEDULED", "SENDING", "SENT"],
    ),
    ("hs_email_subject", "Subject", "string", "text", []),
    ("hs_email_text", "Body", "string", "text", []),
    ("hs_email_html", "HTML body", "string", "html", []),
]
REQUIRED_ON_CREATE["emails"] = ("hs_timestamp",)
# --- end of emails ---------------------------------------------------------------------
CONFLICT_SHAPES = ("409_existing_id", "409_no_id", "400_validation")
"""How a taken ``hasUniqueValue`` value is answered; HubSpot has been seen to use each."""
_VALID_TYPES = {"string", "number", "date", "datetime", "enumeration", "bool", "phone_number"}


def _iso(moment: datetime) -> str:
    """HubSpot's timestamp format: UTC, milliseconds, ``Z``."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _now() -> str:
    return _iso(datetime.now(UTC))


def _correlation_id() -> str:
    return str(uuid.uuid4())


def signed_uri(uri: str) -> str:
    """``uri`` as HubSpot's v3 signature covers it: the listed escapes decoded."""
    for escaped, char in _URI_DECODE.items():
        uri = uri.replace(escaped, char).replace(escaped.lower(), char)
    return uri


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    """HubSpot's ``X-HubSpot-Signature-v3``: base64 of HMAC-SHA256 with the app's client
    secret over method + URI + body + ``X-HubSpot-Request-Timestamp`` (UTF-8)."""
    source = method.upper().encode() + signed_uri(uri).encode() + body + str(timestamp_ms).encode()
    digest = hmac.new(secret.encode(), source, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def webhook_headers(
    secret: str, uri: str, body: bytes, *, timestamp_ms: int | None = None, method: str = "POST"
) -> dict[str, str]:
    """The headers of a HubSpot webhook request for ``body`` to ``uri``, signed now (or at
    ``timestamp_ms``): v3, plus the older v2 signature HubSpot still sends."""
    stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    v2 = hashlib.sha256((secret + method.upper() + uri).encode() + body).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": sign_v3(secret, method, uri, body, stamp),
        "X-HubSpot-Request-Timestamp": str(stamp),
        "X-HubSpot-Signature": v2,
        "X-HubSpot-Signature-Version": "v2",
        "User-Agent": "HubSpot Connect 2.0 (http://dev.hubspot.com/) - fake",
    }


def post_webhook(
    uri: str,
    events: list[dict[str, Any]],
    secret: str,
    *,
    timestamp_ms: int | None = None,
    timeout: float = 10.0,
) -> int:
    """POST ``events`` to ``uri`` as HubSpot delivers them; returns the status (0: no answer)."""
    body = json.dumps(events, separators=(",", ":")).encode()
    headers = webhook_headers(secret, uri, body, timestamp_ms=timestamp_ms)
    split = urlsplit(uri)
    connection = http.client.HTTPConnection(
        split.hostname or "127.0.0.1", split.port, timeout=timeout
    )
    try:
        path = split.path + (f"?{split.query}" if split.query else "")
        connection.request("POST", path, body=body, headers=headers)
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def error_body(message: str, category: str, **extra: Any) -> dict[str, Any]:
    """HubSpot's error envelope."""
    return {
        "status": "error",
        "message": message,
        "correlationId": _correlation_id(),
        "category": category,
        **extra,
    }


def rate_limit_body(search: bool = False, *, daily: bool = False) -> dict[str, Any]:
    """HubSpot's 429 body: the ten-secondly rolling limit, the search API's secondly one,
    or the portal's daily budget.

    HubSpot's usage guidelines say the ``message`` and ``policyName`` name the limit
    hit; "You have reached your secondly limit." / ``SECONDLY`` is the wording seen
    in the wild (HGData/mk-node-hubspot#89), the daily one follows it.
    """
    if daily:
        message, policy = "You have reached your daily limit.", "DAILY"
    elif search:
        message, policy = "You have reached your secondly limit.", "SECONDLY"
    else:
        message, policy = (
            "You have reached your ten_secondly_rolling limit.",
            "TEN_SECONDLY_ROLLING",
        )
    return {
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": _correlation_id(),
        "policyName": policy,
    }


def _validation_item(name: str, message: str, error: str) -> dict[str, Any]:
    return {
        "isValid": False,
        "message": message,
        "error": error,
        "name": name,
        "localizedErrorMessage": message,
        "portalId": PORTAL_ID,
    }


def standard_error(category: str, message: str, context: Mapping[str, list[str]]) -> dict[str, Any]:
    """One item of a 207's ``errors``: the ``StandardError`` of HubSpot's OpenAPI specs.

    The SDK's generated ``StandardError`` marks ``status``, ``category``,
    ``message``, ``context``, ``errors`` and ``links`` required (``subCategory``
    is optional and left out: we found no wording for it we could trust).
    """
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": {k: list(v) for k, v in context.items()},
        "errors": [],
        "links": {},
    }


def migration_body() -> dict[str, Any]:
    """Our best reading of HubSpot's 477 body: its error page documents only the status
    ("Migration in Progress") and the ``Retry-After`` header, not the JSON."""
    return error_body(
        "This account is being migrated between data hosting locations. "
        "Retry after the number of seconds in the Retry-After header.",
        "MIGRATION_IN_PROGRESS",
    )


def _default_fault_body(status: int) -> dict[str, Any]:
    if status == 429:
        return rate_limit_body()
    if status == 423:
        return error_body("The object is locked; try again shortly.", "LOCKED")
    if status == 477:
        return migration_body()
    if status >= 500:
        return error_body("internal error", "INTERNAL_ERROR")
    return error_body(f"injected failure {status}", "FAKE_FAULT")


class HubSpotError(Exception):
    """An HTTP error answer, raised inside a route."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body
        self.headers = dict(headers or {})


def _bad_request(message: str) -> HubSpotError:
    return HubSpotError(400, error_body(message, "VALIDATION_ERROR"))


def _conflict_shape(value: str) -> str:
    if value not in CONFLICT_SHAPES:
        raise ValueError(f"conflict_shape must be one of {', '.join(CONFLICT_SHAPES)}")
    return value


def _missing_required(object_type: str, missing: list[str]) -> HubSpotError:
    """HubSpot's answer to a create without a required property.

    The shape is the one HubSpot sent in HubSpot/hubspot-api-nodejs#124 (a note
    without ``hs_timestamp``): the message names the object type, and
    ``context.properties`` names what is missing.
    """
    message = (
        f"Error creating {SINGULAR[object_type].upper()}.  Some required properties were not set."
    )
    return HubSpotError(
        400, error_body(message, "VALIDATION_ERROR", context={"properties": missing})
    )


def _not_found(message: str = "resource not found") -> HubSpotError:
    return HubSpotError(404, error_body(message, "OBJECT_NOT_FOUND"))


@dataclass
class _Version:
    """One write of an object, as the (lagging) search index sees it."""

    at: float
    props: dict[str, str]
    updated_at: str
    archived: bool


@dataclass
class _Record:
    id: int
    type: str
    props: dict[str, str]
    created_at: str
    updated_at: str
    archived: bool = False
    archived_at: str | None = None
    versions: list[_Version] = field(default_factory=list)
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    """Property name -> every value it was given, oldest first (``propertiesWithHistory``)."""


@dataclass
class _PropertyDef:
    name: str
    label: str
    type: str
    field_type: str
    group_name: str
    description: str = ""
    options: list[dict[str, Any]] = field(default_factory=list)
    has_unique_value: bool = False
    hubspot_defined: bool = True
    read_only: bool = False
    external_options: bool = False
    display_order: int = -1
    created_at: str = field(default_factory=_now)
    updated_at: str = field(default_factory=_now)

    def public(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "description": self.description,
            "groupName": self.group_name,
            "options": self.options,
            "displayOrder": self.display_order,
            "calculated": False,
            "externalOptions": self.external_options,
            "hasUniqueValue": self.has_unique_value,
            "hidden": False,
            "modificationMetadata": {
                "archivable": not self.hubspot_defined,
                "readOnlyDefinition": self.hubspot_defined,
                "readOnlyValue": self.read_only,
            },
            "formField": not self.read_only,
            "dataSensitivity": "non_sensitive",
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "archived": False,
        }
        if self.hubspot_defined:
            body["hubspotDefined"] = True
        return body

    def to_state(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": self.group_name,
            "description": self.description,
            "options": self.options,
            "hasUniqueValue": self.has_unique_value,
        }


@dataclass
class Fault:
    """One injected fault; ``times=None`` fires forever."""

    kind: str  # fail | slow | drop | crash_after_commit
    method: str
    path_glob: str
    times: int | None = 1
    status: int = 500
    body: Any = None
    retry_after: float | None = None
    seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method != "*" and self.method.upper() != method:
            return False
        return fnmatch.fnmatchcase(path, self.path_glob)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "method": self.method,
            "path": self.path_glob,
            "times": self.times,
            "hits": self.hits,
            "status": self.status,
            "seconds": self.seconds,
            "retry_after": self.retry_after,
        }


@dataclass
class _Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Query = dict[str, list[str]]
Handler = Callable[[re.Match[str], Query, Any], _Answer]
Route = tuple[str, re.Pattern[str], Handler, bool, str | None]
"""Method, path pattern, handler, whether it writes, the SDK model its body must fit."""

_SEG = r"([^/]+)"


def _option(value: str, label: str, order: int) -> dict[str, Any]:
    return {"label": label, "value": value, "displayOrder": order, "hidden": False}


def _to_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _moment(value: datetime | str) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    normalized = _normalize_datetime(value)
    if normalized is None:
        raise ValueError(f"not a date-time: {value!r}")
    return datetime.fromisoformat(normalized.replace("Z", "+00:00"))


def _epoch_ms(value: str) -> int:
    moment = _moment(value)
    return int(moment.timestamp()) * 1000 + moment.microsecond // 1000


def _normalize_datetime(value: str) -> str | None:
    """HubSpot accepts epoch milliseconds or ISO 8601 and answers ISO with milliseconds."""
    text = value.strip()
    try:
        if re.fullmatch(r"-?\d+", text):
            return _iso(datetime.fromtimestamp(int(text) / 1000, UTC))
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _iso(moment)


def _split_csv(query: Query, name: str) -> list[str] | None:
    if name not in query:
        return None
    names: list[str] = []
    for raw in query[name]:
        names.extend(part.strip() for part in raw.split(",") if part.strip())
    return names


def _query_value(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _query_flag(query: Query, name: str) -> bool:
    return (query.get(name) or ["false"])[-1].lower() == "true"


_SDK_PACKAGES = {
    "objects": "hubspot.crm.objects",
    "associations": "hubspot.crm.associations.v4",
    "properties": "hubspot.crm.properties",
}


class BodyRefused(ValueError):
    """A request body that does not fit the SDK's model of it."""


class _SdkBodies:
    """Request bodies read into the SDK's generated models, as HubSpot's server reads them.

    ``hubspot-api-client`` is generated from HubSpot's OpenAPI specs, so its models
    are the documented request shapes. A body is walked along the model's
    ``openapi_types`` (an object where an object is expected, a list where a list
    is, a string or number where a string is: HubSpot's Jackson coerces numbers to
    strings but refuses objects and arrays) and each model is built with
    ``client_side_validation`` on, so a missing required field or a value outside
    an enum raises, as in the SDK's own ``ApiClient.__deserialize_model``. Unknown
    fields are ignored. The SDK's client-side validation is off by default, so
    without this the fake would take bodies that HubSpot refuses.
    """

    def __init__(self) -> None:
        self._configurations: dict[str, Any] = {}

    def check(self, spec: str, data: Any) -> None:
        """``spec`` is ``package:Type`` (e.g. ``objects:PublicObjectSearchRequest``)."""
        package, type_name = spec.split(":", 1)
        self._walk(package, type_name, data, "")

    def _configuration(self, package: str) -> Any:
        if package not in self._configurations:
            configuration = importlib.import_module(_SDK_PACKAGES[package]).Configuration()
            configuration.client_side_validation = True
            self._configurations[package] = configuration
        return self._configurations[package]

    def _walk(self, package: str, type_name: str, data: Any, where: str) -> Any:
        at = where or "the body"
        if data is None:
            return None
        if type_name.startswith("list["):
            if not isinstance(data, list):
                raise BodyRefused(f"{at}: expected an array, got {_json_kind(data)}")
            inner = type_name[5:-1]
            return [self._walk(package, inner, v, f"{where}[{i}]") for i, v in enumerate(data)]
        if type_name.startswith("dict["):
            if not isinstance(data, dict):
                raise BodyRefused(f"{at}: expected an object, got {_json_kind(data)}")
            inner = type_name[5:-1].split(", ", 1)[1]
            return {k: self._walk(package, inner, v, f"{where}.{k}") for k, v in data.items()}
        if type_name == "str":
            if isinstance(data, (dict, list)):
                raise BodyRefused(f"{at}: expected a string, got {_json_kind(data)}")
            return data
        if type_name in ("int", "float"):
            number = isinstance(data, (int, float)) and not isinstance(data, bool)
            if not number and not (isinstance(data, str) and re.fullmatch(r"-?\d+", data)):
                raise BodyRefused(f"{at}: expected a number, got {_json_kind(data)}")
            return data
        if type_name == "bool":
            if not isinstance(data, bool) and data not in ("true", "false"):
                raise BodyRefused(f"{at}: expected a boolean, got {_json_kind(data)}")
            return data
        if type_name == "object":
            return data
        models = importlib.import_module(_SDK_PACKAGES[package] + ".models")
        klass = getattr(models, type_name)
        if not isinstance(data, dict):
            raise BodyRefused(f"{at}: expected an object, got {_json_kind(data)}")
        kwargs = {
            attr: self._walk(package, kind, data.get(klass.attribute_map[attr]), f"{where}.{key}")
            for attr, kind in klass.openapi_types.items()
            for key in [klass.attribute_map[attr]]
        }
        try:
            klass(**kwargs, local_vars_configuration=self._configuration(package))
        except (ValueError, TypeError) as exc:
            raise BodyRefused(f"{at}: {exc}") from exc
        return data


def _sort_problem(sort: Any) -> str | None:
    """Why a search ``sorts`` item is refused, or ``None``: a property name (``-`` before
    it: descending) or ``{"propertyName", "direction": ASCENDING|DESCENDING}``."""
    if isinstance(sort, str):
        return None if sort.strip("-") else "an empty property name"
    if not isinstance(sort, dict):
        return f"expected a string or an object, got {_json_kind(sort)}"
    if not isinstance(sort.get("propertyName"), str) or not sort["propertyName"]:
        return "propertyName is required"
    if str(sort.get("direction", "ASCENDING")).upper() not in ("ASCENDING", "DESCENDING"):
        return "direction must be ASCENDING or DESCENDING"
    return None


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeHubSpot) -> None:
        self.fake = fake
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients hanging up (timeouts, faults) are normal here: stay quiet."""

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def do_GET(self) -> None:
        self.server.fake._serve(self)

    def do_POST(self) -> None:
        self.server.fake._serve(self)

    def do_PUT(self) -> None:
        self.server.fake._serve(self)

    def do_PATCH(self) -> None:
        self.server.fake._serve(self)

    def do_DELETE(self) -> None:
        self.server.fake._serve(self)


class FakeHubSpot:
    """An in-memory HubSpot portal behind a real HTTP server on 127.0.0.1.

    Configuration (constructor keywords, also settable while running with
    ``configure()`` or ``POST /_fake/config``): ``token`` (``None`` disables auth),
    ``search_lag`` seconds (2.0), ``rate_limit`` requests per ``rate_window``
    seconds (100 per 10; ``None`` disables), ``search_rate_limit`` per
    ``search_window`` seconds (4 per 1; ``None`` disables), ``conflict_shape``
    (``"409_existing_id"``) and ``daily_limit`` requests per day (``None``: no
    daily budget; kept in ``daily_budget``, counted in ``daily_used``). The
    windows belong to the portal: every client and process that talks to this
    fake shares them.
    """

    def __init__(
        self,
        *,
        token: str | None = "fake-hubspot-token",  # noqa: S107
        host: str = "127.0.0.1",
        port: int = 0,
        search_lag: float = 2.0,
        rate_limit: int | None = 100,
        rate_window: float = 10.0,
        search_rate_limit: int | None = 4,
        search_window: float = 1.0,
        conflict_shape: str = "409_existing_id",
        daily_limit: int | None = None,
        state_file: str | os.PathLike[str] | None = None,
        ui_domain: str = "app.hubspot.com",
        data_hosting_location: str = "na1",
        time_zone: str = "US/Eastern",
        app_id: int = APP_ID,
        client_secret: str = CLIENT_SECRET,
        webhook_url: str | None = None,
        datetime_answers: str = "iso",
    ) -> None:
        self.token = token
        self.datetime_answers = datetime_answers
        self.app_id = app_id
        self.client_secret = client_secret
        self.webhook_url = webhook_url
        self.ui_domain = ui_domain
        self.data_hosting_location = data_hosting_location
        self.time_zone = time_zone
        self.search_lag = search_lag
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.search_rate_limit = search_rate_limit
        self.search_window = search_window
        self.conflict_shape = _conflict_shape(conflict_shape)
        self.daily_budget = daily_limit
        """The ``daily_limit`` setting (named apart from the ``daily_limit()`` fault)."""
        self.state_file = Path(state_file) if state_file is not None else None
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""
        self._routes: list[Route] = self._build_routes()
        self._bodies = _SdkBodies()
        self._clear()
        if self.state_file is not None and self.state_file.exists():
            self._load_state(json.loads(self.state_file.read_text()))

    # --- lifecycle ------------------------------------------------------------------

    def start(self) -> str:
        """Start serving; returns the base URL (``http://127.0.0.1:PORT``)."""
        if self._server is not None:
            return self.url
        self._server = _Server((self._host, self._port), self)
        port = self._server.server_address[1]
        self.url = f"http://{self._host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-hubspot-{port}",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close every connection (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        deadline = time.monotonic() + 2.0
        while server.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)

    def __enter__(self) -> FakeHubSpot:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    # --- state ----------------------------------------------------------------------

    def _clear(self) -> None:
        self._records: dict[int, _Record] = {}
        self._associations: dict[tuple[str, int, str, int], set[tuple[str, int]]] = {}
        self._next_id = 1001
        self._properties: dict[str, dict[str, _PropertyDef]] = {}
        self._groups: dict[str, dict[str, dict[str, Any]]] = {}
        self._seed_schema()
        self.calls: Counter[str] = Counter()
        self.total_calls = 0
        self.rate_limited = 0
        self.daily_used = 0
        """Requests counted against ``daily_limit`` since the last reset."""
        self.errors: list[str] = []
        """Tracebacks of bugs in the fake itself (answered as 500)."""
        self._faults: list[Fault] = []
        self._window: deque[float] = deque()
        self._search_window_hits: deque[float] = deque()
        self._owners: dict[str, dict[str, Any]] = {}
        self._source: dict[str, Any] | None = None
        """Who writes now: ``None`` is this app's API token; ``edit`` sets a salesperson."""
        self._subscriptions: list[dict[str, Any]] = []
        self.webhook_queue: list[dict[str, Any]] = []
        """Webhook events not yet delivered (``deliver_webhooks``), oldest first."""
        self.webhook_deliveries: list[dict[str, Any]] = []
        """Every delivery attempt: ``{"status", "events", "timestamp"}``."""
        self._next_event_id = 1

    def reset(self) -> None:
        """Forget every object, association, custom property, call count and fault."""
        with self._lock:
            self._clear()
            self._save_state()

    def _seed_schema(self) -> None:
        for object_type in OBJECT_TYPES:
            group, label = _GROUPS[object_type]
            self._groups[object_type] = {
                group: {"name": group, "label": label, "displayOrder": -1, "archived": False}
            }
            props: dict[str, _PropertyDef] = {}
            for name, plabel, ptype, field_type, options in _SEED_PROPERTIES[object_type]:
                props[name] = _PropertyDef(
                    name=name,
                    label=plabel,
                    type=ptype,
                    field_type=field_type,
                    group_name=group,
                    options=[
                        _option(v, v.replace("_", " ").title(), i) for i, v in enumerate(options)
                    ],
                    external_options=name in ("pipeline", "dealstage"),
                )
            for name in SYSTEM_PROPERTIES:
                if name == "lastmodifieddate" and object_type != "contacts":
                    continue
                is_date = name != "hs_object_id"
                props[name] = _PropertyDef(
                    name=name,
                    label=name,
                    type="datetime" if is_date else "number",
                    field_type="date" if is_date else "number",
                    group_name=group,
                    read_only=True,
                )
            self._properties[object_type] = props
        for object_type, label in OWNED_TYPES.items():
            self._properties[object_type][OWNER_PROPERTY] = _PropertyDef(
                name=OWNER_PROPERTY,
                label=label,
                type="enumeration",
                field_type="select",
                group_name=_GROUPS[object_type][0],
                external_options=True,  # the portal's owners, not a fixed list
            )

    def _save_state(self) -> None:
        if self.state_file is None:
            return
        data = self.state()
        tmp = self.state_file.with_name(self.state_file.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.state_file)

    def _load_state(self, data: Mapping[str, Any]) -> None:
        for object_type, objects in (data.get("objects") or {}).items():
            for obj in objects:
                record = _Record(
                    id=int(obj["id"]),
                    type=object_type,
                    props={k: v for k, v in obj["properties"].items() if v is not None},
                    created_at=obj["createdAt"],
                    updated_at=obj["updatedAt"],
                    archived=bool(obj.get("archived")),
                    archived_at=obj.get("archivedAt"),
                )
                record.versions.append(
                    _Version(float("-inf"), dict(record.props), record.updated_at, record.archived)
                )
                self._records[record.id] = record
        for link in data.get("associations") or []:
            key = (link["fromType"], int(link["fromId"]), link["toType"], int(link["toId"]))
            self._associations[key] = {(c, int(t)) for c, t in link["types"]}
        for object_type, props in (data.get("customProperties") or {}).items():
            for spec in props:
                self._properties[object_type][spec["name"]] = _PropertyDef(
                    name=spec["name"],
                    label=spec["label"],
                    type=spec["type"],
                    field_type=spec["fieldType"],
                    group_name=spec["groupName"],
                    description=spec.get("description", ""),
                    options=spec.get("options", []),
                    has_unique_value=bool(spec.get("hasUniqueValue")),
                    hubspot_defined=False,
                )
        for object_type, groups in (data.get("groups") or {}).items():
            for group in groups:
                self._groups[object_type][group["name"]] = group
        self._next_id = max(
            int(data.get("nextId", 0)), self._next_id, *(r + 1 for r in self._records)
        )
        self._owners = {owner["id"]: owner for owner in data.get("owners") or []}
        for object_id, history in (data.get("history") or {}).items():
            if int(object_id) in self._records:
                self._records[int(object_id)].history = history
        self._subscriptions = list(data.get("subscriptions") or [])
        self.webhook_queue = list(data.get("webhookQueue") or [])
        self._next_event_id = int(data.get("nextEventId") or 1)

    def state(self) -> dict[str, Any]:
        """Everything, as JSON-able data (``GET /_fake/state``; the ``--state-file``)."""
        with self._lock:
            return {
                "objects": {t: self.objects(t, include_archived=True) for t in OBJECT_TYPES},
                "associations": [
                    {
                        "fromType": ft,
                        "fromId": str(fid),
                        "toType": tt,
                        "toId": str(tid),
                        "types": sorted([c, t] for c, t in types),
                    }
                    for (ft, fid, tt, tid), types in sorted(self._associations.items())
                ],
                "customProperties": {
                    t: [p.to_state() for p in props.values() if not p.hubspot_defined]
                    for t, props in self._properties.items()
                },
                "groups": {t: list(groups.values()) for t, groups in self._groups.items()},
                "nextId": self._next_id,
                "history": {str(r.id): r.history for r in self._records.values() if r.history},
                "subscriptions": list(self._subscriptions),
                "webhookQueue": list(self.webhook_queue),
                "nextEventId": self._next_event_id,
                "owners": list(self._owners.values()),
                "calls": dict(self.calls),
                "total_calls": self.total_calls,
                "rate_limited": self.rate_limited,
                "daily_used": self.daily_used,
                "faults": [f.describe() for f in self._faults],
                "errors": list(self.errors),
                "config": self._config(),
            }

    def _config(self) -> dict[str, Any]:
        return {
            "token": self.token,
            "search_lag": self.search_lag,
            "rate_limit": self.rate_limit,
            "rate_window": self.rate_window,
            "search_rate_limit": self.search_rate_limit,
            "search_window": self.search_window,
            "conflict_shape": self.conflict_shape,
            "daily_limit": self.daily_budget,
            "ui_domain": self.ui_domain,
            "data_hosting_location": self.data_hosting_location,
            "time_zone": self.time_zone,
            "app_id": self.app_id,
            "client_secret": self.client_secret,
            "webhook_url": self.webhook_url,
            "datetime_answers": self.datetime_answers,
        }

    def configure(self, **settings: Any) -> None:
        """Change any setting of the class docstring (also ``POST /_fake/config``)."""
        with self._lock:
            for key, value in settings.items():
                if key not in self._config():
                    raise ValueError(f"unknown setting {key!r}")
                if key == "conflict_shape":
                    value = _conflict_shape(value)
                setattr(self, "daily_budget" if key == "daily_limit" else key, value)

    # --- introspection for assertions ----------------------------------------------

    def objects(self, object_type: str, include_archived: bool = False) -> list[dict[str, Any]]:
        """Every object of a type (HubSpot's SimplePublicObject shape, all properties)."""
        object_type = self._type(object_type)
        with self._lock:
            return [
                self._public(r, None, all_props=True)
                for r in sorted(self._records.values(), key=lambda r: r.id)
                if r.type == object_type and (include_archived or not r.archived)
            ]

    def get(self, object_type: str, object_id: str | int) -> dict[str, Any] | None:
        """One live object by id, or ``None``."""
        with self._lock:
            record = self._records.get(int(object_id))
            if record is None or record.archived or record.type != self._type(object_type):
                return None
            return self._public(record, None, all_props=True)

    def find(self, object_type: str, **props: Any) -> list[dict[str, Any]]:
        """Live objects whose properties equal all of ``props`` (email case-insensitively)."""
        wanted = {k: _to_str(v) for k, v in props.items()}
        found = []
        for obj in self.objects(object_type):
            values = obj["properties"]
            if all(self._same(k, values.get(k), v) for k, v in wanted.items()):
                found.append(obj)
        return found

    @staticmethod
    def _same(name: str, have: str | None, want: str) -> bool:
        if have is None:
            return want == ""
        return have.lower() == want.lower() if name == "email" else have == want

    def associations(
        self, from_type: str, from_id: str | int, to_type: str
    ) -> list[tuple[str, list[int]]]:
        """``[(to_id, sorted type ids)]`` of one object's associations to a type."""
        ft, tt = self._type(from_type), self._type(to_type)
        with self._lock:
            return [
                (str(tid), sorted(t for _, t in types))
                for (a, fid, b, tid), types in sorted(self._associations.items())
                if a == ft and b == tt and fid == int(from_id) and types
            ]

    def define_property(
        self,
        object_type: str,
        name: str,
        *,
        label: str | None = None,
        type: str = "string",
        field_type: str = "text",
        group_name: str | None = None,
        has_unique_value: bool = False,
        options: Iterable[str] = (),
    ) -> None:
        """Add a custom property directly (as ``POST /crm/v3/properties/{type}`` would)."""
        object_type = self._type(object_type)
        with self._lock:
            self._properties[object_type][name] = _PropertyDef(
                name=name,
                label=label or name,
                type=type,
                field_type=field_type,
                group_name=group_name or _GROUPS[object_type][0],
                options=[_option(v, v, i) for i, v in enumerate(options)],
                has_unique_value=has_unique_value,
                hubspot_defined=False,
            )
            self._save_state()

    def add_owner(
        self,
        email: str,
        first_name: str = "",
        last_name: str = "",
        *,
        archived: bool = False,
    ) -> str:
        """Add a portal user as an owner (HubSpot makes one per user); returns its id."""
        with self._lock:
            owner_id = str(self._next_id)
            self._next_id += 1
            now = _now()
            self._owners[owner_id] = {
                "id": owner_id,
                "email": email,
                "type": "PERSON",
                "firstName": first_name,
                "lastName": last_name,
                "userId": int(owner_id) + 9_000_000,
                "userIdIncludingInactive": int(owner_id) + 9_000_000,
                "createdAt": now,
                "updatedAt": now,
                "archived": archived,
                "teams": [],
            }
            self._save_state()
            return owner_id

    def flush_search_index(self) -> None:
        """Make every write so far visible to search, whatever ``search_lag`` is."""
        with self._lock:
            for record in self._records.values():
                latest = record.versions[-1]
                record.versions = [
                    _Version(float("-inf"), latest.props, latest.updated_at, latest.archived)
                ]

    # --- sales staff at work, and the webhooks their changes fire ---------------------

    def edit(
        self, object_type: str, object_id: str | int, *, user_id: int = 7001, **props: Any
    ) -> str:
        """A salesperson changes ``props`` in HubSpot's UI: validated as the API validates
        them, ``hs_lastmodifieddate`` moves, each changed value enters the property's
        history with ``sourceType`` CRM_UI and ``sourceId`` ``userId:<user_id>``, and
        subscribed webhook events are queued. Returns the new ``hs_lastmodifieddate``."""
        object_type = self._type(object_type)
        with self._lock:
            record = self._live(object_type, int(object_id))
            if record is None:
                raise KeyError(f"no live {SINGULAR[object_type]} {object_id}")
            clean = self._validate(object_type, {k: _to_str(v) for k, v in props.items()})
            self._source = {
                "sourceType": "CRM_UI",
                "sourceId": f"userId:{user_id}",
                "updatedByUserId": user_id,
            }
            try:
                self._apply(record, clean)
            finally:
                self._source = None
            self._save_state()
            return record.updated_at

    def reschedule_meeting(
        self,
        meeting_id: str | int,
        start: datetime | str,
        end: datetime | str | None = None,
        *,
        user_id: int = 7001,
    ) -> str:
        """A salesperson drags the meeting to ``start`` (keeping its length unless ``end``
        is given): HubSpot's UI moves ``hs_timestamp`` with the start time."""
        with self._lock:
            record = self._live("meetings", int(meeting_id))
            if record is None:
                raise KeyError(f"no live meeting {meeting_id}")
            new_start = _moment(start)
            if end is None:
                old_start = _moment(record.props["hs_meeting_start_time"])
                old_end = _moment(record.props.get("hs_meeting_end_time") or old_start)
                new_end = new_start + (old_end - old_start)
            else:
                new_end = _moment(end)
            return self.edit(
                "meetings",
                meeting_id,
                user_id=user_id,
                hs_timestamp=_iso(new_start),
                hs_meeting_start_time=_iso(new_start),
                hs_meeting_end_time=_iso(new_end),
            )

    def set_meeting_outcome(
        self, meeting_id: str | int, outcome: str, *, notes: str | None = None, user_id: int = 7001
    ) -> str:
        """A salesperson sets the meeting's outcome (and writes internal notes)."""
        props: dict[str, str] = {"hs_meeting_outcome": outcome}
        if notes is not None:
            props["hs_internal_meeting_notes"] = notes
        return self.edit("meetings", meeting_id, user_id=user_id, **props)

    def set_deal_stage(self, deal_id: str | int, stage: str, *, user_id: int = 7001) -> str:
        """A salesperson moves the deal to another stage of its pipeline (a stage id)."""
        return self.edit("deals", deal_id, user_id=user_id, dealstage=stage)

    def set_task_status(self, task_id: str | int, status: str, *, user_id: int = 7001) -> str:
        """A salesperson ticks the task off (``COMPLETED``) or reopens it."""
        return self.edit("tasks", task_id, user_id=user_id, hs_task_status=status)

    def history(self, object_type: str, object_id: str | int, name: str) -> list[dict[str, Any]]:
        """A property's history as ``propertiesWithHistory`` shows it: newest first."""
        with self._lock:
            record = self._records[int(object_id)]
            assert record.type == self._type(object_type)
            return [dict(entry) for entry in reversed(record.history.get(name, []))]

    def subscribe(self, object_type: str, property_name: str, *, legacy: bool | None = None) -> int:
        """Subscribe the app to property changes of one property of a type; returns the
        subscription id. Deals use the classic ``deal.propertyChange`` unless
        ``legacy=False``; meetings and tasks exist only in the generic
        ``object.propertyChange`` form (with ``objectTypeId``)."""
        object_type = self._type(object_type)
        if legacy is None:
            legacy = object_type in ("contacts", "companies", "deals")
        with self._lock:
            subscription: dict[str, Any] = {
                "id": 4000 + len(self._subscriptions) + 1,
                "objectType": object_type,
                "propertyName": property_name,
                "subscriptionType": (
                    f"{SINGULAR[object_type]}.propertyChange" if legacy else "object.propertyChange"
                ),
            }
            self._subscriptions.append(subscription)
            return int(subscription["id"])

    def _queue_events(
        self, record: _Record, name: str, value: str, source: Mapping[str, Any]
    ) -> None:
        for subscription in self._subscriptions:
            if (subscription["objectType"], subscription["propertyName"]) != (record.type, name):
                continue
            event: dict[str, Any] = {
                "eventId": self._next_event_id,
                "subscriptionId": subscription["id"],
                "portalId": PORTAL_ID,
                "appId": self.app_id,
                "occurredAt": _epoch_ms(record.updated_at),
                "subscriptionType": subscription["subscriptionType"],
                "attemptNumber": 0,
                "objectId": record.id,
                "propertyName": name,
                "propertyValue": value,
                "changeSource": "CRM_UI" if source["sourceType"] == "CRM_UI" else "INTEGRATION",
                "sourceId": source["sourceId"],
            }
            if subscription["subscriptionType"].startswith("object."):
                event["objectTypeId"] = TYPE_IDS[record.type]
            self._next_event_id += 1
            self.webhook_queue.append(event)

    def deliver_webhooks(
        self,
        url: str | None = None,
        *,
        secret: str | None = None,
        timestamp_ms: int | None = None,
    ) -> list[int]:
        """POST the queued events to ``url`` (default ``webhook_url``), at most 100 a
        request, signed with ``secret`` (default the app's client secret) at
        ``timestamp_ms`` (default now); returns each request's status. Events of a
        request not answered 2xx stay queued with ``attemptNumber`` raised, as HubSpot
        retries them."""
        target = url or self.webhook_url
        if not target:
            raise ValueError("no webhook_url configured")
        with self._lock:
            queued, self.webhook_queue = self.webhook_queue, []
        statuses: list[int] = []
        failed: list[dict[str, Any]] = []
        for start in range(0, len(queued), MAX_WEBHOOK_BATCH):
            batch = queued[start : start + MAX_WEBHOOK_BATCH]
            status = post_webhook(
                target, batch, secret or self.client_secret, timestamp_ms=timestamp_ms
            )
            statuses.append(status)
            with self._lock:
                self.webhook_deliveries.append({"status": status, "events": batch})
            if not 200 <= status < 300:
                failed.extend(
                    {**event, "attemptNumber": event["attemptNumber"] + 1} for event in batch
                )
        with self._lock:
            self.webhook_queue[:0] = failed
        return statuses

    def spend(self, count: int) -> None:
        """Other apps on the portal make ``count`` requests now: they fill the ten-second
        window (and lower ``X-HubSpot-RateLimit-Remaining``) as ours do."""
        with self._lock:
            now = time.monotonic()
            self._window.extend([now] * count)

    # --- faults -----------------------------------------------------------------------

    def fail(
        self,
        method: str,
        path_glob: str,
        status: int,
        times: int | None = 1,
        body: Any = None,
        retry_after: float | None = None,
    ) -> Fault:
        """Answer ``status`` (5xx, 423, 429, ...) instead of handling the request.

        ``body`` is JSON (dict/list) or text; by default HubSpot's body for the status.
        ``retry_after`` adds a ``Retry-After`` header. Checked before auth and rate limits.
        """
        return self._add_fault(
            Fault("fail", method, path_glob, times, status, body, retry_after=retry_after)
        )

    def migration_in_progress(
        self,
        path_glob: str = "*",
        retry_after: float = 3600,
        times: int | None = 1,
        method: str = "*",
    ) -> Fault:
        """477 Migration in Progress with ``Retry-After`` (HubSpot: "typically up to 24 hours")."""
        return self.fail(method, path_glob, 477, times, migration_body(), retry_after)

    def daily_limit(self, times: int | None = 1, path_glob: str = "*", method: str = "*") -> Fault:
        """429 for the portal's exhausted daily budget: ``policyName`` DAILY, daily headers at 0.

        No ``Retry-After``: the budget resets at midnight in the portal's time zone.
        """
        fault = Fault(
            "fail",
            method,
            path_glob,
            times,
            429,
            rate_limit_body(daily=True),
            headers=self._daily_headers(remaining=0),
        )
        return self._add_fault(fault)

    def locked(
        self,
        path_glob: str = "*",
        times: int | None = 1,
        method: str = "*",
        retry_after: float | None = None,
    ) -> Fault:
        """423 Locked (HubSpot: a lock lasts 2 seconds; wait at least that long)."""
        return self.fail(method, path_glob, 423, times, retry_after=retry_after)

    def slow(
        self, path_glob: str, seconds: float, times: int | None = 1, method: str = "*"
    ) -> Fault:
        """Sleep ``seconds`` before handling (the write still happens after a client timeout)."""
        return self._add_fault(Fault("slow", method, path_glob, times, seconds=seconds))

    def drop(self, path_glob: str, times: int | None = 1, method: str = "*") -> Fault:
        """Close the connection without answering, before doing anything."""
        return self._add_fault(Fault("drop", method, path_glob, times))

    def crash_after_commit(self, path_glob: str, times: int | None = 1, method: str = "*") -> Fault:
        """Perform the request, then close the connection without answering."""
        return self._add_fault(Fault("crash_after_commit", method, path_glob, times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(self, fault: Fault) -> Fault:
        if fault.kind not in ("fail", "slow", "drop", "crash_after_commit"):
            raise ValueError(f"unknown fault kind {fault.kind!r}")
        with self._lock:
            self._faults.append(fault)
        return fault

    def _take_fault(self, kind: str, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.kind == kind and fault.matches(method, path):
                fault.hits += 1
                return fault
        return None

    # --- HTTP plumbing ------------------------------------------------------------------

    @staticmethod
    def normalize(method: str, path: str) -> str:
        """``METHOD /path`` with object ids replaced by ``{id}`` (the ``calls`` key)."""
        parts = path.rstrip("/").split("/")
        for index, part in enumerate(parts):
            if part.isdigit():
                parts[index] = "{id}"
        is_object = len(parts) == 6 and parts[1:4] == ["crm", "v3", "objects"]
        if is_object and parts[5] not in ("search", "batch"):
            parts[5] = "{id}"
        return f"{method} {'/'.join(parts)}"

    def _serve(self, handler: _Handler) -> None:
        try:
            self._handle(handler)
        except Exception:
            failure = traceback.format_exc()
            with self._lock:
                self.errors.append(failure)
            self._send(handler, _Answer(500, error_body(failure, "FAKE_INTERNAL_ERROR")))

    def _handle(self, handler: _Handler) -> None:
        method = handler.command.upper()
        split = urlsplit(handler.path)
        path = unquote(split.path)
        query = parse_qs(split.query, keep_blank_values=True)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length > 0 else b""
        if path.startswith("/_fake/"):
            if path == "/_fake/webhooks/deliver":
                answer = self._control(method, path, raw)  # takes the lock itself
            else:
                with self._lock:
                    answer = self._control(method, path, raw)
            self._send(handler, answer)
            return

        with self._lock:
            self.calls[self.normalize(method, path)] += 1
            self.total_calls += 1
            drop = self._take_fault("drop", method, path)
            slow = None if drop else self._take_fault("slow", method, path)
        if drop is not None:
            self._drop(handler)
            return
        if slow is not None:
            time.sleep(slow.seconds)

        with self._lock:
            answer = self._answer(method, path, query, raw, handler.headers.get("Authorization"))
            crash = self._take_fault("crash_after_commit", method, path)
            if answer.status == 429:
                self.rate_limited += 1
        if crash is not None:
            self._drop(handler)
            return
        self._send(handler, answer)

    def _answer(
        self, method: str, path: str, query: Query, raw: bytes, authorization: str | None
    ) -> _Answer:
        fault = self._take_fault("fail", method, path)
        if fault is not None:
            headers = {**self._rate_headers(record=False), **fault.headers}
            if fault.retry_after is not None:
                seconds = float(fault.retry_after)
                headers["Retry-After"] = str(int(seconds) if seconds.is_integer() else seconds)
            body = fault.body if fault.body is not None else _default_fault_body(fault.status)
            return _Answer(fault.status, body, headers)

        if self.token is not None and authorization != f"Bearer {self.token}":
            return _Answer(401, error_body(AUTH_MESSAGE, "INVALID_AUTHENTICATION"))

        if self.daily_budget is not None:
            if self.daily_used >= self.daily_budget:
                return _Answer(429, rate_limit_body(daily=True), self._daily_headers())
            self.daily_used += 1

        now = time.monotonic()
        headers: dict[str, str] = {}
        if method == "POST" and path.rstrip("/").endswith("/search"):
            # HubSpot's search endpoints have their own per-second limit instead of the
            # ten-second one, and their answers carry no X-HubSpot-RateLimit-* headers
            # (usage guidelines: the headers come "subject to the exceptions listed").
            if self.search_rate_limit is not None:
                hits = self._search_window_hits
                while hits and hits[0] <= now - self.search_window:
                    hits.popleft()
                if len(hits) >= self.search_rate_limit:
                    return _Answer(429, rate_limit_body(search=True))
                hits.append(now)
        else:
            if self.rate_limit is not None:
                while self._window and self._window[0] <= now - self.rate_window:
                    self._window.popleft()
                if len(self._window) >= self.rate_limit:
                    return _Answer(429, rate_limit_body(), self._rate_headers(record=False))
            headers = self._rate_headers(record=True) | self._daily_headers()

        for route_method, pattern, handler, mutates, model in self._routes:
            if route_method != method:
                continue
            match = pattern.fullmatch(path.rstrip("/") or "/")
            if match is None:
                continue
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError as exc:
                return _Answer(
                    400, error_body(f"Invalid input JSON: {exc}", "VALIDATION_ERROR"), headers
                )
            refused = self._refuse_body(model, body)
            if refused is not None:
                return _Answer(400, refused, headers)
            try:
                answer = handler(match, query, body)
            except HubSpotError as exc:
                answer = _Answer(exc.status, exc.body, exc.headers)
            except Exception:
                failure = traceback.format_exc()
                self.errors.append(failure)
                answer = _Answer(500, error_body(failure, "FAKE_INTERNAL_ERROR"))
            else:
                if mutates:
                    self._save_state()
            answer.headers = {**headers, **answer.headers}
            return answer
        return _Answer(
            404,
            error_body(f"fake HubSpot has no route for {method} {path}", "OBJECT_NOT_FOUND"),
            headers,
        )

    def _refuse_body(self, model: str | None, body: Any) -> dict[str, Any] | None:
        """HubSpot's 400 for a body its model does not take, else ``None``.

        Wording from HubSpot's answers in HubSpot/hubspot-api-ruby#187 ("Invalid
        JSON input: a request body was expected, but none found") and
        hubspot-api-php#40 ("Invalid input JSON on line 1, column 11: Cannot
        deserialize ..."); we name the field instead of a line and column.
        """
        if model is None:
            return None
        if body is None:
            message = "Invalid JSON input: a request body was expected, but none found"
            return error_body(message, "VALIDATION_ERROR")
        if model.endswith(":PublicObjectSearchRequest") and isinstance(body, dict):
            # The SDK types ``sorts`` as strings, while HubSpot's search guide sends
            # ``{"propertyName", "direction"}`` objects; the API takes both.
            for index, sort in enumerate(body.get("sorts") or []):
                problem = _sort_problem(sort)
                if problem is not None:
                    return error_body(
                        f"Invalid input JSON: .sorts[{index}]: {problem}", "VALIDATION_ERROR"
                    )
            body = {k: v for k, v in body.items() if k != "sorts"}
        try:
            self._bodies.check(model, body)
        except BodyRefused as exc:
            return error_body(f"Invalid input JSON: {exc}", "VALIDATION_ERROR")
        return None

    def _rate_headers(self, *, record: bool) -> dict[str, str]:
        if self.rate_limit is None:
            return {}
        if record:
            self._window.append(time.monotonic())
        return {
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.rate_window * 1000)),
            "X-HubSpot-RateLimit-Max": str(self.rate_limit),
            "X-HubSpot-RateLimit-Remaining": str(max(self.rate_limit - len(self._window), 0)),
        }

    def _daily_headers(self, remaining: int | None = None) -> dict[str, str]:
        """HubSpot's daily headers (sent to private-app tokens, not to OAuth)."""
        limit = self.daily_budget
        if limit is None and remaining is None:
            return {}
        if remaining is None:
            remaining = max((limit or 0) - self.daily_used, 0)
        return {
            "X-HubSpot-RateLimit-Daily": str(limit if limit is not None else self.daily_used),
            "X-HubSpot-RateLimit-Daily-Remaining": str(remaining),
        }

    @staticmethod
    def _drop(handler: _Handler) -> None:
        handler.close_connection = True
        with contextlib.suppress(OSError):
            handler.connection.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _send(handler: _Handler, answer: _Answer) -> None:
        if answer.body is None:
            data = b""
            content_type = None
        elif isinstance(answer.body, (bytes, str)):
            data = answer.body.encode() if isinstance(answer.body, str) else answer.body
            content_type = "text/html;charset=utf-8"
        else:
            data = json.dumps(answer.body).encode()
            content_type = "application/json;charset=utf-8"
        try:
            handler.send_response(answer.status)
            if content_type is not None:
                handler.send_header("Content-Type", content_type)
            if answer.status != 204:
                handler.send_header("Content-Length", str(len(data)))
            handler.send_header("X-HubSpot-Correlation-Id", _correlation_id())
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            if data and answer.status != 204:
                handler.wfile.write(data)
        except OSError:
            handler.close_connection = True

    # --- control endpoints ----------------------------------------------------------------

    def _control(self, method: str, path: str, raw: bytes) -> _Answer:
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError as exc:
            return _Answer(400, {"error": f"bad JSON: {exc}"})
        try:
            if (method, path) == ("GET", "/_fake/state"):
                return _Answer(200, self.state())
            if (method, path) == ("POST", "/_fake/reset"):
                self.reset()
                return _Answer(200, {"ok": True})
            if (method, path) == ("POST", "/_fake/faults"):
                specs = body if isinstance(body, list) else [body]
                for spec in specs:
                    self._fault_from_json(spec)
                return _Answer(200, {"faults": [f.describe() for f in self._faults]})
            if (method, path) == ("DELETE", "/_fake/faults"):
                self.clear_faults()
                return _Answer(200, {"faults": []})
            if (method, path) == ("POST", "/_fake/config"):
                self.configure(**(body or {}))
                return _Answer(200, self._config())
            if (method, path) == ("POST", "/_fake/flush-search"):
                self.flush_search_index()
                return _Answer(200, {"ok": True})
            if (method, path) == ("POST", "/_fake/edit"):
                spec = body or {}
                updated = self.edit(
                    str(spec["type"]),
                    str(spec["id"]),
                    user_id=int(spec.get("userId", 7001)),
                    **dict(spec["properties"]),
                )
                return _Answer(200, {"hs_lastmodifieddate": updated})
            if (method, path) == ("POST", "/_fake/subscribe"):
                spec = body or {}
                subscription = self.subscribe(
                    str(spec["type"]), str(spec["propertyName"]), legacy=spec.get("legacy")
                )
                return _Answer(200, {"id": subscription})
            if (method, path) == ("POST", "/_fake/webhooks/deliver"):
                spec = body or {}
                # Delivered outside the lock: the receiver may call back into this fake.
                statuses = self.deliver_webhooks(
                    spec.get("url"), timestamp_ms=spec.get("timestampMs")
                )
                return _Answer(200, {"statuses": statuses})
        except (ValueError, TypeError, KeyError, HubSpotError) as exc:
            return _Answer(400, {"error": str(exc)})
        return _Answer(404, {"error": f"no control endpoint {method} {path}"})

    def _fault_from_json(self, spec: Any) -> Fault:
        if not isinstance(spec, dict):
            raise ValueError("a fault is a JSON object")
        kind = spec.get("kind")
        method = str(spec.get("method", "*"))
        times = spec.get("times", 1)
        if kind == "migration":
            retry_after = float(spec.get("retry_after", 3600))
            return self.migration_in_progress(
                str(spec.get("path", "*")), retry_after, times, method
            )
        if kind == "daily_limit":
            return self.daily_limit(times, str(spec.get("path", "*")), method)
        if kind == "locked":
            path = str(spec.get("path", "*"))
            return self.locked(path, times, method, spec.get("retry_after"))
        path = str(spec["path"])
        if kind == "fail":
            return self.fail(
                method, path, int(spec["status"]), times, spec.get("body"), spec.get("retry_after")
            )
        if kind == "slow":
            return self.slow(path, float(spec["seconds"]), times, method)
        if kind == "drop":
            return self.drop(path, times, method)
        if kind == "crash_after_commit":
            return self.crash_after_commit(path, times, method)
        raise ValueError(f"unknown fault kind {kind!r}")

    # --- routes ------------------------------------------------------------------------

    def _build_routes(self) -> list[Route]:
        objects = r"/crm/v3/objects/" + _SEG
        v4_object = r"/crm/v4/objects/" + _SEG + "/" + _SEG + "/associations/"
        v4_batch = r"/crm/v4/associations/" + _SEG + "/" + _SEG + "/batch/"
        props = r"/crm/v3/properties/" + _SEG
        pipes = r"/crm/v3/pipelines/" + _SEG
        o, a, p = "objects:", "associations:", "properties:"
        table: list[tuple[str, str, Handler, bool, str | None]] = [
            ("POST", objects + "/search", self._search, False, o + "PublicObjectSearchRequest"),
            (
                "POST",
                objects + "/batch/create",
                self._batch_create,
                True,
                o + "BatchInputSimplePublicObjectBatchInputForCreate",
            ),
            (
                "POST",
                objects + "/batch/read",
                self._batch_read,
                False,
                o + "BatchReadInputSimplePublicObjectId",
            ),
            (
                "POST",
                objects + "/batch/update",
                self._batch_update,
                True,
                o + "BatchInputSimplePublicObjectBatchInput",
            ),
            (
                "POST",
                objects + "/batch/upsert",
                self._batch_upsert,
                True,
                o + "BatchInputSimplePublicObjectBatchInputUpsert",
            ),
            (
                "POST",
                objects + "/batch/archive",
                self._batch_archive,
                True,
                o + "BatchInputSimplePublicObjectId",
            ),
            ("POST", objects, self._create, True, o + "SimplePublicObjectInputForCreate"),
            ("GET", objects, self._list, False, None),
            ("GET", objects + "/" + _SEG, self._get, False, None),
            ("PATCH", objects + "/" + _SEG, self._update, True, o + "SimplePublicObjectInput"),
            ("DELETE", objects + "/" + _SEG, self._archive, True, None),
            ("PUT", v4_object + "default/" + _SEG + "/" + _SEG, self._assoc_default, True, None),
            (
                "PUT",
                v4_object + _SEG + "/" + _SEG,
                self._assoc_labelled,
                True,
                a + "list[AssociationSpec]",
            ),
            ("DELETE", v4_object + _SEG + "/" + _SEG, self._assoc_remove, True, None),
            ("GET", v4_object + _SEG, self._assoc_list, False, None),
            (
                "POST",
                v4_batch + "create",
                self._assoc_batch_create,
                True,
                a + "BatchInputPublicAssociationMultiPost",
            ),
            (
                "POST",
                v4_batch + "associate/default",
                self._assoc_batch_default,
                True,
                a + "BatchInputPublicDefaultAssociationMultiPost",
            ),
            (
                "POST",
                v4_batch + "read",
                self._assoc_batch_read,
                False,
                a + "BatchInputPublicFetchAssociationsBatchRequest",
            ),
            (
                "POST",
                v4_batch + "archive",
                self._assoc_batch_archive,
                True,
                a + "BatchInputPublicAssociationMultiArchive",
            ),
            ("GET", props + "/groups", self._groups_list, False, None),
            ("POST", props + "/groups", self._group_create, True, p + "PropertyGroupCreate"),
            ("GET", props + "/groups/" + _SEG, self._group_get, False, None),
            ("GET", props, self._properties_list, False, None),
            ("POST", props, self._property_create, True, p + "PropertyCreate"),
            ("GET", props + "/" + _SEG, self._property_get, False, None),
            ("PATCH", props + "/" + _SEG, self._property_update, True, p + "PropertyUpdate"),
            ("GET", pipes, self._pipelines_list, False, None),
            ("GET", pipes + "/" + _SEG, self._pipeline_get, False, None),
            ("GET", pipes + "/" + _SEG + "/stages", self._pipeline_stages, False, None),
            ("GET", "/account-info/v3/details", self._account_info, False, None),
            ("GET", "/crm/v3/owners", self._owners_list, False, None),
            ("GET", "/crm/v3/owners/" + _SEG, self._owner_get, False, None),
        ]
        return [(m, re.compile(pat), h, mut, model) for m, pat, h, mut, model in table]

    # --- helpers ----------------------------------------------------------------------

    @staticmethod
    def _type(raw: str) -> str:
        object_type = _TYPE_ALIASES.get(raw.lower())
        if object_type is None:
            raise _bad_request(f"Unable to infer object type from: {raw}")
        return object_type

    def _live(self, object_type: str, object_id: int) -> _Record | None:
        record = self._records.get(object_id)
        if record is None or record.type != object_type or record.archived:
            return None
        return record

    def _unique_names(self, object_type: str) -> list[str]:
        names = [n for n, p in self._properties[object_type].items() if p.has_unique_value]
        if object_type == "contacts":
            names.insert(0, "email")
        return names

    def _lookup(self, object_type: str, raw_id: str, id_property: str | None) -> _Record | None:
        """The live object ``raw_id`` names: an object id, or a unique property's value."""
        if id_property in (None, "", "hs_object_id"):
            return self._live(object_type, int(raw_id)) if raw_id.isdigit() else None
        assert id_property is not None
        if id_property not in self._unique_names(object_type):
            raise _bad_request(
                f"{id_property} is not a unique identifier property for {object_type}"
            )
        for record in self._records.values():
            live = record.type == object_type and not record.archived
            if live and self._same(id_property, record.props.get(id_property), raw_id):
                return record
        return None

    def _public(
        self,
        record: _Record,
        requested: list[str] | None,
        *,
        all_props: bool = False,
        version: _Version | None = None,
        with_history: Iterable[str] = (),
    ) -> dict[str, Any]:
        """HubSpot's SimplePublicObject for a record (or for one of its versions), with the
        history of the ``with_history`` properties (``propertiesWithHistory``: each value
        the property had, newest first, with its timestamp and source)."""
        props = version.props if version is not None else record.props
        updated_at = version.updated_at if version is not None else record.updated_at
        if all_props:
            shown: dict[str, str | None] = dict(sorted(props.items()))
        else:
            names = (
                DEFAULT_PROPERTIES[record.type]
                if requested is None
                else [*requested, *ALWAYS_PROPERTIES[record.type]]
            )
            shown = {n: self._shown(record.type, n, props.get(n)) for n in dict.fromkeys(names)}
        body: dict[str, Any] = {
            "id": str(record.id),
            "properties": shown,
            "createdAt": record.created_at,
            "updatedAt": updated_at,
            "archived": record.archived,
        }
        if record.archived and record.archived_at:
            body["archivedAt"] = record.archived_at
        names = list(dict.fromkeys(with_history))
        if names:
            body["propertiesWithHistory"] = {
                name: [
                    {**entry, "value": self._shown(record.type, name, entry["value"])}
                    for entry in reversed(record.history.get(name, []))
                ]
                for name in names
            }
        return body

    def _shown(self, object_type: str, name: str, value: str | None) -> str | None:
        """A stored value as the API answers it: with ``datetime_answers="epoch_ms"``,
        date-time properties (not the system dates) as epoch milliseconds, as some
        HubSpot endpoints and portals answer them."""
        if value is None or self.datetime_answers != "epoch_ms" or name in SYSTEM_PROPERTIES:
            return value
        definition = self._properties[object_type].get(name)
        if definition is None or definition.type not in ("datetime", "date") or not value:
            return value
        return str(_epoch_ms(value))

    def _written(
        self, record: _Record, sent: Mapping[str, str], *, created: bool
    ) -> dict[str, Any]:
        """The object as a write answers it: what was sent, and the system's own properties.

        HubSpot's API reference shows a PATCH answering exactly the properties sent
        (``/docs/api-reference/crm-objects-v3/basic/patch-crm-v3-objects-objectType-
        objectId``) and a create answering them with the defaults it set
        (``createdate``, ``hs_object_id``, last-modified); the SDK's
        ``SimplePublicObject`` holds only these. An update adds ``hs_object_id`` and
        the last-modified date. A cleared property is echoed as ``""``. Read the
        object back (GET, batch read) for anything else.
        """
        system = ALWAYS_PROPERTIES[record.type]
        if not created:
            system = [n for n in system if n not in ("createdate", "hs_createdate")]
        body = self._public(record, None, all_props=True)
        names = dict.fromkeys([*sent, *system])
        body["properties"] = {n: record.props.get(n, "") for n in names}
        return body

    def _validate(self, object_type: str, raw: Any) -> dict[str, str]:
        """Properties as HubSpot stores them; 400 VALIDATION_ERROR for unknown or bad values."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise _bad_request("properties must be an object")
        defs = self._properties[object_type]
        problems: list[dict[str, Any]] = []
        clean: dict[str, str] = {}
        for name, value in raw.items():
            definition = defs.get(name)
            if definition is None:
                problems.append(
                    _validation_item(
                        name, f'Property "{name}" does not exist', "PROPERTY_DOESNT_EXIST"
                    )
                )
                continue
            if name in SYSTEM_PROPERTIES:
                continue
            text = _to_str(value)
            if name == "email":
                text = text.strip().lower()
            if text == "":
                clean[name] = ""
                continue
            if definition.type in ("datetime", "date"):
                normalized = _normalize_datetime(text)
                if normalized is None:
                    problems.append(
                        _validation_item(name, f"{text} was not a valid long.", "INVALID_LONG")
                    )
                    continue
                text = normalized
            if name == OWNER_PROPERTY:
                if not self._active_owner(text):
                    problems.append(
                        _validation_item(
                            name, f"{text} is not a valid owner id", "INVALID_OWNER_ID"
                        )
                    )
                    continue
                clean[name] = text
                continue
            allowed = self._allowed_options(object_type, definition)
            if allowed is not None:
                chosen = text.split(";") if definition.field_type == "checkbox" else [text]
                bad = [c for c in chosen if c not in allowed]
                if bad:
                    problems.append(
                        _validation_item(
                            name,
                            f"{bad[0]} was not one of the allowed options: [{', '.join(allowed)}]",
                            "INVALID_OPTION",
                        )
                    )
                    continue
            clean[name] = text
        if problems:
            message = "Property values were not valid: " + json.dumps(
                problems, separators=(",", ":")
            )
            raise HubSpotError(400, error_body(message, "VALIDATION_ERROR"))
        return clean

    @staticmethod
    def _allowed_options(object_type: str, definition: _PropertyDef) -> list[str] | None:
        if object_type == "deals" and definition.name == "pipeline":
            return ["default"]
        if object_type == "deals" and definition.name == "dealstage":
            return [stage for stage, *_ in DEAL_STAGES]
        if definition.type == "bool":
            return ["true", "false"]
        if definition.type == "enumeration" and definition.options:
            return [str(o["value"]) for o in definition.options]
        return None

    @staticmethod
    def _check_required(object_type: str, props: Mapping[str, str]) -> None:
        """400 VALIDATION_ERROR when a create leaves out a required property."""
        missing = [n for n in REQUIRED_ON_CREATE.get(object_type, ()) if not props.get(n)]
        if missing:
            raise _missing_required(object_type, missing)

    def _check_unique(
        self,
        object_type: str,
        props: Mapping[str, str],
        exclude: int | None = None,
        pending: Iterable[tuple[int | None, Mapping[str, str]]] = (),
    ) -> None:
        """409 CONFLICT when a unique value is taken by another live object."""
        for name in self._unique_names(object_type):
            value = props.get(name)
            if not value:
                continue
            for record in self._records.values():
                if record.type != object_type or record.archived or record.id == exclude:
                    continue
                if self._same(name, record.props.get(name), value):
                    raise self._conflict(object_type, name, value, record.id)
            for other_id, other in pending:
                clash = other_id is None or other_id != exclude
                if clash and self._same(name, other.get(name), value):
                    raise _bad_request(f"Duplicate {name} {value} in the batch input")

    def _conflict(self, object_type: str, name: str, value: str, existing: int) -> HubSpotError:
        """A taken unique value, in the shape ``conflict_shape`` picks.

        A contact's email is always HubSpot's documented 409 naming the existing
        id. For a ``hasUniqueValue`` property HubSpot's answer is not documented and
        has been seen in three shapes:

        - ``409_existing_id``: 409 CONFLICT, "... already exists. Existing ID: N";
        - ``409_no_id``: 409 CONFLICT that names no id;
        - ``400_validation``: 400 VALIDATION_ERROR, "Property values were not
          valid" with an INVALID_VALUE item "<name> already has that value". The
          words "already has that value" are what integrations match on in the
          wild (e.g. a public HubSpot backfill client's test stub answers 400
          ``propertyValue: already has that value hs_external_order_id``); the
          item's layout is HubSpot's usual ``propertyValidationResult``, our best
          reading of the whole body.
        """
        if object_type == "contacts" and name == "email":
            message = f"Contact already exists. Existing ID: {existing}"
            return HubSpotError(409, error_body(message, "CONFLICT"))
        if self.conflict_shape == "400_validation":
            text = f"{name} already has that value"
            item = _validation_item(name, text, "INVALID_VALUE")
            message = "Property values were not valid: " + json.dumps([item], separators=(",", ":"))
            return HubSpotError(
                400,
                error_body(
                    message,
                    "VALIDATION_ERROR",
                    errors=[{"message": text, "code": "INVALID_VALUE", "in": name}],
                ),
            )
        message = f"A {SINGULAR[object_type]} with {name} {value} already exists."
        if self.conflict_shape == "409_existing_id":
            message += f" Existing ID: {existing}"
        return HubSpotError(
            409, error_body(message, "CONFLICT", errors=[{"message": message, "in": name}])
        )

    def _system_props(self, record: _Record, created: bool) -> None:
        props = record.props
        props["hs_object_id"] = str(record.id)
        if created:
            props["createdate"] = record.created_at
            if record.type in ("meetings", "tasks"):
                props["hs_createdate"] = record.created_at
        props["hs_lastmodifieddate"] = record.updated_at
        if record.type == "contacts":
            props["lastmodifieddate"] = record.updated_at

    def _snapshot(self, record: _Record) -> None:
        record.versions.append(
            _Version(time.monotonic(), dict(record.props), record.updated_at, record.archived)
        )

    def _apply(self, record: _Record, props: Mapping[str, str]) -> None:
        before = dict(record.props)
        for name, value in props.items():
            if value == "":
                record.props.pop(name, None)
            else:
                record.props[name] = value
        record.updated_at = _now()
        self._system_props(record, created=False)
        self._snapshot(record)
        self._changed(record, {n: v for n, v in props.items() if before.get(n, "") != v})

    def _changed(self, record: _Record, props: Mapping[str, str]) -> None:
        """Keep each property's history and queue the webhook events its change fires.

        A write that leaves a value as it was adds no history entry (our reading:
        HubSpot's history shows changes of value).
        """
        source = self._source or {"sourceType": "INTEGRATION", "sourceId": str(self.app_id)}
        for name, value in props.items():
            if name in SYSTEM_PROPERTIES:
                continue
            entry = {"value": value, "timestamp": record.updated_at, **source}
            record.history.setdefault(name, []).append(entry)
            self._queue_events(record, name, value, source)

    def _new_record(self, object_type: str, props: Mapping[str, str]) -> _Record:
        now = _now()
        record = _Record(
            id=self._next_id,
            type=object_type,
            props={k: v for k, v in props.items() if v != ""},
            created_at=now,
            updated_at=now,
        )
        self._next_id += 1
        self._system_props(record, created=True)
        self._snapshot(record)
        self._records[record.id] = record
        self._changed(record, {n: v for n, v in props.items() if v != ""})
        return record

    def _inline_associations(
        self, object_type: str, raw: Any
    ) -> list[tuple[str, int, list[tuple[str, int]]]]:
        """Validated ``associations`` of a create: ``[(to_type, to_id, [(category, type id)])]``."""
        links: list[tuple[str, int, list[tuple[str, int]]]] = []
        for item in raw or []:
            try:
                to_id = int(str(item["to"]["id"]))
                specs = [
                    (str(t["associationCategory"]), int(t["associationTypeId"]))
                    for t in item["types"]
                ]
            except (KeyError, TypeError, ValueError) as exc:
                raise _bad_request(f"Invalid association input: {item!r}") from exc
            target = self._records.get(to_id)
            if target is None or target.archived:
                raise _bad_request(f"No object with id {to_id} exists to associate with")
            self._check_types(object_type, target.type, specs)
            links.append((target.type, to_id, specs))
        return links

    def _check_types(self, from_type: str, to_type: str, specs: list[tuple[str, int]]) -> None:
        known = ASSOCIATION_TYPES.get((from_type, to_type))
        if not specs:
            raise _bad_request("At least one association type is required")
        for category, type_id in specs:
            if category not in ("HUBSPOT_DEFINED", "USER_DEFINED", "INTEGRATOR_DEFINED"):
                raise _bad_request(f"Invalid associationCategory {category}")
            if category == "HUBSPOT_DEFINED" and (known is None or type_id not in known):
                raise _bad_request(
                    f"{type_id} is not a valid association type id from {from_type} to {to_type}"
                )

    def _link(
        self, from_type: str, from_id: int, to_type: str, to_id: int, specs: list[tuple[str, int]]
    ) -> None:
        forward = self._associations.setdefault((from_type, from_id, to_type, to_id), set())
        backward = self._associations.setdefault((to_type, to_id, from_type, from_id), set())
        for category, type_id in specs:
            forward.add((category, type_id))
            inverse = (
                INVERSE_TYPE.get(type_id, type_id) if category == "HUBSPOT_DEFINED" else type_id
            )
            backward.add((category, inverse))

    def _unlink(self, from_type: str, from_id: int, to_type: str, to_id: int) -> None:
        self._associations.pop((from_type, from_id, to_type, to_id), None)
        self._associations.pop((to_type, to_id, from_type, from_id), None)

    @staticmethod
    def _label(from_type: str, to_type: str, category: str, type_id: int) -> str | None:
        if category != "HUBSPOT_DEFINED":
            return None
        return ASSOCIATION_TYPES.get((from_type, to_type), {}).get(type_id)

    def _default_type(self, from_type: str, to_type: str) -> int:
        known = ASSOCIATION_TYPES.get((from_type, to_type))
        if not known:
            raise _bad_request(f"No default association type from {from_type} to {to_type}")
        return next(iter(known))

    @staticmethod
    def _batch_body(
        results: list[Any], errors: list[dict[str, Any]] | None = None, started: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started or _now(),
            "completedAt": _now(),
        }
        if errors:
            body["numErrors"] = len(errors)
            body["errors"] = errors
        return body

    @staticmethod
    def _inputs(body: Any) -> list[Any]:
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
            raise _bad_request("The request body must contain an inputs array")
        inputs: list[Any] = body["inputs"]
        if len(inputs) > MAX_BATCH:
            raise _bad_request(f"Batch input exceeds the maximum of {MAX_BATCH} inputs")
        return inputs

    def _not_found_error(self, object_type: str, ids: list[str]) -> dict[str, Any]:
        message = (
            f"Could not get some {SINGULAR[object_type].upper()} objects, they may be deleted "
            "or not exist. Check that ids are valid."
        )
        return standard_error("OBJECT_NOT_FOUND", message, {"ids": ids})

    def _v3_associations(self, record: _Record, to_types: list[str]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for raw in to_types:
            to_type = self._type(raw)
            items = []
            for to_id, type_ids in self.associations(record.type, record.id, to_type):
                target = self._records.get(int(to_id))
                if target is None or target.archived:
                    continue
                for type_id in type_ids:
                    base = f"{SINGULAR[record.type]}_to_{SINGULAR[to_type]}"
                    name = _V3_ASSOCIATION_NAMES.get(type_id, base)
                    if type_id in _V3_UNLABELED:
                        name = f"{base}_unlabeled"
                    items.append({"id": to_id, "type": name})
            if items:
                result[raw] = {"results": items}
        return result

    # --- objects -----------------------------------------------------------------------

    def _create(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        body = body if isinstance(body, dict) else {}
        props = self._validate(object_type, body.get("properties"))
        self._check_required(object_type, props)
        self._check_unique(object_type, props)
        links = self._inline_associations(object_type, body.get("associations"))
        record = self._new_record(object_type, props)
        for to_type, to_id, specs in links:
            self._link(object_type, record.id, to_type, to_id, specs)
        return _Answer(201, self._written(record, props, created=True))

    def _list(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        archived = _query_flag(query, "archived")
        limit = int((query.get("limit") or ["10"])[-1])
        after = int((query.get("after") or ["0"])[-1] or 0)
        requested = _split_csv(query, "properties")
        records = sorted(
            (r for r in self._records.values() if r.type == object_type and r.archived == archived),
            key=lambda r: r.id,
        )
        page = [r for r in records if r.id >= after][: max(limit, 0)]
        result: dict[str, Any] = {"results": [self._public(r, requested) for r in page]}
        rest = [r for r in records if r.id >= after][len(page) :]
        if rest:
            result["paging"] = {"next": {"after": str(rest[0].id)}}
        return _Answer(200, result)

    def _get(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        id_property = _query_value(query, "idProperty")
        if _query_flag(query, "archived"):
            record = self._records.get(int(match.group(2))) if match.group(2).isdigit() else None
            if record is None or record.type != object_type or not record.archived:
                raise _not_found()
        else:
            record = self._lookup(object_type, match.group(2), id_property)
        if record is None:
            raise _not_found()
        result = self._public(
            record,
            _split_csv(query, "properties"),
            with_history=_split_csv(query, "propertiesWithHistory") or (),
        )
        to_types = _split_csv(query, "associations")
        if to_types:
            associations = self._v3_associations(record, to_types)
            if associations:
                result["associations"] = associations
        return _Answer(200, result)

    def _update(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        id_property = _query_value(query, "idProperty")
        record = self._lookup(object_type, match.group(2), id_property)
        if record is None:
            raise _not_found()
        body = body if isinstance(body, dict) else {}
        props = self._validate(object_type, body.get("properties"))
        self._check_unique(object_type, props, exclude=record.id)
        self._apply(record, props)
        return _Answer(200, self._written(record, props, created=False))

    def _archive(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        raw = match.group(2)
        record = self._live(object_type, int(raw)) if raw.isdigit() else None
        if record is not None:
            self._archive_record(record)
        return _Answer(204)

    def _archive_record(self, record: _Record) -> None:
        record.archived = True
        record.archived_at = record.updated_at = _now()
        self._snapshot(record)

    def _batch_create(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        started = _now()
        prepared = []
        pending: list[tuple[int | None, dict[str, str]]] = []
        for item in self._inputs(body):
            item = item if isinstance(item, dict) else {}
            props = self._validate(object_type, item.get("properties"))
            self._check_required(object_type, props)
            self._check_unique(object_type, props, pending=pending)
            pending.append((None, props))
            prepared.append(
                (props, self._inline_associations(object_type, item.get("associations")))
            )
        results = []
        for props, links in prepared:
            record = self._new_record(object_type, props)
            for to_type, to_id, specs in links:
                self._link(object_type, record.id, to_type, to_id, specs)
            results.append(self._written(record, props, created=True))
        return _Answer(201, self._batch_body(results, started=started))

    def _batch_read(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        started = _now()
        inputs = self._inputs(body)
        id_property = body.get("idProperty")
        requested = body.get("properties") or None
        with_history = [str(name) for name in body.get("propertiesWithHistory") or []]
        archived = _query_flag(query, "archived")
        results, missing = [], []
        for item in inputs:
            raw = str(item.get("id", "")) if isinstance(item, dict) else ""
            if archived:
                found = self._records.get(int(raw)) if raw.isdigit() else None
                record = found if found and found.type == object_type and found.archived else None
            else:
                record = self._lookup(object_type, raw, id_property)
            if record is None:
                missing.append(raw)
            else:
                results.append(self._public(record, requested, with_history=with_history))
        errors = [self._not_found_error(object_type, missing)] if missing else None
        return _Answer(207 if missing else 200, self._batch_body(results, errors, started))

    def _batch_update(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        started = _now()
        prepared: list[tuple[_Record, dict[str, str]]] = []
        pending: list[tuple[int | None, dict[str, str]]] = []
        missing = []
        for item in self._inputs(body):
            item = item if isinstance(item, dict) else {}
            record = self._lookup(object_type, str(item.get("id", "")), item.get("idProperty"))
            if record is None:
                missing.append(str(item.get("id", "")))
                continue
            props = self._validate(object_type, item.get("properties"))
            self._check_unique(object_type, props, exclude=record.id, pending=pending)
            pending.append((record.id, props))
            prepared.append((record, props))
        results = []
        for record, props in prepared:
            self._apply(record, props)
            results.append(self._written(record, props, created=False))
        errors = [self._not_found_error(object_type, missing)] if missing else None
        return _Answer(207 if missing else 200, self._batch_body(results, errors, started))

    def _batch_upsert(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        started = _now()
        inputs = self._inputs(body)
        seen: set[tuple[str, str]] = set()
        prepared: list[tuple[_Record | None, dict[str, str]]] = []
        pending: list[tuple[int | None, dict[str, str]]] = []
        for item in inputs:
            item = item if isinstance(item, dict) else {}
            id_property = item.get("idProperty")
            key = _to_str(item.get("id"))
            if not id_property or id_property == "hs_object_id":
                raise _bad_request("Upsert requires an idProperty that has unique values")
            if id_property not in self._unique_names(object_type):
                raise _bad_request(
                    f"{id_property} is not a unique identifier property for {object_type}"
                )
            normalized_key = key.lower() if id_property == "email" else key
            if (id_property, normalized_key) in seen:
                raise _bad_request(f"Duplicate IDs found in batch input: [{key}]")
            seen.add((id_property, normalized_key))
            record = self._lookup(object_type, key, id_property)
            props = self._validate(
                object_type, {**(item.get("properties") or {}), id_property: key}
            )
            if record is None:
                self._check_required(object_type, props)
            self._check_unique(
                object_type, props, exclude=record.id if record else None, pending=pending
            )
            pending.append((record.id if record else None, props))
            prepared.append((record, props))
        results = []
        for existing, props in prepared:
            if existing is None:
                record = self._new_record(object_type, props)
            else:
                record = existing
                self._apply(record, props)
            results.append(
                {**self._written(record, props, created=existing is None), "new": existing is None}
            )
        return _Answer(200, self._batch_body(results, started=started))

    def _batch_archive(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        for item in self._inputs(body):
            raw = str(item.get("id", "")) if isinstance(item, dict) else ""
            record = self._live(object_type, int(raw)) if raw.isdigit() else None
            if record is not None:
                self._archive_record(record)
        return _Answer(204)

    # --- search ------------------------------------------------------------------------

    def _visible(self, record: _Record, now: float) -> _Version | None:
        """The version of ``record`` the search index has caught up with, if any."""
        cutoff = now - self.search_lag
        visible = None
        for index, version in enumerate(record.versions):
            if version.at <= cutoff:
                visible = index
        if visible is None:
            return None
        del record.versions[:visible]
        version = record.versions[0]
        return None if version.archived else version

    def _search(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        body = body if isinstance(body, dict) else {}
        limit = int(body.get("limit") or 10)
        if limit > MAX_SEARCH_LIMIT:
            raise _bad_request(f"limit must be at most {MAX_SEARCH_LIMIT}")
        after = int(body.get("after") or 0)
        if after + limit > MAX_SEARCH_RESULTS:
            # HubSpot documents the 400, not its text: this message is our best reading.
            raise _bad_request(
                f"Search results are limited to {MAX_SEARCH_RESULTS}: "
                f"after ({after}) + limit ({limit}) goes past it"
            )
        groups = body.get("filterGroups") or []
        if len(groups) > 5 or sum(len(g.get("filters") or []) for g in groups) > 18:
            raise _bad_request("Too many filters: at most 5 filterGroups and 18 filters in total")
        text = str(body.get("query") or "").lower()
        now = time.monotonic()
        hits: list[tuple[_Record, _Version]] = []
        for record in sorted(self._records.values(), key=lambda r: r.id):
            if record.type != object_type:
                continue
            version = self._visible(record, now)
            if version is None:
                continue
            if groups and not any(self._group_matches(g, version.props) for g in groups):
                continue
            if text and not any(text in v.lower() for v in version.props.values()):
                continue
            hits.append((record, version))
        sorts = body.get("sorts") or []
        if len(sorts) > 1:
            # HubSpot's CRM search guide: "you can only sort by one property".
            raise _bad_request("Only one sort is allowed per search request")
        for sort in sorts:
            name, descending = self._sort_spec(sort)

            def by(hit: tuple[_Record, _Version], name: str = name) -> tuple[int, float, str]:
                return self._sort_key(hit[1].props.get(name))

            hits.sort(key=by, reverse=descending)
        page = hits[after : after + limit]
        requested = body.get("properties") or None
        result: dict[str, Any] = {
            "total": len(hits),
            "results": [self._public(r, requested, version=v) for r, v in page],
        }
        if after + limit < len(hits):
            result["paging"] = {"next": {"after": str(after + limit)}}
        return _Answer(200, result)

    @staticmethod
    def _sort_spec(sort: Any) -> tuple[str, bool]:
        if isinstance(sort, str):
            return sort.lstrip("-"), sort.startswith("-")
        if isinstance(sort, dict):
            return str(sort.get("propertyName")), str(
                sort.get("direction", "")
            ).upper() == "DESCENDING"
        raise _bad_request(f"Invalid sort {sort!r}")

    @staticmethod
    def _sort_key(value: str | None) -> tuple[int, float, str]:
        """Numbers and date-times by value (a date-time as epoch ms), other text by its
        lower case; objects without the property last."""
        if value is None:
            return (1, 0.0, "")
        rank, number, text = FakeHubSpot._compare_key(value)
        return (0, number, text) if rank == 0 else (0, 0.0, text)

    def _group_matches(self, group: Any, props: Mapping[str, str]) -> bool:
        filters = group.get("filters") if isinstance(group, dict) else None
        return all(self._filter_matches(f, props) for f in filters or [])

    @staticmethod
    def _filter_matches(spec: Any, props: Mapping[str, str]) -> bool:
        if not isinstance(spec, dict) or "propertyName" not in spec or "operator" not in spec:
            raise _bad_request(f"Invalid filter {spec!r}")
        name, operator = str(spec["propertyName"]), str(spec["operator"]).upper()
        have = props.get(name)
        if name == "id":
            have = props.get("hs_object_id")
        if operator == "HAS_PROPERTY":
            return have is not None
        if operator == "NOT_HAS_PROPERTY":
            return have is None
        values = [_to_str(v).lower() for v in spec.get("values") or []]
        value = _to_str(spec.get("value")).lower()
        if operator in ("IN", "NOT_IN"):
            if not values:
                raise _bad_request(f"{operator} filters need values")
            inside = have is not None and have.lower() in values
            return inside if operator == "IN" else not inside
        if operator == "EQ":
            return have is not None and have.lower() == value
        if operator == "NEQ":
            return have is None or have.lower() != value
        if operator == "CONTAINS_TOKEN":
            return have is not None and value.strip("*") in have.lower()
        if operator == "NOT_CONTAINS_TOKEN":
            return have is None or value.strip("*") not in have.lower()
        if have is None:
            return False
        key = FakeHubSpot._compare_key
        if operator == "BETWEEN":
            high = _to_str(spec.get("highValue")).lower()
            return key(value) <= key(have) <= key(high)
        comparisons: dict[str, Callable[[Any, Any], bool]] = {
            "GT": lambda a, b: a > b,
            "GTE": lambda a, b: a >= b,
            "LT": lambda a, b: a < b,
            "LTE": lambda a, b: a <= b,
        }
        if operator not in comparisons:
            raise _bad_request(f"Unsupported operator {operator}")
        return comparisons[operator](key(have), key(value))

    @staticmethod
    def _compare_key(value: str) -> tuple[int, float, str]:
        try:
            return (0, float(value), "")
        except ValueError:
            pass
        normalized = _normalize_datetime(value) if "-" in value else None
        if normalized is not None:
            moment = datetime.fromisoformat(normalized.replace("Z", "+00:00"))
            return (0, moment.timestamp() * 1000, "")
        return (1, 0.0, value.lower())

    # --- associations v4 ------------------------------------------------------------------

    def _ends(
        self, from_raw: str, from_id: str, to_raw: str, to_id: str
    ) -> tuple[str, int, str, int]:
        from_type, to_type = self._type(from_raw), self._type(to_raw)
        for object_type, raw in ((from_type, from_id), (to_type, to_id)):
            if not raw.isdigit() or self._live(object_type, int(raw)) is None:
                raise _not_found(f"No {SINGULAR[object_type]} with id {raw} exists")
        return from_type, int(from_id), to_type, int(to_id)

    def _pair(self, from_type: str, from_id: int, to_type: str, to_id: int) -> dict[str, Any]:
        types = self._associations.get((from_type, from_id, to_type, to_id), set())
        labels = sorted(
            label
            for category, type_id in types
            if (label := self._label(from_type, to_type, category, type_id)) is not None
        )
        return {
            "fromObjectTypeId": TYPE_IDS[from_type],
            "fromObjectId": from_id,
            "toObjectTypeId": TYPE_IDS[to_type],
            "toObjectId": to_id,
            "labels": labels,
        }

    def _default_results(
        self, from_type: str, from_id: int, to_type: str, to_id: int
    ) -> list[dict[str, Any]]:
        type_id = self._default_type(from_type, to_type)
        self._link(from_type, from_id, to_type, to_id, [("HUBSPOT_DEFINED", type_id)])
        return [
            {
                "from": {"id": str(a_id)},
                "to": {"id": str(b_id)},
                "associationSpec": {
                    "associationCategory": "HUBSPOT_DEFINED",
                    "associationTypeId": t,
                },
            }
            for a_id, b_id, t in (
                (from_id, to_id, type_id),
                (to_id, from_id, INVERSE_TYPE.get(type_id, type_id)),
            )
        ]

    def _assoc_default(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        ft, fid, tt, tid = self._ends(
            match.group(1), match.group(2), match.group(3), match.group(4)
        )
        return _Answer(200, self._batch_body(self._default_results(ft, fid, tt, tid)))

    @staticmethod
    def _specs(raw: Any) -> list[tuple[str, int]]:
        if not isinstance(raw, list):
            raise _bad_request("The body must be an array of association types")
        try:
            return [(str(t["associationCategory"]), int(t["associationTypeId"])) for t in raw]
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad_request(f"Invalid association types: {raw!r}") from exc

    def _assoc_labelled(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        ft, fid, tt, tid = self._ends(
            match.group(1), match.group(2), match.group(3), match.group(4)
        )
        specs = self._specs(body)
        self._check_types(ft, tt, specs)
        self._link(ft, fid, tt, tid, specs)
        return _Answer(201, self._pair(ft, fid, tt, tid))

    def _assoc_remove(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        ft, tt = self._type(match.group(1)), self._type(match.group(3))
        if match.group(2).isdigit() and match.group(4).isdigit():
            self._unlink(ft, int(match.group(2)), tt, int(match.group(4)))
        return _Answer(204)

    def _assoc_targets(self, from_type: str, from_id: int, to_type: str) -> list[dict[str, Any]]:
        results = []
        for (a, fid, b, tid), types in sorted(self._associations.items()):
            if (a, fid, b) != (from_type, from_id, to_type) or not types:
                continue
            if self._live(to_type, tid) is None:
                continue
            results.append(
                {
                    "toObjectId": tid,
                    "associationTypes": [
                        {"category": c, "typeId": t, "label": self._label(a, b, c, t)}
                        for c, t in sorted(types, key=lambda ct: ct[1])
                    ],
                }
            )
        return results

    def _assoc_list(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        from_type, to_type = self._type(match.group(1)), self._type(match.group(3))
        raw = match.group(2)
        if not raw.isdigit() or self._live(from_type, int(raw)) is None:
            raise _not_found(f"No {SINGULAR[from_type]} with id {raw} exists")
        results = self._assoc_targets(from_type, int(raw), to_type)
        limit = int((query.get("limit") or ["500"])[-1])
        after = int((query.get("after") or ["0"])[-1] or 0)
        page = results[after : after + limit]
        answer: dict[str, Any] = {"results": page}
        if after + limit < len(results):
            answer["paging"] = {"next": {"after": str(after + limit)}}
        return _Answer(200, answer)

    def _assoc_batch_create(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        ft, tt = self._type(match.group(1)), self._type(match.group(2))
        started = _now()
        results, errors = [], []
        for item in self._inputs(body):
            try:
                from_id = str(item["from"]["id"])
                to_id = str(item["to"]["id"])
                specs = self._specs(item.get("types"))
                _, fid, _, tid = self._ends(ft, from_id, tt, to_id)
                self._check_types(ft, tt, specs)
            except (KeyError, TypeError) as exc:
                raise _bad_request(f"Invalid association input: {item!r}") from exc
            except HubSpotError as exc:
                if exc.status != 404:
                    raise
                errors.append(self._pair_error(exc, from_id, to_id))
                continue
            self._link(ft, fid, tt, tid, specs)
            results.append(self._pair(ft, fid, tt, tid))
        return _Answer(207 if errors else 201, self._batch_body(results, errors, started))

    def _assoc_batch_default(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        ft, tt = self._type(match.group(1)), self._type(match.group(2))
        started = _now()
        results, errors = [], []
        for item in self._inputs(body):
            try:
                from_id, to_id = str(item["from"]["id"]), str(item["to"]["id"])
            except (KeyError, TypeError) as exc:
                raise _bad_request(f"Invalid association input: {item!r}") from exc
            try:
                _, fid, _, tid = self._ends(ft, from_id, tt, to_id)
            except HubSpotError as exc:
                errors.append(self._pair_error(exc, from_id, to_id))
                continue
            results.extend(self._default_results(ft, fid, tt, tid))
        return _Answer(207 if errors else 200, self._batch_body(results, errors, started))

    @staticmethod
    def _pair_error(exc: HubSpotError, from_id: str, to_id: str) -> dict[str, Any]:
        """The 207 item for an association whose end does not exist or is archived."""
        context = {"fromObjectId": [from_id], "toObjectId": [to_id]}
        return standard_error("VALIDATION_ERROR", exc.body["message"], context)

    def _assoc_batch_read(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        ft, tt = self._type(match.group(1)), self._type(match.group(2))
        started = _now()
        results, missing = [], []
        for item in self._inputs(body):
            raw = str(item.get("id", "")) if isinstance(item, dict) else ""
            if raw.isdigit() and self._live(ft, int(raw)) is not None:
                results.append({"from": {"id": raw}, "to": self._assoc_targets(ft, int(raw), tt)})
            else:
                missing.append(raw)
        errors = [self._not_found_error(ft, missing)] if missing else None
        return _Answer(207 if missing else 200, self._batch_body(results, errors, started))

    def _assoc_batch_archive(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        ft, tt = self._type(match.group(1)), self._type(match.group(2))
        for item in self._inputs(body):
            try:
                from_id = int(item["from"]["id"])
                to_ids = [int(t["id"]) for t in item["to"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise _bad_request(f"Invalid association input: {item!r}") from exc
            for to_id in to_ids:
                self._unlink(ft, from_id, tt, to_id)
        return _Answer(204)

    # --- properties ---------------------------------------------------------------------

    def _properties_list(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        return _Answer(
            200, {"results": [p.public() for p in self._properties[object_type].values()]}
        )

    def _property_get(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        definition = self._properties[object_type].get(match.group(2))
        if definition is None:
            raise _not_found(f"Unable to find property {match.group(2)} for {object_type}")
        return _Answer(200, definition.public())

    def _property_create(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        if not isinstance(body, dict):
            raise _bad_request("The request body must be a property definition")
        missing = [
            k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)
        ]
        if missing:
            raise _bad_request(f"Missing required fields: {', '.join(missing)}")
        name = str(body["name"])
        if name in self._properties[object_type]:
            raise HubSpotError(
                409,
                error_body(
                    f"Property named '{name}' already exists.",
                    "OBJECT_ALREADY_EXISTS",
                    subCategory="PropertyValidationResult.PROPERTY_EXISTS",
                ),
            )
        if body["type"] not in _VALID_TYPES:
            raise _bad_request(f"Invalid property type {body['type']}")
        if body["groupName"] not in self._groups[object_type]:
            raise _bad_request(f"Property group {body['groupName']} does not exist")
        options = [
            _option(
                str(o.get("value")),
                str(o.get("label", o.get("value"))),
                int(o.get("displayOrder", i)),
            )
            for i, o in enumerate(body.get("options") or [])
        ]
        definition = _PropertyDef(
            name=name,
            label=str(body["label"]),
            type=str(body["type"]),
            field_type=str(body["fieldType"]),
            group_name=str(body["groupName"]),
            description=str(body.get("description") or ""),
            options=options,
            has_unique_value=bool(body.get("hasUniqueValue")),
            hubspot_defined=False,
            display_order=int(body.get("displayOrder", -1)),
        )
        self._properties[object_type][name] = definition
        return _Answer(201, definition.public())

    def _property_update(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        definition = self._properties[object_type].get(match.group(2))
        if definition is None:
            raise _not_found(f"Unable to find property {match.group(2)} for {object_type}")
        body = body if isinstance(body, dict) else {}
        for key, attr in (
            ("label", "label"),
            ("description", "description"),
            ("groupName", "group_name"),
        ):
            if key in body:
                setattr(definition, attr, str(body[key]))
        if "options" in body:
            definition.options = [
                _option(str(o.get("value")), str(o.get("label", o.get("value"))), i)
                for i, o in enumerate(body["options"] or [])
            ]
        definition.updated_at = _now()
        return _Answer(200, definition.public())

    def _groups_list(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        return _Answer(200, {"results": list(self._groups[object_type].values())})

    def _group_get(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        group = self._groups[object_type].get(match.group(2))
        if group is None:
            raise _not_found(f"Unable to find property group {match.group(2)} for {object_type}")
        return _Answer(200, group)

    def _group_create(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        object_type = self._type(match.group(1))
        if not isinstance(body, dict) or not body.get("name") or not body.get("label"):
            raise _bad_request("A property group needs a name and a label")
        name = str(body["name"])
        if name in self._groups[object_type]:
            raise HubSpotError(
                409,
                error_body(
                    f"A property group named '{name}' already exists.", "OBJECT_ALREADY_EXISTS"
                ),
            )
        group = {
            "name": name,
            "label": str(body["label"]),
            "displayOrder": int(body.get("displayOrder", -1)),
            "archived": False,
        }
        self._groups[object_type][name] = group
        return _Answer(201, group)

    # --- pipelines ------------------------------------------------------------------------

    @staticmethod
    def _pipeline() -> dict[str, Any]:
        created = "2020-01-01T00:00:00.000Z"
        stages = [
            {
                "id": stage_id,
                "label": label,
                "displayOrder": order,
                "metadata": {"isClosed": "true" if closed else "false", "probability": probability},
                "createdAt": created,
                "updatedAt": created,
                "archived": False,
                "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
            }
            for order, (stage_id, label, probability, closed) in enumerate(DEAL_STAGES)
        ]
        return {
            "id": "default",
            "label": "Sales Pipeline",
            "displayOrder": 0,
            "stages": stages,
            "createdAt": created,
            "updatedAt": created,
            "archived": False,
        }

    def _pipelines_for(self, raw: str) -> list[dict[str, Any]]:
        return [self._pipeline()] if self._type(raw) == "deals" else []

    def _pipelines_list(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        return _Answer(200, {"results": self._pipelines_for(match.group(1))})

    def _pipeline_get(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        for pipeline in self._pipelines_for(match.group(1)):
            if pipeline["id"] == match.group(2):
                return _Answer(200, pipeline)
        raise _not_found(f"Unable to find pipeline {match.group(2)}")

    def _pipeline_stages(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        for pipeline in self._pipelines_for(match.group(1)):
            if pipeline["id"] == match.group(2):
                return _Answer(200, {"results": pipeline["stages"]})
        raise _not_found(f"Unable to find pipeline {match.group(2)}")

    def _account_info(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        offset = datetime.now(ZoneInfo(self.time_zone)).utcoffset() or timedelta(0)
        millis = int(offset.total_seconds() * 1000)
        sign, minutes = ("-" if millis < 0 else "+"), abs(millis) // 60_000
        return _Answer(
            200,
            {
                "portalId": PORTAL_ID,
                "accountType": "STANDARD",
                "timeZone": self.time_zone,
                "companyCurrency": "USD",
                "additionalCurrencies": [],
                "utcOffset": f"{sign}{minutes // 60:02d}:{minutes % 60:02d}",
                "utcOffsetMilliseconds": millis,
                "uiDomain": self.ui_domain,
                "dataHostingLocation": self.data_hosting_location,
            },
        )

    # --- owners ------------------------------------------------------------------------

    def _active_owner(self, owner_id: str) -> bool:
        owner = self._owners.get(owner_id)
        return owner is not None and not owner["archived"]

    def _owners_list(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        email = _query_value(query, "email")
        archived = _query_flag(query, "archived")
        raw_limit = _query_value(query, "limit") or "100"
        raw_after = _query_value(query, "after") or "0"
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
            raise _bad_request(f"limit must be between 1 and 500, not {raw_limit}")
        if not raw_after.isdigit():
            raise _bad_request(f"after must be a paging cursor, not {raw_after}")
        limit, after = int(raw_limit), int(raw_after)
        matching = [
            owner
            for owner in self._owners.values()
            if owner["archived"] == archived
            and (email is None or owner["email"].lower() == email.strip().lower())
        ]
        page = matching[after : after + limit]
        answer: dict[str, Any] = {"results": page}
        if after + limit < len(matching):
            following = str(after + limit)
            answer["paging"] = {
                "next": {
                    "after": following,
                    "link": f"{self.url}/crm/v3/owners/?after={following}&limit={limit}",
                }
            }
        return _Answer(200, answer)

    def _owner_get(self, match: re.Match[str], query: Query, body: Any) -> _Answer:
        owner = self._owners.get(match.group(1))
        if owner is None or owner["archived"] != _query_flag(query, "archived"):
            raise _not_found(f"Owner {match.group(1)} not found")
        return _Answer(200, owner)


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.fakes.hubspot --port N [--state-file F]``: serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--state-file", help="load state from here and rewrite it after each write")
    parser.add_argument("--token", default="fake-hubspot-token", help="'' disables auth")
    parser.add_argument("--search-lag", type=float, default=2.0, help="seconds; 0 disables")
    parser.add_argument("--rate-limit", type=int, default=100, help="0 disables")
    parser.add_argument("--rate-window", type=float, default=10.0)
    parser.add_argument("--search-rate-limit", type=int, default=4, help="0 disables")
    parser.add_argument("--conflict-shape", choices=CONFLICT_SHAPES, default="409_existing_id")
    parser.add_argument("--daily-limit", type=int, default=0, help="requests per day; 0: none")
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds added to every API request"
    )
    parser.add_argument("--client-secret", default=CLIENT_SECRET, help="signs webhooks")
    parser.add_argument("--webhook-url", default=None, help="where webhooks are delivered")
    args = parser.parse_args(argv)
    fake = FakeHubSpot(
        token=args.token or None,
        port=args.port,
        search_lag=args.search_lag,
        rate_limit=args.rate_limit or None,
        rate_window=args.rate_window,
        search_rate_limit=args.search_rate_limit or None,
        conflict_shape=args.conflict_shape,
        daily_limit=args.daily_limit or None,
        state_file=args.state_file,
        client_secret=args.client_secret,
        webhook_url=args.webhook_url,
    )
    if args.latency > 0:  # a CRM with realistic latency (benchmarks): a permanent "slow" fault
        for api in ("/crm/*", "/account-info/*"):  # HubSpot's API; not the fake's controls
            fake.slow(api, args.latency, times=None)
    stopping = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    url = fake.start()
    print(f"FAKE_HUBSPOT_READY {url}", flush=True)
    try:
        while not stopping.wait(0.2):
            pass
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
