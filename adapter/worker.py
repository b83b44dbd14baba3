"""The worker: claims outbox events, plans them with the mapping, applies them to the CRM.

The worker decides retry, dead-letter or quarantine from the error's type
alone (see ``adapter.errors``); it never builds SQL (``outbox.store`` does).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from structlog.contextvars import bound_contextvars

from adapter.backends.base import CrmBackend, SyncJob, SyncResult
from adapter.booking import parse_booking
from adapter.errors import (
    AdapterError,
    MappingError,
    PausedError,
    PermanentError,
    RetryableError,
)
from adapter.heartbeat import process_worker_id
from adapter.mapping import MappingConfig, plan_booking
from adapter.metrics import Metrics
from adapter.owners import OwnerRotations
from adapter.plan import BookingPlan
from adapter.timeutil import utcnow
from outbox.exceptions import LeaseLost
from outbox.store import Claim, OutboxStore

log = logging.getLogger(__name__)


class JobHandler(Protocol):
    """The room that handles one outbox job kind (``notify.send``…): it settles the
    claim itself, or raises an ``AdapterError`` for the worker to retry or dead-letter."""

    def handle(self, claim: Claim) -> None: ...


PlanHook = Callable[[Connection, BookingPlan, dict[str, Any]], None]
"""Runs on the transaction that marks a booking synced (scheduling its follow-up jobs)."""

PlanStep = Callable[[Sequence[BookingPlan]], list[BookingPlan]]
"""Completes a batch's plans (in order) before the backend sees them, from the service's own
records (e.g. the tasks the service added to a booking, ``adapter.changes.tasks``); may read
the database, once per batch."""


def default_owner() -> str:
    """``host:pid:nonce:thread``: the process's heartbeat id, then the worker thread."""
    return f"{process_worker_id()}:{threading.get_ident()}"


