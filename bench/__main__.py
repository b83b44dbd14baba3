"""Every benchmark on this machine, each figure beside a baseline measured in the same run.

    .venv/bin/python -m bench [--quick] [--out bench/results] [--only ingest,e2e,...]

Scenarios: ingest, e2e, drain, hubspot, slowcrm, postgres, pgwake.

Real processes throughout: ``bookme-crm serve`` / ``worker`` as subprocesses on
free loopback ports with their own temporary database, the load generator as its
own process, the fake HubSpot (``tests.fakes.hubspot``) as its own process. Every
scenario is bounded in time.

Two load generators. Saturation (closed loop: as fast as the server answers) is
driven by Debian's ``wrk``, a C client, with ``bench/wrk/bookings.lua`` (distinct,
authenticated bookings): on 2 cores a Python client steals a core from the server
it measures, so ingest's saturation runs (bare, embedded worker, ``--no-worker``,
split worker) and the drain scenario's backlog fill use wrk, and ingest prints
the bare endpoint's rate under wrk beside the 1,500/s target and beside the same
bare endpoint under the Python client, once, to show the client is not the
bottleneck. The Python asyncio generator (``bench.loadgen``) stays for the
fixed-rate (open loop) latency runs, 20-200 req/s, far below what it can offer,
because it schedules each request and measures from that moment (no coordinated
omission) and records every booking id for the end-to-end latencies; and for the
HubSpot, slow-CRM and PostgreSQL bursts, which send an exact number of bookings
and are bound by the CRM's limits (100 requests / 10 s), not by the client.
``wrk`` must be installed (``apt-get install -y wrk``; ``.ci/run`` does it). Writes ``report.json``
and ``report.md`` to the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from bench import harness
from bench.harness import PYTHON, ROOT, percentile, ratio
from bench.report import render_markdown

SCENARIOS = ("ingest", "e2e", "drain", "hubspot", "slowcrm", "postgres", "pgwake")


@dataclass(frozen=True)
class Sizes:
    """How long and how big each scenario is; ``--quick`` shrinks everything."""

    seconds: float  # each fixed-rate or saturation window
    ingest_rate: float
    e2e_rate: float
    backlog: int
    hubspot_burst: int
    hubspot_baseline: int
    pg_backlog: int
    pg_latency: float  # seconds the fake HubSpot adds to each request
    # Waited before a HubSpot run so that earlier calls leave the portal's 10 s window;
    # a quick run's few calls stay far below the limit (and the budget holds them anyway).
    window_wait: float = 10.5

    @classmethod
    def for_run(cls, quick: bool) -> Sizes:
        if quick:
            return cls(1.0, 200, 50, 300, 100, 10, 200, 0.05, window_wait=0.5)
        return cls(10.0, 200, 50, 10_000, 1_000, 100, 2_000, 0.1)


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count() or 0,
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def _latency_ms(summary: dict[str, Any]) -> dict[str, float | None]:
    return {
        q: (None if summary.get(q) is None else round(summary[q] * 1000, 2)) for q in ("p50", "p99")
    }


def _rate_figures(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "sent": summary["sent"],
        "accepted": summary["accepted"],
        "statuses": summary["statuses"],
        "accepted_per_second": round(summary["accepted_per_second"], 1),
        **{f"{k}_ms": v for k, v in _latency_ms(summary).items()},
    }


INGEST_TARGET = 1_500.0  # issue 14: serve --no-worker at saturation, accepted/s


def _client_check(wrk_rate: float, python_rate: float) -> dict[str, Any]:
    """The bare endpoint's rate under wrk beside the target and beside the Python client."""
    check = {
        "client": f"wrk -t{harness.WRK_THREADS} -c32 -s bench/wrk/bookings.lua",
        "bare_wrk_per_second": round(wrk_rate, 1),
        "bare_python_per_second": round(python_rate, 1),
        "target_per_second": INGEST_TARGET,
        "bare_wrk_multiple_of_target": ratio(wrk_rate, INGEST_TARGET),
        "wrk_over_python": ratio(wrk_rate, python_rate),
    }
    print(
        f"[bench] client check: bare {wrk_rate:,.0f}/s with wrk = "
        f"{wrk_rate / INGEST_TARGET:.1f}x the {INGEST_TARGET:,.0f}/s target; "
        f"the same bare with the Python client {python_rate:,.0f}/s",
        flush=True,
    )
    return check


# --- 1. ingest -----------------------------------------------------------------------


