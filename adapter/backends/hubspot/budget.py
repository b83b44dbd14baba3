"""A client-side request budget: at most ``limit`` requests in any rolling ``window``.

HubSpot's limit is per portal, whatever talks to it, so the budget must be too:

- ``RollingWindow`` is one process's budget, shared by all its threads
  (``shared_budget``); enough for a single ``serve``.
- ``DatabaseWindow`` keeps the slots in the service's database, so every
  worker process on the same database (PostgreSQL scale-out, or several
  processes on one SQLite file) draws from one budget: N processes together
  stay under the portal's limit instead of each assuming it has all of it.

Either way a 429 ``hold``s the budget, so everyone pauses, not only the one
refused. Longer than any hold, a ``pause`` (HubSpot's 477 "Migration in
progress", a spent daily limit) makes ``acquire`` raise ``PausedError`` at once
until it ends, so nobody sleeps for hours inside a call. ``observe`` follows
HubSpot's ``X-HubSpot-RateLimit-Max``/``-Remaining`` headers: the portal's real
limit replaces the configured one, and a nearly spent interval (other apps on
the portal) holds the budget for the interval. Tables ``hubspot_rate_slots``
and ``hubspot_rate_holds`` are created by migration ``0006_hubspot_rate_budget``;
the pause and the limit seen are columns of the holds table
(``0011_hubspot_pauses``).
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    case,
    delete,
    func,
    insert,
    select,
    text,
)

from adapter.backends.base import Pause
from adapter.db import upsert_insert
from adapter.errors import PausedError

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class Budget(Protocol):
    """What ``HubSpotApi`` needs of a budget."""

    def acquire(self) -> float: ...

    def hold(self, seconds: float) -> None: ...

    def pause(self, until: datetime, reason: str) -> None: ...

    def paused(self) -> Pause | None: ...

    def observe(self, maximum: int, remaining: int, interval: float) -> None: ...


def low_remaining(maximum: int) -> int:
    """At or below this many requests left in HubSpot's interval, hold until it has passed.

    A few in reserve: requests already on their way when the answer arrives
    still count against the interval.
    """
    return max(1, maximum // 50)


def _pause_error(until: float, reason: str) -> PausedError:
    at = datetime.fromtimestamp(until, UTC)
    return PausedError(
        f"HubSpot paused until {at.isoformat(timespec='seconds')}: {reason}",
        until=at,
        reason=reason,
    )


def _slot_margin(window: float, margin: float | None) -> float:
    # A slot is stamped before the request leaves and HubSpot stamps it on arrival:
    # keep each slot a little longer than the window so the two windows agree.
    return window + (0.02 * window + 0.05 if margin is None else margin)


class RollingWindow:
    """At most ``limit`` acquisitions per ``window`` seconds, across threads."""

    def __init__(
        self,
        limit: int,
        window: float,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        margin: float | None = None,
        wall: Clock = time.time,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a budget needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = _slot_margin(window, margin)
        self._clock = clock
        self._sleep = sleep
        self._wall = wall
        self._stamps: deque[float] = deque()
        self._held_until = 0.0
        self._paused: tuple[float, str] | None = None
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one request slot, sleeping until one is free; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                if self._paused is not None and self._paused[0] > self._wall():
                    raise _pause_error(*self._paused)
                now = self._clock()
                while self._stamps and self._stamps[0] <= now - self.window:
                    self._stamps.popleft()
                delay = self._held_until - now
                if delay <= 0 and len(self._stamps) < self.limit:
                    self._stamps.append(now)
                    return waited
                if delay <= 0:
                    delay = self._stamps[0] + self.window - now
            # Sleep outside the lock so other threads can see the budget meanwhile.
            delay = max(delay, 0.001)
            self._sleep(delay)
            waited += delay

    def hold(self, seconds: float) -> None:
        """Refuse every slot for ``seconds`` (HubSpot said 429)."""
        with self._lock:
            self._held_until = max(self._held_until, self._clock() + seconds)

    def pause(self, until: datetime, reason: str) -> None:
        """Refuse every slot until ``until``: ``acquire`` raises ``PausedError`` meanwhile."""
        with self._lock:
            if self._paused is None or until.timestamp() > self._paused[0]:
                self._paused = (until.timestamp(), reason)

    def paused(self) -> Pause | None:
        with self._lock:
            if self._paused is None or self._paused[0] <= self._wall():
                return None
            return Pause(datetime.fromtimestamp(self._paused[0], UTC), self._paused[1])

    def observe(self, maximum: int, remaining: int, interval: float) -> None:
        """Follow HubSpot's rate-limit headers: its ``maximum`` per interval, and a hold
        for the ``interval`` when (nearly) none of it remains."""
        if maximum >= 1:
            self.limit = maximum
        if remaining <= low_remaining(maximum):
            self.hold(interval)


_shared: dict[tuple[str, str, int, float], RollingWindow] = {}
_shared_lock = threading.Lock()


def shared_budget(portal: str, kind: str, limit: int, window: float) -> RollingWindow:
    """The process-wide budget of ``kind`` (``"requests"``, ``"search"``) for ``portal``."""
    key = (portal, kind, limit, window)
    with _shared_lock:
        budget = _shared.get(key)
        if budget is None:
            budget = _shared[key] = RollingWindow(limit, window)
        return budget


# --- one budget for every process on the database -----------------------------------

budget_metadata = MetaData()

_slot_id = BigInteger().with_variant(Integer(), "sqlite")

rate_slots = Table(
    "hubspot_rate_slots",
    budget_metadata,
    Column("id", _slot_id, primary_key=True, autoincrement=True),
    Column("budget", String(200), nullable=False),
    Column("taken_at", Float(), nullable=False),
    Index("ix_hubspot_rate_slots_budget", "budget", "taken_at"),
)

rate_holds = Table(
    "hubspot_rate_holds",
    budget_metadata,
    Column("budget", String(200), primary_key=True),
    Column("held_until", Float(), nullable=False),
    Column("paused_until", Float(), nullable=True),
    Column("pause_reason", String(500), nullable=True),
    Column("limit_seen", Integer(), nullable=True),
)


def portal_budget_name(base_url: str, access_token: str, kind: str) -> str:
    """A stable name for one portal's budget of ``kind``, the same in every process.

    The token identifies the portal; only a digest of it is stored.
    """
    digest = hashlib.sha256(f"{base_url.rstrip('/')}|{access_token}".encode()).hexdigest()
    return f"{kind}:{digest[:24]}"


class DatabaseWindow:
    """``RollingWindow`` with its slots in the database, shared by every process on it.

    Each acquisition is one short transaction that serialises the budget's
    takers (PostgreSQL: a transaction-scoped advisory lock on the budget's
    name; SQLite: the write lock ``BEGIN IMMEDIATE`` takes), drops slots older
    than the window, and takes a slot if fewer than ``limit`` remain and no
    hold is in force. Time is the database server's clock on PostgreSQL, so
    processes on several hosts agree; SQLite is one host, so ``clock`` is used.
    Waiting happens outside the transaction.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        limit: int,
        window: float,
        *,
        clock: Clock = time.time,
        sleep: Sleep = time.sleep,
        margin: float | None = None,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a budget needs limit >= 1 and window > 0")
        self.name = name
        self.limit = limit
        self.window = _slot_margin(window, margin)
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._clock = clock
        self._sleep = sleep
        self._limit_seen: int | None = None  # this process's last write of ``limit_seen``

    def _now(self, conn: Connection) -> float:
        if self._postgres:
            # The lock also serialises this budget's takers until commit.
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                {"name": "budget:" + self.name},
            )
            return float(
                conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
            )
        return self._clock()

    def _try(self) -> float:
        """Take a slot and return 0, or take nothing and return how long to wait."""
        with self._engine.begin() as conn:
            now = self._now(conn)
            conn.execute(
                delete(rate_slots).where(
                    rate_slots.c.budget == self.name, rate_slots.c.taken_at <= now - self.window
                )
            )
            hold = conn.execute(
                select(
                    rate_holds.c.held_until,
                    rate_holds.c.paused_until,
                    rate_holds.c.pause_reason,
                    rate_holds.c.limit_seen,
                ).where(rate_holds.c.budget == self.name)
            ).one_or_none()
            if hold is not None and hold.paused_until is not None and hold.paused_until > now:
                raise _pause_error(hold.paused_until, hold.pause_reason or "paused")
            if hold is not None and hold.held_until > now:
                return float(hold.held_until - now)
            limit = hold.limit_seen if hold is not None and hold.limit_seen else self.limit
            taken, oldest = conn.execute(
                select(func.count(), func.min(rate_slots.c.taken_at)).where(
                    rate_slots.c.budget == self.name
                )
            ).one()
            if taken < limit:
                conn.execute(insert(rate_slots).values(budget=self.name, taken_at=now))
                return 0.0
            return float(oldest + self.window - now)

    def acquire(self) -> float:
        """Take one request slot, sleeping until one is free; returns the seconds waited."""
        waited = 0.0
        while True:
            delay = self._try()
            if delay <= 0:
                return waited
            # A little jitter so the processes that wait for one slot do not all wake at once.
            delay = max(delay, 0.001) + random.uniform(0, 0.02)
            self._sleep(delay)
            waited += delay

    def _later(self, column: Column[float], value: float) -> Any:
        """``column`` or ``value``, whichever is later: never shorten what another process set."""
        later = func.greatest if self._postgres else func.max
        return later(func.coalesce(column, value), value)

    def _upsert_hold(self, conn: Connection, **values: Any) -> None:
        statement = upsert_insert(conn, rate_holds).values(
            budget=self.name, **{"held_until": 0.0, **values}
        )
        update = {
            name: self._later(rate_holds.c[name], value)
            if name in ("held_until", "paused_until")
            else value
            for name, value in values.items()
        }
        if "pause_reason" in values:
            # The reason goes with the pause that wins.
            update["pause_reason"] = case(
                (
                    func.coalesce(rate_holds.c.paused_until, 0.0) <= values["paused_until"],
                    values["pause_reason"],
                ),
                else_=rate_holds.c.pause_reason,
            )
        conn.execute(statement.on_conflict_do_update(index_elements=["budget"], set_=update))

    def hold(self, seconds: float) -> None:
        """Refuse every slot, in every process, for ``seconds`` (HubSpot said 429)."""
        with self._engine.begin() as conn:
            self._upsert_hold(conn, held_until=self._now(conn) + seconds)

    def pause(self, until: datetime, reason: str) -> None:
        """Refuse every slot, in every process, until ``until``: ``acquire`` raises
        ``PausedError`` meanwhile (HubSpot's 477, a spent daily limit)."""
        with self._engine.begin() as conn:
            self._upsert_hold(conn, paused_until=until.timestamp(), pause_reason=reason[:500])

    def paused(self) -> Pause | None:
        """The pause in force for every process on the database, if any (one read)."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(rate_holds.c.paused_until, rate_holds.c.pause_reason).where(
                    rate_holds.c.budget == self.name
                )
            ).one_or_none()
        if row is None or row.paused_until is None or row.paused_until <= self._clock():
            return None
        return Pause(datetime.fromtimestamp(row.paused_until, UTC), row.pause_reason or "paused")

    def observe(self, maximum: int, remaining: int, interval: float) -> None:
        """Follow HubSpot's rate-limit headers for every process: its ``maximum`` per
        interval replaces the configured limit, and (nearly) nothing ``remaining``
        holds the budget for the ``interval``. Writes only when something changes."""
        changed = maximum >= 1 and maximum != self._limit_seen
        low = remaining <= low_remaining(maximum)
        if not (changed or low):
            return
        with self._engine.begin() as conn:
            values: dict[str, Any] = {}
            if changed:
                values["limit_seen"] = maximum
            if low:
                values["held_until"] = self._now(conn) + interval
            self._upsert_hold(conn, **values)
        if changed:
            self._limit_seen = maximum
