"""``HubSpotApi``: every call to the HubSpot SDK, with budget, timeout, retries and one error map.

The SDK (``hubspot-api-client``) is used through its generated API classes,
built once per client (each ``client.crm...`` access would otherwise open a new
connection pool). Every call:

1. takes a slot from the portal's request budget, or a search call from the
   4-per-second search budget alone (HubSpot exempts search from the
   ten-second limit): the worker's ``DatabaseWindow``, shared by every process
   on the database, or a process-wide ``RollingWindow``. While the portal is
   paused the budget raises ``PausedError`` at once and nothing is sent;
2. runs with a timeout (the SDK sets none), and the answer's
   ``X-HubSpot-RateLimit-Max``/``-Remaining`` headers are ``observe``d by the
   budget (its real limit; a hold when other apps nearly spent the interval);
3. has its failure translated by ``translate_error`` — the only place that
   looks at SDK or urllib3 exceptions — into the adapter's error tree::

       RetryableError          5xx, 423 (2 s at least), timeouts, dropped connections
       ├── HubSpotUnreachable  no connection made: the request was certainly not applied
       ├── RateLimitedError    429 (``retry_after`` from Retry-After or the interval header)
       ├── HubSpotPaused       477 until its Retry-After; a DAILY 429 until the next reset:
       │                       the portal's budgets are paused, the worker waits uncounted
       └── HubSpotAuthError    401/403: the token; retried by the outbox, not here
       CrmValidationError      400/422: HubSpot's message kept; dead-letter
       PermanentError          other 4xx
       ├── HubSpotConflict     a unique value is taken: 409 (with or without the
       │                       existing id) or 400 "already has that value"
       └── HubSpotNotFound     404

4. is retried with tenacity (exponential backoff with jitter; after a 429 the
   shared budget is held for ``Retry-After``, else the rate-limit interval
   header, so every thread honours it) while the error is retryable, at most ``max_attempts``
   times; then the ``RetryableError`` propagates and the outbox retries later.

The urllib3 retry inside the SDK is switched off (it does not retry POSTs, and
two retry layers multiply), so tenacity is the only one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import urllib3
from hubspot import HubSpot
from hubspot.crm.associations.v4 import (
    AssociationSpec,
    BatchInputPublicAssociationMultiPost,
    PublicAssociationMultiPost,
)
from hubspot.crm.associations.v4 import PublicObjectId as AssociationObjectId
from hubspot.crm.associations.v4.exceptions import ApiException as AssociationsApiException
from hubspot.crm.objects import AssociationSpec as ObjectAssociationSpec
from hubspot.crm.objects import (
    BatchInputSimplePublicObjectBatchInput,
    BatchInputSimplePublicObjectBatchInputForCreate,
    BatchInputSimplePublicObjectBatchInputUpsert,
    BatchReadInputSimplePublicObjectId,
    Filter,
    FilterGroup,
    PublicAssociationsForObject,
    PublicObjectId,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInput,
    SimplePublicObjectBatchInputForCreate,
    SimplePublicObjectBatchInputUpsert,
    SimplePublicObjectId,
    SimplePublicObjectInput,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.objects.exceptions import ApiException as ObjectsApiException
from hubspot.crm.pipelines.exceptions import ApiException as PipelinesApiException
from hubspot.crm.properties import PropertyCreate, PropertyGroupCreate
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from adapter.backends.base import Pause
from adapter.backends.hubspot.budget import Budget, Sleep, portal_budget_name, shared_budget
from adapter.errors import (
    AdapterError,
    CrmValidationError,
    PausedError,
    PermanentError,
    RateLimitedError,
    RetryableError,
)

HUBSPOT_DEFINED = "HUBSPOT_DEFINED"
MAX_BATCH = 100
"""HubSpot's batch endpoints take at most 100 inputs."""
HISTORY_BATCH = 50
"""Objects per read with ``propertiesWithHistory``."""
LAST_MODIFIED = "hs_lastmodifieddate"
MAX_SEARCH_RESULTS = 10_000
"""HubSpot's search pages through at most this many results of one query."""
RATE_LIMIT_PAUSE = 1.0
"""Seconds every thread pauses after a 429 that carries no hint."""
SEARCH_LIMIT = (4, 1.0)
"""HubSpot's search endpoints allow 5 requests per second per account, shared with other
apps and exempt from the ten-second limit; we keep to 4."""
DAILY_LIMIT_REASON = "daily API limit reached"
LOCK_SECONDS = 2.0
"""HubSpot's 423 locks last 2 seconds; wait at least that long before trying again."""
MIGRATION_PAUSE = 600.0
"""Seconds to pause after a 477 that names no Retry-After (HubSpot documents one)."""

_API_EXCEPTIONS: tuple[type[Exception], ...] = (
    ObjectsApiException,
    AssociationsApiException,
    PropertiesApiException,
    PipelinesApiException,
)
_EXISTING_ID = re.compile(r"(?i)existing(?:\s+object)?\s+id\s*[:=]?\s*(\d+)")
_UNIQUE_CLASH = re.compile(
    r"(?i)already\s+ha(?:s|ve)\s+(?:that|this)\s+value|already\s+exists|must\s+be\s+unique"
)
"""A 400 that refuses a unique value someone else holds: HubSpot words it
"<property> already has that value" for custom unique properties (seen in the
wild, not documented), so any such wording is read as a conflict, never as bad data."""