def ingest(work: Path, sizes: Sizes, memory: dict[str, float]) -> dict[str, Any]:
    """Accepted webhooks/s and ack latency, ``SYNC_WAIT_MS=0`` on SQLite, beside a bare endpoint."""
    window = sizes.seconds
    bound = window + 60
    figures: dict[str, Any] = {}
    for name in ("bare", "service", "service_no_worker", "service_split_worker"):
        with harness.processes(work) as procs:
            if name == "bare":
                proc, base = harness.start_bare(procs)
            else:
                env = harness.service_env(
                    f"sqlite:///{work}/{name}.db", work / f"var-{name}", SYNC_WAIT_MS="0"
                )
                proc, base = harness.start_serve(procs, env, no_worker=name != "service")
                if name == "service_split_worker":  # the README's SQLite scale-out, measured
                    procs.start("worker", [PYTHON, "-m", "adapter.cli", "worker"], env)
            url = f"{base}/api/bookings/incoming"
            common = {"bound": bound, "timeout": 10}
            harness.loadgen(work, url, mode="closed", concurrency=8, limit=200, duration=10,
                            prefix=f"warm-{name}", **common)  # fmt: skip
            fixed = harness.loadgen(
                work, url, mode="open", rate=sizes.ingest_rate, duration=window,
                prefix=f"fixed-{name}", **common,
            )  # fmt: skip
            proc.sample_rss()
            saturated = harness.wrk(
                url, concurrency=32, duration=window, prefix=f"sat-{name}", bound=bound
            )
            proc.sample_rss()
            figures[name] = {
                "fixed_rate": _rate_figures(fixed),
                "saturation": _rate_figures(saturated),
            }
            if name == "bare":  # the client check: the same bare endpoint, Python client
                python = harness.loadgen(
                    work, url, mode="closed", concurrency=32, duration=window,
                    prefix="sat-bare-python", **common,
                )  # fmt: skip
                figures[name]["saturation_python_client"] = _rate_figures(python)
                figures["client_check"] = _client_check(
                    saturated["accepted_per_second"], python["accepted_per_second"]
                )
            proc.stop()
            memory[f"ingest ({name})"] = proc.peak_rss_mb
    service, bare = figures["service"], figures["bare"]
    figures["offered_rate"] = sizes.ingest_rate
    figures["no_worker_saturation_ratio"] = ratio(
        figures["service_no_worker"]["saturation"]["accepted_per_second"],
        bare["saturation"]["accepted_per_second"],
    )
    figures["split_worker_saturation_ratio"] = ratio(
        figures["service_split_worker"]["saturation"]["accepted_per_second"],
        bare["saturation"]["accepted_per_second"],
    )
    figures["saturation_ratio"] = ratio(
        service["saturation"]["accepted_per_second"], bare["saturation"]["accepted_per_second"]
    )
    figures["fixed_p99_ratio"] = ratio(
        service["fixed_rate"]["p99_ms"], bare["fixed_rate"]["p99_ms"]
    )
    return figures


# --- 2. end-to-end and drain on the local backend ---------------------------------------


def e2e(work: Path, sizes: Sizes, memory: dict[str, float]) -> dict[str, Any]:
    """Request -> CRM write latency at a fixed rate (outbox ``synced_at`` minus scheduled send).

    The local backend writes the CRM rows and sets ``synced_at`` in one
    transaction, so ``synced_at`` is the moment of the CRM write (to within
    the commit). Baseline: the bare endpoint's round trip at the same rate.
    """
    url_db = f"sqlite:///{work}/e2e.db"
    bound = sizes.seconds + 60
    with harness.processes(work) as procs:
        bare, bare_base = harness.start_bare(procs)
        base_run = harness.loadgen(
            work, f"{bare_base}/api/bookings/incoming", mode="open", rate=sizes.e2e_rate,
            duration=sizes.seconds, prefix="e2e-bare", bound=bound,
        )  # fmt: skip
        bare.stop()
        env = harness.service_env(url_db, work / "var-e2e")
        proc, base = harness.start_serve(procs, env)
        run = harness.loadgen(
            work, f"{base}/api/bookings/incoming", mode="open", rate=sizes.e2e_rate,
            duration=sizes.seconds, prefix="e2e", bound=bound,
        )  # fmt: skip
        complete = harness.wait_synced(url_db, run["accepted"], 60, [proc])
        proc.stop()
        memory["end-to-end"] = proc.peak_rss_mb
    outbox = harness.read_outbox(url_db)
    latencies = [
        outbox.synced[booking_id] - scheduled
        for booking_id, scheduled, _, status in run["requests"]
        if 200 <= status < 300 and booking_id in outbox.synced
    ]
    bare_ms = _latency_ms(base_run)
    p50 = percentile(latencies, 0.5)
    p99 = percentile(latencies, 0.99)
    return {
        "rate": sizes.e2e_rate,
        "bookings": len(latencies),
        "all_synced": complete,
        "states": outbox.states,
        "p50_ms": None if p50 is None else round(p50 * 1000, 2),
        "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        "mean_ms": round(1000 * sum(latencies) / len(latencies), 2) if latencies else None,
        "ack": _rate_figures(run),
        "baseline_bare_roundtrip_ms": bare_ms,
        "p99_ratio": ratio(p99 * 1000 if p99 else None, bare_ms["p99"]),
        "method": "outbox synced_at (written in the CRM write's transaction) "
        "minus the request's scheduled send time",
    }


