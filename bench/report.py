"""The benchmark report as markdown: figures beside their baselines, and the issue-6 targets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _fmt(value: Any, suffix: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.{digits}f}{suffix}"
    if isinstance(value, int):
        return f"{value:,}{suffix}"
    return f"{value}{suffix}"


def _x(value: Any) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _get(report: dict[str, Any], *path: str) -> Any:
    node: Any = report.get("scenarios", {})
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


Check = tuple[str, Callable[[dict[str, Any]], Any], Callable[[Any], bool], str]


def _ingest_checks(run: str, label: str, floor: float) -> list[Check]:
    ratio_key = "saturation_ratio" if run == "service" else "no_worker_saturation_ratio"
    return [
        (
            f"Ingest ≥ {floor:,.0f} accepted webhooks/s ({label})",
            lambda r: _get(r, "ingest", run, "saturation", "accepted_per_second"),
            lambda v: v >= floor,
            "/s",
        ),
        (
            f"Ingest ≥ 0.5× the bare endpoint ({label})",
            lambda r: _get(r, "ingest", ratio_key),
            lambda v: v >= 0.5,
            "x",
        ),
        (
            f"Ack p99 < 50 ms at 200 requests/s ({label})",
            lambda r: _get(r, "ingest", run, "fixed_rate", "p99_ms"),
            lambda v: v < 50,
            " ms",
        ),
    ]


def _ratio_of(value: Any, baseline: Any) -> float | None:
    return None if not value or not baseline else round(value / baseline, 2)


TARGETS: list[Check] = [
    *_ingest_checks("service", "serve, embedded worker", 1000),
    *_ingest_checks("service_no_worker", "serve --no-worker", 1500),  # issue 14's floors
    (
        "Split worker (SQLite): accepted/s no worse than the embedded worker",
        lambda r: _ratio_of(
            _get(r, "ingest", "service_split_worker", "saturation", "accepted_per_second"),
            _get(r, "ingest", "service", "saturation", "accepted_per_second"),
        ),
        lambda v: v >= 1.0,
        "x",
    ),
    (
        "Slow CRM: default wait ≥ 0.8× no wait, accepted/s",
        lambda r: _get(r, "slowcrm", "ratio"),
        lambda v: v >= 0.8,
        "x",
    ),
    (
        "Slow CRM: ack p99 < 250 ms with the default wait",
        lambda r: _get(r, "slowcrm", "default_wait", "p99_ms"),
        lambda v: v < 250,
        " ms",
    ),
    (
        "Slow CRM: /healthz p50 < 50 ms during the burst",
        lambda r: _get(r, "slowcrm", "default_wait", "healthz", "p50_ms"),
        lambda v: v < 50,
        " ms",
    ),
    (
        "End-to-end p99 < 250 ms at 50 bookings/s (local)",
        lambda r: _get(r, "e2e", "p99_ms"),
        lambda v: v < 250,
        " ms",
    ),
    (
        "Drain ≥ 300 bookings/s (SQLite, local backend, one worker, 10,000 backlog)",
        lambda r: _get(r, "drain", "drain_per_second"),
        lambda v: v >= 300,
        "/s",
    ),
    (
        "HubSpot: ≤ 6 calls for a single new booking",
        lambda r: _get(r, "hubspot", "single_new", "calls"),
        lambda v: v <= 6,
        "",
    ),
    (
        "HubSpot: ≤ 0.3 calls/booking in a burst",
        lambda r: _get(r, "hubspot", "burst", "calls_per_booking"),
        lambda v: v <= 0.3,
        "",
    ),
    (
        "HubSpot: zero 429s",
        lambda r: (
            sum(
                _get(r, "hubspot", k, "rate_limited_429") or 0
                for k in ("single_new", "repeat", "burst")
            )
            if _get(r, "hubspot")
            else None
        ),
        lambda v: v == 0,
        "",
    ),
    (
        "PostgreSQL: 4 workers ≥ 2.5× 1 worker",
        lambda r: _get(r, "postgres", "runs", "4", "scaling"),
        lambda v: v >= 2.5,
        "x",
    ),
    (
        "Peak RSS of serve < 150 MB",
        lambda r: (r.get("memory") or {}).get("serve_peak_rss_mb"),
        lambda v: v < 150,
        " MB",
    ),
]


def targets(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with the measured value and whether it is met (``None``: not measured)."""
    out = []
    for name, value_of, ok, unit in TARGETS:
        value = value_of(report)
        out.append(
            {
                "target": name,
                "value": value,
                "unit": unit,
                "met": None if value is None else ok(value),
            }
        )
    return out


