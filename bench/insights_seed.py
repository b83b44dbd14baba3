"""Seed a year of history (100,000 bookings, 500,000 events) and time the insights report.

    .venv/bin/python -m bench.insights_seed [--db URL] [--bookings N] [--events N] [--keep]

Without ``--db`` a temporary SQLite file is used; give a PostgreSQL URL (an empty
database) for the other run. The schema comes from the real migrations; the rows are
bulk-inserted (the webhook is not the object here): outbox events with receipt and
settle times, the local CRM's companies, contacts, leads, meetings and tasks, changes
made in the CRM, and refused deliveries. It then times, for the year that ends today:
the projection's first catch-up over every event (once per database), and each part of
the report, cold and again warm. Every part must stay under 1 s.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select

from adapter import db
from adapter.backends.local.models import activities, companies, contacts, leads, tasks
from adapter.insights.compute import compute, not_progress_stages, won_stages
from adapter.insights.days import refresh as refresh_days
from adapter.insights.duplicates import _report, local_groups
from adapter.insights.project import catch_up, catch_up_changes, fill_owners
from adapter.insights.report import Filters
from adapter.insights.tables import crm_changes, refusals
from adapter.mapping.loader import load_mapping
from adapter.ui.insights import figures, tiles
from outbox.schema import events

ROOT = Path(__file__).resolve().parent.parent
MAPPING = ROOT / "mappings" / "default.yaml"
TYPES = ("30min-consultation", "workshop")
OWNERS = ("ada@example.com", "bo@example.com", "cy@example.com", "")
CHUNK = 5000


def _chunks(rows: Iterator[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _insert(engine: Engine, table: Any, rows: Iterator[dict[str, Any]]) -> int:
    count = 0
    for chunk in _chunks(rows):
        with engine.begin() as conn:
            conn.execute(insert(table), chunk)
        count += len(chunk)
    return count


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def seed(engine: Engine, *, bookings: int, total_events: int, now: datetime) -> dict[str, int]:
    rng = random.Random(17)
    year = timedelta(days=365)
    plan = []  # per booking: id, type, received, start, events, fate, owner
    for n in range(bookings):
        received = now - year + timedelta(seconds=rng.uniform(0, year.total_seconds() - 3600))
        start = received + timedelta(days=rng.uniform(1, 30))
        fate = rng.choices(("live", "cancelled", "no_show"), (85, 10, 5))[0]
        plan.append((f"bk_{n:06d}", TYPES[n % 2], received, start, fate, OWNERS[n % 4]))
    extra = max(total_events - bookings, 0)

    # Every event as a small tuple first, so that they are stored in receipt order (seq
    # follows receipt, as in a live service); the payload is built while inserting.
    spare = extra
    timeline: list[tuple[datetime, str, str, str, datetime]] = []
    for index, (bid, kind, received, start, fate, _owner) in enumerate(plan):
        left = bookings - index
        follow = spare // left + (1 if rng.random() < (spare % left) / left else 0)
        spare -= follow
        kinds = ["booking.created"] + ["booking.updated"] * follow
        if fate != "live" and follow:
            kinds[-1] = "booking.cancelled" if fate == "cancelled" else "booking.no_show"
        at = received
        for k in kinds:
            timeline.append((at, bid, kind, k, start))
            at = min(at + timedelta(minutes=rng.uniform(1, 600)), now - timedelta(minutes=5))
    timeline.sort()

    def event_rows() -> Iterator[dict[str, Any]]:
        for at, bid, kind, k, start in timeline:
            roll = rng.random()
            state = (
                "dead"
                if roll < 0.002
                else "quarantined"
                if roll < 0.004
                else "retrying"
                if roll < 0.005
                else "superseded"
                if roll < 0.02
                else "synced"
            )
            took = rng.lognormvariate(-1.6, 0.8)
            payload = {
                "bookingId": bid,
                "eventType": kind,
                "event": k,
                "name": "Seeded Person",
                "email": f"{bid}@example.com",
                "company": f"Company {int(bid[3:]) % 40000}",
                "scheduledDate": _iso(start),
                "duration": 30,
                "source": "bookme",
                "updatedAt": _iso(at),
                "notes": "Seeded for the insights benchmark.",
            }
            yield {
                "id": str(uuid.UUID(int=rng.getrandbits(128))),
                "key": bid,
                "kind": k,
                "payload": json.dumps(payload),
                "webhook_id": None,
                "body_hash": uuid.UUID(int=rng.getrandbits(128)).hex * 2,
                "snapshot_at": at,
                "state": state,
                "attempts": 1,
                "next_attempt_at": at,
                "last_error": "seeded failure" if state in ("dead", "quarantined") else None,
                "result": None,
                "received_at": at,
                "synced_at": at + timedelta(seconds=took) if state == "synced" else None,
                "updated_at": at,
            }

    counts = {"events": _insert(engine, events, event_rows())}
    company_count = 40000
    counts["companies"] = _insert(
        engine,
        companies,
        (
            {
                "id": f"co{n:030d}",
                "name_key": f"company {n}",
                "name": f"Company {n}",
                "tags": ["bookme"],
                "created_at": now,
                "updated_at": now,
            }
            for n in range(company_count)
        ),
    )

    def contact_rows() -> Iterator[dict[str, Any]]:
        for bid, _kind, received, _start, _fate, owner in plan:
            yield {
                "id": f"ct{bid}",
                "email_key": f"{bid}@example.com",
                "email": f"{bid}@example.com",
                "first_name": "Seeded",
                "last_name": "Person",
                "company_id": f"co{int(bid[3:]) % company_count:030d}",
                "tags": ["bookme"],
                "owner_email": owner or None,
                "created_at": received,
                "updated_at": received,
            }

    counts["contacts"] = _insert(engine, contacts, contact_rows())
    counts["leads"] = _insert(
        engine,
        leads,
        (
            {
                "id": f"ld{bid}",
                "lead_key": f"{bid}@example.com",
                "title": f"{kind} - Seeded",
                "stage": "CONTACTED",
                "source": "BookMe",
                "source_details": f"BookMe booking {bid}",
                "estimated_value": 5000,
                "lead_score": 60,
                "company_id": f"co{int(bid[3:]) % company_count:030d}",
                "contact_id": f"ct{bid}",
                "tags": ["bookme"],
                "last_activity_date": start,
                "owner_email": owner or None,
                "created_at": received,
                "updated_at": received,
            }
            for bid, kind, received, start, _fate, owner in plan
        ),
    )
    outcome = {"live": "SCHEDULED", "cancelled": "CANCELED", "no_show": "NO_SHOW"}
    counts["meetings"] = _insert(
        engine,
        activities,
        (
            {
                "id": f"ac{bid}",
                "booking_id": bid,
                "lead_id": f"ld{bid}",
                "contact_id": f"ct{bid}",
                "type": "MEETING",
                "subject": f"{kind} - Scheduled",
                "description": "",
                "activity_date": start,
                "duration_minutes": 30,
                "outcome": outcome[fate],
                "source": "BookMe",
                "snapshot_at": received,
                "owner_email": owner or None,
                "created_at": received,
                "updated_at": received,
            }
            for bid, kind, received, start, fate, owner in plan
        ),
    )

    def task_rows() -> Iterator[dict[str, Any]]:
        for bid, kind, received, start, fate, owner in plan:
            keys = ["summary"] if kind == "30min-consultation" else ["prep-info", "follow-up"]
            if fate == "no_show":
                keys.append("no-show-reach-out")
            if rng.random() < 0.01:
                keys = keys[:-1]  # a follow-up missing in the CRM
            for key in keys:
                yield {
                    "id": f"tk{bid}{key[:10]}",
                    "lead_id": f"ld{bid}",
                    "booking_id": bid,
                    "key": key,
                    "title": key,
                    "description": "",
                    "due_date": start + timedelta(days=1),
                    "priority": "medium",
                    "status": "todo" if fate == "live" else "cancelled",
                    "owner_email": owner or None,
                    "created_at": received,
                    "updated_at": received,
                }

    counts["tasks"] = _insert(engine, tasks, task_rows())

    def change_rows() -> Iterator[dict[str, Any]]:
        for bid, _kind, received, start, fate, _owner in plan:
            if fate != "live" or rng.random() < 0.4:
                continue
            steps = [("task", "status", "done", received + timedelta(hours=rng.uniform(1, 48)))]
            after = start + timedelta(hours=1)
            steps.append(("meeting", "outcome", "COMPLETED", after))
            if rng.random() < 0.5:
                steps.append(("deal", "stage", "QUALIFIED", after + timedelta(days=1)))
                if rng.random() < 0.4:
                    won = after + timedelta(days=rng.uniform(2, 60))
                    steps.append(("deal", "stage", "WON", won))
            for object_type, field, value, at in steps:
                if at > now - timedelta(minutes=5):
                    continue  # a change is recorded once made, never ahead of now
                yield {
                    "dedupe_key": uuid.UUID(int=rng.getrandbits(128)).hex * 2,
                    "booking_id": bid,
                    "lead_key": f"{bid}@example.com",
                    "object_type": object_type,
                    "crm_id": f"x{bid}",
                    "task_key": "follow-up" if object_type == "task" else None,
                    "field": field,
                    "old_value": None,
                    "new_value": value,
                    "changed_at": at,
                    "recorded_at": at,
                    "source": "poll",
                    "state": "recorded",
                }

    counts["crm_changes"] = _insert(engine, crm_changes, change_rows())
    counts["refusals"] = _insert(
        engine,
        refusals,
        (
            {
                "received_at": now - timedelta(days=rng.uniform(0, 365)),
                "status": 400,
                "detail": "Invalid payload; email: value is not a valid email address",
            }
            for _ in range(bookings // 200)
        ),
    )
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--db",
        help="database URL (default: a temporary SQLite file); one already seeded is "
        "timed again without seeding",
    )
    parser.add_argument("--bookings", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=500_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{tmp}/insights.db"
        engine = db.make_engine(url)
        db.upgrade(engine)
        now = datetime.now(UTC)
        with engine.connect() as conn:
            seeded = conn.execute(select(func.count()).select_from(events)).scalar()
        if seeded:
            print(f"{seeded} events already there: not seeded again", flush=True)
        else:
            began = time.perf_counter()
            counts = seed(engine, bookings=args.bookings, total_events=args.events, now=now)
            print(f"seeded in {time.perf_counter() - began:.1f} s: {counts}", flush=True)
        mapping = load_mapping(MAPPING)
        # The first report after an upgrade builds insights' own tables from the whole
        # history once; timed apart, since every later report only adds what is new.
        began = time.perf_counter()
        read = catch_up(engine, now=now)
        took = time.perf_counter() - began
        print(f"first build: bookings projection over {read} events {took:.1f} s")
        began = time.perf_counter()
        read = fill_owners(engine, now=now)
        print(f"first build: {read} owners read {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        read = catch_up_changes(
            engine, not_progress=not_progress_stages(mapping), won=won_stages(mapping), now=now
        )
        print(f"first build: {read} CRM changes merged {time.perf_counter() - began:.1f} s")
        began = time.perf_counter()
        count = refresh_days(engine, now=now)
        print(f"first build: {count} closed days summed up {time.perf_counter() - began:.1f} s")
        today = now.date()
        filters = Filters(start=today - timedelta(days=364), end=today + timedelta(days=1))

        def dups() -> Any:
            with engine.connect() as conn:
                return _report(local_groups(conn), checked_at=now, backend="local")

        worst = 0.0
        for run in ("first", "second", "third"):
            began = time.perf_counter()
            report = compute(engine, filters, mapping=mapping, backend="local", duplicates=dups)
            total = time.perf_counter() - began
            began = time.perf_counter()
            drawn = figures(report)
            for chart in drawn.values():
                chart.__html__()
            for tile in tiles(report):
                tile.__html__()
            charts = time.perf_counter() - began
            parts = ", ".join(f"{k} {v:.3f}" for k, v in report.timings.items())
            print(
                f"one-year report ({run}): {total:.2f} s in all; {parts}; "
                f"{len(drawn)} charts and the tiles drawn {charts:.3f}",
                flush=True,
            )
            worst = max(worst, charts, *report.timings.values())
        print(
            f"figures: deliveries {report.webhook.deliveries}, success "
            f"{report.webhook.success_rate:.4f}, sync mean {report.sync.overall.mean} s, "
            f"bookings {report.funnel.totals.bookings}, won {report.funnel.totals.won}"
        )
        engine.dispose()
    print(f"slowest part: {worst:.3f} s ({'under' if worst < 1 else 'OVER'} 1 s)")
    return 0 if worst < 1 else 1


if __name__ == "__main__":
    sys.exit(main())
