"""The local reference CRM's read API (contract §6), behind the admin token.

Routes only parse and answer; the queries live in ``LocalCrmReader``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError

from adapter.api.deps import AdminDep, EngineDep
from adapter.api.schemas import NO_NUL, RecordId, error_responses
from adapter.backends.local.reader import Activity, Company, Contact, Lead, LocalCrmReader, Task
from adapter.plan import TaskStatus

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


async def task_update_body(request: Request) -> TaskUpdate:
    """The PATCH body, parsed as a dependency so the router's admin check runs first.

    A body FastAPI parses itself is decoded before any dependency, so a
    malformed one answered 400 to a caller without credentials (found by fuzzing).
    """
    try:
        return TaskUpdate.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("body", *(err["loc"] or ("body",)))} for err in exc.errors()]
        ) from exc


TASK_UPDATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": TaskUpdate.model_json_schema()}},
    }
}


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
    reader: ReaderDep, task_id: RecordId, body: Annotated[TaskUpdate, Depends(task_update_body)]
) -> Task:
    """Set a task's status (``todo``, ``done`` or ``cancelled``); returns the task."""
    task = reader.set_task_status(task_id, body.status)
    if task is None:
        raise _not_found()
    return task
