"""API fuzzing: schemathesis against the service's own OpenAPI document, over real HTTP."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, BaseSchema, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import ADMIN_TOKEN, WEBHOOK_SECRET, LiveServer, sign

pytestmark = pytest.mark.slow

Operation = APIOperation[Any, Any, Any, Any]
AnyCase = Case[Any]

WEBHOOK = "/api/bookings/incoming"
PUBLIC = frozenset({"/healthz", "/readyz", "/metrics"})
# Calendar feeds take their credential in the path (calendar apps send no headers):
# a token that is not a live one is a 404, never a hint that the feed exists.
TOKEN_IN_PATH = "/calendar/"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# The import route answers documented 502/503 when BookMe fails or is not configured
# (as here); status-code conformance still refuses any undocumented 5xx.
IMPORT = "/api/bookings/import"
IMPORT_CHECKS = [check for check in CHECKS if check is not not_a_server_error]
# Per operation and generation mode; about 16 operations x 2 modes x 2 passes.
AUTHENTICATED = settings(
    max_examples=30,
    deadline=None,
    database=None,
    # Negative generation rejects many drafts for tight schemas (enums, consts);
    # a slow or filtered draw is not a failure of the service under test.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
UNAUTHENTICATED = settings(AUTHENTICATED, max_examples=15)


@dataclass(frozen=True)
class Served:
    """The app on a real database behind uvicorn, and the OpenAPI document it serves."""

    server: LiveServer
    schema: BaseSchema
    database: str


@pytest.fixture
def served(request: pytest.FixtureRequest, make_settings: Callable[..., Any]) -> Iterator[Served]:
    """The app on real SQLite (or PostgreSQL, parametrized) over real HTTP."""
    from adapter.api.app import create_app
    from adapter.services import build_services

    database = getattr(request, "param", "sqlite")
    overrides = (
        {"database_url": request.getfixturevalue("pg_url")} if database == "postgres" else {}
    )
    services = build_services(make_settings(**overrides))
    try:
        with LiveServer(create_app(services=services, embedded_workers=1)) as server:
            schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
            yield Served(server, schema, database)
    finally:
        services.close()


DATABASES = [pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]


def operations(served: Served) -> list[Operation]:
    """Every operation of the document; an unparsable one fails the test."""
    every: list[Operation] = []
    for result in served.schema.get_all_operations():
        if isinstance(result, Err):
            raise result.err()
        every.append(result.ok())
    assert every
    return every


def modes(operation: Operation) -> list[GenerationMode]:
    """Positive always; negative too when the operation has an input that can be invalid.

    A string path parameter alone cannot be: every path segment is a string.
    """
    raw = operation.definition.raw
    breakable = [p for p in raw.get("parameters", []) if p.get("in") != "path"]
    if breakable or raw.get("requestBody"):
        return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    return [GenerationMode.POSITIVE]


def is_positive(case: AnyCase) -> bool:
    """Whether ``case`` was generated to fit the schema."""
    return case.meta is not None and case.meta.generation.mode.is_positive


def webhook_credentials(
    case: AnyCase, base_url: str, scheme: str
) -> tuple[dict[str, str], dict[str, Any]]:
    """Headers and transport kwargs that authenticate ``case`` with ``scheme``.

    For Standard Webhooks the body is serialized once, exactly as schemathesis
    would send it, signed, and those very bytes are sent as ``data``.
    """
    if scheme == "shared-secret":
        return {"X-Webhook-Secret": WEBHOOK_SECRET}, {}
    kwargs = case.as_transport_kwargs(base_url=base_url)
    prepared = requests.Request(
        method=kwargs["method"],
        url=kwargs["url"],
        headers=kwargs.get("headers"),
        json=kwargs.get("json"),
        data=kwargs.get("data"),
        files=kwargs.get("files"),
    ).prepare()
    body = prepared.body
    raw = body.encode() if isinstance(body, str) else body if isinstance(body, bytes) else b""
    try:
        raw.decode()
    except UnicodeDecodeError:
        # sign() signs text; a non-UTF-8 body falls back to the shared secret.
        return {"X-Webhook-Secret": WEBHOOK_SECRET}, {"data": raw}
    headers = {k: v for k, v in sign(raw).items() if k != "content-type"}
    return headers, {"data": raw}


def run(
    operation: Operation, mode: GenerationMode, test: Callable[..., None], **extra: Any
) -> None:
    """Run ``test`` over ``operation``'s generated cases in ``mode``."""
    test_settings = extra.pop("test_settings")
    test_settings(given(case=operation.as_strategy(mode), **extra)(test))()


