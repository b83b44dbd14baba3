"""The running service's collaborators, built from ``Settings`` in one place.

Nothing is built at import time: the app factory, the CLI and the tests call
``build_services`` and may inject their own engine, backend or clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from adapter import db
from adapter.api.throttle import FailureThrottle
from adapter.backends import CrmBackend, build_backend
from adapter.backends.base import Pause, backend_pause, backend_sync_estimate
from adapter.changes.tasks import ExtraTasks
from adapter.errors import MappingError
from adapter.heartbeat import Heartbeat, process_worker_id
from adapter.ingest import IngestPressure
from adapter.mapping import MappingConfig, load_mapping
from adapter.metrics import Metrics
from adapter.secrets import ADMIN_TOKEN_FILE, WEBHOOK_SECRET_FILE, StoredSecret, stored_secret
from adapter.settings import Settings
from adapter.timeutil import utcnow
from adapter.worker import JobHandler, PlanHook, Worker

if TYPE_CHECKING:
    from adapter.hubspot_sync.poll import Poller
    from adapter.notify.record import MailRecord
from outbox.retry import RetryPolicy
from outbox.store import PENDING, Event, OutboxStore
from outbox.wakeup import Listener
from outbox.writer import OutboxWriter

log = logging.getLogger(__name__)


class MappingHolder:
    """The mapping in use; ``reload`` swaps it only when the new file validates."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._current = load_mapping(path)

    @property
    def current(self) -> MappingConfig:
        return self._current

    def reload(self) -> MappingConfig:
        """Load the file again; on ``MappingFileError`` the old mapping stays in use."""
        fresh = load_mapping(self.path)
        self._current = fresh  # one reference swap: readers see old or new, never half
        return fresh


