"""Insights as JSON and CSV (``adapter.insights``), behind the admin token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from adapter.api.deps import AdminDep, ServicesDep
from adapter.api.schemas import NO_NUL, error_responses
from adapter.insights.compute import build_report
from adapter.insights.period import MAX_DAYS, FilterError, parse_filters
from adapter.insights.report import Report, to_json
from adapter.insights.tabular import METRICS, to_csv
from adapter.services import Services

router = APIRouter(
    prefix="/api",
    tags=["insights"],
    dependencies=[AdminDep],
    responses=error_responses(400, 401),
)

From = Annotated[
    str | None,
    Query(
        alias="from",
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description=f"First UTC day, YYYY-MM-DD (default: 29 days before `to`; at most "
        f"{MAX_DAYS} days in all)",
    ),
]
To = Annotated[
    str | None,
    Query(
        alias="to",
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="Last UTC day, included, YYYY-MM-DD (default: today)",
    ),
]
EventType = Annotated[
    str | None,
    Query(
        alias="eventType",
        max_length=200,
        pattern=NO_NUL,
        description="Only bookings of this event type",
    ),
]
Metric = Literal[
    "webhook",
    "refused",
    "sync",
    "duplicates",
    "followUps",
    "missingFollowUps",
    "response",
    "funnel",
    "cancellations",
]
assert set(METRICS) == set(Metric.__args__)  # type: ignore[attr-defined]


def _report(services: Services, start: str | None, end: str | None, kind: str | None) -> Report:
    now = datetime.now(UTC)
    try:
        filters = parse_filters(start, end, kind, today=now.date())
    except FilterError as exc:
        raise RequestValidationError(
            [{"loc": ("query", exc.field), "msg": exc.message, "type": "value_error"}]
        ) from None
    return build_report(services, filters, now=now)


def _csv(report: Report, metric: str) -> Response:
    filters = report.filters
    name = f"insights-{metric}-{filters.start.isoformat()}-{filters.end.isoformat()}.csv"
    return Response(
        to_csv(report, metric),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


_CSV_DOC: dict[str, Any] = {"text/csv": {"schema": {"type": "string"}}}


@router.get(
    "/insights",
    summary="The success metrics and the booking funnel for a period",
    description=(
        'Every figure of README "Insights", with its definition, target and met/not met: '
        "webhook success per day (refusals by reason, with event ids), sync time "
        "p50/mean/p95/p99 per day, duplicates in the CRM, follow-ups scheduled, response "
        "time to new leads, the booking → held → consultation → won funnel per booking "
        "month and event type, cancellations and no-shows per event type and weekday. "
        "`format=csv` answers one metric's table as CSV instead (`metric`)."
    ),
    responses={200: {"description": "The report (JSON), or one table (CSV)", "content": _CSV_DOC}},
)
async def insights(
    services: ServicesDep,
    start: From = None,
    end: To = None,
    event_type: EventType = None,
    format: Annotated[Literal["json", "csv"], Query(description="json or csv")] = "json",
    metric: Annotated[Metric, Query(description="The table a CSV holds")] = "funnel",
) -> Response:
    report = await run_in_threadpool(_report, services, start, end, event_type)
    if format == "csv":
        return _csv(report, metric)
    return JSONResponse(to_json(report))


@router.get(
    "/insights.csv",
    summary="One metric of the insights report as CSV",
    response_class=Response,
    responses={200: {"description": "The metric's table", "content": _CSV_DOC}},
)
async def insights_csv(
    services: ServicesDep,
    metric: Annotated[Metric, Query(description="Which table")],
    start: From = None,
    end: To = None,
    event_type: EventType = None,
) -> Response:
    report = await run_in_threadpool(_report, services, start, end, event_type)
    return _csv(report, metric)
