"""Two workers cancel the two bookings of one deal at the same moment: the deal ends lost.

Each worker here is a ``HubSpotBackend`` on an engine of its own, as in two
processes (PostgreSQL) or two worker threads of one ``serve`` (SQLite). Worker
A is held after it has read the recorded meeting outcomes and decided its
deal's stage, before it commits its own; worker B then applies the other
booking's cancellation. Without the deal lock B reads A's booking as still
scheduled, A read B's the same way, and the deal stays "appointmentscheduled"
though neither booking is live.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from adapter import db
from adapter.backends.base import SyncJob
from adapter.backends.hubspot import HubSpotBackend, run_setup
from adapter.booking import parse_booking
from adapter.errors import AdapterError
from adapter.mapping import load_mapping, plan_booking
from tests.conftest import DEFAULT_MAPPING, seed_booking
from tests.fakes.hubspot import FakeHubSpot
from tests.integration.test_hubspot_backend import NOW, _api

MAPPING = load_mapping(DEFAULT_MAPPING)
LEAD = "company:acme ab|workshop"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bookme.db'}"
    pg_url: str = request.getfixturevalue("pg_url")
    return pg_url


@pytest.fixture
def engines(url: str) -> Iterator[tuple[Engine, Engine]]:
    first, second = db.make_engine(url), db.make_engine(url)
    db.upgrade(first)
    yield first, second
    first.dispose()
    second.dispose()


class Gate:
    """Holds worker A after it has decided its deals' stages, before it settles."""

    def __init__(self, backend: HubSpotBackend) -> None:
        self.armed = False
        self.at_gate = threading.Event()
        self.release = threading.Event()
        decide = backend._set_stages

        def gated(*args: Any, **kwargs: Any) -> Any:
            result = decide(*args, **kwargs)
            if self.armed:
                self.at_gate.set()
                assert self.release.wait(20), "the test never opened the gate"
            return result

        backend._set_stages = gated  # type: ignore[method-assign]


def job(n: int, booking_id: str, **fields: Any) -> SyncJob:
    plan = plan_booking(
        parse_booking(seed_booking(bookingId=booking_id, company="Acme AB", **fields)),
        MAPPING,
        now=NOW,
    )
    return SyncJob(f"evt-{n}", booking_id, "lease", plan)


def apply(backend: HubSpotBackend, sync_job: SyncJob) -> dict[str, AdapterError]:
    return dict(backend.apply([sync_job], lambda _conn, _job, _result: None))


def test_two_cancellations_of_one_deal_at_once_leave_it_lost(
    engines: tuple[Engine, Engine],
) -> None:
    with FakeHubSpot(rate_limit=None, search_rate_limit=None) as fake:
        sleeps: list[float] = []
        plain = _api(fake, sleeps)
        assert run_setup(plain, MAPPING).ok
        stages = lambda: MAPPING.defaults.hubspot  # noqa: E731
        first = HubSpotBackend(plain, engines[0], stages)
        gated = Gate(first)
        second = HubSpotBackend(_api(fake, sleeps), engines[1], stages)
        assert apply(first, job(1, "bk-a", email="a@example.com")) == {}
        assert apply(first, job(2, "bk-b", email="b@example.com")) == {}
        (deal,) = fake.objects("deals")
        assert deal["properties"]["dealstage"] == "appointmentscheduled"

        cancel = {"event": "booking.cancelled", "updatedAt": "2026-12-01T00:00:00Z"}
        gated.armed = True
        failures: dict[str, dict[str, AdapterError]] = {}
        a = threading.Thread(
            target=lambda: failures.update(
                a=apply(first, job(3, "bk-a", email="a@example.com", **cancel))
            )
        )
        a.start()
        assert gated.at_gate.wait(20), "worker A never reached its stage decision"
        b = threading.Thread(
            target=lambda: failures.update(
                b=apply(second, job(4, "bk-b", email="b@example.com", **cancel))
            )
        )
        b.start()
        b.join(1.5)  # with the lock, B waits for A; without it, B is done by now
        b_waited = b.is_alive()
        gated.release.set()
        a.join(20)
        b.join(20)
        assert failures == {"a": {}, "b": {}}
        (deal,) = fake.objects("deals")
        meetings = {m["properties"]["bookme_booking_id"]: m for m in fake.objects("meetings")}
        first.close()
        second.close()
    assert {b: m["properties"]["hs_meeting_outcome"] for b, m in meetings.items()} == {
        "bk-a": "CANCELED",
        "bk-b": "CANCELED",
    }
    assert deal["properties"]["dealstage"] == "closedlost"
    assert b_waited, "worker B wrote the deal while worker A held it"


def test_a_deal_held_too_long_makes_the_batch_retry_later(
    engines: tuple[Engine, Engine],
) -> None:
    """A worker that cannot get a deal within the wait gives up with a retryable error,
    and the lock is free again once its holder lets go."""
    from adapter.backends.hubspot.locks import DealBusy, DealLocks
    from adapter.errors import RetryableError

    holder, waiter = DealLocks(engines[0]), DealLocks(engines[1], wait_seconds=0.2)
    with holder.hold([LEAD, "contact:x|workshop"]):
        with pytest.raises(DealBusy) as busy, waiter.hold(["contact:x|workshop", LEAD]):
            pass
        assert isinstance(busy.value, RetryableError)
        with waiter.hold(["another deal"]):
            pass  # other deals are not held up
    with waiter.hold([LEAD]):
        pass
