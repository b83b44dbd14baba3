"""BookMeClient against respx: answers, retries, errors, pagination and resume."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import respx

from adapter.bookme import (
    BookMeClient,
    BookMeMalformed,
    BookMeNotFound,
    BookMeRejected,
    BookMeUnavailable,
)

BASE = "https://bookme.test/v1"
TOKEN = "bookme-api-token-0123456789"
RESOURCE = {
    "id": "bk_1",
    "eventType": "workshop",
    "name": "Test Person",
    "email": "test@example.com",
    "scheduledStart": "2027-02-15T10:00:00Z",
    "duration": 120,
    "createdAt": "2026-11-20T08:00:00Z",
}


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> Iterator[BookMeClient]:
    with BookMeClient(BASE, TOKEN, max_attempts=3, sleep=sleeps.append) as bookme:
        yield bookme


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        yield router


def test_get_booking_returns_the_resource_with_the_token_in_a_header(
    client: BookMeClient, api: respx.MockRouter
) -> None:
    """A 200 gives BookMe's resource; the token travels as a bearer header, the id escaped."""
    route = api.get("/api/bookings/bk%2F1").respond(200, json=RESOURCE)
    assert client.get_booking("bk/1") == RESOURCE
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in str(request.url)


def test_404_is_not_found_and_not_retried(
    client: BookMeClient, api: respx.MockRouter, sleeps: list[float]
) -> None:
    """BookMe's 404 becomes BookMeNotFound naming the booking, after one call."""
    route = api.get("/api/bookings/nope").respond(404, json={"error": "not found"})
    with pytest.raises(BookMeNotFound) as caught:
        client.get_booking("nope")
    assert caught.value.message == "BookMe has no booking 'nope'"
    assert route.call_count == 1
    assert sleeps == []


def test_5xx_then_success_is_retried_with_backoff(
    client: BookMeClient, api: respx.MockRouter, sleeps: list[float]
) -> None:
    """503 and 502 are retried (backing off) until BookMe answers."""
    route = api.get("/api/bookings/bk_1").mock(
        side_effect=[httpx.Response(503), httpx.Response(502), httpx.Response(200, json=RESOURCE)]
    )
    assert client.get_booking("bk_1") == RESOURCE
    assert route.call_count == 3
    assert len(sleeps) == 2
    assert all(pause > 0 for pause in sleeps)


@pytest.mark.parametrize(
    "failure",
    [httpx.ReadTimeout("slow"), httpx.ConnectTimeout("slow"), httpx.ConnectError("refused")],
    ids=["read-timeout", "connect-timeout", "connect-error"],
)
def test_timeouts_and_connection_errors_end_unavailable(
    client: BookMeClient, api: respx.MockRouter, sleeps: list[float], failure: Exception
) -> None:
    """Timeouts and refused connections are retried, then raise BookMeUnavailable."""
    route = api.get("/api/bookings/bk_1").mock(side_effect=failure)
    with pytest.raises(BookMeUnavailable) as caught:
        client.get_booking("bk_1")
    assert route.call_count == 3
    assert len(sleeps) == 2
    assert "after 3 attempts" in caught.value.message
    assert "nothing was stored" in caught.value.message
    assert TOKEN not in caught.value.message


def test_5xx_every_time_ends_unavailable(client: BookMeClient, api: respx.MockRouter) -> None:
    """A BookMe that keeps failing gives BookMeUnavailable naming the status."""
    api.get("/api/bookings/bk_1").respond(500)
    with pytest.raises(BookMeUnavailable, match=r"HTTP 500"):
        client.get_booking("bk_1")