class HubSpotAuthError(RetryableError):
    """HubSpot refused the token (401/403): fix ``HUBSPOT_ACCESS_TOKEN``; events wait."""


class HubSpotUnreachable(RetryableError):
    """No connection was made: the request certainly did not reach HubSpot."""


class HubSpotConflict(PermanentError):
    """409: the object already exists; ``existing_id`` when HubSpot's message names it."""

    def __init__(self, message: str, existing_id: str | None) -> None:
        super().__init__(message)
        self.existing_id = existing_id


class HubSpotNotFound(PermanentError):
    """404: the object (or endpoint) does not exist."""


class HubSpotPaused(PausedError):
    """477 (account migration) or a spent daily limit: every call waits until ``until``."""


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    lowered = name.lower()
    for key, value in dict(headers).items():
        if str(key).lower() == lowered:
            return str(value)
    return None


def _message(body: Any) -> str:
    """HubSpot's own error message from a JSON error body, else the body itself."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return ""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return str(body)[:500]
    if isinstance(data, dict):
        message = str(data.get("message") or data)
        details = data.get("errors")
        if isinstance(details, list) and details:
            extra = "; ".join(str(d.get("message", d)) for d in details if isinstance(d, dict))
            if extra and extra not in message:
                message = f"{message} ({extra})"
        context = data.get("context")
        if isinstance(context, dict) and context:
            # e.g. the required properties a create left out: {"properties": ["dealstage"]}
            named = "; ".join(
                f"{key}: {', '.join(map(str, value)) if isinstance(value, list) else value}"
                for key, value in context.items()
            )
            message = f"{message} [{named}]"
        return message
    return str(data)[:500]


def _policy(body: Any) -> str | None:
    """``policyName`` of a 429 body: ``DAILY``, ``SECONDLY`` or ``TEN_SECONDLY_ROLLING``."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body) if body else None
    except (TypeError, ValueError):
        return None
    policy = data.get("policyName") if isinstance(data, dict) else None
    return str(policy).upper() if policy else None


def _retry_at(headers: Any, now: datetime) -> datetime | None:
    """``Retry-After`` as a moment: seconds (a 477's may be hours) or an HTTP-date."""
    raw = _header(headers, "Retry-After")
    if raw is None:
        return None
    try:
        return now + timedelta(seconds=max(float(raw), 0.0))
    except ValueError:
        pass
    try:
        at = parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def next_daily_reset(now: datetime, time_zone: tzinfo = UTC) -> datetime:
    """The next midnight in the account's ``time_zone``, when HubSpot's daily limit resets (UTC)."""
    local = now.astimezone(time_zone)
    midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), time_zone)
    return midnight.astimezone(UTC)


def _retry_after(headers: Any) -> float | None:
    for name, scale in (
        ("Retry-After", 1.0),
        ("X-HubSpot-RateLimit-Interval-Milliseconds", 0.001),
    ):
        raw = _header(headers, name)
        if raw is None:
            continue
        try:
            return max(float(raw) * scale, 0.0)
        except ValueError:
            continue
    return None


