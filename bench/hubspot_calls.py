"""HubSpot calls per booking, through the real ingest -> outbox -> worker -> backend path.

Runs against the fake HubSpot on 127.0.0.1 and prints a table. Call counts
are deterministic; the unbatched run (worker batch size 1) is the baseline
beside the batched ones. The last run keeps HubSpot's real limit on both
sides (100 requests / 10 s) and reports throughput and 429s received.

    .venv/bin/python -m bench.hubspot_calls [--burst 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapter.backends.hubspot import build_api, run_setup
from adapter.booking import parse_booking
from adapter.ingest import accept_booking
from adapter.mapping import load_mapping
from adapter.services import Services, build_services
from adapter.settings import Settings
from tests.fakes.hubspot import FakeHubSpot

ROOT = Path(__file__).resolve().parent.parent
MAPPING = ROOT / "mappings" / "default.yaml"


def booking(n: int, **overrides: Any) -> dict[str, Any]:
    body = {
        "bookingId": f"bench-{n}",
        "eventType": "workshop" if n % 2 else "30min-consultation",
        "name": f"Person {n % 400}",
        "email": f"person{n % 400}@example.com",
        "company": f"Company {n % 60}",
        "scheduledDate": "2027-06-15T10:00:00Z",
        "duration": 60,
        "source": "bookme",
    }
    body.update(overrides)
    return body


@dataclass
class Run:
    name: str
    bookings: int
    calls: int
    seconds: float
    rate_limited: int

    @property
    def per_booking(self) -> float:
        return self.calls / self.bookings


def run(
    name: str,
    bodies: list[dict[str, Any]],
    *,
    batch: int,
    real_limits: bool = False,
    warmup: list[dict[str, Any]] | None = None,
) -> Run:
    """Deliver ``bodies`` (after ``warmup``), drain with one worker, count HubSpot calls."""
    limit = 100 if real_limits else None
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeHubSpot(rate_limit=limit, search_rate_limit=4 if real_limits else None) as fake,
    ):
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{tmp}/bench.db",
            crm_backend="hubspot",
            hubspot_access_token=fake.token,
            hubspot_base_url=fake.url,
            hubspot_rate_limit="100/10s" if real_limits else "100000/10s",
            mappings_path=MAPPING,
            data_dir=Path(tmp) / "var",
            crm_webhook_secret="bench-webhook-secret-0123456789",  # noqa: S106
            worker_batch_size=batch,
        )
        api = build_api(fake.token or "", fake.url, settings.rate_limit)
        assert run_setup(api, load_mapping(MAPPING)).ok
        api.close()
        services = build_services(settings)
        try:
            if warmup:
                deliver(services, warmup)
            fake.calls.clear()
            before = fake.rate_limited
            started = time.perf_counter()
            deliver(services, bodies)
            seconds = time.perf_counter() - started
            counts = services.store.counts()
            assert counts["synced"] == len(bodies) + len(warmup or []), counts
            calls = sum(fake.calls.values())
            return Run(name, len(bodies), calls, seconds, fake.rate_limited - before)
        finally:
            services.close()


def deliver(services: Services, bodies: list[dict[str, Any]]) -> None:
    mapping = services.mappings.current
    for body in bodies:
        accept_booking(services.store, parse_booking(body), body, mapping)
    services.new_worker().drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--baseline", type=int, default=200, help="bookings in the unbatched run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    burst = [booking(n) for n in range(args.burst)]
    runs = [
        run("single new booking (with company)", [booking(0)], batch=20),
        run(
            "repeat booking (known contact, company, deal)",
            [booking(400, bookingId="bench-repeat")],
            batch=20,
            warmup=[booking(0)],
        ),
        run(
            f"baseline: burst of {args.baseline}, unbatched (batch 1)",
            burst[: args.baseline],
            batch=1,
        ),
        run(f"burst of {args.burst}, worker batch 20", burst, batch=20),
        run(f"burst of {args.burst}, worker batch 100 (default)", burst, batch=100),
        run(
            f"burst of {args.burst}, batch 100, real limits (100/10 s, 4 searches/s)",
            burst,
            batch=100,
            real_limits=True,
        ),
    ]
    baseline = runs[2].per_booking
    row = "{:<70} {:>8} {:>6} {:>13} {:>11} {:>10} {:>5}"
    print(
        row.format("run", "bookings", "calls", "calls/booking", "vs baseline", "bookings/s", "429s")
    )
    for r in runs:
        print(
            row.format(
                r.name,
                r.bookings,
                r.calls,
                f"{r.per_booking:.2f}",
                f"{r.per_booking / baseline:.2f}x",
                f"{r.bookings / r.seconds:.1f}",
                r.rate_limited,
            )
        )
    if args.json:
        args.json.write_text(
            json.dumps([r.__dict__ | {"per_booking": r.per_booking} for r in runs], indent=2)
        )


if __name__ == "__main__":
    main()