def test_a_wrong_token_is_rejected_at_once(
    client: BookMeClient, api: respx.MockRouter, sleeps: list[float]
) -> None:
    """401 is not retried and points at BOOKME_API_TOKEN without showing it."""
    route = api.get("/api/bookings/bk_1").respond(401)
    with pytest.raises(BookMeRejected) as caught:
        client.get_booking("bk_1")
    assert route.call_count == 1
    assert "BOOKME_API_TOKEN" in caught.value.message
    assert TOKEN not in caught.value.message
    assert sleeps == []


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        (httpx.Response(200, text="<html>oops</html>"), "body"),
        (httpx.Response(200, json=["not", "an", "object"]), "body"),
    ],
    ids=["not-json", "not-an-object"],
)
def test_a_malformed_body_is_malformed(
    client: BookMeClient, api: respx.MockRouter, answer: httpx.Response, field: str
) -> None:
    """A 200 that is not a JSON object raises BookMeMalformed with a field detail."""
    api.get("/api/bookings/bk_1").mock(return_value=answer)
    with pytest.raises(BookMeMalformed) as caught:
        client.get_booking("bk_1")
    assert [d.field for d in caught.value.details] == [field]


def _page_route(api: respx.MockRouter) -> respx.Route:
    pages = {
        None: {"data": [{"id": "a"}, {"id": "b"}], "nextCursor": "c1"},
        "c1": {"data": [{"id": "c"}], "nextCursor": "c2"},
        "c2": {"data": [], "nextCursor": None},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.url.params["since"] == "2026-11-01"
        return httpx.Response(200, json=pages[request.url.params.get("cursor")])

    return api.get("/api/bookings").mock(side_effect=answer)


def test_pages_follow_the_cursor_to_the_end(client: BookMeClient, api: respx.MockRouter) -> None:
    """The list is read page by page, each with the cursor the previous one gave."""
    route = _page_route(api)
    pages = list(client.pages("2026-11-01"))
    assert [[item["id"] for item in page.items] for page in pages] == [["a", "b"], ["c"], []]
    assert [(page.cursor, page.next_cursor) for page in pages] == [
        (None, "c1"),
        ("c1", "c2"),
        ("c2", None),
    ]
    assert [call.request.url.params.get("cursor") for call in route.calls] == [None, "c1", "c2"]


def test_pages_resume_at_a_saved_cursor(client: BookMeClient, api: respx.MockRouter) -> None:
    """Given a cursor, the list starts there: nothing before it is fetched again."""
    route = _page_route(api)
    pages = list(client.pages("2026-11-01", cursor="c1"))
    assert [[item["id"] for item in page.items] for page in pages] == [["c"], []]
    assert [call.request.url.params.get("cursor") for call in route.calls] == ["c1", "c2"]


def test_a_failing_page_is_retried_then_the_list_goes_on(
    client: BookMeClient, api: respx.MockRouter
) -> None:
    """A 503 on a later page is retried; pages already yielded are not fetched again."""
    route = api.get("/api/bookings").mock(
        side_effect=[
            httpx.Response(200, json={"data": [{"id": "a"}], "nextCursor": "c1"}),
            httpx.Response(503),
            httpx.Response(200, json={"data": [{"id": "b"}], "nextCursor": None}),
        ]
    )
    ids = [item["id"] for page in client.pages("2026-11-01") for item in page.items]
    assert ids == ["a", "b"]
    assert route.call_count == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "data"),
        ({"data": [], "nextCursor": 7}, "nextCursor"),
        ({"data": [], "nextCursor": "same"}, "nextCursor"),
        ([], "body"),
    ],
    ids=["no-data", "cursor-not-a-string", "cursor-loops", "not-an-object"],
)
def test_a_malformed_page_stops_the_list(
    client: BookMeClient, api: respx.MockRouter, body: object, field: str
) -> None:
    """A page without a data list, or a cursor that loops, raises BookMeMalformed."""
    api.get("/api/bookings").respond(200, json=body)
    with pytest.raises(BookMeMalformed) as caught:
        list(client.pages("2026-11-01", cursor="same"))
    assert [d.field for d in caught.value.details] == [field]


def test_a_404_on_the_list_points_at_the_url(client: BookMeClient, api: respx.MockRouter) -> None:
    """The list endpoint missing means a wrong BOOKME_API_URL, not a missing booking."""
    api.get("/api/bookings").respond(404)
    with pytest.raises(BookMeRejected, match="BOOKME_API_URL"):
        list(client.pages("2026-11-01"))