def render_markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        "# bookme-crm benchmarks",
        "",
        f"`{report['command']}` — started {report['started']}, took {report.get('seconds', '?')} s"
        + (" (quick smoke run: small sizes, short windows)" if report.get("quick") else ""),
        "",
        f"Machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, {m['platform']}. "
        "Shared with other workloads: compare ratios, not absolute figures.",
        "",
    ]
    lines += _ingest(report) + _e2e(report) + _drain(report) + _hubspot(report) + _slowcrm(report)
    lines += _postgres(report) + _pgwake(report) + _memory(report)
    lines += ["## Targets", "", "| target | measured | met |", "| --- | ---: | :---: |"]
    for row in targets(report):
        met = {True: "yes", False: "**no**", None: "not run"}[row["met"]]
        value = row["value"]
        shown = (
            _fmt(value, row["unit"], 2)
            if row["unit"] == "x" or isinstance(value, float)
            else _fmt(value, row["unit"])
        )
        lines.append(f"| {row['target']} | {shown} | {met} |")
    lines.append("")
    for name, error in report.get("errors", {}).items():
        lines += [f"**{name} failed:**", "", "```", error.strip()[-2000:], "```", ""]
    return "\n".join(lines)


def _ingest(report: dict[str, Any]) -> list[str]:
    s = _get(report, "ingest")
    if not s:
        return []
    svc, bare, alone = s["service"], s["bare"], s["service_no_worker"]
    rate = s["offered_rate"]
    return [
        "## 1. Ingest (SQLite, `SYNC_WAIT_MS=0`, synchronous=FULL)",
        "",
        "`serve` as shipped: its embedded worker syncs every booking to the local CRM in the "
        "same process (one GIL) while it accepts. Saturation is driven by `wrk` (C) with "
        "`bench/wrk/bookings.lua`; the fixed-rate runs by the Python open-loop generator.",
        "",
        *_client_check(s),
        "| run | service | bare endpoint (baseline) | ratio |",
        "| --- | ---: | ---: | ---: |",
        "| saturation: accepted/s (32 connections) | "
        f"{_fmt(svc['saturation']['accepted_per_second'])} | "
        f"{_fmt(bare['saturation']['accepted_per_second'])} | {_x(s['saturation_ratio'])} |",
        f"| saturation: ack p50 / p99 (ms) | {_fmt(svc['saturation']['p50_ms'])} / "
        f"{_fmt(svc['saturation']['p99_ms'])} | {_fmt(bare['saturation']['p50_ms'])} / "
        f"{_fmt(bare['saturation']['p99_ms'])} | |",
        f"| {rate:.0f} req/s open loop: accepted/s | "
        f"{_fmt(svc['fixed_rate']['accepted_per_second'])} | "
        f"{_fmt(bare['fixed_rate']['accepted_per_second'])} | |",
        f"| {rate:.0f} req/s open loop: ack p50 / p99 (ms) | {_fmt(svc['fixed_rate']['p50_ms'])} / "
        f"{_fmt(svc['fixed_rate']['p99_ms'])} | {_fmt(bare['fixed_rate']['p50_ms'])} / "
        f"{_fmt(bare['fixed_rate']['p99_ms'])} | p99 {_x(s['fixed_p99_ratio'])} |",
        "",
        "`serve --no-worker` (the API alone; workers in other processes):",
        "",
        "| run | service | bare endpoint (baseline) | ratio |",
        "| --- | ---: | ---: | ---: |",
        "| saturation: accepted/s | "
        f"{_fmt(alone['saturation']['accepted_per_second'])} | "
        f"{_fmt(bare['saturation']['accepted_per_second'])} | "
        f"{_x(s['no_worker_saturation_ratio'])} |",
        f"| saturation: ack p50 / p99 (ms) | {_fmt(alone['saturation']['p50_ms'])} / "
        f"{_fmt(alone['saturation']['p99_ms'])} | {_fmt(bare['saturation']['p50_ms'])} / "
        f"{_fmt(bare['saturation']['p99_ms'])} | |",
        f"| {rate:.0f} req/s: ack p50 / p99 (ms) | {_fmt(alone['fixed_rate']['p50_ms'])} / "
        f"{_fmt(alone['fixed_rate']['p99_ms'])} | {_fmt(bare['fixed_rate']['p50_ms'])} / "
        f"{_fmt(bare['fixed_rate']['p99_ms'])} | |",
        "",
        *_split(s, bare, rate),
    ]


