"""The report as plain text, for a terminal or a cron mail (``bookme-crm insights``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from adapter.insights.report import Report, Target


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.2f} %"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.3f} s"
    if value < 2 * 3600:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _mark(target: Target) -> str:
    state = {True: "met", False: "NOT MET", None: "no data"}[target.met]
    return f"target {target.text}: {state}"


def _table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    cells = [list(map(str, head))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(head))]
    return [
        ("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))).rstrip()
        for row in cells
    ]


def render(report: Report) -> str:
    f = report.filters
    last = f.end - timedelta(days=1)
    kind = f" event type {f.event_type}" if f.event_type else ""
    web, sync, dups = report.webhook, report.sync, report.duplicates
    fol, resp, fun, can = report.follow_ups, report.response, report.funnel, report.cancellations
    lines = [
        f"Insights {f.start.isoformat()} .. {last.isoformat()} (UTC){kind}, {report.backend} CRM",
        "",
        f"Webhook success   {_pct(web.success_rate)}  ({web.accepted} of {web.deliveries}; "
        f"refused: invalid {web.refused['invalid']}, quarantined {web.refused['quarantined']}, "
        f"dead {web.refused['dead']}; pending {web.pending})  {_mark(web.target)}",
        f"Sync time         mean {_secs(sync.overall.mean)}, p50 {_secs(sync.overall.p50)}, "
        f"p95 {_secs(sync.overall.p95)}, p99 {_secs(sync.overall.p99)} over "
        f"{sync.overall.count} events  {_mark(sync.target)}",
        f"Duplicates        {dups.count}"
        + (f" (checked {dups.checked_at.isoformat()})" if dups.checked_at else " (not checked yet)")
        + f"  {_mark(dups.target)}"
        + (f"  last check failed: {dups.error}" if dups.error else ""),
        f"Follow-ups        {_pct(fol.share)} ({fol.complete} of {fol.bookings} bookings)  "
        f"{_mark(fol.target)}",
        f"Response time     median {_secs(resp.overall.median)}, under 24 h "
        f"{_pct(resp.overall.share_under_24h)} ({resp.overall.under_24h} of "
        f"{resp.overall.bookings})  {_mark(resp.target)}",
        f"Funnel            {fun.totals.bookings} booked -> {fun.totals.held} held -> "
        f"{fun.totals.consultations} consultations -> {fun.totals.won} won "
        f"({_pct(fun.totals.won_rate)})",
        f"Cancellations     {can.cancelled} cancelled ({_pct(can.cancel_rate)}), "
        f"{can.no_show} no-shows ({_pct(can.no_show_rate)}) of {can.bookings}",
    ]
    for group in dups.groups[:20]:
        lines.append(f"  duplicate {group.rule} {group.key!r}: {', '.join(group.record_ids)}")
    for missing in fol.missing[:20]:
        lines.append(
            f"  missing follow-up {missing.booking_id} ({missing.event_type}): "
            f"{', '.join(missing.missing_keys)}"
        )
    if fun.rows:
        lines += ["", "Funnel by booking month and event type"]
        lines += _table(
            ("month", "event type", "booked", "held", "consult.", "won", "won %", "days to won"),
            [
                (
                    r.month,
                    r.event_type,
                    r.bookings,
                    r.held,
                    r.consultations,
                    r.won,
                    _pct(r.won_rate),
                    "-" if r.median_days_to_won is None else r.median_days_to_won,
                )
                for r in fun.rows
            ],
        )
    if resp.per_owner:
        lines += ["", "Response time per owner"]
        lines += _table(
            ("owner", "bookings", "answered", "median", "under 24 h"),
            [
                (
                    o.owner or "(none)",
                    o.stats.bookings,
                    o.stats.answered,
                    _secs(o.stats.median),
                    _pct(o.stats.share_under_24h),
                )
                for o in resp.per_owner
            ],
        )
    return "\n".join(lines) + "\n"
