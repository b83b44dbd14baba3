"""The local reference CRM's read API (contract §6), behind the admin token, and the
sales staff's edits (``PATCH`` activities, leads, tasks).

Routes only parse and answer; the queries live in ``LocalCrmReader``, the edits in
``adapter.backends.local.edits`` (the row, the recorded change and its push to
BookMe in one transaction).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator
from pydantic import model_validator as _model_validator

from adapter.api.deps import AdminDep, EngineDep, ServicesDep
from adapter.api.schemas import NO_NUL, RecordId, error_responses
from adapter.backends.local import edits
from adapter.backends.local.reader import Activity, Company, Contact, Lead, LocalCrmReader, Task
from adapter.plan import MeetingOutcome, TaskStatus
from adapter.timeutil import utcnow

router = APIRouter(
    prefix="/api",
    tags=["local CRM"],
    dependencies=[AdminDep],
    responses=error_responses(400, 401),
)


def get_reader(engine: EngineDep) -> LocalCrmReader:
    return LocalCrmReader(engine)


ReaderDep = Annotated[LocalCrmReader, Depends(get_reader)]
Limit = Annotated[int, Query(ge=1, le=1000, description="At most this many records")]
# SQLite and PostgreSQL take a 64-bit OFFSET; a larger one was a 500 (found by fuzzing).
MAX_OFFSET = 2**31 - 1
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Skip this many records first")]
Owner = Annotated[
    str | None,
    Query(
        pattern=NO_NUL,
        max_length=320,
        description="Only records owned by this email (case-insensitive)",
    ),
]


class TaskUpdate(BaseModel):
    """The body of ``PATCH /api/tasks/{id}``."""

    model_config = ConfigDict(extra="forbid")

    status: TaskStatus


_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
STAGE = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"


class ActivityUpdate(BaseModel):
    """The body of ``PATCH /api/activities/{id}``: move a meeting, cancel it or set its
    outcome. A move or a cancellation is sent back to BookMe (README, "Changes made in
    the CRM"); at least one of ``activityDate``, ``durationMinutes``, ``outcome``."""

    model_config = ConfigDict(extra="forbid")

    activityDate: datetime | None = Field(
        default=None,
        description="The meeting's new start: ISO 8601 with an offset or Z, not in the past",
        examples=["2027-03-04T10:00:00Z"],
    )
    durationMinutes: StrictInt | None = Field(
        default=None, ge=1, le=1440, description="The meeting's new length in minutes"
    )
    outcome: MeetingOutcome | None = Field(
        default=None,
        description="CANCELED cancels the booking in BookMe; COMPLETED and NO_SHOW are progress",
    )
    reason: str | None = Field(
        default=None,
        max_length=1000,
        pattern=NO_NUL,
        description="Why the meeting is cancelled (with outcome CANCELED): sent to BookMe",
    )

    @field_validator("activityDate", mode="before")
    @classmethod
    def _iso_string(cls, value: Any) -> Any:
        if value is not None and not (isinstance(value, str) and _ISO_DATETIME.match(value)):
            raise ValueError("must be an ISO 8601 datetime string, e.g. '2027-03-04T10:00:00Z'")
        return value

    @field_validator("activityDate")
    @classmethod
    def _with_offset(cls, value: datetime | None) -> datetime | None:
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise ValueError("must be an ISO 8601 datetime with an offset or 'Z'")
        return value

    @field_validator("outcome", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, str):
            upper = value.strip().upper()
            return "CANCELED" if upper == "CANCELLED" else upper
        return value

    @_model_validator(mode="after")
    def _something(self) -> ActivityUpdate:
        if self.activityDate is None and self.durationMinutes is None and self.outcome is None:
            raise ValueError("give at least one of activityDate, durationMinutes, outcome")
        return self


class LeadUpdate(BaseModel):
    """The body of ``PATCH /api/leads/{id}``: the lead's stage, set by hand (kept over the
    stage derived from its meetings until set again)."""

    model_config = ConfigDict(extra="forbid")

    stage: str = Field(
        pattern=STAGE,
        description="A stage token (letters, digits, _), e.g. WON; stored upper-case",
        examples=["WON"],
    )


_M = TypeVar("_M", bound=BaseModel)


def _body_dependency(model: type[_M]) -> Any:
    async def parse(request: Request) -> _M:
        """The PATCH body, parsed as a dependency so the router's admin check runs first.

        A body FastAPI parses itself is decoded before any dependency, so a
        malformed one answered 400 to a caller without credentials (found by fuzzing).
        """
        try:
            return model.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(
                [{**err, "loc": ("body", *(err["loc"] or ("body",)))} for err in exc.errors()]
            ) from exc

    return parse


task_update_body = _body_dependency(TaskUpdate)
activity_update_body = _body_dependency(ActivityUpdate)
lead_update_body = _body_dependency(LeadUpdate)


def _request_body(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


TASK_UPDATE_BODY = _request_body(TaskUpdate)
Actor = Annotated[
    str | None,
    Header(
        alias="X-Actor",
        max_length=320,
        pattern=NO_NUL,
        description="Who makes the change (e.g. the salesperson's email), kept in the history",
    ),
]
API_SOURCE = "api"


def _refused(exc: edits.EditRefused) -> JSONResponse:
    return JSONResponse(
        {"error": "Invalid change", "details": [{"field": exc.field, "message": exc.message}]},
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def _not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail="Not found")


@router.get("/contacts")
def list_contacts(
    reader: ReaderDep,
    email: Annotated[
        str | None, Query(pattern=NO_NUL, description="Exact email, case-insensitive")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[Contact]:
    """Contacts, optionally the one with ``email``."""
    return reader.contacts(email=email, limit=limit, offset=offset)


@router.get("/companies")
def list_companies(reader: ReaderDep, limit: Limit = 100, offset: Offset = 0) -> list[Company]:
    """Companies."""
    return reader.companies(limit=limit, offset=offset)


@router.get("/leads")
def list_leads(
    reader: ReaderDep, owner: Owner = None, limit: Limit = 100, offset: Offset = 0
) -> list[Lead]:
    """Leads, optionally those of one owner."""
    return reader.leads(owner=owner, limit=limit, offset=offset)


@router.get("/leads/{lead_id}", responses=error_responses(404, s404="No such lead"))
def get_lead(reader: ReaderDep, lead_id: RecordId) -> Lead:
    """One lead."""
    lead = reader.lead(lead_id)
    if lead is None:
        raise _not_found()
    return lead


@router.get("/leads/{lead_id}/activities", responses=error_responses(404, s404="No such lead"))
def list_lead_activities(
    reader: ReaderDep,
    lead_id: RecordId,
    type_: Annotated[
        str | None, Query(alias="type", pattern=NO_NUL, description="e.g. MEETING")
    ] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[Activity]:
    """One lead's activities, earliest first."""
    if reader.lead(lead_id) is None:
        raise _not_found()
    return reader.activities(type_=type_, lead_id=lead_id, limit=limit, offset=offset)


@router.get("/activities")
def list_activities(
    reader: ReaderDep,
    type_: Annotated[
        str | None, Query(alias="type", pattern=NO_NUL, description="e.g. MEETING")
    ] = None,
    upcoming: Annotated[bool, Query(description="Only those starting now or later")] = False,
    owner: Owner = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[Activity]:
    """Activities, earliest first."""
    return reader.activities(
        type_=type_, upcoming=upcoming, owner=owner, limit=limit, offset=offset
    )


@router.get("/tasks")
def list_tasks(
    reader: ReaderDep,
    status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
    upcoming: Annotated[bool, Query(description="Only those due now or later")] = False,
    booking_id: Annotated[str | None, Query(alias="bookingId", pattern=NO_NUL)] = None,
    owner: Owner = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[Task]:
    """Follow-up tasks, earliest due first."""
    return reader.tasks(
        status=status_,
        upcoming=upcoming,
        booking_id=booking_id,
        owner=owner,
        limit=limit,
        offset=offset,
    )


@router.patch(
    "/tasks/{task_id}",
    responses=error_responses(404, s404="No such task"),
    openapi_extra=TASK_UPDATE_BODY,
)
def update_task(
    services: ServicesDep,
    reader: ReaderDep,
    task_id: RecordId,
    body: Annotated[TaskUpdate, Depends(task_update_body)],
    actor: Actor = None,
) -> Task:
    """Set a task's status (``todo``, ``done`` or ``cancelled``); returns the task.

    Recorded in the booking's history (a task done is progress, and drops its
    pending automatic mail)."""
    edited = edits.set_task_status(
        services.store, task_id, body.status, source=API_SOURCE, actor=actor, now=utcnow()
    )
    task = reader.task(task_id) if edited is not None else None
    if task is None:
        raise _not_found()
    return task


@router.patch(
    "/activities/{activity_id}",
    response_model=Activity,
    responses=error_responses(404, 422, s404="No such activity"),
    openapi_extra=_request_body(ActivityUpdate),
)
def update_activity(
    services: ServicesDep,
    reader: ReaderDep,
    activity_id: RecordId,
    body: Annotated[ActivityUpdate, Depends(activity_update_body)],
    actor: Actor = None,
) -> Activity | JSONResponse:
    """Move a meeting (``activityDate``, ``durationMinutes``), cancel it (``outcome``
    ``CANCELED`` with a ``reason``) or record its outcome; returns the activity.

    The change is recorded and, for a move or a cancellation, sent to BookMe
    through the outbox (``bookme.push``): BookMe is the system of record for the
    booking's time, so if it refuses, the meeting goes back to BookMe's time and
    the owner gets a task saying why. 422 names the field when the change cannot
    be made (a cancelled meeting, a time in the past)."""
    edit = edits.MeetingEdit(
        start=body.activityDate,
        duration=body.durationMinutes,
        outcome=body.outcome,
        reason=body.reason,
    )
    try:
        edited = edits.edit_meeting(
            services.store, activity_id, edit, source=API_SOURCE, actor=actor, now=utcnow()
        )
    except edits.EditRefused as exc:
        return _refused(exc)
    if edited is None:
        raise _not_found()
    services.wake_workers()
    activity = reader.activity(activity_id)
    if activity is None:
        raise _not_found()
    return activity


@router.patch(
    "/leads/{lead_id}",
    responses=error_responses(404, s404="No such lead"),
    openapi_extra=_request_body(LeadUpdate),
)
def update_lead(
    services: ServicesDep,
    reader: ReaderDep,
    lead_id: RecordId,
    body: Annotated[LeadUpdate, Depends(lead_update_body)],
    actor: Actor = None,
) -> Lead:
    """Set the lead's stage by hand (e.g. ``WON``); recorded in its history. A stage set
    so is kept when later bookings change the lead's meetings."""
    edited = edits.set_lead_stage(
        services.store, lead_id, body.stage.upper(), source=API_SOURCE, actor=actor, now=utcnow()
    )
    lead = reader.lead(lead_id) if edited is not None else None
    if lead is None:
        raise _not_found()
    return lead
