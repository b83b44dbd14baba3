"""The dashboard at ``/ui``: server-rendered pages behind the admin token.

Pages read through the same objects as the JSON API (``LocalCrmReader`` for
the local CRM, ``OutboxStore`` for sync health, ``hubspot_objects`` for
HubSpot ids); actions go through the same calls as their API twins
(``adapter.backends.local.edits`` as the PATCH endpoints, the audited
``OutboxStore.replay`` as ``POST /admin/outbox/{id}/replay``). GET pages
redirect to the login form without a session; POSTs without a session or with
a wrong CSRF token are refused with 403 and change nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl, quote
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import SQLAlchemyError

from adapter.api.deps import ServicesDep
from adapter.api.routes.crm import STAGE, ReaderDep
from adapter.api.schemas import NO_NUL
from adapter.api.throttle import client_address
from adapter.backends.base import backend_pause
from adapter.backends.hubspot import account as hubspot_account
from adapter.backends.hubspot import store as hubspot_store
from adapter.backends.local import edits
from adapter.backends.local.edits import CLOSED
from adapter.backends.local.reader import Activity, Task, owner_key
from adapter.bookme import BookMeError, import_booking
from adapter.changes import store as changes
from adapter.timeutil import as_utc, utcnow
from adapter.ui import display
from adapter.ui.session import Session, SessionCodec, SessionStore, clear, token_matches
from outbox.exceptions import EventNotFound
from outbox.store import DEAD, QUARANTINED, QUEUED, REPLAYABLE, STATES

if TYPE_CHECKING:
    from adapter.services import Services

log = logging.getLogger(__name__)
router = APIRouter(prefix="/ui", include_in_schema=False)

HERE = Path(__file__).parent
STATIC = {"app.css": "text/css", "app.js": "text/javascript"}
REPLAY_ACTOR = "dashboard"
MAX_FORM_BYTES = 8 * 1024
UPCOMING_LIMIT = 20
TASK_LIMIT = 50
LEAD_PAGE = 50
EVENT_LIMIT = 50
HISTORY_LIMIT = 20
MAX_REASON = 1000
DASHBOARD = "dashboard"
DEFAULT_STAGES = ("NEW", "CONTACTED", "QUALIFIED", "PROPOSAL", "NEGOTIATION", "WON", "LOST")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@cache
def templates() -> Jinja2Templates:
    return Jinja2Templates(directory=HERE / "templates")


# --- plumbing --------------------------------------------------------------------


async def form_fields(request: Request) -> dict[str, str]:
    """The urlencoded form body, at most 8 KiB (the dashboard's forms are tiny)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "Form too large")
    if not body:
        return {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "Expected a form")
    try:
        pairs = parse_qsl(body.decode(), max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Malformed form") from exc
    return dict(pairs)


FormDep = Annotated[dict[str, str], Depends(form_fields)]


def _codec(services: Services) -> SessionCodec | None:
    token: str | None = services.admin_token
    return SessionCodec(token) if token else None


def _safe_next(value: str | None, default: str = "/ui") -> str:
    """Only a path inside the dashboard: never an open redirect."""
    if value and value.startswith("/ui") and "\\" not in value and "\n" not in value:
        return value
    return default


def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def _redirect(url: str) -> RedirectResponse:
    response = RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)
    _secure(response)
    return response


class Page:
    """Render a template with what every page needs: the session, the clock and formatters."""

    def __init__(self, request: Request, services: Services, session: Session | None) -> None:
        self.request = request
        self.services = services
        self.session = session
        self.zone = ZoneInfo(services.settings.ui_timezone)
        self.now = utcnow()

    def render(self, name: str, status_code: int = 200, **context: Any) -> Response:
        session = self.session
        flash = session.flash if session else None
        base = {
            "csrf": session.csrf if session else "",
            "logged_in": bool(session and session.authenticated),
            "flash": flash,
            "backend": self.services.settings.crm_backend,
            "timezone": self.services.settings.ui_timezone,
            "when": lambda moment: display.local_time(moment, self.zone),
            "ago": lambda moment: display.relative_time(moment, self.now),
            "iso": lambda moment: moment.isoformat(),
            "outcome": display.outcome,
            "change_value": lambda field, value: display.change_value(field, value, self.zone),
            "joinable": joinable,
            "now": self.now,
        }
        response = templates().TemplateResponse(
            self.request, name, {**base, **context}, status_code=status_code
        )
        codec = _codec(self.services)
        if flash and session and codec:
            codec.write(response, session.with_flash(None))  # shown once
        return _secure(response)

    def error(self, status_code: int, title: str, message: str) -> Response:
        return self.render("error.html", status_code, title=title, message=message)


def _logged_in(request: Request, services: Services) -> Session | None:
    """The request's session if it logged in and the server has not ended it (logout)."""
    codec = _codec(services)
    session = codec.read(request) if codec else None
    if session is None or not session.authenticated:
        return None
    return session if SessionStore(services.engine).is_live(session.sid) else None


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return _redirect("/ui/login?next=" + quote(_safe_next(target), safe="/"))


def _checked_post(
    request: Request, services: Services, form: Mapping[str, str]
) -> Session | Response:
    """The logged-in session if the form's CSRF token is its own; else a 403 page."""
    session = _logged_in(request, services)
    if session is None or not token_matches(form.get("csrf"), session.csrf):
        log.warning("dashboard POST refused: no session or wrong CSRF token")
        return Page(request, services, session).error(
            status.HTTP_403_FORBIDDEN,
            "Not allowed",
            "This form has expired or did not come from the dashboard. Log in again and retry.",
        )
    return session


def _done(services: Services, session: Session, url: str, message: str) -> Response:
    response = _redirect(url)
    codec = _codec(services)
    if codec:
        codec.write(response, session.with_flash(message))
    return response


def _unreadable(page: Page, exc: Exception) -> Response:
    log.exception("dashboard could not read the database: %s", exc)
    return page.error(
        status.HTTP_503_SERVICE_UNAVAILABLE,
        "Database unavailable",
        "The dashboard could not read the database just now. Try again in a moment.",
    )


# --- login -----------------------------------------------------------------------


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The dashboard's stylesheet and script (no build step, no CDN)."""
    if name not in STATIC:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not found")
    response = FileResponse(HERE / "static" / name, media_type=STATIC[name])
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@router.get("/login")
def login_form(request: Request, services: ServicesDep, next: str | None = None) -> Response:
    if _logged_in(request, services):
        return _redirect(_safe_next(next))
    codec = _codec(services)
    if codec is None:
        return Page(request, services, None).error(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Dashboard not configured",
            "Set ADMIN_TOKEN (or start `bookme-crm serve` once to generate one) to log in.",
        )
    session = codec.read(request) or Session.fresh(authenticated=False)
    response = Page(request, services, session).render("login.html", next=_safe_next(next))
    codec.write(response, session.with_flash(None))
    return response


@router.post("/login")
def login(request: Request, services: ServicesDep, form: FormDep) -> Response:
    codec = _codec(services)
    session = codec.read(request) if codec else None
    page = Page(request, services, session)
    if codec is None or session is None or not token_matches(form.get("csrf"), session.csrf):
        return page.error(
            status.HTTP_403_FORBIDDEN,
            "Login form expired",
            "The login form has expired or cookies are blocked. Reload the login page.",
        )
    address = client_address(request)
    wait = services.throttle.retry_after(address, "login")
    if wait is not None:
        log.warning("dashboard login throttled: too many wrong tokens from this address")
        refused = page.error(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "Too many attempts",
            f"Too many wrong tokens from this address. Try again in {wait} seconds.",
        )
        refused.headers["Retry-After"] = str(wait)
        return refused
    if not token_matches(form.get("token", "").strip(), services.admin_token):
        log.warning("dashboard login refused: wrong admin token")
        services.throttle.failed(address, "login")
        return page.render(
            "login.html",
            status.HTTP_401_UNAUTHORIZED,
            next=_safe_next(form.get("next")),
            error="That is not the admin token.",
        )
    log.info("dashboard login")
    response = _redirect(_safe_next(form.get("next")))
    sid = SessionStore(services.engine).open()
    codec.write(response, Session.fresh(authenticated=True, sid=sid))
    return response


@router.post("/logout")
def logout(request: Request, services: ServicesDep, form: FormDep) -> Response:
    checked = _checked_post(request, services, form)
    if isinstance(checked, Response):
        return checked
    SessionStore(services.engine).end(checked.sid)  # a copied cookie dies with it
    response = _redirect("/ui/login")
    clear(response)
    return response


# --- the local CRM: upcoming bookings, action items, leads ---------------------


@router.get("")
def home(
    request: Request,
    services: ServicesDep,
    reader: ReaderDep,
    owner: Annotated[str | None, Query(max_length=320, pattern=NO_NUL)] = None,
) -> Response:
    """Upcoming bookings and action items; ``?owner=`` keeps one owner's ("my tasks")."""
    session = _logged_in(request, services)
    if session is None:
        return _to_login(request)
    page = Page(request, services, session)
    if services.settings.crm_backend != "local":
        return page.render("home.html", meetings=[], tasks=[], leads={})
    owner = owner_key(owner) if owner and owner.strip() else None
    try:
        meetings = reader.activities(type_="MEETING", upcoming=True, limit=UPCOMING_LIMIT, offset=0)
        tasks = reader.tasks(status="todo", owner=owner, limit=TASK_LIMIT, offset=0)
        leads = {lead_id: reader.lead(lead_id) for lead_id in {t.lead_id for t in tasks}}
        owners = reader.task_owners()
    except SQLAlchemyError as exc:
        return _unreadable(page, exc)
    back = f"/ui?owner={quote(owner)}#tasks" if owner else "/ui#tasks"
    return page.render(
        "home.html",
        meetings=meetings,
        tasks=tasks,
        leads=leads,
        owners=owners,
        owner=owner,
        tasks_url=back,
    )


@router.post("/tasks/{task_id}/done")
def complete_task(
    request: Request, services: ServicesDep, reader: ReaderDep, task_id: str, form: FormDep
) -> Response:
    """Mark a task done through the API's own edit (``PATCH /api/tasks/{id}``): recorded
    in the booking's history (source ``dashboard``), its automatic mail dropped."""
    checked = _checked_post(request, services, form)
    if isinstance(checked, Response):
        return checked
    back = _safe_next(form.get("next"), "/ui#tasks")
    if services.settings.crm_backend != "local":
        return _done(services, checked, back, "Tasks live in HubSpot with this backend.")
    try:
        edited = edits.set_task_status(
            services.store, task_id, "done", source=DASHBOARD, actor=DASHBOARD, now=utcnow()
        )
        task = reader.task(task_id) if edited is not None else None
    except SQLAlchemyError as exc:
        return _unreadable(Page(request, services, checked), exc)
    if task is None:
        return _done(services, checked, back, "That task no longer exists.")
    return _done(services, checked, back, f"Marked “{task.title}” done.")


def _meeting_edit(
    request: Request,
    services: ServicesDep,
    reader: ReaderDep,
    activity_id: str,
    form: Mapping[str, str],
    edit: Callable[[], edits.MeetingEdit],
    said: Callable[[Activity], str],
) -> Response:
    """Run one meeting edit from a dashboard form, as ``PATCH /api/activities/{id}`` does."""
    checked = _checked_post(request, services, form)
    if isinstance(checked, Response):
        return checked
    back = _safe_next(form.get("next"), "/ui/leads")
    if services.settings.crm_backend != "local":
        return _done(services, checked, back, "Meetings live in HubSpot with this backend.")
    try:
        edited = edits.edit_meeting(
            services.store, activity_id, edit(), source=DASHBOARD, actor=DASHBOARD, now=utcnow()
        )
        meeting = reader.activity(activity_id) if edited is not None else None
    except (edits.EditRefused, FormInvalid) as exc:
        return _done(services, checked, back, f"Not changed: {exc}.")
    except SQLAlchemyError as exc:
        return _unreadable(Page(request, services, checked), exc)
    if meeting is None:
        return _done(services, checked, back, "That meeting no longer exists.")
    services.wake_workers()
    return _done(services, checked, back, said(meeting))


class FormInvalid(Exception):
    """A dashboard form field that cannot be read; the message names it."""


def _form_start(form: Mapping[str, str], zone: ZoneInfo) -> datetime:
    """The form's ``date`` and ``time`` on the dashboard's clock, as an aware datetime."""
    try:
        day = date.fromisoformat(form.get("date", "").strip())
    except ValueError as exc:
        raise FormInvalid("date: give a date like 2027-03-04") from exc
    try:
        clock = time.fromisoformat(form.get("time", "").strip())
    except ValueError as exc:
        raise FormInvalid("time: give a time like 09:30") from exc
    return datetime.combine(day, clock, tzinfo=zone)


def _form_duration(form: Mapping[str, str]) -> int:
    text = form.get("duration", "").strip()
    if not text.isdigit() or not 1 <= int(text) <= 1440:
        raise FormInvalid("duration: give whole minutes, 1–1440")
    return int(text)


@router.post("/meetings/{activity_id}/reschedule")
def reschedule_meeting(
    request: Request, services: ServicesDep, reader: ReaderDep, activity_id: str, form: FormDep
) -> Response:
    """ "Reschedule…": move the meeting; BookMe is asked to follow (``bookme.push``)."""
    zone = ZoneInfo(services.settings.ui_timezone)

    def edit() -> edits.MeetingEdit:
        return edits.MeetingEdit(start=_form_start(form, zone), duration=_form_duration(form))

    def said(meeting: Activity) -> str:
        when = display.local_time(meeting.activity_date, zone)
        return f"Moved to {when}; BookMe is being asked to follow."

    return _meeting_edit(request, services, reader, activity_id, form, edit, said)


@router.post("/meetings/{activity_id}/cancel")
def cancel_meeting(
    request: Request, services: ServicesDep, reader: ReaderDep, activity_id: str, form: FormDep
) -> Response:
    """ "Cancel meeting": with the reason typed, sent to BookMe with the cancellation."""

    def edit() -> edits.MeetingEdit:
        reason = form.get("reason", "").strip()
        if len(reason) > MAX_REASON:
            raise FormInvalid(f"reason: at most {MAX_REASON} characters")
        return edits.MeetingEdit(outcome="CANCELED", reason=reason or None)

    def said(meeting: Activity) -> str:
        return f"Cancelled “{meeting.subject}”; BookMe is being asked to cancel the booking."

    return _meeting_edit(request, services, reader, activity_id, form, edit, said)


@router.post("/leads/{lead_id}/stage")
def set_stage(
    request: Request, services: ServicesDep, reader: ReaderDep, lead_id: str, form: FormDep
) -> Response:
    """The stage picker: the lead's stage set by hand (``PATCH /api/leads/{id}``)."""
    checked = _checked_post(request, services, form)
    if isinstance(checked, Response):
        return checked
    back = f"/ui/leads/{quote(lead_id, safe='')}"
    stage = form.get("stage", "").strip().upper()
    if not re.fullmatch(STAGE, stage):
        return _done(services, checked, back, "Not changed: stage: pick a stage.")
    try:
        edited = edits.set_lead_stage(
            services.store, lead_id, stage, source=DASHBOARD, actor=DASHBOARD, now=utcnow()
        )
    except SQLAlchemyError as exc:
        return _unreadable(Page(request, services, checked), exc)
    if edited is None:
        return _done(services, checked, "/ui/leads", "That lead no longer exists.")
    return _done(services, checked, back, f"Stage set to {stage}.")


@router.get("/leads")
def lead_list(
    request: Request, services: ServicesDep, reader: ReaderDep, page_no: int = 1
) -> Response:
    session = _logged_in(request, services)
    if session is None:
        return _to_login(request)
    page = Page(request, services, session)
    page_no = max(min(page_no, 1_000_000), 1)
    if services.settings.crm_backend != "local":
        return page.render("leads.html", leads=[], page_no=1, more=False)
    try:
        found = reader.leads(limit=LEAD_PAGE + 1, offset=(page_no - 1) * LEAD_PAGE)
    except SQLAlchemyError as exc:
        return _unreadable(page, exc)
    return page.render(
        "leads.html", leads=found[:LEAD_PAGE], page_no=page_no, more=len(found) > LEAD_PAGE
    )


@router.get("/leads/{lead_id}")
def lead_page(request: Request, services: ServicesDep, reader: ReaderDep, lead_id: str) -> Response:
    session = _logged_in(request, services)
    if session is None:
        return _to_login(request)
    page = Page(request, services, session)
    if services.settings.crm_backend != "local":
        return page.error(404, "No local CRM", "Leads live in HubSpot with this backend.")
    try:
        lead = reader.lead(lead_id)
        if lead is None:
            return page.error(404, "Lead not found", "There is no lead with that id.")
        meetings = reader.activities(type_="MEETING", lead_id=lead_id, limit=1000, offset=0)
        tasks: dict[str, list[Task]] = {
            m.metadata.booking_id: reader.tasks(
                booking_id=m.metadata.booking_id, limit=100, offset=0
            )
            for m in meetings
        }
        bookings = [m.metadata.booking_id for m in meetings]
        incoming = {key: services.store.for_key(key, limit=HISTORY_LIMIT) for key in bookings}
        reads = services.engine.execution_options(sqlite_begin="DEFERRED")
        with reads.connect() as conn:
            outgoing = {key: changes.changes_for_booking(conn, key) for key in bookings}
    except SQLAlchemyError as exc:
        return _unreadable(page, exc)
    zone = page.zone
    return page.render(
        "lead.html",
        lead=lead,
        meetings=meetings,
        tasks=tasks,
        incoming=incoming,
        outgoing=outgoing,
        stages=stage_choices(services, lead.stage),
        local_date=lambda moment: f"{as_utc(moment).astimezone(zone):%Y-%m-%d}",
        local_clock=lambda moment: f"{as_utc(moment).astimezone(zone):%H:%M}",
        closed=CLOSED,
    )


def stage_choices(services: Services, current: str) -> list[str]:
    """The stage picker's choices: the usual pipeline, every stage the mapping names, and
    the lead's own."""
    mapping = services.mappings.current
    named: set[str] = {*DEFAULT_STAGES, current, mapping.defaults.lead.stage}
    for config in mapping.event_types.values():
        if config.lead.stage:
            named.add(config.lead.stage)
    named.update(mapping.defaults.hubspot.deal_stages)
    return [stage for stage in DEFAULT_STAGES if stage in named] + sorted(
        named - set(DEFAULT_STAGES)
    )


def joinable(meeting: Activity) -> bool:
    """A meeting link is worth showing only while the meeting is on."""
    return bool(meeting.metadata.meeting_url) and meeting.outcome in ("SCHEDULED", "RESCHEDULED")


# --- sync health -------------------------------------------------------------------


@router.get("/sync")
def sync_health(request: Request, services: ServicesDep) -> Response:
    session = _logged_in(request, services)
    if session is None:
        return _to_login(request)
    page = Page(request, services, session)
    store = services.store
    settings = services.settings
    try:
        counts = store.counts()
        oldest = store.oldest_pending_age()
        problems = {state: store.list(state, limit=EVENT_LIMIT) for state in REPLAYABLE}
        recent = store.list(limit=EVENT_LIMIT)
        reads = services.engine.execution_options(sqlite_begin="DEFERRED")
        with reads.connect() as conn:
            crm_recent = changes.recent(conn, limit=EVENT_LIMIT)
            crm_problems = [
                change
                for state in (changes.REFUSED, changes.FAILED)
                for change in changes.recent(conn, limit=EVENT_LIMIT, state=state)
            ]
        bookings: list[hubspot_store.BookingRecords] = []
        deletions: list[hubspot_store.Deletion] = []
        account = hubspot_account.StoredAccount()
        if settings.crm_backend == "hubspot":
            reads = services.engine.execution_options(sqlite_begin="DEFERRED")
            with reads.connect() as conn:
                bookings = hubspot_store.recent_bookings(conn, limit=EVENT_LIMIT)
                deletions = hubspot_store.deletions(conn, limit=EVENT_LIMIT)
                account = hubspot_account.load(conn)
        pause = backend_pause(services.backend)
    except SQLAlchemyError as exc:
        return _unreadable(page, exc)
    # The setting wins; else the portal the token belongs to, as ``hubspot setup`` stored it.
    portal = settings.hubspot_portal_id or account.portal_id

    def hubspot_link(kind: str, object_id: str) -> str | None:
        if not portal:
            return None
        return display.hubspot_record_url(portal, kind, object_id, ui_domain=account.ui_domain)

    return page.render(
        "sync.html",
        states=STATES,
        counts=counts,
        oldest=display.duration(oldest),
        dead=problems[DEAD],
        quarantined=problems[QUARANTINED],
        recent=recent,
        bookings=bookings,
        deletions=deletions,
        portal=portal,
        hubspot_link=hubspot_link,
        pause=pause,
        crm_recent=crm_recent,
        crm_problems=sorted(crm_problems, key=lambda c: c.recorded_at, reverse=True),
    )


@router.post("/sync/replay")
def replay_all(request: Request, services: ServicesDep, form: FormDep) -> Response:
    """Every dead (or quarantined) event again: ``OutboxStore.replay_state``, audited."""
    checked = _checked_post(request, services, form)
    if isinstance(checked, Response):
        return checked
    state = form.get("state", "")
    if state not in REPLAYABLE:
        return _done(services, checked, "/ui/sync", "Only dead or quarantined events replay.")
    replayed = services.replay_state(state, actor=REPLAY_ACTOR)
    return _done(services, checked, "/ui/sync", f"Re-queued {len(replayed)} {state} event(s).")


@router.post("/sync/{event_id}/replay")
def replay_one(request: Request, services: ServicesDep, event_id: str, form: FormDep) -> Response:
    """One dead or quarantined event again, then wait briefly (as the webhook does) to say how
    it went."""
    checked = _checked_post(request, services, form)
    if isinstance(checked, Response):
        return checked
    try:
        (event,) = services.replay([event_id], actor=REPLAY_ACTOR)
    except EventNotFound:
        return _done(services, checked, "/ui/sync", "That event does not exist.")
    if event.state != QUEUED:  # replay leaves events that are not dead or quarantined alone
        message = f"Event {event_id} is {event.state}: only dead or quarantined events replay."
        return _done(services, checked, "/ui/sync", message)
    state = services.await_settled(event).state
    message = f"Replayed event {event_id} (booking {event.key}): now {state}."
    return _done(services, checked, "/ui/sync", message)


# --- add from BookMe ---------------------------------------------------------------


@router.get("/import")
def import_form(request: Request, services: ServicesDep) -> Response:
    session = _logged_in(request, services)
    if session is None:
        return _to_login(request)
    return Page(request, services, session).render(
        "import.html", nav="import", configured=services.settings.bookme_api_url is not None
    )


@router.post("/import")
def import_from_bookme(request: Request, services: ServicesDep, form: FormDep) -> Response:
    """Fetch a booking from BookMe by id and accept it through the webhook's path
    (``import_booking``, as ``POST /api/bookings/import``); say how it went."""
    checked = _checked_post(request, services, form)
    if isinstance(checked, Response):
        return checked
    booking_id = form.get("booking_id", "").strip()
    page = Page(request, services, checked)
    configured = services.settings.bookme_api_url is not None
    try:
        outcome = import_booking(services, booking_id)
    except BookMeError as exc:
        log.info("dashboard import of booking %r refused: %s", booking_id, exc.message)
        return page.render(
            "import.html",
            exc.status_code,
            nav="import",
            configured=configured,
            booking_id=booking_id,
            error=exc.message,
        )
    services.wake_workers()
    event = services.store.get(outcome.event_id)
    state = services.await_settled(event).state if event else outcome.state
    if not outcome.new:
        message = f"Booking {outcome.booking_id} was already here: nothing changed ({state})."
    else:
        message = f"Added booking {outcome.booking_id} from BookMe: {state}."
    return _done(services, checked, "/ui/import", message)


# --- automatic mails ------------------------------------------------------------------


@router.get("/mails")
def mails(request: Request, services: ServicesDep) -> Response:
    """Each booking's automatic mails: sent, scheduled, failed, and the uncertain ones to decide."""
    from adapter.notify import store as sends
    from adapter.notify.status import mail_status

    session = _logged_in(request, services)
    if session is None:
        return _to_login(request)
    page = Page(request, services, session)
    try:
        reads = services.engine.execution_options(sqlite_begin="DEFERRED")
        with reads.connect() as conn:
            rows = sends.listing(conn, limit=EVENT_LIMIT * 4)
    except SQLAlchemyError as exc:
        return _unreadable(page, exc)
    status_ = mail_status(services.settings, services.mappings.current)
    order = ("scheduled", "sent", "uncertain", "failed", "missed", "dropped", "skipped")
    counts = {state: sum(1 for row in rows if row.state == state) for state in order}
    return page.render(
        "mails.html",
        rows=rows,
        counts=counts,
        enabled=status_["enabled"],
        reason=status_.get("reason", ""),
    )


@router.post("/mails/{booking_id}/{task_key}/{action}")
def mail_action(
    request: Request,
    services: ServicesDep,
    booking_id: str,
    task_key: str,
    action: str,
    form: FormDep,
) -> Response:
    """ "Send again" (a new job now, the same Message-ID) or "Mark sent" for an uncertain send."""
    from adapter.notify.actions import SendNotFound, mark_sent, send_again

    checked = _checked_post(request, services, form)
    if isinstance(checked, Response):
        return checked
    try:
        if action == "send-again":
            send_again(services.store, booking_id, task_key)
            services.wake_workers()
            message = f"The mail for {booking_id} ({task_key}) will be sent again now."
        elif action == "mark-sent":
            mark_sent(services.store, services.mail_record(), booking_id, task_key)
            message = f"The mail for {booking_id} ({task_key}) is recorded as sent."
        else:
            return _done(services, checked, "/ui/mails", "Unknown action.")
    except SendNotFound:
        message = "That mail is no longer uncertain or failed; nothing changed."
    return _done(services, checked, "/ui/mails", message)
