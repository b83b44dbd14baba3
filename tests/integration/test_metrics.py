"""GET /metrics in Prometheus format reflects what the service did."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import WEBHOOK_SECRET, seed_booking

URL = "/api/bookings/incoming"
SECRET = {"X-Webhook-Secret": WEBHOOK_SECRET}


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_count_outcomes_depth_and_latency(client: TestClient) -> None:
    """Webhook outcomes, outbox depth by state and sync latency are all exported."""
    assert client.post(URL, json=seed_booking(), headers=SECRET).status_code == 200
    assert client.post(URL, json=seed_booking(), headers=SECRET).status_code == 200
    client.post(URL, json=seed_booking(bookingId="q", eventType="yoga"), headers=SECRET)
    client.post(URL, json=seed_booking(duration=-1), headers=SECRET)
    client.post(URL, json=seed_booking(), headers={"X-Webhook-Secret": "wrong-secret-value"})
    client.post(URL, json=seed_booking(notes="x" * 70_000), headers=SECRET)
    got = samples(client)

    def webhooks(outcome: str) -> float:
        return got[("bookme_webhook_requests_total", (("outcome", outcome),))]

    assert webhooks("synced") == 1
    assert webhooks("repeat") == 1
    assert webhooks("quarantined") == 1
    assert webhooks("invalid") == 1
    assert webhooks("unauthorized") == 1
    assert webhooks("too_large") == 1
    assert got[("bookme_outbox_events", (("state", "synced"),))] == 1
    assert got[("bookme_outbox_events", (("state", "quarantined"),))] == 1
    assert got[("bookme_outbox_oldest_pending_age_seconds", ())] == 0
    assert got[("bookme_outbox_settled_total", (("result", "synced"),))] == 1
    assert got[("bookme_sync_latency_seconds_count", ())] == 1
