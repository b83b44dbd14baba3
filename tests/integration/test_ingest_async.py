"""The webhook's wait for the sync holds no thread, and is skipped when it cannot succeed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from adapter.api.app import create_app
from adapter.backends.base import Pause
from adapter.services import Services, build_services
from adapter.settings import Settings
from adapter.worker import Worker
from tests.conftest import WEBHOOK_SECRET, LiveServer, seed_booking

SECRET = {"X-Webhook-Secret": WEBHOOK_SECRET}


@pytest.fixture
def idle(make_settings: Callable[..., Settings]) -> Iterator[tuple[Services, LiveServer]]:
    """A real HTTP server with a 1 s sync wait and no worker yet: every wait runs out."""
    services = build_services(make_settings(sync_wait_ms=1000))
    try:
        with LiveServer(create_app(services=services, embedded_workers=0)) as server:
            yield services, server
    finally:
        services.close()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """One client for every request: a client each would spend the CPU on TLS set-up."""
    with httpx.Client(limits=httpx.Limits(max_connections=100), timeout=30) as client:
        yield client


def _post(http: httpx.Client, url: str, index: int) -> tuple[int, float]:
    started = time.monotonic()
    answer = http.post(
        f"{url}/api/bookings/incoming",
        json=seed_booking(bookingId=f"wait-{index}"),
        headers=SECRET,
    )
    return answer.status_code, time.monotonic() - started


def _burst(http: httpx.Client, url: str, indexes: range) -> list[tuple[int, float]]:
    with ThreadPoolExecutor(len(indexes)) as pool:
        return list(pool.map(lambda i: _post(http, url, i), indexes))


def test_waiting_webhooks_hold_no_request_thread(
    idle: tuple[Services, LiveServer], http: httpx.Client
) -> None:
    """60 webhooks waiting at once (more than the 40 request threads) all answer 202 after
    one wait, and /healthz answers at once meanwhile."""
    _, server = idle
    with ThreadPoolExecutor(61) as pool:
        started = time.monotonic()
        waits = [pool.submit(_post, http, server.url, i) for i in range(60)]
        time.sleep(0.3)  # every webhook is in its wait now
        health_started = time.monotonic()
        health = http.get(f"{server.url}/healthz")
        health_seconds = time.monotonic() - health_started
        answers = [wait.result() for wait in waits]
    total = time.monotonic() - started
    assert health.status_code == 200
    assert health_seconds < 0.3, health_seconds
    assert {status for status, _ in answers} == {202}
    assert total < 1.8, total  # one 1 s wait, not two rounds of 40 threads


def test_waits_are_skipped_while_they_run_out_and_resume_once_one_syncs(
    idle: tuple[Services, LiveServer], http: httpx.Client
) -> None:
    """After waits have run out, concurrent webhooks get 202 at once while a single probe
    waits; once a worker syncs the probe in time, every webhook waits (and gets 200) again."""
    services, server = idle
    assert {s for s, _ in _burst(http, server.url, range(3))} == {202}  # three waits ran out
    answers = sorted(_burst(http, server.url, range(10, 16)), key=lambda a: a[1])
    assert [s for s, _ in answers] == [202] * 6
    assert all(seconds < 0.5 for _, seconds in answers[:5]), answers  # answered at once
    assert answers[5][1] >= 0.9, answers  # the probe waited
    services.start_workers(1)
    deadline = time.monotonic() + 10
    while services.store.counts().get("synced", 0) < 9 and time.monotonic() < deadline:
        time.sleep(0.05)  # the worker clears the backlog the skipped webhooks left
    status, _ = _post(http, server.url, 20)  # the probe: synced in time
    assert status == 200
    assert {s for s, _ in _burst(http, server.url, range(30, 34))} == {200}


class PausedBackend:
    """The real local backend under a CRM-wide pause (as HubSpot's 477 puts one)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def paused(self) -> Pause:
        return Pause(until=datetime.now(UTC) + timedelta(hours=1), reason="daily limit")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_paused_crm_is_not_waited_for(
    idle: tuple[Services, LiveServer], http: httpx.Client
) -> None:
    """While the CRM is paused a webhook is answered 202 at once, not after SYNC_WAIT_MS."""
    services, server = idle
    services.backend = PausedBackend(services.backend)  # type: ignore[assignment]
    status, seconds = _post(http, server.url, 1)
    assert status == 202
    assert seconds < 0.5, seconds


def test_the_pause_is_looked_up_at_most_once_a_second_on_the_webhook_path(
    idle: tuple[Services, LiveServer], http: httpx.Client
) -> None:
    """HubSpot's pause is shared through the database (one read); the webhook path reads it
    at most every PAUSE_FRESH_SECONDS, so a burst costs one read, and a pause that begins
    is obeyed within that time."""
    services, server = idle
    looked: list[float] = []

    class Counting(PausedBackend):
        pause: Pause | None = None

        def paused(self) -> Pause | None:  # type: ignore[override]
            looked.append(time.monotonic())
            return self.pause

    counting = Counting(services.backend)
    services.backend = counting  # type: ignore[assignment]
    services.settings.sync_wait_ms = 1  # each webhook looks at the pause, then waits 1 ms
    for index in range(20):
        assert _post(http, server.url, index)[0] == 202
    assert len(looked) <= 2, looked  # at most once a second
    counting.pause = PausedBackend(None).paused()
    time.sleep(Services.PAUSE_FRESH_SECONDS)
    assert services.crm_pause() is not None


class SlowBackend:
    """The real local backend, taking ``delay`` seconds a batch: a slow CRM."""

    def __init__(self, inner: Any, delay: float) -> None:
        self._inner = inner
        self.delay = delay

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(self.delay)
        return self._inner.apply(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def test_a_webhook_behind_a_backlog_is_answered_at_once(
    make_settings: Callable[..., Settings], http: httpx.Client
) -> None:
    """With a worker that settles a batch in 1.5 s, a burst of 30 webhooks is answered at
    once except the first (the 200 for a lone webhook stays), instead of each waiting 2 s."""
    services = build_services(make_settings(sync_wait_ms=2000, worker_batch_size=5))
    services.backend = SlowBackend(services.backend, 1.5)  # type: ignore[assignment]
    try:
        with LiveServer(create_app(services=services, embedded_workers=1)) as server:
            status, seconds = _post(http, server.url, 0)
            assert (status, seconds > 1.4) == (200, True)  # alone: waited and synced
            answers = sorted(_burst(http, server.url, range(1, 31)), key=lambda a: a[1])
    finally:
        services.close(timeout=1)
    assert all(seconds < 0.5 for _, seconds in answers[:-1]), answers
    assert {status for status, _ in answers[:-1]} == {202}


class TimedBackend(SlowBackend):
    """A slow CRM that, like HubSpot, knows how long a sync takes once it has answered:
    ``sync_estimate`` is ``None`` until ``known_after`` seconds into its first batch."""

    def __init__(self, inner: Any, delay: float, known_after: float | None = None) -> None:
        super().__init__(inner, delay)
        self.known_after = known_after
        self.estimate: float | None = None if known_after is not None else delay

    def sync_estimate(self) -> float | None:
        return self.estimate

    def apply(self, *args: Any, **kwargs: Any) -> Any:
        if self.known_after is not None:
            time.sleep(self.known_after)
            self.estimate = self.delay  # its first answer came in
        return super().apply(*args, **kwargs)


def _synced_soon(services: Services, count: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if services.store.counts().get("synced", 0) >= count:
            return True
        time.sleep(0.05)
    return False


def test_a_crm_known_to_be_slow_is_not_waited_for(
    make_settings: Callable[..., Settings], http: httpx.Client
) -> None:
    """A CRM whose sync is expected to take more than half of SYNC_WAIT_MS (here 1.5 s of
    2 s) gets no wait from the first webhook on: 202 at once, and the sync still happens."""
    services = build_services(make_settings(sync_wait_ms=2000))
    services.backend = TimedBackend(services.backend, 1.5)  # type: ignore[assignment]
    try:
        with LiveServer(create_app(services=services, embedded_workers=1)) as server:
            status, seconds = _post(http, server.url, 0)
            assert (status, seconds < 0.5) == (202, True), seconds
            assert _synced_soon(services, 1)
    finally:
        services.close(timeout=1)


def test_a_wait_ends_once_the_crm_turns_out_slow(
    make_settings: Callable[..., Settings], http: httpx.Client
) -> None:
    """The CRM's speed is unknown when the first webhook starts its wait; its first answer
    (0.2 s in) says a sync takes 1.5 s, and the webhook is answered 202 then, not after."""
    services = build_services(make_settings(sync_wait_ms=2000))
    services.backend = TimedBackend(services.backend, 1.5, known_after=0.2)  # type: ignore[assignment]
    try:
        with LiveServer(create_app(services=services, embedded_workers=1)) as server:
            status, seconds = _post(http, server.url, 0)
            assert status == 202
            assert 0.15 < seconds < 0.8, seconds
            assert _synced_soon(services, 1)
    finally:
        services.close(timeout=1)


def test_slow_settles_stop_the_waits_and_fast_ones_bring_them_back(
    make_settings: Callable[..., Settings], http: httpx.Client
) -> None:
    """A backend that says nothing of its speed: once a webhook took 1.5 s to settle, the
    next is answered 202 at once; once the CRM is fast again and its settles show it, the
    webhook waits for its 200 with ids again."""
    services = build_services(make_settings(sync_wait_ms=2000))
    slow = SlowBackend(services.backend, 1.5)
    services.backend = slow  # type: ignore[assignment]
    try:
        with LiveServer(create_app(services=services, embedded_workers=1)) as server:
            assert _post(http, server.url, 0)[0] == 200  # unknown speed: waited, synced
            status, seconds = _post(http, server.url, 1)
            assert (status, seconds < 0.5) == (202, True), seconds
            assert _synced_soon(services, 2)
            slow.delay = 0.0
            for index in range(2, 12):  # answered at once, synced in fast batches
                assert _post(http, server.url, index)[0] in (200, 202)
            assert _synced_soon(services, 12)
            status, _ = _post(http, server.url, 12)
            assert status == 200  # the batches' average came down: waited, synced
    finally:
        services.close(timeout=1)


def test_workers_yield_to_a_webhook_until_its_commit_but_not_during_its_wait(
    idle: tuple[Services, LiveServer], http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``webhooks_waiting`` (the embedded workers' cue to yield, ``Worker._yield``) holds
    while the webhook is committed; during its sync wait it must not, or the worker it
    waits for would wait for it."""
    services, server = idle
    at_commit: list[tuple[bool, bool]] = []
    commit = services.store.enqueue_group

    def spying(news: Any) -> Any:
        at_commit.append((services.ingest.waiting(), services.webhooks_waiting()))
        return commit(news)

    monkeypatch.setattr(services.store, "enqueue_group", spying)
    assert not services.webhooks_waiting()
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(_post, http, server.url, 1)
        deadline = time.monotonic() + 5
        while not at_commit and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # committed, and in its 1 s wait now (nothing syncs it)
        during_wait = services.webhooks_waiting()
        status, _ = answer.result()
    assert at_commit == [(1, 1)]
    assert during_wait == 0
    assert status == 202
    assert not services.webhooks_waiting()


def test_worker_burst_share_reaches_the_embedded_workers(
    make_settings: Callable[..., Settings],
) -> None:
    """``WORKER_BURST_SHARE`` (README) is the share each worker of ``serve`` yields by, and
    the workers yield to this process's webhooks."""
    services = build_services(make_settings(worker_burst_share=0.25))
    try:
        worker = services.new_worker()
        assert worker.burst_share == 0.25
        worker._batch_seconds = 0.2
        assert worker.yield_limit() == pytest.approx(0.2 * 3)
        assert worker.yield_to == services.webhooks_waiting
    finally:
        services.close()
    assert Settings.model_fields["worker_burst_share"].default == Worker.BURST_SHARE