class SyncWaiter:
    """Lets a request wait briefly for its event to sync; woken in-process, else polls.

    An async waiter registers its event id and awaits an ``asyncio.Event`` that
    the worker's settle sets, so the wait holds no thread. A wait is not spent
    where it cannot succeed, since it then only delays the 202 (and holds the
    sender's connection):

    - behind a backlog: when more of this process's accepted events are still
      unsettled than its workers settled in the last ``SYNC_WAIT_MS`` (what they
      can be expected to settle within the wait). A slow CRM shows up here too,
      as a low settle rate;
    - after waits ran out ``SLOW_AFTER`` times in a row (nothing settles them,
      e.g. no worker runs in this process): then one request at a time waits,
      as a probe, and the first probe that syncs in time ends this;
    - behind a slow CRM: when a sync is expected to take more than ``WORTH`` of
      the budget, from the first webhook on. Expected from how long this
      process's workers' recent batches took at the backend (a moving average;
      a backlog's queueing is the rule above's) and from the backend's own
      estimate (HubSpot: its recent answer time times the calls a sync makes
      one after another), whichever is longer. A sync's time spreads (a batch, a retry, the
      worker's pickup), so a wait expected to use most of its budget runs out
      too often, and one that runs out costs the whole budget for a 202.
    """

    # A wait is spent only when the sync is expected within this share of the budget.
    WORTH = 0.5

    # Waits that ran out since the last one that synced in time, before waiting is skipped.
    SLOW_AFTER = 3
    # Accepted events remembered as unsettled at most this long (another process may
    # settle them without telling us), and at most this many.
    FORGET_AFTER = 60.0
    REMEMBER = 100_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._cond = threading.Condition()
        self._lock = threading.Lock()
        self._clock = clock
        self._waiting: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = {}
        self._unsettled: OrderedDict[str, float] = OrderedDict()  # event id -> accepted at
        self._settles: deque[float] = deque()
        self._timeouts = 0
        self._probe: asyncio.Event | None = None
        self._sync_time: float | None = None  # moving average of a batch's apply

    def notify(self, event_id: str) -> None:
        now = self._clock()
        with self._cond:
            self._cond.notify_all()
        with self._lock:
            if self._unsettled.pop(event_id, None) is not None:
                self._settles.append(now)
            woken = list(self._waiting.get(event_id, ()))
        for loop, flag in woken:
            with contextlib.suppress(RuntimeError):  # that loop has closed: nobody waits
                loop.call_soon_threadsafe(flag.set)

    def accepted(self, event_id: str) -> None:
        """Count a newly accepted, unsettled event towards the backlog."""
        with self._lock:
            self._unsettled.setdefault(event_id, self._clock())
            while len(self._unsettled) > self.REMEMBER:
                self._unsettled.popitem(last=False)

    def applied(self, seconds: float) -> None:
        """A worker's batch took ``seconds`` at the backend (claimed to settled)."""
        last = self._sync_time
        self._sync_time = seconds if last is None else 0.7 * last + 0.3 * seconds

    @property
    def sync_time(self) -> float | None:
        """Seconds this process's workers' recent batches took at the backend (moving
        average); ``None`` before the first."""
        return self._sync_time

    def worth(
        self, budget: float, *, backlog_rule: bool = True, estimate: float | None = None
    ) -> bool:
        """Whether a sync is expected within ``WORTH`` of ``budget`` (see ``begin``); asked
        again while a wait runs, since the CRM's speed may become known only then."""
        expected = [t for t in (estimate, self._sync_time if backlog_rule else None) if t]
        return not expected or max(expected) <= budget * self.WORTH

    def begin(
        self,
        event_id: str,
        budget: float,
        *,
        backlog_rule: bool = True,
        estimate: float | None = None,
    ) -> asyncio.Event | None:
        """Register an async wait of up to ``budget`` seconds for ``event_id``; ``None``
        when it is not worth waiting. ``backlog_rule``: this process's workers settle
        (and so notify) its events, so its backlog, settle rate and sync time are known.
        ``estimate``: the backend's own expectation of a sync's seconds, if it has one."""
        now = self._clock()
        if not self.worth(budget, backlog_rule=backlog_rule, estimate=estimate):
            return None
        with self._lock:
            while self._unsettled and next(iter(self._unsettled.values())) < now - max(
                self.FORGET_AFTER, budget
            ):
                self._unsettled.popitem(last=False)
            while self._settles and self._settles[0] < now - budget:
                self._settles.popleft()
            ahead = len(self._unsettled) - (event_id in self._unsettled)
            if backlog_rule and ahead >= max(1, len(self._settles)):
                return None
            probe = self._timeouts >= self.SLOW_AFTER
            if probe and self._probe is not None:
                return None
            flag = asyncio.Event()
            if probe:
                self._probe = flag
            self._waiting.setdefault(event_id, []).append((asyncio.get_running_loop(), flag))
        return flag

    def end(self, event_id: str, flag: asyncio.Event, *, settled: bool) -> None:
        """Unregister ``begin``'s wait, and learn whether waiting is worth it."""
        with self._lock:
            entries = self._waiting.get(event_id, [])
            entries[:] = [entry for entry in entries if entry[1] is not flag]
            if not entries:
                self._waiting.pop(event_id, None)
            self._timeouts = 0 if settled else self._timeouts + 1
            if self._probe is flag:
                self._probe = None
            if settled:
                self._unsettled.pop(event_id, None)  # settled elsewhere: seen by polling

    def wait_for(self, done: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
        """Call ``done`` until it is true or ``timeout`` seconds pass; returns the last answer.

        ``poll`` bounds the wait between checks, so events settled by another
        process (which cannot notify us) are seen too.
        """
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                self._cond.wait(min(poll, remaining))
        return True


@dataclass
class Services:
    """Everything a request handler, a worker or a CLI command needs."""

    settings: Settings
    engine: Engine
    store: OutboxStore
    backend: CrmBackend
    mappings: MappingHolder
    waiter: SyncWaiter
    webhook_secret: str | None
    signing_secrets: list[str]
    admin_token: str | None
    metrics: Metrics
    throttle: FailureThrottle
    generated: list[StoredSecret] = field(default_factory=list)  # made by this start
    workers: list[Worker] = field(default_factory=list)
    heartbeat: Heartbeat | None = None
    poller: Poller | None = None
    listener: Listener | None = None  # PostgreSQL's NOTIFY, waking the workers
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _pause_seen: tuple[float, Pause | None] | None = None  # (when, pause): ``crm_pause``
    writer: OutboxWriter = field(init=False)  # the webhook's single committer
    ingest: IngestPressure = field(default_factory=IngestPressure)  # webhooks before commit

    def __post_init__(self) -> None:
        self.writer = OutboxWriter(self.store)

    def webhooks_waiting(self) -> int:
        """How many webhooks of this process wait for their commit now (received and not
        yet committed), while the writer has a commit queued or under way; 0 while it has
        none (a batch begun then delays no commit yet). The embedded workers yield to them."""
        return max(self.ingest.waiting(), 1) if self.writer.busy() else 0

    def new_worker(self, clock: Callable[[], datetime] = utcnow) -> Worker:
        s = self.settings
        handlers, hooks = self._notify(clock)
        handlers.update(self._changes(clock))
        handlers.update(self._hubspot_handlers(clock))
        worker = Worker(
            self.store,
            self.backend,
            lambda: self.mappings.current,
            batch_size=s.batch_size,
            lease_seconds=s.outbox_lease_seconds,
            poll_seconds=s.worker_poll_seconds,
            on_settled=self.waiter.notify,
            on_applied=self.waiter.applied,
            yield_to=self.webhooks_waiting,
            burst_share=s.worker_burst_share,
            clock=clock,
            metrics=self.metrics,
            handlers=handlers,
            plan_hooks=hooks,
            plan_steps=[ExtraTasks(self.engine).extend],
        )
        self.workers.append(worker)
        return worker

    def _notify(
        self, clock: Callable[[], datetime]
    ) -> tuple[dict[str, JobHandler], list[PlanHook]]:
        """The send jobs' room when ``SMTP_URL`` is set; without it, none (automatic
        tasks stay ordinary tasks, and ``/readyz`` says why)."""
        s = self.settings
        if s.smtp_url is None or s.smtp_from is None:
            return {}, []
        from adapter.notify import SEND_KIND, NotifyHandler, SendScheduler, SmtpSender
        from adapter.notify.smtp import SmtpTarget

        sender = SmtpSender(
            SmtpTarget.parse(s.smtp_url.get_secret_value()), timeout=s.smtp_timeout_seconds
        )
        handler = NotifyHandler(
            self.store,
            sender,
            self.mail_record(),
            lambda: self.mappings.current,
            templates=self.mappings.path.parent,
            mail_from=s.smtp_from,
            clock=clock,
        )
        return {SEND_KIND: handler}, [SendScheduler(self.store, clock=clock).schedule]

    def _changes(self, clock: Callable[[], datetime]) -> dict[str, JobHandler]:
        """The room that pushes changes made in the CRM back to BookMe. Always there:
        without ``BOOKME_API_URL`` a push is dead at once with that reason, and replayable."""
        from adapter.bookme.push import pusher_for
        from adapter.changes import PUSH_KIND
        from adapter.changes.push import PushHandler

        handler = PushHandler(
            self.store,
            lambda: pusher_for(self.settings),
            clock=clock,
            wake=self.wake_workers,
            counted=lambda outcome: self.metrics.bookme_pushes.labels(outcome).inc(),
        )
        return {PUSH_KIND: handler}

    def _hubspot_handlers(self, clock: Callable[[], datetime]) -> dict[str, JobHandler]:
        """HubSpot: the webhook deliveries' read-back job (``adapter.hubspot_sync``)."""
        from adapter.backends.hubspot import HubSpotBackend

        if not isinstance(self.backend, HubSpotBackend):
            return {}
        from adapter.hubspot_sync import DELIVERY_KIND
        from adapter.hubspot_sync.delivery import DeliveryHandler

        handler = DeliveryHandler(
            self.backend.api,
            self.store,
            lambda: self.mappings.current.defaults.hubspot.deal_stages,
            lag_seconds=self.settings.hubspot_search_lag_seconds,
            clock=clock,
            metrics=self.metrics,
        )
        return {DELIVERY_KIND: handler}

    def hubspot_poller(self) -> Poller | None:
        """HubSpot: the poll for changes made there (``HUBSPOT_POLL_SECONDS``; 0: none)."""
        from adapter.backends.hubspot import HubSpotBackend

        if not isinstance(self.backend, HubSpotBackend):
            return None
        from adapter.hubspot_sync.poll import Poller

        s = self.settings
        return Poller(
            self.backend.api,
            self.engine,
            self.store,
            lambda: self.mappings.current.defaults.hubspot.deal_stages,
            interval=s.hubspot_poll_seconds,
            lag_seconds=s.hubspot_search_lag_seconds,
            metrics=self.metrics,
        )

    def start_poller(self) -> None:
        """Poll HubSpot in a daemon thread until ``close`` (with the workers, in ``serve``
        and ``worker``); several processes may run it, the poll's lease lets one at a time."""
        if self.poller is not None or self.settings.hubspot_poll_seconds <= 0:
            return
        self.poller = self.hubspot_poller()
        if self.poller is None:
            return
        thread = threading.Thread(
            target=self.poller.run, args=(self._stop,), name="hubspot-poll", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def mail_record(self) -> MailRecord:
        """Where the CRM in use records a sent mail and tells a task done by hand."""
        from adapter.notify.record import LocalMailRecord, UnreadMailRecord

        if self.settings.crm_backend == "local":
            return LocalMailRecord()
        from adapter.backends.hubspot import HubSpotBackend
        from adapter.notify.hubspot import HubSpotMailRecord

        if isinstance(self.backend, HubSpotBackend):
            return HubSpotMailRecord(self.backend.api)
        return UnreadMailRecord()

    def start_workers(self, count: int) -> None:
        """Run ``count`` worker loops in daemon threads until ``close``, with the
        process's heartbeat (which also takes over dead processes' claims)."""
        if self.heartbeat is None:
            s = self.settings
            self.heartbeat = Heartbeat(
                self.store,
                process_worker_id(),
                interval=s.worker_heartbeat_seconds,
                stale_after=s.worker_stale_seconds,
                on_take_over=self.wake_workers,
            )
            self.heartbeat.start()
        listen = self.settings.worker_listen and self.engine.dialect.name == "postgresql"
        if self.listener is None and listen:
            # Events committed by other processes wake these workers at once; the poll
            # (WORKER_POLL_SECONDS) stays as the fallback.
            self.listener = Listener(self.engine, self.wake_workers).start()
        for index in range(count):
            worker = self.new_worker()
            thread = threading.Thread(
                target=worker.run, args=(self._stop,), name=f"worker-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)
        if count:
            self.start_poller()

    def wake_workers(self) -> None:
        for worker in self.workers:
            worker.wake()

    def replay(self, event_ids: Sequence[str], *, actor: str) -> list[Event]:
        """``OutboxStore.replay`` (audited as ``actor``), logged, and the workers woken.

        The API and the dashboard replay through here; raises ``EventNotFound``.
        """
        replayed = self.store.replay(event_ids, actor=actor)
        for event in replayed:
            log.info(
                "event %s replayed by %s (now %s)",
                event.id,
                actor,
                event.state,
                extra={"event_id": event.id, "booking_id": event.key, "actor": actor},
            )
        self.wake_workers()
        return replayed

    def replay_state(self, state: str, *, actor: str) -> list[Event]:
        """Every dead (or quarantined) event again, as ``replay`` does one."""
        replayed = self.store.replay_state(state, actor=actor)
        log.info(
            "%d %s event(s) replayed by %s",
            len(replayed),
            state,
            actor,
            extra={"actor": actor, "replayed": len(replayed)},
        )
        self.wake_workers()
        return replayed

    def await_settled(self, event: Event) -> Event:
        """``event`` once no longer pending, or as it is after ``SYNC_WAIT_MS``.

        What the webhook, an import and a dashboard replay wait for before answering.
        """
        latest = event

        def settled() -> bool:
            nonlocal latest
            latest = self.store.get(event.id) or latest
            return latest.state not in PENDING

        wait = self.settings.sync_wait_ms / 1000
        if wait > 0 and latest.state in PENDING:
            self.waiter.wait_for(settled, wait)
        return latest

    def _current(self, event: Event) -> Event:
        return self.store.get(event.id) or event

    # How long the webhook path trusts its last look at the CRM's pause (a pause shared
    # by every process is a database read; once per webhook it was one on the event loop).
    PAUSE_FRESH_SECONDS = 1.0

    def crm_pause(self) -> Pause | None:
        """``backend_pause``, looked up at most every ``PAUSE_FRESH_SECONDS``."""
        now = time.monotonic()
        seen = self._pause_seen
        if seen is None or now - seen[0] >= self.PAUSE_FRESH_SECONDS:
            seen = self._pause_seen = (now, backend_pause(self.backend))
        return seen[1]

    async def settle(self, event: Event, poll: float = 0.1) -> Event:
        """``await_settled`` for an async handler: awaits the worker's settle, holding no
        thread, and answers at once (``event`` as it is) when the CRM is paused or
        recent waits ran out (``SyncWaiter``).

        ``poll`` bounds the wait between reads of the event, so events settled by
        another process (which cannot notify us) are seen too.
        """
        budget = self.settings.sync_wait_ms / 1000
        if budget <= 0 or event.state not in PENDING or self.crm_pause() is not None:
            return event
        own = bool(self.workers)
        flag = self.waiter.begin(
            event.id, budget, backlog_rule=own, estimate=backend_sync_estimate(self.backend)
        )
        if flag is None:
            return event
        latest = event
        deadline = time.monotonic() + budget
        try:
            while latest.state in PENDING:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(flag.wait(), min(poll, remaining))
                flag.clear()  # a settle that left it pending (a retry) must not spin us
                # A short indexed read, off the loop: SQLite or the network may stall.
                latest = await asyncio.to_thread(self._current, latest)
                estimate = backend_sync_estimate(self.backend)
                if latest.state in PENDING and not self.waiter.worth(
                    budget, backlog_rule=own, estimate=estimate
                ):
                    break  # the CRM turned out slow (its first answers came in): 202 now
        finally:
            self.waiter.end(event.id, flag, settled=latest.state not in PENDING)
        return latest

    def reload_mappings(self) -> bool:
        """Reload the mapping file (SIGHUP); on failure log why and keep the mapping in use."""
        try:
            mapping = self.mappings.reload()
        except MappingError as exc:
            log.error(
                "mapping reload refused; the previous mapping stays in use: %s",
                exc,
                extra={"mappings_path": str(self.mappings.path)},
            )
            return False
        log.info(
            "mapping reloaded",
            extra={
                "mappings_path": str(self.mappings.path),
                "event_types": sorted(mapping.event_types),
            },
        )
        return True

    def refresh_crm_account(self) -> threading.Thread | None:
        """HubSpot: read the portal's account info (the dashboard links into its UI domain)
        once, in a background thread (returned); a failure is logged and the stored info kept."""
        if self.settings.crm_backend != "hubspot":
            return None
        from adapter.backends.hubspot import HubSpotBackend
        from adapter.backends.hubspot.account import refresh_in_background

        if not isinstance(self.backend, HubSpotBackend):
            return None
        return refresh_in_background(self.backend.api, self.engine)

    def stop_workers(self, timeout: float) -> bool:
        """Stop claiming now and give the batches in hand ``timeout`` seconds in all.

        Returns whether every worker thread stopped in time; claims a worker had
        not yet handed to the backend are released by the worker itself.
        """
        self._stop.set()
        if self.listener is not None:
            self.listener.stop()
            self.listener = None
        self.wake_workers()
        if self.poller is not None:
            self.poller.wake()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.0))
        busy = [thread.name for thread in self._threads if thread.is_alive()]
        if self.heartbeat is not None:
            self.heartbeat.stop(forget=not busy)
            self.heartbeat = None
        if busy:
            log.warning(
                "workers still busy after %.1fs; their leases expire and other workers take over",
                timeout,
                extra={"threads": busy},
            )
        return not busy

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker loops (each finishes its batch) and release resources."""
        self.writer.close(timeout)
        self.stop_workers(timeout)
        self.backend.close()
        self.engine.dispose()


def build_services(
    settings: Settings,
    *,
    engine: Engine | None = None,
    backend: CrmBackend | None = None,
    migrate: bool = True,
    generate_secrets: bool = True,
) -> Services:
    """Build the service's collaborators; fails fast on a bad mapping or database."""
    mappings = MappingHolder(settings.mappings_path)
    engine = engine or db.make_engine(settings.database_url)
    if migrate:
        db.upgrade(engine)
    webhook_secret = (
        settings.crm_webhook_secret.get_secret_value() if settings.crm_webhook_secret else None
    )
    admin_token = settings.admin_token.get_secret_value() if settings.admin_token else None
    generated: list[StoredSecret] = []
    if generate_secrets and webhook_secret is None and not settings.signing_secrets:
        stored = stored_secret(settings.data_dir, WEBHOOK_SECRET_FILE)
        webhook_secret = stored.value
        if stored.generated:
            generated.append(stored)
    if generate_secrets and admin_token is None:
        stored = stored_secret(settings.data_dir, ADMIN_TOKEN_FILE)
        admin_token = stored.value
        if stored.generated:
            generated.append(stored)
    retry = RetryPolicy(
        max_attempts=settings.outbox_max_attempts,
        base_seconds=settings.outbox_retry_base_seconds,
        cap_seconds=settings.outbox_retry_cap_seconds,
    )
    store = OutboxStore(engine, retry=retry)
    metrics = Metrics(lambda: store)
    crm = backend or build_backend(settings, engine, lambda: mappings.current, metrics)
    metrics.watch_pause(crm.name, lambda: backend_pause(crm))
    return Services(
        settings=settings,
        engine=engine,
        store=store,
        backend=crm,
        mappings=mappings,
        waiter=SyncWaiter(),
        webhook_secret=webhook_secret,
        signing_secrets=settings.signing_secrets,
        admin_token=admin_token,
        metrics=metrics,
        throttle=FailureThrottle(
            settings.auth_failure_limits,
            failures=metrics.auth_failures,
            throttled=metrics.auth_throttled,
        ),
        generated=generated,
    )