def _client_check(s: dict[str, Any]) -> list[str]:
    check = s.get("client_check")
    if not check:
        return []
    return [
        f"Client check (`{check['client']}`): bare **{_fmt(check['bare_wrk_per_second'], digits=0)}"
        f"/s with wrk = {_x(check['bare_wrk_multiple_of_target'])} the "
        f"{_fmt(check['target_per_second'], digits=0)}/s target**; the same bare endpoint with "
        f"the Python client {_fmt(check['bare_python_per_second'], digits=0)}/s "
        f"(wrk/Python {_x(check['wrk_over_python'])}).",
        "",
    ]


def _split(s: dict[str, Any], bare: dict[str, Any], rate: float) -> list[str]:
    split = s.get("service_split_worker")
    if not split:
        return []
    return [
        "`serve --no-worker` beside a `worker` process on the same SQLite file (syncing "
        "while it accepts, like the embedded worker, but on the other core):",
        "",
        "| run | service | bare endpoint (baseline) | ratio |",
        "| --- | ---: | ---: | ---: |",
        "| saturation: accepted/s | "
        f"{_fmt(split['saturation']['accepted_per_second'])} | "
        f"{_fmt(bare['saturation']['accepted_per_second'])} | "
        f"{_x(s['split_worker_saturation_ratio'])} |",
        f"| saturation: ack p50 / p99 (ms) | {_fmt(split['saturation']['p50_ms'])} / "
        f"{_fmt(split['saturation']['p99_ms'])} | {_fmt(bare['saturation']['p50_ms'])} / "
        f"{_fmt(bare['saturation']['p99_ms'])} | |",
        f"| {rate:.0f} req/s: ack p50 / p99 (ms) | {_fmt(split['fixed_rate']['p50_ms'])} / "
        f"{_fmt(split['fixed_rate']['p99_ms'])} | {_fmt(bare['fixed_rate']['p50_ms'])} / "
        f"{_fmt(bare['fixed_rate']['p99_ms'])} | |",
        "",
    ]


def _e2e(report: dict[str, Any]) -> list[str]:
    s = _get(report, "e2e")
    if not s:
        return []
    base = s["baseline_bare_roundtrip_ms"]
    return [
        f"## 2. End-to-end to the local backend ({s['rate']:.0f} bookings/s, default settings)",
        "",
        "| figure | value | baseline: bare round trip | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| request → CRM write p50 (ms) | {_fmt(s['p50_ms'])} | {_fmt(base['p50'])} | |",
        f"| request → CRM write p99 (ms) | {_fmt(s['p99_ms'])} | {_fmt(base['p99'])} | "
        f"{_x(s['p99_ratio'])} |",
        f"| mean (ms), bookings | {_fmt(s['mean_ms'])}, {s['bookings']} | | |",
        "",
        f"Method: {s['method']}.",
        "",
    ]


def _drain(report: dict[str, Any]) -> list[str]:
    s = _get(report, "drain")
    if not s:
        return []
    return [
        f"## Drain of a backlog of {s['backlog']:,} (SQLite, local backend, one worker)",
        "",
        "| figure | value | baseline: fill rate (`serve --no-worker`) | ratio |",
        "| --- | ---: | ---: | ---: |",
        f"| bookings/s | {_fmt(s['drain_per_second'])} | {_fmt(s['baseline_fill_per_second'])} | "
        f"{_x(s['ratio_to_fill'])} |",
        "",
        f"All synced: {s['all_synced']}; wall time including worker start "
        f"{s['drain_wall_seconds_incl_start']} s. Method: {s['method']}.",
        "",
    ]


