"""Prometheus metrics, on a registry of the service's own (tests build one each).

Outbox depth, the oldest pending age and a CRM pause are read from the
database at scrape time, so every process reports the shared truth, not its own
share of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from outbox.store import OutboxStore

if TYPE_CHECKING:  # adapter.backends imports this module: only a type here
    from adapter.backends.base import Pause


class _OutboxCollector(Collector):
    def __init__(self, store: Callable[[], OutboxStore]) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        store = self._store()
        depth = GaugeMetricFamily(
            "bookme_outbox_events", "Outbox events by state.", labels=["state"]
        )
        for state, count in store.counts().items():
            depth.add_metric([state], count)
        yield depth
        age = store.oldest_pending_age()
        yield GaugeMetricFamily(
            "bookme_outbox_oldest_pending_age_seconds",
            "Seconds since the oldest queued or retrying event was received (0 when none).",
            value=age or 0.0,
        )


class _PauseCollector(Collector):
    def __init__(self, backend: str, pause: Callable[[], Pause | None]) -> None:
        self._backend = backend
        self._pause = pause

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "bookme_crm_paused_until_seconds",
            "Unix time until which the CRM refuses every call (HubSpot's 477 or daily "
            "limit); 0 when not paused.",
            labels=["backend"],
        )
        pause = self._pause()
        gauge.add_metric([self._backend], pause.until.timestamp() if pause else 0.0)
        yield gauge


class Metrics:
    """Every instrument the service updates, on one registry."""

    def __init__(self, store: Callable[[], OutboxStore] | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.webhooks = Counter(
            "bookme_webhook_requests",
            "Webhook deliveries by outcome (synced, queued, quarantined, repeat, invalid, "
            "unauthorized, too_large, unsupported, conflict, throttled).",
            ["outcome"],
            registry=self.registry,
        )
        self.sync_latency = Histogram(
            "bookme_sync_latency_seconds",
            "From receipt of a booking to its CRM write being committed.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=self.registry,
        )
        self.settled = Counter(
            "bookme_outbox_settled",
            "Events leaving a worker, by result (synced, retrying, dead, quarantined).",
            ["result"],
            registry=self.registry,
        )
        self.crm_calls = Counter(
            "bookme_crm_calls",
            "Calls to the CRM by backend and HTTP status (or error class).",
            ["backend", "status"],
            registry=self.registry,
        )
        self.hubspot_reconciled = Counter(
            "bookme_hubspot_reconciled",
            "Interrupted HubSpot creates settled, by how: found through associations, "
            "found through search, or recreated_after_lag (the last resort).",
            ["how"],
            registry=self.registry,
        )
        self.bookme_pushes = Counter(
            "bookme_pushes",
            "Changes made in the CRM sent back to BookMe, by outcome: pushed, refused, "
            "superseded (BookMe's newer snapshot won), unavailable (retried), failed.",
            ["outcome"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "bookme_auth_failures",
            "Wrong credentials presented, by surface (webhook, admin, login).",
            ["surface"],
            registry=self.registry,
        )
        self.auth_throttled = Counter(
            "bookme_auth_throttled",
            "Requests refused with 429 because their address failed too often, by surface.",
            ["surface"],
            registry=self.registry,
        )
        self.hubspot_polls = Counter(
            "bookme_hubspot_polls",
            "Rounds of the HubSpot poll: done, skipped (another process held the lease), failed.",
            ["outcome"],
            registry=self.registry,
        )
        self.hubspot_changes = Counter(
            "bookme_hubspot_changes",
            "Changes made in HubSpot, recorded by source (poll, webhook) and what became of "
            "them (recorded, superseded).",
            ["source", "state"],
            registry=self.registry,
        )
        if store is not None:
            self.registry.register(_OutboxCollector(store))

    def watch_pause(self, backend: str, pause: Callable[[], Pause | None]) -> None:
        """Report ``backend``'s pause, read at each scrape, as a gauge."""
        self.registry.register(_PauseCollector(backend, pause))