class Worker:
    """One claim-plan-apply loop; run several (threads or processes) to scale out."""

    # A batch waits for the webhooks of its process to commit (``_yield``) at least this
    # long, and at most as long as leaves the worker ``burst_share`` of the process's CPU
    # under a burst (its last batch's CPU time x (1 / burst_share - 1)), never past
    # ``YIELD_MAX``. CPU, not wall time: a HubSpot batch waits on the network, GIL-free.
    YIELD_SECONDS = 0.05
    BURST_SHARE = 0.05  # ``WORKER_BURST_SHARE``'s default
    YIELD_MAX = 1.0
    # This many webhooks waiting for their commit at once is a burst, not a steady rate
    # (at 200/s one or two wait at a time; with 32 clients at saturation, a dozen or more).
    CROWD = 4

    def __init__(
        self,
        store: OutboxStore,
        backend: CrmBackend,
        mapping: Callable[[], MappingConfig],
        *,
        batch_size: int = 20,
        lease_seconds: float = 60.0,
        poll_seconds: float = 0.5,
        on_settled: Callable[[str], None] | None = None,
        on_applied: Callable[[float], None] | None = None,
        yield_to: Callable[[], int] | None = None,
        burst_share: float = BURST_SHARE,
        clock: Callable[[], datetime] = utcnow,
        owner: str | None = None,
        metrics: Metrics | None = None,
        owners: OwnerRotations | None = None,
        handlers: Mapping[str, JobHandler] | None = None,
        plan_hooks: Sequence[PlanHook] = (),
        plan_steps: Sequence[PlanStep] = (),
    ) -> None:
        self.store = store
        self.backend = backend
        self.mapping = mapping
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.on_settled = on_settled
        self.on_applied = on_applied  # told the seconds each batch took at the backend
        # How many webhooks wait for their commit in this process now (``_yield``).
        self.yield_to = yield_to
        self.burst_share = burst_share
        self.clock = clock
        self.owner = owner or default_owner()
        self.metrics = metrics
        self.owners = owners or OwnerRotations(store.engine)
        # Jobs by kind; a kind without a handler is a booking snapshot.
        self.handlers = dict(handlers or {})
        self.plan_hooks = tuple(plan_hooks)
        self.plan_steps = tuple(plan_steps)
        self._wake = threading.Event()
        self._batch_seconds = 0.0  # the CPU time of the last batch that claimed anything
        self._crowd = 0.0  # share of recent looks that found a crowd (``_yield``)

    def wake(self) -> None:
        """Look for work now instead of at the next poll."""
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Process batches until ``stop`` is set; between empty polls, sleep or be woken.

        Once ``stop`` is set nothing more is claimed, and claims of the batch in
        hand that were not yet handed to the backend are released.
        """
        while not stop.is_set():
            self._yield(stop)
            started = time.thread_time()
            try:
                busy = self.run_once(stop) > 0
            except Exception:
                log.exception("worker loop failed; backing off")
                busy = False
            if busy:
                self._batch_seconds = time.thread_time() - started
            else:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()

    def _yield(self, stop: threading.Event) -> None:
        """Let this process's webhooks commit first: wait until a look (every 2 ms) finds
        none waiting, unless recent looks mostly found a crowd (``CROWD`` or more: a
        burst); never longer than ``yield_limit()``.

        A worker in the API's process shares its GIL and SQLite's write lock:
        a batch begun while webhooks wait for their commit slows each of them.
        At a steady rate a webhook or two wait now and then, and the worker
        hardly waits. Under a burst a crowd waits all the time, with instants of
        none between two group commits; a worker that took those instants would
        take half the process from the API. So under a burst the worker runs
        one batch per ``yield_limit()``, about ``burst_share`` of the CPU, and
        the backlog is drained once the burst ends. How crowded recent looks
        were is a moving average over this and earlier waits (``_crowd``).
        """
        if self.yield_to is None:
            return
        deadline = time.monotonic() + self.yield_limit()
        while not stop.is_set():
            waiting = self.yield_to()
            self._crowd = 0.9 * self._crowd + 0.1 * (waiting >= self.CROWD)
            if not waiting and self._crowd <= 0.5:
                return
            if time.monotonic() >= deadline:
                return
            time.sleep(0.002)

    def yield_limit(self) -> float:
        """The longest a batch waits for webhooks (``_yield``), in seconds."""
        share = self._batch_seconds * (1 / self.burst_share - 1)
        return max(self.YIELD_SECONDS, min(self.YIELD_MAX, share))

    def run_once(self, stop: threading.Event | None = None) -> int:
        """Claim and process one batch; returns how many events it claimed."""
        claims = self.store.claim(
            self.owner, limit=self.batch_size, lease_seconds=self.lease_seconds
        )
        bookings = [claim for claim in claims if claim.event.kind not in self.handlers]
        for claim in claims:
            if claim.event.kind in self.handlers:
                self._dispatch(claim)
        if bookings:
            self.process(bookings, stop)
        return len(claims)

    def _dispatch(self, claim: Claim) -> None:
        """Hand a job to the room for its kind; its ``AdapterError`` is retried or
        dead-lettered by type like a booking's."""
        event = claim.event
        with bound_contextvars(event_id=event.id, job_key=event.key):
            try:
                # Renewed like a batch's: a slow SMTP server must not let a second
                # worker take the job over while this one is still sending.
                with self._renewing([(event.id, claim.token)]):
                    self.handlers[event.kind].handle(claim)
            except AdapterError as exc:
                self._fail(event.id, claim.token, exc)
            except LeaseLost:
                log.warning("lease lost; another worker owns this job now")
            except Exception as exc:  # a bug or an outage in the room: retried, logged
                log.exception("%s job failed", event.kind)
                self._fail(event.id, claim.token, RetryableError(repr(exc)))

    def drain(self, max_batches: int = 10_000) -> int:
        """Process until nothing is due (tests, ``worker --drain``); returns events claimed."""
        total = 0
        for _ in range(max_batches):
            claimed = self.run_once()
            if claimed == 0:
                break
            total += claimed
        return total

    def process(self, claims: Sequence[Claim], stop: threading.Event | None = None) -> None:
        """Plan every claim and apply the batch; when ``stop`` is set before the
        batch reaches the backend, release the claims instead (shutdown)."""
        jobs: list[SyncJob] = []
        received = {claim.event.id: claim.event.received_at for claim in claims}
        payloads = {claim.event.id: claim.event.payload for claim in claims}
        for claim in claims:
            event = claim.event
            with bound_contextvars(event_id=event.id, booking_id=event.key):
                try:
                    booking = parse_booking(event.payload)
                    plan = plan_booking(
                        booking, self.mapping(), now=self.clock(), received_at=event.received_at
                    )
                    plan = self._assign_owner(plan)
                except MappingError as exc:
                    self._fail(event.id, claim.token, exc)
                    continue
                except ValidationError as exc:  # stored payloads were valid; a schema change
                    invalid = PermanentError(f"payload invalid now: {exc}")
                    self._fail(event.id, claim.token, invalid)
                    continue
                except SQLAlchemyError as exc:  # the owner assignment's database
                    self._fail(event.id, claim.token, RetryableError(f"assigning owner: {exc}"))
                    continue
            jobs.append(SyncJob(event.id, event.key, claim.token, plan))
        jobs = self._complete(jobs)
        if not jobs:
            return
        if stop is not None and stop.is_set():
            for job in jobs:
                self.store.release(job.event_id, job.lease_token)
            log.info("shutting down: released %d unstarted claim(s)", len(jobs))
            return
        settle = _Settle(self.store, self.plan_hooks, payloads)
        settled = settle.settled

        try:
            with self._renewing([(job.event_id, job.lease_token) for job in jobs]):
                applying = time.monotonic()
                failures: Mapping[str, AdapterError] = self.backend.apply(jobs, settle)
                if self.on_applied is not None:
                    self.on_applied(time.monotonic() - applying)
        except Exception as exc:  # a backend bug or outage: every job of the batch retries
            log.exception(
                "backend %s failed a whole batch",
                self.backend.name,
                extra={"event_ids": [job.event_id for job in jobs]},
            )
            error = exc if isinstance(exc, AdapterError) else RetryableError(repr(exc))
            failures = {job.event_id: error for job in jobs}
        for job in jobs:
            with bound_contextvars(event_id=job.event_id, booking_id=job.booking_id):
                failure = failures.get(job.event_id)
                if failure is not None:
                    self._fail(job.event_id, job.lease_token, failure)
                elif job.event_id in settled:
                    self._synced(job, received[job.event_id])
                else:  # the backend dropped it: settle raised LeaseLost
                    log.warning("lease lost; another worker owns this event now")

    def _complete(self, jobs: list[SyncJob]) -> list[SyncJob]:
        """The batch's plans through the plan steps; if a step's database fails, every job
        of the batch is retried."""
        if not jobs or not self.plan_steps:
            return jobs
        plans = [job.plan for job in jobs]
        try:
            for step in self.plan_steps:
                plans = step(plans)
        except SQLAlchemyError as exc:
            for job in jobs:
                self._fail(job.event_id, job.lease_token, RetryableError(f"completing plan: {exc}"))
            return []
        return [replace(job, plan=plan) for job, plan in zip(jobs, plans, strict=True)]

    def _assign_owner(self, plan: BookingPlan) -> BookingPlan:
        """Turn the plan's round robin into the booking's assigned owner.

        Here rather than in the planner (which stays pure) or in each backend
        (HubSpot's writes are not in a database transaction): the assignment
        commits before any CRM write, so a retry, a replay or a reschedule of
        the booking finds it and every backend only ever sees an email.
        """
        owner = plan.owner
        if owner is None or not owner.round_robin:
            return plan
        email = self.owners.assign(plan.booking_id, owner.round_robin)
        return plan.model_copy(update={"owner": owner.model_copy(update={"email": email})})

    @contextmanager
    def _renewing(self, leases: Sequence[tuple[str, str]]) -> Iterator[None]:
        """Renew the batch's leases every third of a lease while the backend works.

        A live batch that outlasts its lease (a rate-limited HubSpot, a deal lock
        to wait for) is then not taken over by another worker, whose CRM writes
        would race its own. A stalled or killed worker renews nothing, so its
        leases still expire and are taken over.
        """

        def renew() -> None:
            try:
                self.store.extend(leases, self.lease_seconds)
            except Exception:  # the next renewal may get through; the lease still fences
                log.warning("could not renew the batch's leases", exc_info=True)

        held = _KEEPER.hold(self.lease_seconds / 3, renew)
        try:
            yield
        finally:
            _KEEPER.release(held)

    def _synced(self, job: SyncJob, received: datetime) -> None:
        latency = max((self.clock() - received).total_seconds(), 0.0)
        log.info("event synced", extra={"latency_seconds": round(latency, 3)})
        if self.metrics is not None:
            self.metrics.settled.labels("synced").inc()
            self.metrics.sync_latency.observe(latency)
        if self.on_settled is not None:
            self.on_settled(job.event_id)

    def _fail(self, event_id: str, token: str, error: AdapterError) -> None:
        """Quarantine, postpone, retry or dead-letter, chosen by the error's type alone.

        A ``PausedError`` (the CRM refuses everything until a time) puts the event
        back for that time without counting the attempt: a pause of hours, met
        again and again, never dead-letters an event.
        """
        result = None
        try:
            if isinstance(error, MappingError):
                event = self.store.quarantine(event_id, token, str(error))
            elif isinstance(error, PausedError):
                event = self.store.postpone(
                    event_id, token, error.until, f"{type(error).__name__}: {error}"
                )
                result = "postponed"
            else:
                event = self.store.mark_failed(
                    event_id,
                    token,
                    f"{type(error).__name__}: {error}",
                    retryable=isinstance(error, RetryableError),
                    retry_after=error.retry_after if isinstance(error, RetryableError) else None,
                )
        except LeaseLost:
            log.warning("lease lost on event %s; another worker owns it now", event_id)
        else:
            result = result or event.state
            log.warning("event %s %s: %s", event_id, result, error, extra={"state": event.state})
            if self.metrics is not None:
                self.metrics.settled.labels(result).inc()
        if self.on_settled is not None:
            self.on_settled(event_id)