def translate_error(
    exc: BaseException,
    action: str = "HubSpot call",
    *,
    time_zone: tzinfo = UTC,
    now: datetime | None = None,
) -> AdapterError:
    """The adapter error for an SDK or urllib3 failure: the one place that decides.

    ``time_zone`` is the account's: its daily limit resets at midnight there.
    """
    if isinstance(exc, AdapterError):
        return exc
    error: AdapterError
    if isinstance(exc, _API_EXCEPTIONS):
        status = int(getattr(exc, "status", 0) or 0)
        headers = getattr(exc, "headers", None)
        body = getattr(exc, "body", None)
        message = _message(body) or str(getattr(exc, "reason", "")) or ""
        text = f"{action}: HubSpot answered {status}: {message}".rstrip(": ")
        now = now or datetime.now(UTC)
        retry_at = _retry_at(headers, now)
        hinted = max((retry_at - now).total_seconds(), 0.0) if retry_at else None
        if status == 0:
            error = RetryableError(f"{action}: {getattr(exc, 'reason', exc)}")
        elif status == 429 and _policy(body) == "DAILY":
            until = next_daily_reset(now, time_zone)
            error = HubSpotPaused(text, until=until, reason=DAILY_LIMIT_REASON)
        elif status == 429 and _policy(body) == "SECONDLY":
            # The search limit: a second's window, whatever the ten-second interval header says.
            error = RateLimitedError(text, retry_after=hinted or 1.0)
        elif status == 429:
            error = RateLimitedError(text, retry_after=_retry_after(headers))
        elif status == 477:
            until = retry_at or now + timedelta(seconds=MIGRATION_PAUSE)
            error = HubSpotPaused(text, until=until, reason="HubSpot account migration in progress")
        elif status in (401, 403):
            error = HubSpotAuthError(text)
        elif status == 409:
            match = _EXISTING_ID.search(message)
            error = HubSpotConflict(text, match.group(1) if match else None)
        elif status == 404:
            error = HubSpotNotFound(text)
        elif status in (400, 422) and _UNIQUE_CLASH.search(message):
            error = HubSpotConflict(text, None)
        elif status in (400, 422):
            error = CrmValidationError(text)
        elif status == 423:
            error = RetryableError(text, retry_after=max(hinted or 0.0, LOCK_SECONDS))
        elif status == 408 or status >= 500:
            error = RetryableError(text, retry_after=hinted)
        else:
            error = PermanentError(text)
    elif isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        reason = getattr(exc, "reason", exc)
        detail = f"{action}: HubSpot unreachable: {type(reason).__name__}: {reason}"
        if isinstance(reason, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
            error = HubSpotUnreachable(detail)
        else:
            error = RetryableError(detail)
    elif isinstance(exc, ValueError | TypeError):
        # The SDK's models refuse a response that lacks required fields.
        error = PermanentError(f"{action}: unexpected HubSpot response: {exc}")
    else:
        error = PermanentError(f"{action}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _retried_here(exc: BaseException) -> bool:
    # A pause may last hours: the outbox waits it out, not a thread here.
    return isinstance(exc, RetryableError) and not isinstance(exc, HubSpotAuthError | PausedError)


def _not_applied(exc: BaseException) -> bool:
    """Retryable, and HubSpot certainly did not apply the request (safe to send again)."""
    return isinstance(exc, RateLimitedError | HubSpotUnreachable)


def _send(
    fn: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any], timeout: Any
) -> tuple[Any, Any]:
    """Call ``fn``; its result and the answer's headers, via the SDK's ``*_with_http_info``
    twin (same request, but the headers are kept) when ``fn`` has one."""
    owner = getattr(fn, "__self__", None)
    with_info = getattr(owner, f"{getattr(fn, '__name__', '')}_with_http_info", None)
    if with_info is None:
        return fn(*args, _request_timeout=timeout, **kwargs), None
    result, _status, headers = with_info(
        *args, _request_timeout=timeout, _return_http_data_only=False, **kwargs
    )
    return result, headers


def _observe(budget: Budget, headers: Any) -> None:
    """Let ``budget`` follow HubSpot's ``X-HubSpot-RateLimit-*`` headers, when present."""
    try:
        maximum = int(_header(headers, "X-HubSpot-RateLimit-Max") or "")
        remaining = int(_header(headers, "X-HubSpot-RateLimit-Remaining") or "")
    except ValueError:
        return
    interval = _header(headers, "X-HubSpot-RateLimit-Interval-Milliseconds")
    try:
        seconds = float(interval) / 1000 if interval else 10.0
    except ValueError:
        seconds = 10.0
    budget.observe(maximum, remaining, seconds)


_T = TypeVar("_T")
log = logging.getLogger(__name__)


def _fold(id_property: str, value: str) -> str:
    """A unique value as HubSpot compares it (emails case-insensitively)."""
    return value.lower() if id_property == "email" else value


def chunks(items: Sequence[_T], size: int = MAX_BATCH) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _links(associations: Iterable[tuple[str, int]]) -> list[Any]:
    return [
        PublicAssociationsForObject(
            to=PublicObjectId(id=to_id),
            types=[
                ObjectAssociationSpec(
                    association_category=HUBSPOT_DEFINED, association_type_id=type_id
                )
            ],
        )
        for to_id, type_id in associations
    ]


_NOT_FOUND_WORDING = re.compile(r"(?i)not\s+found|do(?:es)?\s+not\s+exist|may\s+be\s+deleted")


@dataclass(frozen=True)
class BatchErrors:
    """What a 207 Multi-Status answer's ``errors`` said: ids HubSpot does not hold
    (``OBJECT_NOT_FOUND``), and every other failure's message."""

    missing: set[str] = field(default_factory=set)
    other: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, response: Any) -> BatchErrors:
        found = cls()
        for error in getattr(response, "errors", None) or []:
            category = str(getattr(error, "category", "") or "")
            message = str(getattr(error, "message", "") or category or error)
            context = getattr(error, "context", None) or {}
            ids = {str(v) for values in context.values() for v in (values or [])}
            if category == "OBJECT_NOT_FOUND" or (ids and _NOT_FOUND_WORDING.search(message)):
                found.missing.update(ids)
            else:
                found.other.append(message)
        return found

    def raise_other(self, action: str) -> None:
        """Failures other than missing ids: retried (the whole job is idempotent)."""
        if self.other:
            raise RetryableError(
                f"{action}: HubSpot answered 207 with errors: {'; '.join(self.other)}"
            )


def _revision(entry: Any) -> Revision:
    timestamp = getattr(entry, "timestamp", None)
    if not isinstance(timestamp, datetime):
        timestamp = datetime.fromisoformat(str(timestamp).replace("Z", "+00:00"))
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    source_id = getattr(entry, "source_id", None)
    return Revision(
        value=str(getattr(entry, "value", "") or ""),
        timestamp=timestamp,
        source_type=str(getattr(entry, "source_type", "") or ""),
        source_id=None if source_id is None else str(source_id),
    )


@dataclass(frozen=True)
class PropertyDefinition:
    """A CRM property as the portal defines it (what a mapping may write to it)."""

    name: str
    type: str  # string, number, date, datetime, enumeration, bool, phone_number
    field_type: str  # text, select, checkbox (multi-select), booleancheckbox, ...
    options: tuple[str, ...]  # an enumeration's allowed values
    unique: bool
    read_only: bool