def drain(work: Path, sizes: Sizes, memory: dict[str, float]) -> dict[str, Any]:
    """A backlog stored through ``serve --no-worker``, then drained by one ``worker``."""
    url_db = f"sqlite:///{work}/drain.db"
    n = sizes.backlog
    env = harness.service_env(url_db, work / "var-drain", SYNC_WAIT_MS="0")
    with harness.processes(work) as procs:
        proc, base = harness.start_serve(procs, env, no_worker=True)
        fill = harness.wrk(
            f"{base}/api/bookings/incoming", concurrency=32, limit=n, duration=300,
            prefix="drain", people=max(n // 3, 1), bound=360,
        )  # fmt: skip
        proc.stop()
        memory["backlog fill (--no-worker)"] = proc.peak_rss_mb
        # wrk stops each thread at its share of n; a few answers in flight then still
        # stored a booking, so the backlog is what the outbox holds.
        backlog = sum(harness.read_outbox(url_db).states.values())
        started = time.monotonic()
        worker = procs.start("worker", [PYTHON, "-m", "adapter.cli", "worker"], env)
        complete = harness.wait_synced(url_db, backlog, 300, [worker])
        wall = time.monotonic() - started
        worker.stop()
    outbox = harness.read_outbox(url_db)
    rate = outbox.throughput()
    return {
        "backlog": backlog,
        "all_synced": complete,
        "states": outbox.states,
        "drain_per_second": None if rate is None else round(rate, 1),
        "drain_wall_seconds_incl_start": round(wall, 2),
        "baseline_fill_per_second": round(fill["accepted_per_second"], 1),
        "ratio_to_fill": ratio(rate, fill["accepted_per_second"]),
        "method": "events synced / (last synced_at - first synced_at), one worker process; "
        "baseline: the rate serve --no-worker stored the same backlog (32 wrk connections)",
    }


# --- 3. HubSpot --------------------------------------------------------------------------


def _hubspot_setup(procs: harness.Procs, env: dict[str, str]) -> None:
    subprocess.run(  # noqa: S603
        [PYTHON, "-m", "adapter.cli", "hubspot", "setup"],
        cwd=procs.workdir,
        env={**os.environ, **env},
        check=True,
        timeout=120,
        capture_output=True,
    )


def _send(work: Path, base: str, **options: Any) -> dict[str, Any]:
    return harness.loadgen(
        work, f"{base}/api/bookings/incoming", mode="closed", duration=120, bound=180, **options
    )


def hubspot(work: Path, sizes: Sizes, memory: dict[str, float]) -> dict[str, Any]:
    """HubSpot calls per booking against the fake with HubSpot's real limits; baseline unbatched."""
    figures: dict[str, Any] = {}
    # Baseline: worker batch 1 (every booking alone); call counts need no rate limit.
    with harness.processes(work) as procs:
        _, url, token = harness.start_fake_hubspot(procs, real_limits=False)
        url_db = f"sqlite:///{work}/hubspot-base.db"
        env = harness.service_env(
            url_db, work / "var-hs-base", CRM_BACKEND="hubspot", HUBSPOT_ACCESS_TOKEN=token,
            HUBSPOT_BASE_URL=url, WORKER_BATCH_SIZE="1", HUBSPOT_RATE_LIMIT="100000/10s",
        )  # fmt: skip
        _hubspot_setup(procs, env)
        proc, base = harness.start_serve(procs, env)
        before = harness.fake_state(url)["total_calls"]
        n = sizes.hubspot_baseline
        _send(work, base, concurrency=8, limit=n, prefix="hsbase", people=400)
        harness.wait_synced(url_db, n, 120, [proc])
        calls = harness.fake_state(url)["total_calls"] - before
        figures["baseline_unbatched"] = {
            "bookings": n,
            "calls": calls,
            "calls_per_booking": round(calls / n, 3),
        }
    # The real limits on both sides: 100 requests / 10 s (fake and client), 4 searches / s.
    with harness.processes(work) as procs:
        _, url, token = harness.start_fake_hubspot(procs, real_limits=True)
        url_db = f"sqlite:///{work}/hubspot.db"
        env = harness.service_env(
            url_db, work / "var-hs", CRM_BACKEND="hubspot", HUBSPOT_ACCESS_TOKEN=token,
            HUBSPOT_BASE_URL=url, SYNC_WAIT_MS="0",
        )  # fmt: skip
        _hubspot_setup(procs, env)
        time.sleep(sizes.window_wait)  # setup's calls leave HubSpot's 10 s window
        proc, base = harness.start_serve(procs, env)
        expected = 0

        def measure(name: str, count: int, **options: Any) -> dict[str, Any]:
            nonlocal expected
            state = harness.fake_state(url)
            started = time.time()
            _send(work, base, limit=count, **options)
            expected += count
            harness.wait_synced(url_db, expected, 180, [proc])
            after = harness.fake_state(url)
            calls = after["total_calls"] - state["total_calls"]
            outbox = harness.read_outbox(url_db)
            prefix = f"{options['prefix']}-"
            last = max((t for k, t in outbox.synced.items() if k.startswith(prefix)), default=None)
            seconds = (last - started) if last else None
            return {
                "bookings": count,
                "calls": calls,
                "calls_per_booking": round(calls / count, 3),
                "by_endpoint": {
                    k: v - state["calls"].get(k, 0)
                    for k, v in after["calls"].items()
                    if v - state["calls"].get(k, 0)
                },
                "rate_limited_429": after["rate_limited"] - state["rate_limited"],
                "seconds": None if seconds is None else round(seconds, 2),
                "bookings_per_second": round(count / seconds, 2) if seconds else None,
            }

        # people=1: every booking of the "hs" prefix is the same person, company and deal.
        figures["single_new"] = measure("single", 1, concurrency=1, prefix="hs", people=1)
        figures["repeat"] = measure("repeat", 1, concurrency=1, prefix="hs", people=1, start=2)
        time.sleep(sizes.window_wait)  # the burst starts on a fresh 10 s window
        figures["burst"] = measure(
            "burst", sizes.hubspot_burst, concurrency=32, prefix="hsburst", people=400
        )
        proc.stop()
        memory["hubspot"] = proc.peak_rss_mb
    base_cpb = figures["baseline_unbatched"]["calls_per_booking"]
    for key in ("single_new", "repeat", "burst"):
        figures[key]["ratio_to_unbatched"] = ratio(figures[key]["calls_per_booking"], base_cpb)
    return figures


# --- 3b. a slow CRM: the sync wait against no wait ---------------------------------------


class HealthProbe:
    """``GET /healthz`` every 100 ms in a thread while a burst runs: the latencies seen."""

    def __init__(self, base: str) -> None:
        self.url = f"{base}/healthz"
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=30) as answer:  # noqa: S310
                    answer.read()
            except OSError:
                continue
            self.latencies.append(time.perf_counter() - started)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(35)

    def summary(self) -> dict[str, Any]:
        p50, p99 = percentile(self.latencies, 0.5), percentile(self.latencies, 0.99)
        return {
            "probes": len(self.latencies),
            "p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        }


def slowcrm(work: Path, sizes: Sizes, memory: dict[str, float]) -> dict[str, Any]:
    """A burst into a slow HubSpot (200 ms an answer, real limits), ``serve`` with its worker:
    the default ``SYNC_WAIT_MS`` against ``SYNC_WAIT_MS=0`` (the baseline), in one run."""
    figures: dict[str, Any] = {"latency_ms": 200, "burst": sizes.hubspot_burst}
    for name, wait in (("no_wait", "0"), ("default_wait", None)):
        with harness.processes(work) as procs:
            _, url, token = harness.start_fake_hubspot(procs, real_limits=True, latency=0.2)
            url_db = f"sqlite:///{work}/slow-{name}.db"
            extra = {"SYNC_WAIT_MS": wait} if wait is not None else {}
            env = harness.service_env(
                url_db, work / f"var-slow-{name}", CRM_BACKEND="hubspot",
                HUBSPOT_ACCESS_TOKEN=token, HUBSPOT_BASE_URL=url, **extra,
            )  # fmt: skip
            _hubspot_setup(procs, env)
            time.sleep(sizes.window_wait)  # setup's calls leave HubSpot's 10 s window
            proc, base = harness.start_serve(procs, env)
            started = time.time()
            with HealthProbe(base) as probe:
                burst = _send(
                    work, base, concurrency=32, limit=sizes.hubspot_burst,
                    prefix=f"slow{name}", people=400, timeout=30,
                )  # fmt: skip
            complete = harness.wait_synced(url_db, burst["accepted"], 240, [proc])
            outbox = harness.read_outbox(url_db)
            last = max(outbox.synced.values(), default=None)
            proc.stop()
            memory[f"slow CRM ({name})"] = proc.peak_rss_mb
        figures[name] = {
            **_rate_figures(burst),
            "healthz": probe.summary(),
            "all_synced": complete,
            "synced_after_seconds": None if last is None else round(last - started, 1),
        }
    figures["ratio"] = ratio(
        figures["default_wait"]["accepted_per_second"], figures["no_wait"]["accepted_per_second"]
    )
    return figures


# --- 4. PostgreSQL scaling ----------------------------------------------------------------


def _pg(statement: str) -> None:
    engine = create_engine(harness.PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def postgres(work: Path, sizes: Sizes, memory: dict[str, float]) -> dict[str, Any]:
    """Drain throughput of 1, 2 and 4 ``worker`` processes on PostgreSQL, one backlog each
    (cloned from one template), syncing to the fake HubSpot with injected latency."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin = harness.PG_ADMIN_URL.rsplit("/", 1)[0]
    template = f"{admin}/{name}"
    n = sizes.pg_backlog
    figures: dict[str, Any] = {"latency_ms": sizes.pg_latency * 1000, "backlog": n, "runs": {}}
    made = [name]
    _pg(f'CREATE DATABASE "{name}"')
    try:
        env = harness.service_env(template, work / "var-pg", SYNC_WAIT_MS="0")
        with harness.processes(work) as procs:
            proc, base = harness.start_serve(procs, env, no_worker=True)
            fill = _send(work, base, concurrency=32, limit=n, prefix="pg", people=max(n // 3, 1))
            proc.stop()
            memory["postgres fill (--no-worker)"] = proc.peak_rss_mb
        figures["fill_per_second"] = round(fill["accepted_per_second"], 1)
        for workers in (1, 2, 4):
            clone = f"{name}_{workers}"
            _pg(f'CREATE DATABASE "{clone}" TEMPLATE "{name}"')
            made.append(clone)
            url_db = f"{admin}/{clone}"
            with harness.processes(work) as procs:
                _, url, token = harness.start_fake_hubspot(
                    procs, real_limits=False, latency=sizes.pg_latency
                )
                env = harness.service_env(
                    url_db, work / f"var-pg{workers}", CRM_BACKEND="hubspot",
                    HUBSPOT_ACCESS_TOKEN=token, HUBSPOT_BASE_URL=url,
                    HUBSPOT_RATE_LIMIT="100000/10s",
                )  # fmt: skip
                _hubspot_setup(procs, env)
                argv = [PYTHON, "-m", "adapter.cli", "worker"]
                started = [procs.start(f"worker{i}", argv, env) for i in range(workers)]
                complete = harness.wait_synced(url_db, fill["accepted"], 240, started)
                for proc in started:
                    proc.stop()
            outbox = harness.read_outbox(url_db)
            rate = outbox.throughput()
            figures["runs"][str(workers)] = {
                "all_synced": complete,
                "states": outbox.states,
                "drain_per_second": None if rate is None else round(rate, 1),
            }
        one = figures["runs"]["1"]["drain_per_second"]
        for workers in ("2", "4"):
            figures["runs"][workers]["scaling"] = ratio(
                figures["runs"][workers]["drain_per_second"], one
            )
        figures["method"] = (
            "each run drains a clone of one backlog with N `bookme-crm worker` processes "
            "(concurrency 1) into the fake HubSpot (rate limit lifted, "
            f"{sizes.pg_latency * 1000:.0f} ms added to every request); events synced / "
            "(last synced_at - first synced_at); baseline: 1 worker"
        )
    finally:
        for database in reversed(made):
            _pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return figures


def pgwake(work: Path, sizes: Sizes, memory: dict[str, float]) -> dict[str, Any]:
    """Request -> CRM write on PostgreSQL with ``serve --no-worker`` beside one ``worker``
    process at 20 webhooks/s: woken by NOTIFY (default) against the poll alone
    (``WORKER_LISTEN=0``, the baseline), one scratch database each, in one run."""
    figures: dict[str, Any] = {"rate": 20.0}
    admin = harness.PG_ADMIN_URL.rsplit("/", 1)[0]
    for name, listen in (("poll", "0"), ("notify", "1")):
        database = f"bench_{uuid.uuid4().hex[:10]}"
        _pg(f'CREATE DATABASE "{database}"')
        try:
            url_db = f"{admin}/{database}"
            env = harness.service_env(
                url_db, work / f"var-wake-{name}", SYNC_WAIT_MS="0", WORKER_LISTEN=listen
            )
            with harness.processes(work) as procs:
                proc, base = harness.start_serve(procs, env, no_worker=True)
                worker = procs.start("worker", [PYTHON, "-m", "adapter.cli", "worker"], env)
                harness.wait_line(worker, "worker running")
                time.sleep(1)  # its first polls and the listener's LISTEN are behind it
                run = harness.loadgen(
                    work, f"{base}/api/bookings/incoming", mode="open", rate=20,
                    duration=sizes.seconds, prefix=f"wake{name}", bound=sizes.seconds + 60,
                )  # fmt: skip
                complete = harness.wait_synced(url_db, run["accepted"], 60, [proc, worker])
            outbox = harness.read_outbox(url_db)
        finally:
            _pg(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        latencies = [
            outbox.synced[booking_id] - scheduled
            for booking_id, scheduled, _, status in run["requests"]
            if 200 <= status < 300 and booking_id in outbox.synced
        ]
        p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
        figures[name] = {
            "bookings": len(latencies),
            "all_synced": complete,
            "p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "p99_ms": None if p99 is None else round(p99 * 1000, 1),
        }
    figures["p50_ratio"] = ratio(figures["notify"]["p50_ms"], figures["poll"]["p50_ms"])
    figures["method"] = (
        "outbox synced_at minus the request's scheduled send time; the worker polls every "
        "WORKER_POLL_SECONDS (0.5 s) in both runs"
    )
    return figures


RUNNERS: dict[str, Callable[[Path, Sizes, dict[str, float]], dict[str, Any]]] = {
    "ingest": ingest,
    "e2e": e2e,
    "drain": drain,
    "hubspot": hubspot,
    "slowcrm": slowcrm,
    "postgres": postgres,
    "pgwake": pgwake,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short smoke run (about a minute)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    chosen = args.only.split(",") if args.only else list(SCENARIOS)
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    sizes = Sizes.for_run(args.quick)
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "machine": machine(),
        "sizes": sizes.__dict__,
        "scenarios": {},
        "errors": {},
    }
    memory: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bookme-bench-") as tmp:
        for name in chosen:
            work = Path(tmp) / name
            work.mkdir()
            began = time.monotonic()
            print(f"[bench] {name} ...", flush=True)
            try:
                report["scenarios"][name] = RUNNERS[name](work, sizes, memory)
            except Exception:
                report["errors"][name] = traceback.format_exc()
                print(report["errors"][name], file=sys.stderr, flush=True)
            print(f"[bench] {name} done in {time.monotonic() - began:.0f}s", flush=True)
            report["memory"] = _memory(memory)
    report["seconds"] = round(
        (datetime.now(UTC) - datetime.fromisoformat(report["started"])).total_seconds()
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "report.md").write_text(render_markdown(report))
    print(render_markdown(report))
    return 1 if report["errors"] else 0


def _memory(memory: dict[str, float]) -> dict[str, Any]:
    serve = {k: round(v, 1) for k, v in memory.items() if "bare" not in k}
    bare = max((v for k, v in memory.items() if "bare" in k), default=None)
    peak = max(serve.values(), default=None)
    return {
        "serve_peak_rss_mb_by_run": serve,
        "serve_peak_rss_mb": peak,
        "baseline_bare_peak_rss_mb": None if bare is None else round(bare, 1),
        "ratio": ratio(peak, bare),
    }


if __name__ == "__main__":
    sys.exit(main())
