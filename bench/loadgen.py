"""The load generator: a separate process posting authentic, distinct bookings to 127.0.0.1.

Two modes, both bounded in time:

- ``open``: open loop at a fixed offered rate. Request *i* is due at
  ``start + i / rate``; its latency runs from that scheduled moment, not from
  when a connection was free, so a slow server is not hidden by the generator
  waiting for it (no coordinated omission).
- ``closed``: saturation. ``--concurrency`` connections each send the next
  request as soon as the previous answer arrived, for ``--duration`` seconds.

It speaks HTTP/1.1 keep-alive over raw asyncio streams (a general client costs
more CPU than the server under test on a 2-core machine). Even so it is Python:
at saturation it takes a core from the server, so ``python -m bench`` drives its
saturation runs with ``wrk`` (``bench/wrk/bookings.lua``, ``bench.harness.wrk``)
and keeps this generator for fixed-rate runs (20-200 req/s, far below what it can
offer), for bursts of an exact size bound by the CRM, and for the once-per-run
client check (the bare endpoint under both clients). Writes one JSON file:
per request the booking id, scheduled send time (epoch seconds), latency and
status, plus the totals.

    python -m bench.loadgen --url http://127.0.0.1:8000/api/bookings/incoming \\
        --secret S --mode open --rate 200 --duration 10 --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CONNECT_TIMEOUT = 5.0


def booking_body(prefix: str, n: int, *, people: int = 0) -> dict[str, Any]:
    """A distinct, valid booking; ``people`` > 0 makes contacts repeat across bookings."""
    who = n % people if people else n
    return {
        "bookingId": f"{prefix}-{n}",
        "eventType": "workshop" if n % 2 else "30min-consultation",
        "name": f"Person {who}",
        "email": f"person{who}.{prefix}@example.com",
        "company": f"Company {who % 60} {prefix}",
        "scheduledDate": "2027-06-15T10:00:00Z",
        "duration": 60,
        "source": "bookme",
    }


@dataclass
class Result:
    booking_id: str
    scheduled: float  # epoch seconds the request was due
    latency: float  # seconds from scheduled to the full answer; -1 when none came
    status: int  # 0: connection error or timeout


@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


@dataclass
class Target:
    host: str
    port: int
    path: str
    secret: str
    prefix: str
    people: int
    timeout: float
    pool: asyncio.Queue[Connection] = field(default_factory=asyncio.Queue)

    def request(self, n: int) -> tuple[str, bytes]:
        body = json.dumps(booking_body(self.prefix, n, people=self.people)).encode()
        head = (
            f"POST {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Content-Type: application/json\r\n"
            f"X-Webhook-Secret: {self.secret}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return f"{self.prefix}-{n}", head.encode() + body

    async def connect(self) -> Connection:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT
        )
        return Connection(reader, writer)

    async def send(self, conn: Connection, payload: bytes) -> int:
        """One request on ``conn``; returns the status (raises on a broken connection)."""
        conn.writer.write(payload)
        head = await conn.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        length = 0
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            lowered = name.strip().lower()
            if lowered == "content-length":
                length = int(value.strip())
            elif lowered == "connection" and value.strip().lower() == "close":
                close = True
        if length:
            await conn.reader.readexactly(length)
        if close:
            raise ConnectionResetError("server closed the connection")
        return status


async def _one(target: Target, n: int, scheduled: float, wall: float) -> Result:
    booking_id, payload = target.request(n)
    conn: Connection | None = None
    status = 0
    try:
        conn = target.pool.get_nowait() if not target.pool.empty() else await target.connect()
        status = await asyncio.wait_for(target.send(conn, payload), target.timeout)
    except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError):
        if conn is not None:
            conn.writer.close()
        conn = None
    latency = time.perf_counter() - scheduled if status else -1.0
    if conn is not None:
        target.pool.put_nowait(conn)
    return Result(booking_id, wall, latency, status)


async def open_loop(
    target: Target, rate: float, duration: float, max_in_flight: int
) -> list[Result]:
    """Offer ``rate`` requests/s for ``duration`` s; latency from each scheduled moment."""
    count = int(rate * duration)
    start = time.perf_counter() + 0.2
    wall_start = time.time() + 0.2
    tasks: list[asyncio.Task[Result]] = []
    in_flight = asyncio.Semaphore(max_in_flight)

    async def fire(n: int, due: float) -> Result:
        async with in_flight:
            return await _one(target, n, due, wall_start + (due - start))

    for n in range(count):
        due = start + n / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(fire(n, due)))
    return list(await asyncio.gather(*tasks))


async def closed_loop(
    target: Target, concurrency: int, duration: float, limit: int | None, start: int = 0
) -> list[Result]:
    """``concurrency`` senders back to back for ``duration`` s (or ``limit`` requests)."""
    results: list[Result] = []
    deadline = time.perf_counter() + duration
    counter = iter(range(start, start + limit if limit is not None else 10**9))

    async def sender() -> None:
        while time.perf_counter() < deadline:
            n = next(counter, None)
            if n is None:
                return
            results.append(await _one(target, n, time.perf_counter(), time.time()))

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return results


def summarize(results: list[Result], seconds: float) -> dict[str, Any]:
    ok = sorted(r.latency for r in results if 200 <= r.status < 300)
    statuses: dict[str, int] = {}
    for r in results:
        statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1

    def pct(q: float) -> float | None:
        if not ok:
            return None
        return ok[min(int(q * len(ok)), len(ok) - 1)]

    return {
        "sent": len(results),
        "accepted": len(ok),
        "statuses": statuses,
        "seconds": seconds,
        "accepted_per_second": len(ok) / seconds if seconds > 0 else 0.0,
        "p50": pct(0.50),
        "p99": pct(0.99),
        "max": ok[-1] if ok else None,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    target = Target(
        host=url.hostname or "127.0.0.1",
        port=url.port or 80,
        path=url.path or "/",
        secret=args.secret,
        prefix=args.prefix,
        people=args.people,
        timeout=args.timeout,
    )
    started = time.perf_counter()
    if args.mode == "open":
        results = await open_loop(target, args.rate, args.duration, args.max_in_flight)
    else:
        results = await closed_loop(target, args.concurrency, args.duration, args.limit, args.start)
    seconds = time.perf_counter() - started
    if args.mode == "open":
        seconds = args.duration  # the offered window; stragglers still count as accepted
    while not target.pool.empty():
        target.pool.get_nowait().writer.close()
    summary = summarize(results, seconds)
    summary["mode"] = args.mode
    summary["requests"] = [[r.booking_id, r.scheduled, r.latency, r.status] for r in results]
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--mode", choices=("open", "closed"), required=True)
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: requests/s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (hard bound)")
    parser.add_argument("--concurrency", type=int, default=32, help="closed loop: connections")
    parser.add_argument("--limit", type=int, help="closed loop: stop after this many requests")
    parser.add_argument("--start", type=int, default=0, help="closed loop: first booking number")
    parser.add_argument("--max-in-flight", type=int, default=512, help="open loop cap")
    parser.add_argument("--timeout", type=float, default=10.0, help="per request")
    parser.add_argument("--prefix", default="bench", help="booking id prefix (distinct runs)")
    parser.add_argument("--people", type=int, default=0, help="repeat contacts every N")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    summary = asyncio.run(_main(args))
    args.out.write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