def _hubspot(report: dict[str, Any]) -> list[str]:
    s = _get(report, "hubspot")
    if not s:
        return []
    base = s["baseline_unbatched"]
    rows = [
        "## 3. HubSpot (fake HubSpot process, real limits: 100 requests / 10 s, 4 searches / s)",
        "",
        "| run | calls | calls/booking | baseline: unbatched | ratio | 429s | bookings/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in (
        ("single_new", "one new booking (with company)"),
        ("repeat", "one repeat booking (known contact, company, deal)"),
        ("burst", f"burst of {s['burst']['bookings']:,}"),
    ):
        r = s[key]
        rows.append(
            f"| {label} | {r['calls']} | {r['calls_per_booking']:.2f} | "
            f"{base['calls_per_booking']:.2f} | {_x(r['ratio_to_unbatched'])} | "
            f"{r['rate_limited_429']} | {_fmt(r['bookings_per_second'], digits=2)} |"
        )
    rows += [
        "",
        f"Baseline: {base['bookings']} bookings with `WORKER_BATCH_SIZE=1` (every booking "
        "alone), rate limit lifted (counts do not depend on it). Bookings/s: from the first "
        "request to the last booking synced.",
        "",
        "Calls by endpoint — single: "
        + ", ".join(f"{k} ×{v}" for k, v in sorted(s["single_new"]["by_endpoint"].items())),
        "",
    ]
    return rows


def _slowcrm(report: dict[str, Any]) -> list[str]:
    s = _get(report, "slowcrm")
    if not s:
        return []
    rows = [
        f"## 3b. A slow CRM: a burst of {s['burst']:,} webhooks from 32 clients into HubSpot "
        f"answering in {s['latency_ms']:.0f} ms (real limits), `serve` with its worker",
        "",
        "| run | accepted/s | ack p50 / p99 (ms) | 200 / 202 | `/healthz` p50 / p99 (ms) "
        "| all synced after (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, label in (("no_wait", "`SYNC_WAIT_MS=0` (baseline)"), ("default_wait", "default")):
        r = s[key]
        statuses = r["statuses"]
        rows.append(
            f"| {label} | {_fmt(r['accepted_per_second'])} | {_fmt(r['p50_ms'])} / "
            f"{_fmt(r['p99_ms'])} | {statuses.get('200', 0)} / {statuses.get('202', 0)} | "
            f"{_fmt(r['healthz']['p50_ms'])} / {_fmt(r['healthz']['p99_ms'])} | "
            f"{_fmt(r['synced_after_seconds'])} |"
        )
    rows += ["", f"Default wait ÷ no wait, accepted/s: {_x(s['ratio'])}.", ""]
    return rows


def _postgres(report: dict[str, Any]) -> list[str]:
    s = _get(report, "postgres")
    if not s:
        return []
    rows = [
        f"## 4. PostgreSQL drain scaling ({s['backlog']:,} bookings, HubSpot latency "
        f"{s['latency_ms']:.0f} ms/request)",
        "",
        "| worker processes | bookings/s | vs 1 worker (baseline) |",
        "| ---: | ---: | ---: |",
    ]
    for workers, run in s["runs"].items():
        rows.append(
            f"| {workers} | {_fmt(run['drain_per_second'])} | {_x(run.get('scaling', 1.0))} |"
        )
    rows += ["", f"Method: {s.get('method', '')}.", ""]
    return rows


def _pgwake(report: dict[str, Any]) -> list[str]:
    s = _get(report, "pgwake")
    if not s:
        return []
    rows = [
        f"## 4b. PostgreSQL: a worker process woken by NOTIFY ({s['rate']:.0f} webhooks/s, "
        "`serve --no-worker` + one `worker`)",
        "",
        "| run | request → CRM write p50 / p99 (ms) | bookings | all synced |",
        "| --- | ---: | ---: | :---: |",
    ]
    for name, label in (("poll", "poll only, `WORKER_LISTEN=0` (baseline)"), ("notify", "NOTIFY")):
        run = s[name]
        rows.append(
            f"| {label} | {_fmt(run['p50_ms'])} / {_fmt(run['p99_ms'])} | {run['bookings']} "
            f"| {run['all_synced']} |"
        )
    rows += ["", f"p50 with NOTIFY ÷ poll only: {_x(s['p50_ratio'])}. Method: {s['method']}.", ""]
    return rows


def _memory(report: dict[str, Any]) -> list[str]:
    mem = report.get("memory")
    if not mem:
        return []
    rows = [
        "## 5. Memory: peak RSS of `serve` (kernel VmHWM)",
        "",
        "| run | peak RSS (MB) |",
        "| --- | ---: |",
    ]
    for name, value in mem["serve_peak_rss_mb_by_run"].items():
        rows.append(f"| {name} | {_fmt(value)} |")
    rows += [
        f"| **max** | **{_fmt(mem['serve_peak_rss_mb'])}** |",
        f"| baseline: bare endpoint | {_fmt(mem['baseline_bare_peak_rss_mb'])} "
        f"(ratio {_x(mem['ratio'])}) |",
        "",
    ]
    return rows
