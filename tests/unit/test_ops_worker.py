"""Shutdown: claims not yet handed to the backend are released, uncounted."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from adapter.booking import parse_booking
from adapter.ingest import accept_booking
from tests.conftest import seed_booking

if TYPE_CHECKING:
    from adapter.services import Services


def test_a_stopping_worker_releases_the_claims_it_has_not_started(services: Services) -> None:
    """With stop set before the batch reaches the backend, every claim goes back as it was."""
    mapping = services.mappings.current
    for n in range(3):
        raw = seed_booking(bookingId=f"bk-{n}")
        accept_booking(services.store, parse_booking(raw), raw, mapping)
    worker = services.new_worker()
    claims = services.store.claim(worker.owner, limit=10, lease_seconds=60)
    assert len(claims) == 3
    stop = threading.Event()
    stop.set()
    worker.process(claims, stop)
    for claim in claims:
        event = services.store.get(claim.event.id)
        assert event is not None
        assert (event.state, event.attempts) == ("queued", 0)
    assert services.store.claim("other", limit=10, lease_seconds=60) != []


def test_stop_workers_stops_claiming_and_reports_a_clean_stop(services: Services) -> None:
    """Worker threads stop at once when idle; stop_workers says they all ended in time."""
    services.start_workers(2)
    assert services.stop_workers(5.0)
    raw = seed_booking(bookingId="bk-late")
    event, _ = accept_booking(services.store, parse_booking(raw), raw, services.mappings.current)
    services.wake_workers()
    threading.Event().wait(0.3)
    stored = services.store.get(event.id)
    assert stored is not None
    assert stored.state == "queued"