class _Settle:
    """The worker's ``SettleMany``: marks jobs synced (fenced), then runs the plan hooks;
    ``settled`` holds the jobs whose last settle went through."""

    def __init__(
        self, store: OutboxStore, hooks: Sequence[PlanHook], payloads: Mapping[str, dict[str, Any]]
    ) -> None:
        self.store = store
        self.hooks = hooks
        self.payloads = payloads
        self.settled: set[str] = set()

    def __call__(self, conn: Connection, job: SyncJob, result: SyncResult) -> None:
        self.many(conn, [(job, result)])

    def many(self, conn: Connection, done: Sequence[tuple[SyncJob, SyncResult]]) -> None:
        # A backend may settle a job again after rolling back the first settle.
        self.settled.difference_update(job.event_id for job, _ in done)
        marks = [
            (job.event_id, job.lease_token, result.model_dump(mode="json")) for job, result in done
        ]
        if len(marks) == 1:
            self.store.mark_synced(conn, *marks[0])
        else:
            self.store.mark_synced_many(conn, marks)
        for job, _ in done:
            for hook in self.hooks:
                hook(conn, job.plan, self.payloads[job.event_id])
        self.settled.update(job.event_id for job, _ in done)


class _LeaseKeeper:
    """One daemon thread that runs every held batch's renewal when it is due.

    A thread of its own per batch cost a fast batch more than its bookings did:
    starting and joining it each wait for the GIL the worker holds. A renewal
    already running when its batch is released may still finish; it is fenced
    by the tokens like any settle, so it renews only leases still held.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._held: dict[int, tuple[float, float, Callable[[], None]]] = {}
        self._count = 0
        self._thread: threading.Thread | None = None

    def hold(self, every: float, renew: Callable[[], None]) -> int:
        """Run ``renew`` every ``every`` seconds from now until ``release``."""
        with self._changed:
            self._count += 1
            self._held[self._count] = (time.monotonic() + every, every, renew)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="lease-renewer", daemon=True)
                self._thread.start()
            self._changed.notify()
            return self._count

    def release(self, key: int) -> None:
        with self._changed:
            self._held.pop(key, None)

    def _run(self) -> None:
        while True:
            with self._changed:
                now = time.monotonic()
                due = [(key, entry) for key, entry in self._held.items() if entry[0] <= now]
                if not due:
                    nearest = min((entry[0] for entry in self._held.values()), default=None)
                    self._changed.wait(None if nearest is None else nearest - now)
                    continue
                for key, (_, every, renew) in due:
                    self._held[key] = (now + every, every, renew)
            for _, (_, _, renew) in due:
                renew()


_KEEPER = _LeaseKeeper()