@dataclass(frozen=True)
class Revision:
    """One value a property had (``propertiesWithHistory``): when, and who set it."""

    value: str
    timestamp: datetime
    source_type: str  # CRM_UI, INTEGRATION, API, IMPORT, ...
    source_id: str | None  # "userId:123" for a person, the app's id for an app


@dataclass(frozen=True)
class Found:
    """An object as HubSpot returned it: its id and the properties asked for, and the
    history of those asked for with history (newest first)."""

    id: str
    properties: Mapping[str, str | None]
    history: Mapping[str, Sequence[Revision]] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchPage:
    """One page of a search: the objects, and ``after`` for the next page (``None``: last)."""

    results: list[Found]
    after: str | None
    total: int


@dataclass(frozen=True)
class Owner:
    """A HubSpot owner: its id (the value of ``hubspot_owner_id``) and email, lower-cased."""

    id: str
    email: str


class HubSpotApi:
    """The HubSpot calls the backend and ``hubspot setup`` make; see the module docstring."""

    def __init__(
        self,
        sdk: Any,
        *,
        budget: Budget,
        search_budget: Budget,
        timeout: float = 15.0,
        max_attempts: int = 5,
        backoff_max: float = 30.0,
        sleep: Sleep = time.sleep,
        on_call: Callable[[str], None] | None = None,
        time_zone: tzinfo | str = UTC,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._on_call = on_call
        self._wall = wall
        self.time_zone: tzinfo = ZoneInfo(time_zone) if isinstance(time_zone, str) else time_zone
        """The account's time zone: its daily limit resets at midnight there."""
        self._budget = budget
        self._search_budget = search_budget
        self._timeout = (min(5.0, timeout), timeout)
        self._max_attempts = max_attempts
        self._backoff = wait_random_exponential(multiplier=0.5, max=backoff_max)
        self._backoff_max = backoff_max
        self._sleep = sleep
        crm = sdk.crm
        self._basic = crm.objects.basic_api
        self._batch = crm.objects.batch_api
        self._search = crm.objects.search_api
        self._assoc_batch = crm.associations.v4.batch_api
        self._assoc_basic = crm.associations.v4.basic_api
        self._properties = crm.properties.core_api
        self._groups = crm.properties.groups_api
        self._pipelines = crm.pipelines.pipelines_api
        self._owners = crm.owners.owners_api
        self.calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self.round_trip: float | None = None
        """Seconds HubSpot took to answer recent calls (moving average; ``None``: no call yet)."""

    # --- plumbing ---------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff: float = self._backoff(state)
        if isinstance(exc, RateLimitedError):
            # The budget is held for HubSpot's hint (every thread waits on it);
            # only spread the retries out.
            return random.uniform(0, 0.25)
        if isinstance(exc, RetryableError) and exc.retry_after:
            # A longer hint (a 503's hour) is the outbox's to wait, not this thread's.
            return max(backoff, min(exc.retry_after, self._backoff_max))
        return backoff

    def _call(
        self,
        name: str,
        fn: Callable[..., Any],
        *args: Any,
        idempotent: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Run one SDK call under the budget, with timeout and retries.

        A call that is not ``idempotent`` (a create) is retried here only when
        HubSpot certainly did not apply it (429, no connection): after a timeout
        or a dropped answer it may have, and a second create would duplicate.
        """
        # Search has a budget of its own and is exempt from the ten-second one.
        search = name.startswith("search")
        budget = self._search_budget if search else self._budget

        def attempt() -> Any:
            budget.acquire()  # while the portal is paused: PausedError, nothing sent
            with self._calls_lock:
                self.calls[name] += 1
            sent = time.monotonic()
            try:
                result, headers = _send(fn, args, kwargs, self._timeout)
            except Exception as exc:
                error = translate_error(exc, name, time_zone=self.time_zone, now=self._wall())
                self._report(str(getattr(exc, "status", None) or type(error).__name__))
                if not search:
                    _observe(budget, getattr(exc, "headers", None))
                if isinstance(error, PausedError):
                    for paused in (self._budget, self._search_budget):
                        paused.pause(error.until, error.reason)
                elif isinstance(error, RateLimitedError):
                    budget.hold(error.retry_after or RATE_LIMIT_PAUSE)
                raise error from exc
            self._report("ok")
            self._timed(time.monotonic() - sent)
            if not search:
                _observe(budget, headers)
            if _header(headers, "X-HubSpot-RateLimit-Daily-Remaining") == "0":
                # That was the day's last request: pause now rather than meet the 429.
                until = next_daily_reset(self._wall(), self.time_zone)
                for paused in (self._budget, self._search_budget):
                    paused.pause(until, DAILY_LIMIT_REASON)
            return result

        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception(_retried_here if idempotent else _not_applied),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(attempt)

    def _timed(self, seconds: float) -> None:
        last = self.round_trip
        self.round_trip = seconds if last is None else 0.7 * last + 0.3 * seconds

    def paused(self) -> Pause | None:
        """The portal's pause in force (477, daily limit), as every process sees it."""
        return self._budget.paused()

    def use_time_zone(self, name: str) -> None:
        """Take the account's time zone (its account info's ``timeZone``), where its daily
        limit resets; a name this machine does not know keeps the one in use."""
        try:
            self.time_zone = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            log.warning(
                "unknown HubSpot account time zone %r; daily resets stay in %s",
                name,
                self.time_zone,
            )

    def _report(self, status: str) -> None:
        if self._on_call is not None:
            self._on_call(status)

    def close(self) -> None:
        """Close every connection pool the SDK opened."""
        for api in (
            self._basic,
            self._batch,
            self._search,
            self._assoc_batch,
            self._assoc_basic,
            self._properties,
            self._groups,
            self._pipelines,
        ):
            client = api.api_client
            client.rest_client.pool_manager.clear()
            client.close()

    # --- objects ----------------------------------------------------------

    def upsert(
        self, object_type: str, id_property: str, items: Sequence[tuple[str, Mapping[str, str]]]
    ) -> dict[str, str]:
        """Batch upsert by a unique property (100 per call); returns each key's HubSpot id.

        Keys must be distinct. A unique-value conflict (a concurrent writer created
        the same key, in any of HubSpot's shapes) is resolved by reading the objects
        by ``id_property`` and updating them by id; keys HubSpot answers no id for
        (207) are retried with the job.
        """
        ids: dict[str, str] = {}
        for chunk in chunks(items):
            ids.update(self._upsert(object_type, id_property, chunk))
        return ids

    def _upsert(
        self,
        object_type: str,
        id_property: str,
        items: Sequence[tuple[str, Mapping[str, str]]],
        *,
        resolving: bool = False,
    ) -> dict[str, str]:
        inputs = [
            SimplePublicObjectBatchInputUpsert(
                id_property=id_property, id=key, properties={**props, id_property: key}
            )
            for key, props in items
        ]
        action = f"upsert {object_type}"
        try:
            response = self._call(
                action,
                self._batch.upsert,
                object_type,
                BatchInputSimplePublicObjectBatchInputUpsert(inputs=inputs),
            )
        except HubSpotConflict as conflict:
            if resolving:
                raise RetryableError(f"{conflict}; still conflicting after a read") from conflict
            return self._resolve_conflict(object_type, id_property, items, conflict)
        ids: dict[str, str] = {}
        keys = {_fold(id_property, key): key for key, _ in items}
        for result in response.results or []:
            value = (result.properties or {}).get(id_property)
            key = keys.get(_fold(id_property, str(value))) if value is not None else None
            if key is None and len(items) == 1:
                key = items[0][0]
            if key is not None:
                ids[key] = str(result.id)
        errors = BatchErrors.of(response)
        missing = [key for key, _ in items if key not in ids]
        if missing:
            detail = f": {'; '.join(errors.other)}" if errors.other else ""
            raise RetryableError(f"{action}: no id returned for {missing}{detail}")
        return ids

    def _resolve_conflict(
        self,
        object_type: str,
        id_property: str,
        items: Sequence[tuple[str, Mapping[str, str]]],
        conflict: HubSpotConflict,
    ) -> dict[str, str]:
        """Ids for ``items`` after HubSpot refused a unique value: the objects that hold
        them are read by ``id_property`` and updated by id; the rest upserted once more."""
        log.info("%s; reading %d key(s) by %s", conflict, len(items), id_property)
        found = self.read_by_unique(object_type, id_property, [key for key, _ in items])
        ids = {key: hit.id for key, hit in found.items()}
        gone = self.batch_update(
            object_type, [(ids[key], props) for key, props in items if key in ids]
        )
        if gone:
            raise RetryableError(f"upsert {object_type}: {sorted(gone)} vanished while resolved")
        rest = [(key, props) for key, props in items if key not in ids]
        if rest:
            ids.update(self._upsert(object_type, id_property, rest, resolving=True))
        return ids

    def read_by_unique(
        self,
        object_type: str,
        id_property: str,
        values: Sequence[str],
        properties: Sequence[str] = (),
    ) -> dict[str, Found]:
        """The live objects whose unique ``id_property`` holds each of ``values``
        (batch read with ``idProperty``; values HubSpot does not hold are absent)."""
        wanted = {_fold(id_property, value): value for value in values}
        found: dict[str, Found] = {}
        for chunk in chunks(list(wanted.values())):
            response = self._call(
                f"batch read {object_type}",
                self._batch.read,
                object_type,
                BatchReadInputSimplePublicObjectId(
                    inputs=[SimplePublicObjectId(id=value) for value in chunk],
                    id_property=id_property,
                    properties=[id_property, *properties],
                    properties_with_history=[],
                ),
                archived=False,
            )
            BatchErrors.of(response).raise_other(f"batch read {object_type}")
            for result in response.results or []:
                props = dict(result.properties or {})
                value = wanted.get(_fold(id_property, str(props.get(id_property))))
                if value is not None:
                    found[value] = Found(str(result.id), props)
        return found

    def create(
        self,
        object_type: str,
        properties: Mapping[str, str],
        associations: Iterable[tuple[str, int]] = (),
        *,
        unique: bool = False,
    ) -> str:
        """Create one object, associated on creation; returns its id.

        ``unique``: the properties hold a unique-value key, so HubSpot refuses a
        second copy (409) and the create may be retried like any idempotent call.
        """
        links = _links(associations)
        created = self._call(
            f"create {object_type}",
            self._basic.create,
            object_type,
            SimplePublicObjectInputForCreate(properties=dict(properties), associations=links),
            idempotent=unique,
        )
        return str(created.id)

    def batch_create(
        self,
        object_type: str,
        key_property: str,
        items: Sequence[tuple[Mapping[str, str], Sequence[tuple[str, int]]]],
        *,
        unique: bool = False,
    ) -> dict[str, str]:
        """Create objects (100 per call), associated on creation; returns key -> id.

        Each item's ``key_property`` value identifies it in HubSpot's answer.
        Like ``create``, never retried after an answer that may have been lost,
        unless ``key_property`` has unique values (``unique``).
        """
        ids: dict[str, str] = {}
        for chunk in chunks(items):
            inputs = [
                SimplePublicObjectBatchInputForCreate(
                    properties=dict(props), associations=_links(links)
                )
                for props, links in chunk
            ]
            response = self._call(
                f"batch create {object_type}",
                self._batch.create,
                object_type,
                BatchInputSimplePublicObjectBatchInputForCreate(inputs=inputs),
                idempotent=unique,
            )
            for result in response.results or []:
                key = (result.properties or {}).get(key_property)
                if key is not None:
                    ids[str(key)] = str(result.id)
            errors = BatchErrors.of(response)
            if errors.missing or errors.other:
                log.warning(
                    "batch create %s: HubSpot answered 207: %s",
                    object_type,
                    "; ".join(errors.other) or sorted(errors.missing),
                )
        return ids

    def update(self, object_type: str, object_id: str, properties: Mapping[str, str]) -> None:
        self._call(
            f"update {object_type}",
            self._basic.update,
            object_type,
            object_id,
            SimplePublicObjectInput(properties=dict(properties)),
        )

    def batch_update(
        self, object_type: str, items: Sequence[tuple[str, Mapping[str, str]]]
    ) -> set[str]:
        """Update objects by id (100 per call); returns the ids HubSpot does not hold.

        A missing id is read from a 207's ``errors``; should HubSpot refuse the
        whole batch for it instead (404, or a 400 saying so), each object is
        updated alone to tell which. Other errors are retried with the job; an id
        neither updated nor reported is never taken as missing.
        """
        missing: set[str] = set()
        for chunk in chunks(items):
            action = f"batch update {object_type}"
            inputs = [
                SimplePublicObjectBatchInput(id=object_id, properties=dict(props))
                for object_id, props in chunk
            ]
            try:
                response = self._call(
                    action,
                    self._batch.update,
                    object_type,
                    BatchInputSimplePublicObjectBatchInput(inputs=inputs),
                )
            except (HubSpotNotFound, CrmValidationError) as exc:
                if isinstance(exc, CrmValidationError) and not _NOT_FOUND_WORDING.search(str(exc)):
                    raise
                missing.update(self._update_each(object_type, chunk))
                continue
            errors = BatchErrors.of(response)
            errors.raise_other(action)
            done = {str(result.id) for result in response.results or []}
            unknown = {object_id for object_id, _ in chunk} - done - errors.missing
            if unknown:
                raise RetryableError(f"{action}: no answer for {sorted(unknown)}")
            missing.update(errors.missing)
        return missing

    def _update_each(
        self, object_type: str, items: Sequence[tuple[str, Mapping[str, str]]]
    ) -> set[str]:
        missing: set[str] = set()
        for object_id, props in items:
            try:
                self.update(object_type, object_id, props)
            except HubSpotNotFound:
                missing.add(object_id)
        return missing

    def batch_read(
        self, object_type: str, ids: Sequence[str], properties: Sequence[str]
    ) -> dict[str, Found]:
        """The objects that still exist among ``ids`` (archived ones are absent)."""
        found: dict[str, Found] = {}
        for chunk in chunks(ids):
            response = self._call(
                f"batch read {object_type}",
                self._batch.read,
                object_type,
                BatchReadInputSimplePublicObjectId(
                    inputs=[SimplePublicObjectId(id=object_id) for object_id in chunk],
                    properties=list(properties),
                    properties_with_history=[],
                ),
                archived=False,
            )
            BatchErrors.of(response).raise_other(f"batch read {object_type}")
            for result in response.results or []:
                found[str(result.id)] = Found(str(result.id), dict(result.properties or {}))
        return found

    def list_objects(self, object_type: str, properties: Sequence[str]) -> Iterator[Found]:
        """Every live object of a type with ``properties``, paged by 100 under the budget
        (insights' duplicate check reads the CRM back this way)."""
        after: str | None = None
        while True:
            paging: dict[str, Any] = {"after": after} if after else {}
            page = self._call(
                f"list {object_type}",
                self._basic.get_page,
                object_type,
                limit=100,
                properties=list(properties),
                archived=False,
                **paging,
            )
            for result in page.results or []:
                yield Found(str(result.id), dict(result.properties or {}))
            following = getattr(getattr(page, "paging", None), "next", None)
            after = getattr(following, "after", None)
            if not after:
                return

    def associated_ids(self, from_type: str, from_id: str, to_type: str) -> list[str]:
        """Ids of the ``to_type`` objects associated with one object (v4, paged by 500).

        Association reads come from HubSpot's object store, not its search index,
        so an object created with inline associations is listed at once.
        """
        ids: list[str] = []
        after: str | None = None
        while True:
            paging: dict[str, Any] = {"after": after} if after else {}
            page = self._call(
                f"list associations {from_type}->{to_type}",
                self._assoc_basic.get_page,
                from_type,
                from_id,
                to_type,
                limit=500,
                **paging,
            )
            ids.extend(str(result.to_object_id) for result in page.results or [])
            following = getattr(getattr(page, "paging", None), "next", None)
            after = getattr(following, "after", None)
            if not after:
                return ids

    def read_with_history(
        self,
        object_type: str,
        ids: Sequence[str],
        properties: Sequence[str],
        history: Sequence[str],
    ) -> dict[str, Found]:
        """``batch_read`` with ``propertiesWithHistory``: each of ``history``'s values over
        time, with timestamp and source. Archived objects are absent. Asked 50 at a time:
        HubSpot caps reads with history lower than plain ones (50 on its list endpoint)."""
        found: dict[str, Found] = {}
        for chunk in chunks(ids, HISTORY_BATCH):
            response = self._call(
                f"batch read {object_type} with history",
                self._batch.read,
                object_type,
                BatchReadInputSimplePublicObjectId(
                    inputs=[SimplePublicObjectId(id=object_id) for object_id in chunk],
                    properties=list(properties),
                    properties_with_history=list(history),
                ),
                archived=False,
            )
            BatchErrors.of(response).raise_other(f"batch read {object_type}")
            for result in response.results or []:
                revisions = {
                    name: sorted(
                        (_revision(entry) for entry in entries or []),
                        key=lambda revision: revision.timestamp,
                        reverse=True,
                    )
                    for name, entries in (result.properties_with_history or {}).items()
                }
                found[str(result.id)] = Found(
                    str(result.id), dict(result.properties or {}), revisions
                )
        return found

    def search_modified(
        self,
        object_type: str,
        key_property: str,
        since_ms: int,
        properties: Sequence[str],
        *,
        after: str | None = None,
        limit: int = MAX_BATCH,
    ) -> SearchPage:
        """One page of the objects that carry ``key_property`` (those this service made)
        and were modified at or after ``since_ms`` (epoch ms), oldest modification first.

        Search lags writes (HubSpot: "a few seconds") and pages through at most 10,000
        results; the caller pages with ``after`` and restarts from the last
        ``hs_lastmodifieddate`` seen before that cap.
        """
        request = PublicObjectSearchRequest(
            filter_groups=[
                FilterGroup(
                    filters=[
                        Filter(property_name=key_property, operator="HAS_PROPERTY"),
                        Filter(property_name=LAST_MODIFIED, operator="GTE", value=str(since_ms)),
                    ]
                )
            ],
            sorts=[{"propertyName": LAST_MODIFIED, "direction": "ASCENDING"}],
            properties=sorted({*properties, key_property, LAST_MODIFIED}),
            limit=limit,
            after=after,
        )
        response = self._call(f"search {object_type}", self._search.do_search, object_type, request)
        following = getattr(getattr(response, "paging", None), "next", None)
        return SearchPage(
            results=[
                Found(str(result.id), dict(result.properties or {}))
                for result in response.results or []
            ],
            after=getattr(following, "after", None) or None,
            total=int(getattr(response, "total", 0) or 0),
        )

    def search_ids(self, object_type: str, prop: str, value: str) -> list[str]:
        """Ids of the objects whose ``prop`` equals ``value`` (search lags writes)."""
        request = PublicObjectSearchRequest(
            filter_groups=[
                FilterGroup(filters=[Filter(property_name=prop, operator="EQ", value=value)])
            ],
            properties=[prop],
            limit=10,
        )
        response = self._call(f"search {object_type}", self._search.do_search, object_type, request)
        return [str(result.id) for result in response.results or []]

    def archive(self, object_type: str, object_id: str) -> None:
        """Archive (HubSpot's delete); already gone is fine."""
        with contextlib.suppress(HubSpotNotFound):
            self._call(f"archive {object_type}", self._basic.archive, object_type, object_id)

    def associate_batch(
        self, from_type: str, to_type: str, links: Sequence[tuple[str, str, int]]
    ) -> None:
        """Many HubSpot-defined associations ``(from_id, to_id, type_id)``, 100 per call."""
        for chunk in chunks(links):
            inputs = [
                PublicAssociationMultiPost(
                    _from=AssociationObjectId(id=from_id),
                    to=AssociationObjectId(id=to_id),
                    types=[
                        AssociationSpec(
                            association_category=HUBSPOT_DEFINED, association_type_id=type_id
                        )
                    ],
                )
                for from_id, to_id, type_id in chunk
            ]
            action = f"batch associate {from_type}->{to_type}"
            response = self._call(
                action,
                self._assoc_batch.create,
                from_type,
                to_type,
                BatchInputPublicAssociationMultiPost(inputs=inputs),
            )
            errors = BatchErrors.of(response)
            if errors.missing:
                errors.other.append(f"objects not found: {sorted(errors.missing)}")
            errors.raise_other(action)

    # --- schema (``hubspot setup``) ---------------------------------------

    def create_group(self, object_type: str, name: str, label: str) -> bool:
        """Create a property group; ``False`` when it exists already."""
        try:
            self._call(
                f"create group {object_type}",
                self._groups.create,
                object_type,
                PropertyGroupCreate(name=name, label=label, display_order=-1),
            )
        except HubSpotConflict:
            return False
        return True

    def property_names(self, object_type: str) -> dict[str, bool]:
        """Every property of ``object_type``: name -> has a unique value."""
        return {name: d.unique for name, d in self.property_definitions(object_type).items()}

    def property_definitions(self, object_type: str) -> dict[str, PropertyDefinition]:
        """Every property of ``object_type`` as the portal defines it, by name."""
        response = self._call(
            f"list properties {object_type}", self._properties.get_all, object_type
        )
        return {
            str(p.name): PropertyDefinition(
                name=str(p.name),
                type=str(p.type or ""),
                field_type=str(p.field_type or ""),
                options=tuple(str(o.value) for o in p.options or [] if not o.hidden),
                unique=bool(p.has_unique_value),
                read_only=bool(
                    getattr(p, "modification_metadata", None)
                    and p.modification_metadata.read_only_value
                ),
            )
            for p in response.results or []
        }

    def create_property(self, object_type: str, spec: Mapping[str, Any]) -> bool:
        """Create a property; ``False`` when it exists already."""
        try:
            self._call(
                f"create property {object_type}",
                self._properties.create,
                object_type,
                PropertyCreate(**spec),
            )
        except HubSpotConflict:
            return False
        return True

    def pipelines(self, object_type: str) -> dict[str, set[str]]:
        """Pipeline id -> its stage ids."""
        response = self._call(f"list pipelines {object_type}", self._pipelines.get_all, object_type)
        return {
            str(pipeline.id): {str(stage.id) for stage in pipeline.stages or []}
            for pipeline in response.results or []
        }

    def owners(self, email: str | None = None) -> list[Owner]:
        """The portal's active owners (``GET /crm/v3/owners``, paged by 500), or those
        with ``email``. Each user of the portal is an owner; archived ones are left out."""
        found: list[Owner] = []
        after: str | None = None
        while True:
            query: dict[str, Any] = {"limit": 500, "archived": False}
            if email is not None:
                query["email"] = email
            if after:
                query["after"] = after
            page = self._call("list owners", self._owners.get_page, **query)
            found.extend(
                Owner(id=str(owner.id), email=str(owner.email or "").strip().lower())
                for owner in page.results or []
            )
            following = getattr(getattr(page, "paging", None), "next", None)
            after = getattr(following, "after", None)
            if not after:
                return found

    def ping(self) -> None:
        """One cheap authenticated call."""
        self._call("ping", self._basic.get_page, "contacts", limit=1, archived=False)

    def account_info(self) -> AccountInfo:
        """The portal's id, app host and data centre (``GET /account-info/v3/details``).

        The SDK generates no API for it, so the objects API's client sends it:
        the same token, host, timeout, budget, retries and error map as every call.
        """
        details = self._call(
            "account info",
            self._basic.api_client.call_api,
            "/account-info/v3/details",
            "GET",
            header_params={"Accept": "application/json"},
            auth_settings=["oauth2"],
            response_types_map={200: "object"},
            _return_http_data_only=True,
        )
        return AccountInfo.of(details)


DEFAULT_UI_DOMAIN = "app.hubspot.com"
"""The HubSpot app's host for portals in the North American data centre."""


@dataclass(frozen=True)
class AccountInfo:
    """The portal as ``GET /account-info/v3/details`` describes it."""

    portal_id: str
    ui_domain: str
    """The HubSpot app's host for this portal (``app-eu1.hubspot.com`` in the EU)."""
    data_hosting_location: str
    account_type: str
    time_zone: str

    @classmethod
    def of(cls, details: Any) -> AccountInfo:
        if not isinstance(details, Mapping) or details.get("portalId") is None:
            raise PermanentError(f"account info: unexpected HubSpot response: {details!r:.200}")
        return cls(
            portal_id=str(details["portalId"]),
            ui_domain=str(details.get("uiDomain") or DEFAULT_UI_DOMAIN),
            data_hosting_location=str(details.get("dataHostingLocation") or "unknown"),
            account_type=str(details.get("accountType") or "unknown"),
            time_zone=str(details.get("timeZone") or "unknown"),
        )


def build_api(
    access_token: str,
    base_url: str,
    rate_limit: tuple[int, float],
    *,
    timeout: float = 15.0,
    max_attempts: int = 5,
    sleep: Sleep = time.sleep,
    budget: Budget | None = None,
    search_budget: Budget | None = None,
    on_call: Callable[[str], None] | None = None,
    wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    search_limit: tuple[int, float] = SEARCH_LIMIT,
) -> HubSpotApi:
    """A ``HubSpotApi`` on the real SDK; without budgets given, the process-wide ones."""
    sdk = HubSpot(
        access_token=access_token,
        host=base_url.rstrip("/"),
        retry=urllib3.Retry(
            total=0, connect=0, read=0, redirect=0, status=0, raise_on_status=False
        ),
    )
    portal = portal_budget_name(base_url, access_token, "portal")
    return HubSpotApi(
        sdk,
        budget=budget or shared_budget(portal, "requests", *rate_limit),
        search_budget=search_budget or shared_budget(portal, "search", *search_limit),
        timeout=timeout,
        max_attempts=max_attempts,
        sleep=sleep,
        on_call=on_call,
        wall=wall,
    )