@pytest.mark.parametrize("served", DATABASES, indirect=True)
def test_fuzz_authenticated_api_never_5xx_and_answers_as_documented(served: Served) -> None:
    """Every operation, credentialed, answers documented statuses and bodies, never 5xx."""
    server = served.server
    session = requests.Session()

    for operation in operations(served):
        for mode in modes(operation):
            if operation.path == WEBHOOK:

                def webhook(case: AnyCase, scheme: str, event_type: str | None) -> None:
                    if event_type and is_positive(case) and isinstance(case.body, dict):
                        # Random event types are all quarantined (202); a mapped one
                        # reaches the CRM and the 200 with its records.
                        case.body["eventType"] = event_type
                    headers, kwargs = webhook_credentials(case, server.url, scheme)
                    case.call_and_validate(
                        base_url=server.url,
                        session=session,
                        headers=headers,
                        checks=CHECKS,
                        **kwargs,
                    )

                run(
                    operation,
                    mode,
                    webhook,
                    scheme=st.sampled_from(["standard-webhooks", "shared-secret"]),
                    event_type=st.sampled_from([None, "workshop", "30min-consultation"]),
                    test_settings=AUTHENTICATED,
                )
            else:
                checks = IMPORT_CHECKS if operation.path == IMPORT else CHECKS
                run(
                    operation,
                    mode,
                    admin_test(server, session, checks),
                    test_settings=AUTHENTICATED,
                )


def admin_test(
    server: LiveServer, session: requests.Session, checks: list[Any]
) -> Callable[[AnyCase], None]:
    """A test that calls one generated case with the admin token and applies ``checks``."""

    def admin(case: AnyCase) -> None:
        case.call_and_validate(
            base_url=server.url,
            session=session,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            checks=checks,
        )

    return admin


def header_text(alphabet: str, max_size: int) -> st.SearchStrategy[str]:
    """Header values the HTTP client will send: no leading or trailing whitespace."""
    return st.text(alphabet, max_size=max_size).map(str.strip)


WRONG_CREDENTIALS = st.one_of(
    st.just({}),
    st.builds(lambda t: {"Authorization": f"Bearer {t}"}, header_text("abcXYZ019-_", 40)),
    st.builds(lambda t: {"Authorization": t}, header_text("Basic er0=", 30)),
    st.builds(lambda t: {"X-Webhook-Secret": t}, header_text("abc019-_ ", 40)),
    st.fixed_dictionaries(
        {
            "webhook-id": header_text("msg_abc019 ", 20),
            "webhook-timestamp": st.one_of(
                st.integers(-(2**70), 2**70).map(str), header_text("0123456789-.e ", 25)
            ),
            "webhook-signature": st.one_of(
                header_text("v1,=+/ab09 ", 60),
                st.binary(max_size=40).map(lambda b: "v1," + b.hex()),
            ),
        }
    ),
)


def test_fuzz_unauthenticated_api_answers_401_never_5xx(served: Served) -> None:
    """Without valid credentials every guarded operation answers a documented 401 (a calendar
    feed, whose token is in its path, a 404)."""
    server = served.server
    session = requests.Session()

    def refused(case: AnyCase, credentials: dict[str, str]) -> None:
        response = case.call(base_url=server.url, session=session, headers=credentials)
        case.validate_response(
            response, checks=[not_a_server_error, status_code_conformance], headers=credentials
        )
        expected = 404 if case.operation.path.startswith(TOKEN_IN_PATH) else 401
        assert response.status_code == expected, (case.method, case.formatted_path, response.text)

    for operation in operations(served):
        if operation.path in PUBLIC:
            continue
        for mode in modes(operation):
            run(
                operation,
                mode,
                refused,
                credentials=WRONG_CREDENTIALS,
                test_settings=UNAUTHENTICATED,
            )


@pytest.mark.parametrize("served", DATABASES, indirect=True)
def test_hostile_json_bodies_answer_400_never_5xx(served: Served) -> None:
    """The four JSON shapes that were 500s (issue 13) stay 400s over real HTTP, on each database."""
    from tests.integration.test_webhook import HOSTILE, hostile_body

    for case in sorted(HOSTILE):
        response = requests.post(
            f"{served.server.url}{WEBHOOK}",
            data=hostile_body(case),
            headers={"X-Webhook-Secret": WEBHOOK_SECRET, "content-type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 400, (case, response.text)
        assert response.json()["error"] == "Invalid payload"
