"""The ``bookme-crm`` command line (contract §1), built with typer."""

from __future__ import annotations

import getpass
import json
import logging
import os
import queue
import signal
import threading
import uuid
from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from typer.core import TyperCommand

from adapter import db
from adapter.booking import Booking, parse_booking, validation_details
from adapter.errors import MappingError
from adapter.logs import configure_logging
from adapter.mapping import MappingConfig, load_mapping, plan_booking
from adapter.plan import BookingPlan, OwnerPlan
from adapter.secrets import WEBHOOK_SECRET_FILE
from adapter.services import Services, build_services
from adapter.settings import Settings
from adapter.timeutil import iso_z, utcnow
from outbox.store import REPLAYABLE, STATES, OutboxStore

if TYPE_CHECKING:
    from adapter.backends.hubspot.client import HubSpotApi
    from adapter.backends.hubspot.setup import SetupReport
    from adapter.calendar import TokenStore


class _PlainCommand(TyperCommand):
    """A command whose arguments read ``BOOKING_ID  help``, without typer's ``<list[str]>``."""

    # Typed Any: typer vendors its own click, whose classes are private.
    def format_options(self, ctx: Any, formatter: Any) -> None:
        args: list[tuple[str, str]] = []
        opts: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append((record[0].split(" <", 1)[0], record[1]))
            else:
                opts.append(record)
        for title, rows in (("Arguments", args), ("Options", opts)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


# Plain help (click's own formatter): rich's panels showed every flag as "--sign <bool>"
# and squeezed defaults into a narrow column.
_PLAIN: dict[str, Any] = {"no_args_is_help": True, "rich_markup_mode": None}
app = typer.Typer(help="BookMe → CRM integration service.", **_PLAIN)
mappings_app = typer.Typer(help="Validate and try out mapping files.", **_PLAIN)
outbox_app = typer.Typer(help="Inspect and replay outbox events.", **_PLAIN)
hubspot_app = typer.Typer(help="Prepare a HubSpot portal for the backend.", **_PLAIN)
app.add_typer(mappings_app, name="mappings")
app.add_typer(outbox_app, name="outbox")
app.add_typer(hubspot_app, name="hubspot")
calendar_app = typer.Typer(help="Calendar feeds of meetings and open tasks.", **_PLAIN)
calendar_token_app = typer.Typer(help="Create, list and revoke feed tokens.", **_PLAIN)
app.add_typer(calendar_app, name="calendar")
calendar_app.add_typer(calendar_token_app, name="token")

log = logging.getLogger("adapter")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            field = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            typer.echo(f"configuration error: {field}: {err['msg']}", err=True)
        raise typer.Exit(2) from exc


LogFormatOption = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        metavar="FORMAT",
        help="json or console (default LOG_FORMAT; else console on a terminal, json otherwise).",
    ),
]


ShutdownOption = Annotated[
    float | None,
    typer.Option(
        "--shutdown-seconds",
        min=0.0,
        metavar="SECONDS",
        help="On SIGTERM, how long the batches in hand may take (default WORKER_SHUTDOWN_SECONDS).",
    ),
]


def _configure_logging(fmt: str | None) -> None:
    try:
        configure_logging(fmt)
    except ValueError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from exc


class _SignalInbox:
    """Signal handlers only enqueue (``SimpleQueue.put`` is safe there); a thread acts."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[int] = queue.SimpleQueue()

    def catch(self, *signums: int) -> None:
        for signum in signums:
            signal.signal(signum, lambda received, _frame: self.inbox.put(received))

    def next(self, timeout: float) -> int | None:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None


def _dispatch_reloads(inbox: _SignalInbox, reload: Callable[[], bool]) -> None:
    """Serve's SIGHUP thread: reload the mapping on each signal, for the process's life."""
    while True:
        if inbox.next(timeout=3600.0) == signal.SIGHUP:
            reload()


def _services(settings: Settings) -> Services:
    try:
        return build_services(settings)
    except MappingError as exc:
        typer.echo(f"mapping error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _first_run_banner(services: Services, host: str, port: int) -> None:
    """Print generated secrets once, with a curl that works as pasted."""
    for stored in services.generated:
        if stored.path.name == WEBHOOK_SECRET_FILE:
            sample = {
                "bookingId": "test-123",
                "eventType": "workshop",
                "name": "Test Person",
                "email": "test@example.com",
                "scheduledDate": "2027-02-15T10:00:00Z",
                "duration": 120,
                "source": "bookme",
            }
            typer.echo(
                f"\nGenerated a webhook secret (kept in {stored.path}):\n\n"
                f"  CRM_WEBHOOK_SECRET={stored.value}\n\n"
                "Try it:\n\n"
                f"  curl -X POST http://{host}:{port}/api/bookings/incoming \\\n"
                "    -H 'Content-Type: application/json' \\\n"
                f"    -H 'X-Webhook-Secret: {stored.value}' \\\n"
                f"    -d '{json.dumps(sample)}'\n"
            )
        else:
            typer.echo(
                f"Generated an admin token (kept in {stored.path}) for /admin, event status "
                f"and the read API:\n\n  ADMIN_TOKEN={stored.value}\n"
            )


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(metavar="HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8000,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Run no embedded worker (scale-out).")
    ] = False,
    shutdown_seconds: ShutdownOption = None,
    log_format: LogFormatOption = None,
) -> None:
    """Serve the HTTP API with an embedded worker; migrates the database on start.

    SIGHUP reloads the mapping file (an invalid one is refused and logged).
    SIGTERM stops the server, then the embedded workers as `worker` does.
    """
    import uvicorn

    from adapter.api.app import create_app
    from adapter.api.server import server_options

    settings = _settings()
    _configure_logging(log_format or settings.log_format)
    deadline = settings.worker_shutdown_seconds if shutdown_seconds is None else shutdown_seconds
    services = _services(settings)
    _first_run_banner(services, host, port)
    services.refresh_crm_account()
    workers = 0 if no_worker else settings.worker_concurrency
    api = create_app(services=services, embedded_workers=workers)
    inbox = _SignalInbox()
    # uvicorn takes SIGTERM/SIGINT while it runs and re-raises them once it has
    # stopped; ours then only enqueue (ignored), so the ``finally`` below runs.
    inbox.catch(signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
    threading.Thread(
        target=_dispatch_reloads,
        args=(inbox, services.reload_mappings),
        name="sighup",
        daemon=True,
    ).start()
    try:
        uvicorn.run(
            api,
            host=host,
            port=port,
            log_level="info",
            access_log=False,
            log_config=None,
            **server_options(settings),  # timeouts for slow and idle clients
        )
    finally:
        services.close(timeout=deadline)


@app.command()
def worker(
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, metavar="N", help="Worker threads.")
    ] = 1,
    drain: Annotated[
        bool, typer.Option("--drain", help="Exit once nothing is due instead of running on.")
    ] = False,
    shutdown_seconds: ShutdownOption = None,
    log_format: LogFormatOption = None,
) -> None:
    """Run workers alone, beside `serve --no-worker`.

    SIGTERM (or SIGINT) stops claiming at once, lets the batches in hand finish
    within --shutdown-seconds and releases claims not yet started; SIGHUP
    reloads the mapping file.
    """
    settings = _settings()
    _configure_logging(log_format or settings.log_format)
    deadline = settings.worker_shutdown_seconds if shutdown_seconds is None else shutdown_seconds
    services = _services(settings)
    if drain:
        done = services.new_worker().drain()
        typer.echo(f"processed {done} events")
        services.close()
        return
    services.refresh_crm_account()
    inbox = _SignalInbox()
    inbox.catch(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    services.start_workers(concurrency)
    log.info("worker running with %d thread(s)", concurrency, extra={"pid": os.getpid()})
    stop_signal = 0
    while not stop_signal:
        received = inbox.next(timeout=1.0)
        if received == signal.SIGHUP:
            services.reload_mappings()
        elif received is not None:
            stop_signal = received
    log.info(
        "stopping on %s: finishing the batches in hand",
        signal.Signals(stop_signal).name,
        extra={"deadline_seconds": deadline},
    )
    clean = services.stop_workers(deadline)
    services.close(timeout=0.0)
    if not clean:
        raise typer.Exit(1)
    log.info("worker stopped")


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic)."""
    settings = _settings()
    engine = db.make_engine(settings.database_url)
    db.upgrade(engine)
    typer.echo(f"database at revision {db.current_revision(engine)}")
    engine.dispose()


@mappings_app.command("check", cls=_PlainCommand)
def mappings_check(
    path: Annotated[
        Path | None, typer.Argument(metavar="PATH", help="Mapping file (default MAPPINGS_PATH).")
    ] = None,
    sample: Annotated[
        Path | None,
        typer.Option("--sample", metavar="FILE", help="A booking JSON file to dry-run."),
    ] = None,
    hubspot: Annotated[
        bool,
        typer.Option(
            "--hubspot",
            help="Also check every mapped property and owner against the HubSpot portal "
            "(HUBSPOT_ACCESS_TOKEN).",
        ),
    ] = False,
) -> None:
    """Validate a mapping file; with --sample, print the CRM writes it would make."""
    target = path or Settings().mappings_path
    try:
        mapping = load_mapping(target)
    except MappingError as exc:
        typer.echo(f"invalid: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{target}: valid; event types: {', '.join(sorted(mapping.event_types))}")
    if hubspot:
        _check_against_hubspot(mapping)
    if sample is None:
        return
    try:
        booking = parse_booking(json.loads(sample.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        typer.echo(f"cannot read sample {sample}: {exc}", err=True)
        raise typer.Exit(1) from exc
    except ValidationError as exc:
        for detail in validation_details(exc):
            typer.echo(f"sample invalid: {detail.field}: {detail.message}", err=True)
        raise typer.Exit(1) from exc
    try:
        plan = plan_booking(booking, mapping, now=utcnow())
    except MappingError as exc:
        typer.echo(f"sample would be quarantined: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(plan.model_dump(mode="json"), indent=2, ensure_ascii=False))
    if plan.owner is not None:
        # On stderr: stdout stays the plan's JSON alone, for scripts.
        typer.echo(f"owner: {_owner_line(plan.owner)}", err=True)
    _render_sample_mails(plan, booking, target.parent)


def _render_sample_mails(plan: BookingPlan, booking: Booking, folder: Path) -> None:
    """Each automatic task's mail as it would go out, on stderr (stdout stays the plan)."""
    from adapter.notify import render_mail

    sender = os.environ.get("SMTP_FROM") or "crm@bookme-crm.invalid"
    for task in plan.tasks:
        if task.send is None:
            continue
        try:
            mail = render_mail(
                task.send, booking, folder, sender=sender, task_key=task.key, date=utcnow()
            )
        except MappingError as exc:
            typer.echo(f"mail for task {task.key} cannot be rendered: {exc}", err=True)
            raise typer.Exit(1) from exc
        typer.echo(f"--- mail for task {task.key}, sent at {task.due.isoformat()} ---", err=True)
        typer.echo(mail.as_string(), err=True)


def _owner_line(owner: OwnerPlan) -> str:
    """Who the dry run's records would belong to, as the worker will decide it."""
    if owner.round_robin:
        chosen = (
            f"round robin over {', '.join(owner.round_robin)} "
            "(the booking's turn is taken at its first sync and kept)"
        )
    else:
        chosen = owner.email or "none"
    if owner.keep_existing:
        return f"the contact's existing owner, else {chosen}"
    return chosen


def _hubspot_api(settings: Settings) -> HubSpotApi:
    """The HubSpot client the settings name, for a CLI command; exit 2 without a token."""
    from adapter.backends.hubspot import build_api

    if settings.hubspot_access_token is None:
        typer.echo("configuration error: HUBSPOT_ACCESS_TOKEN is not set", err=True)
        raise typer.Exit(2)
    return build_api(
        settings.hubspot_access_token.get_secret_value(),
        settings.hubspot_base_url,
        settings.rate_limit,
        search_limit=settings.search_rate_limit,
    )


def _mapping_for(api: HubSpotApi, settings: Settings) -> MappingConfig:
    """The mapping in use for a HubSpot command; exit 2 (closing ``api``) if it is invalid."""
    try:
        return load_mapping(settings.mappings_path)
    except MappingError as exc:
        api.close()
        typer.echo(f"mapping error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _check_against_hubspot(mapping: MappingConfig) -> None:
    """``mappings check --hubspot``: the portal's properties and owners against the mapping."""
    from adapter.backends.hubspot.portal_check import check_mapping
    from adapter.errors import AdapterError

    api = _hubspot_api(_settings())
    try:
        problems = check_mapping(api, mapping)
    except AdapterError as exc:
        typer.echo(f"cannot read the HubSpot portal: {exc}", err=True)
        raise typer.Exit(2) from exc
    finally:
        api.close()
    for problem in problems:
        typer.echo(f"PORTAL   {problem}")
    if problems:
        typer.echo(f"{len(problems)} problem(s) with the portal; fix the mapping", err=True)
        raise typer.Exit(1)
    typer.echo("HubSpot portal: every mapped property fits")


def _store() -> OutboxStore:
    """The outbox alone: inspecting it needs neither the mapping nor the CRM.

    Says on stderr which database it reads, and refuses a SQLite file that does
    not exist: run from another folder, the default relative path used to
    create a new empty database and report zeros.
    """
    from sqlalchemy.engine import make_url

    raw = _settings().database_url
    url = make_url(raw)
    shown = url.render_as_string(hide_password=True)
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database not in ("", ":memory:"):
        path = Path(database).resolve()
        if not database.startswith("file:") and not path.is_file():
            typer.echo(
                f"no database at {path} (DATABASE_URL={shown}, read from {Path.cwd()}).\n"
                "Run this command in the folder `serve` runs in, or point DATABASE_URL at its "
                "file (sqlite:////absolute/path/bookme_crm.db); `bookme-crm migrate` creates "
                "an empty one.",
                err=True,
            )
            raise typer.Exit(2)
        shown = f"sqlite:///{path}"
    typer.echo(f"database: {shown}", err=True)
    engine = db.make_engine(raw)
    db.upgrade(engine)
    return OutboxStore(engine)


def _event_line(event: Any) -> str:
    error = f"  {event.last_error}" if event.last_error else ""
    return (
        f"{event.id}  {event.state:<11}  booking={event.key}  attempts={event.attempts}  "
        f"received={iso_z(event.received_at)}{error}"
    )


@outbox_app.command("status")
def outbox_status() -> None:
    """Count events by state, the age of the oldest pending one, and the worker processes
    with a heartbeat (a stale one's claims are being taken over)."""
    store = _store()
    for state, count in store.counts().items():
        typer.echo(f"{state:<12}{count}")
    age = store.oldest_pending_age()
    typer.echo(f"oldest pending: {'none' if age is None else f'{age:.1f}s'}")
    stale_after = _settings().worker_stale_seconds
    workers = store.live_workers()
    typer.echo(f"workers: {len(workers)} with a heartbeat")
    for worker_id, beat in workers:
        silent = (utcnow() - beat).total_seconds()
        note = "  stale: its claims are taken over" if silent > stale_after else ""
        typer.echo(f"  {worker_id}  last beat {silent:.1f}s ago{note}")


@app.command()
def insights(
    start: Annotated[
        str | None,
        typer.Option("--from", metavar="YYYY-MM-DD", help="First UTC day (default: 29 days ago)."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", metavar="YYYY-MM-DD", help="Last UTC day, included (default: today)."),
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--event-type", metavar="TYPE", help="Only this event type.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the API's JSON instead.")] = False,
) -> None:
    """Print the success metrics and the funnel for a period (README "Insights")."""
    from adapter.insights.compute import build_report
    from adapter.insights.duplicates import duplicates_report
    from adapter.insights.period import FilterError, parse_filters
    from adapter.insights.report import to_json
    from adapter.insights.text import render

    now = utcnow()
    try:
        filters = parse_filters(start, end, event_type, today=now.date())
    except FilterError as exc:
        flag = {"from": "--from", "to": "--to", "eventType": "--event-type"}[exc.field]
        typer.echo(f"{flag}: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    settings = _settings()
    try:
        services = build_services(settings, generate_secrets=False)
    except MappingError as exc:
        typer.echo(f"mapping error: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        if settings.crm_backend == "hubspot":
            duplicates_report(services, now=now, wait=True)  # a due HubSpot check runs here
        report = build_report(services, filters, now=now)
    finally:
        services.close()
    typer.echo(json.dumps(to_json(report), indent=2) if as_json else render(report), nl=as_json)


@outbox_app.command("list")
def outbox_list(
    state: Annotated[
        str | None, typer.Option(metavar="STATE", help=f"One of {', '.join(STATES)}.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, metavar="N")] = 100,
) -> None:
    """List events, newest first."""
    if state is not None and state not in STATES:
        typer.echo(f"unknown state {state!r}; one of {', '.join(STATES)}", err=True)
        raise typer.Exit(2)
    store = _store()
    for event in store.list(state, limit=limit):
        typer.echo(_event_line(event))


def _cli_actor() -> str:
    """Who replays, for the audit: ``cli:<user>``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        user = f"uid{os.getuid()}"
    return f"cli:{user}"


@outbox_app.command("replay", cls=_PlainCommand)
def outbox_replay(
    event_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="EVENT_ID", help="Event ids to queue again.", show_default=False),
    ] = None,
    state: Annotated[
        str | None,
        typer.Option(
            metavar="STATE",
            help=f"Replay every event in this state ({' or '.join(REPLAYABLE)}).",
        ),
    ] = None,
) -> None:
    """Queue dead or quarantined events again (idempotent, audited as cli:<user>)."""
    from outbox.exceptions import EventNotFound

    if bool(event_ids) == (state is not None):
        typer.echo("give event ids or --state, not both", err=True)
        raise typer.Exit(2)
    if state is not None and state not in REPLAYABLE:
        typer.echo(f"cannot replay state {state!r}; one of {', '.join(REPLAYABLE)}", err=True)
        raise typer.Exit(2)
    store = _store()
    actor = _cli_actor()
    if state is not None:
        replayed = store.replay_state(state, actor=actor)
        for event in replayed:
            typer.echo(_event_line(event))
        typer.echo(f"replayed {len(replayed)} {state} event(s)")
        return
    try:
        for event in store.replay(event_ids or [], actor=actor):
            typer.echo(_event_line(event))
    except EventNotFound as exc:
        typer.echo(f"no event {exc}", err=True)
        raise typer.Exit(1) from exc


@hubspot_app.command("setup")
def hubspot_setup() -> None:
    """Create the custom properties the backend needs; check the mapping's pipeline and stages."""
    from adapter.backends.hubspot import run_setup
    from adapter.errors import AdapterError

    settings = _settings()
    api = _hubspot_api(settings)
    mapping = _mapping_for(api, settings)
    try:
        report = run_setup(api, mapping)
    except AdapterError as exc:
        typer.echo(f"HubSpot setup failed: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        api.close()
    _print_and_store_account(settings, report)
    for line in report.lines:
        typer.echo(f"ok       {line}")
    for problem in report.problems:
        typer.echo(f"MISSING  {problem}")
    if not report.ok:
        typer.echo(f"{len(report.problems)} problem(s); fix them and run setup again", err=True)
        raise typer.Exit(1)
    typer.echo("HubSpot is ready for bookme-crm")


@hubspot_app.command("poll")
def hubspot_poll(
    once: Annotated[
        bool, typer.Option("--once", help="One round over meetings, tasks and deals, then exit.")
    ] = False,
    log_format: LogFormatOption = None,
) -> None:
    """Look for changes sales staff made in HubSpot (the poll `serve` and `worker` run).

    Records each change once and queues its push to BookMe; exits 1 when another
    process holds the poll's lease (it is polling now).
    """
    from adapter.errors import AdapterError
    from adapter.hubspot_sync.poll import poll_error

    settings = _settings()
    _configure_logging(log_format or settings.log_format)
    if settings.crm_backend != "hubspot":
        typer.echo("configuration error: the poll needs CRM_BACKEND=hubspot", err=True)
        raise typer.Exit(2)
    services = _services(settings)
    poller = services.hubspot_poller()
    assert poller is not None
    try:
        if not once:
            inbox = _SignalInbox()
            inbox.catch(signal.SIGTERM, signal.SIGINT)
            stop = threading.Event()
            threading.Thread(target=poller.run, args=(stop,), name="hubspot-poll").start()
            while inbox.next(timeout=1.0) is None:
                pass
            stop.set()
            poller.wake()
            return
        try:
            report = poller.poll_once()
        except AdapterError as exc:
            typer.echo(f"HubSpot poll failed: {poll_error(exc)}", err=True)
            raise typer.Exit(1) from exc
        if report is None:
            typer.echo("another process is polling HubSpot now (it holds the lease)", err=True)
            raise typer.Exit(1)
        for object_type, pages in report.pages.items():
            typer.echo(f"{object_type:<9} {pages} page(s)")
        tally = report.tally
        typer.echo(
            f"read {tally.read} object(s): {tally.changes} change(s), "
            f"{tally.pushes} push(es) queued, {tally.superseded} superseded"
        )
    finally:
        services.close(timeout=0.0)


@hubspot_app.command("verify")
def hubspot_verify(
    search_wait: Annotated[
        float,
        typer.Option(
            "--search-wait",
            min=0.0,
            max=600.0,
            metavar="SECONDS",
            help="How long to wait for search to find a new meeting.",
        ),
    ] = 30.0,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the bookme-verify-* records in HubSpot.")
    ] = False,
) -> None:
    """Check on your portal (a sandbox or test account) what the backend assumes of HubSpot.

    Creates a contact, company, deal, meeting and task under a bookme-verify-<random>
    key, provokes the answers the backend must handle, archives what it made and
    prints a table. Exit 0: every assumption holds; 1: one does not; 2: not set up.
    """
    from adapter.backends.hubspot.verify import Verifier

    settings = _settings()
    api = _hubspot_api(settings)
    mapping = _mapping_for(api, settings)
    verifier = Verifier(api, mapping.defaults.hubspot, search_wait=search_wait, keep=keep)
    typer.echo(
        f"Verifying {settings.hubspot_base_url} with records keyed {verifier.key} "
        "(use a sandbox or developer test portal)\n"
    )
    try:
        report = verifier.run()
    finally:
        api.close()
    typer.echo(report.table())
    typer.echo("")
    if report.not_ready is not None:
        typer.echo(f"not ready: {report.not_ready}", err=True)
    elif report.exit_code:
        failed = sum(not check.handled for check in report.checks)
        typer.echo(f"{failed} assumption(s) do not hold on this portal: see the rows marked NO")
    else:
        typer.echo("every assumption holds on this portal")
    raise typer.Exit(report.exit_code)


def _print_and_store_account(settings: Settings, report: SetupReport) -> None:
    """``hubspot setup``'s header: the portal, where its data lives, the rate limit used;
    the account info is stored for the dashboard's links."""
    from sqlalchemy.exc import SQLAlchemyError

    from adapter.backends.hubspot import account
    from adapter.backends.hubspot.client import SEARCH_LIMIT

    requests, window = settings.rate_limit
    searches, search_window = SEARCH_LIMIT
    info = report.account
    if info is None:
        typer.echo(f"WARNING  account info unavailable: {report.account_error}")
        typer.echo("         dashboard links keep the stored UI domain (app.hubspot.com if none)")
    else:
        typer.echo(f"portal        {info.portal_id} ({info.account_type})")
        typer.echo(f"UI domain     {info.ui_domain} (the dashboard's links into HubSpot)")
        typer.echo(f"data hosting  {info.data_hosting_location}")
    typer.echo(
        f"rate limit    {requests} requests per {window:g} s (HUBSPOT_RATE_LIMIT), "
        f"{searches} searches per {search_window:g} s; shared by every process on the database"
    )
    if info is None:
        return
    if settings.hubspot_portal_id and settings.hubspot_portal_id != info.portal_id:
        typer.echo(
            f"WARNING  HUBSPOT_PORTAL_ID={settings.hubspot_portal_id} but the token belongs to "
            f"portal {info.portal_id}; the dashboard links use HUBSPOT_PORTAL_ID"
        )
    engine = db.make_engine(settings.database_url)
    try:
        db.upgrade(engine)
        account.save(engine, info)
    except (SQLAlchemyError, ValueError) as exc:
        typer.echo(f"WARNING  account info not stored ({exc}); serve stores it at start", err=True)
    else:
        typer.echo(f"ok       account info stored: dashboard links go to https://{info.ui_domain}")
    finally:
        engine.dispose()


class SendTestEvent(StrEnum):
    """The lifecycle events `send-test` can post."""

    created = "created"
    rescheduled = "rescheduled"
    cancelled = "cancelled"
    no_show = "no_show"


@app.command("import", cls=_PlainCommand)
def import_command(
    booking_ids: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="BOOKING_ID", help="BookMe booking ids to import.", show_default=False
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DATE",
            help="Backfill every booking from this date (YYYY-MM-DD or ISO datetime); resumable.",
        ),
    ] = None,
) -> None:
    """Fetch bookings from BookMe's API and accept them like webhook deliveries.

    Idempotent: a booking the outbox already holds stores nothing. A running
    `serve` or `worker` syncs what is stored. With --since, an interrupted
    backfill continues where it stopped when run again with the same date.
    """
    from adapter.bookme import BookMeError, import_booking
    from adapter.bookme.backfill import parse_since

    if bool(booking_ids) == (since is not None):
        typer.echo("give booking ids or --since, not both", err=True)
        raise typer.Exit(2)
    settings = _settings()
    if settings.bookme_api_url is None:
        typer.echo("configuration error: BOOKME_API_URL is not set", err=True)
        raise typer.Exit(2)
    if since is not None:
        try:
            since = parse_since(since)
        except ValueError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(2) from exc
    try:
        services = build_services(settings, generate_secrets=False)
    except MappingError as exc:
        typer.echo(f"mapping error: {exc}", err=True)
        raise typer.Exit(2) from exc
    try:
        if since is not None:
            _backfill(services, since)
            return
        failed = 0
        for booking_id in booking_ids or []:
            try:
                outcome = import_booking(services, booking_id)
            except BookMeError as exc:
                failed += 1
                typer.echo(f"{booking_id}: {exc.message}", err=True)
                continue
            typer.echo(
                f"{outcome.booking_id}  {'new' if outcome.new else 'already present':<15}  "
                f"{outcome.state:<11}  {outcome.event}  event={outcome.event_id}"
            )
        if failed:
            raise typer.Exit(1)
    finally:
        services.close(timeout=0.0)


def _backfill(services: Services, since: str) -> None:
    """``import --since``: page through BookMe with a progress bar, then print the counts."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from adapter.bookme import BookMeError
    from adapter.bookme.backfill import Backfill, BackfillReport
    from adapter.bookme.importer import bookme_client

    with bookme_client(services.settings) as client:
        run = Backfill(services, client, since)
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed} booking(s)"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
        )
        task = progress.add_task(f"importing bookings since {since}", total=None)

        def tick(report: BackfillReport) -> None:
            progress.update(task, completed=report.fetched)

        stopped: str | None = None
        with progress:
            try:
                run.run(on_booking=tick)
            except BookMeError as exc:
                stopped = exc.message
            except KeyboardInterrupt:
                stopped = "interrupted"
    report = run.report
    if report.resumed:
        typer.echo(f"resumed the unfinished backfill since {since}")
    for booking_id, message in report.failed:
        typer.echo(f"failed {booking_id}: {message}", err=True)
    typer.echo(report.summary())
    if stopped is not None:
        typer.echo(
            f"stopped: {stopped}; run the same command again to resume after the last "
            "completed page",
            err=True,
        )
        raise typer.Exit(1)
    if report.failed:
        raise typer.Exit(1)


def _send_test_body(event: SendTestEvent, booking_id: str | None) -> dict[str, Any]:
    """A booking as BookMe posts it: a consultation two weeks ahead, every field filled."""
    # updatedAt to the millisecond: a cancellation sent right after its creation
    # must be the newer snapshot, or it would be superseded.
    now = utcnow()
    start = (now + timedelta(days=14)).replace(hour=9, minute=0, second=0, microsecond=0)
    if event is SendTestEvent.rescheduled:
        start += timedelta(days=1)
    body: dict[str, Any] = {
        "bookingId": booking_id or f"send-test-{uuid.uuid4().hex[:12]}",
        "eventType": "30min-consultation",
        "name": "Send Test",
        "email": "send-test@example.com",
        "phone": "+46 70 000 00 00",
        "scheduledDate": iso_z(start),
        "duration": 30,
        "meetingUrl": "https://meet.example.com/send-test",
        "notes": "Sent by bookme-crm send-test",
        "source": "bookme",
        "createdAt": iso_z(now),
        "updatedAt": iso_z(now),
        "timezone": "Europe/Stockholm",
        "event": f"booking.{event.value}",
    }
    if event is SendTestEvent.cancelled:
        body["cancellationReason"] = "Cancelled by bookme-crm send-test"
    return body


@app.command("send-test")
def send_test(
    url: Annotated[
        str,
        typer.Option(
            metavar="URL",
            help="The service's base URL, or the full webhook URL to post to.",
        ),
    ] = "http://127.0.0.1:8000/api/bookings/incoming",
    event: Annotated[
        SendTestEvent, typer.Option(metavar="EVENT", help="Which lifecycle event to send.")
    ] = SendTestEvent.created,
    sign: Annotated[
        bool,
        typer.Option(
            "--sign",
            help="Sign with Standard Webhooks (first CRM_WEBHOOK_SIGNING_SECRETS) "
            "instead of X-Webhook-Secret.",
        ),
    ] = False,
    booking_id: Annotated[
        str | None,
        typer.Option(
            metavar="ID", help="Booking id to send (e.g. to cancel an earlier test); default: new."
        ),
    ] = None,
) -> None:
    """Post a realistic test booking the way BookMe does, and print the answer.

    Uses the secret `serve` uses: CRM_WEBHOOK_SECRET, else the one generated
    in the data folder on the first start. The booking lands in the CRM like
    any other (contact send-test@example.com).
    """
    import httpx
    from standardwebhooks.webhooks import Webhook

    settings = _settings()
    target = _webhook_url(url)
    body = _send_test_body(event, booking_id)
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if sign:
        if not settings.signing_secrets:
            typer.echo("configuration error: --sign needs CRM_WEBHOOK_SIGNING_SECRETS", err=True)
            raise typer.Exit(2)
        msg_id = f"msg_{uuid.uuid4().hex}"
        now = utcnow()
        headers["webhook-id"] = msg_id
        headers["webhook-timestamp"] = str(int(now.timestamp()))
        headers["webhook-signature"] = Webhook(settings.signing_secrets[0]).sign(
            msg_id, now, payload.decode()
        )
        source = _setting_source("CRM_WEBHOOK_SIGNING_SECRETS")
        scheme = "Standard Webhooks signature"
    else:
        found = _shared_secret(settings)
        if found is None:
            typer.echo(
                "configuration error: no webhook secret; set CRM_WEBHOOK_SECRET, start `serve` "
                f"once (it keeps a generated one in {settings.data_dir.resolve()}, a folder "
                "relative to where it runs: run send-test from there or set DATA_DIR), "
                "or use --sign",
                err=True,
            )
            raise typer.Exit(2)
        headers["X-Webhook-Secret"], source = found
        scheme = "X-Webhook-Secret"
    typer.echo(
        f"POST {target}  {body['event']}  booking {body['bookingId']}  ({scheme})  "
        f"secret from {source}"
    )
    try:
        response = httpx.post(target, content=payload, headers=headers, timeout=30.0)
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach {target}: {exc or type(exc).__name__}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"HTTP {response.status_code}")
    try:
        typer.echo(json.dumps(response.json(), indent=2, ensure_ascii=False))
    except ValueError:
        typer.echo(response.text)
    if response.status_code == 401:
        typer.echo(
            f"the service refused the secret from {source}; it must match the one the service "
            "uses (its CRM_WEBHOOK_SECRET / CRM_WEBHOOK_SIGNING_SECRETS, or its data folder's)",
            err=True,
        )
    elif response.status_code in (404, 405):
        typer.echo(
            f"nothing takes a booking at {target}: the webhook is POST {WEBHOOK_PATH} on the "
            "service; give --url the service's base URL (http://host:8000) or that full URL",
            err=True,
        )
    if not response.is_success:
        raise typer.Exit(1)


WEBHOOK_PATH = "/api/bookings/incoming"


def _webhook_url(url: str) -> str:
    """The URL to post to: a base URL (BookMe's CRM_WEBHOOK_URL often is one) gets the
    webhook's path; a URL with a path is used as given."""
    import httpx

    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL as exc:
        typer.echo(f"--url: not a URL ({exc})", err=True)
        raise typer.Exit(2) from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        typer.echo(f"--url: {url!r} is not an http(s) URL such as http://127.0.0.1:8000", err=True)
        raise typer.Exit(2)
    if parsed.path in ("", "/"):
        parsed = parsed.copy_with(path=WEBHOOK_PATH)
    return str(parsed)


def _calendar_tokens() -> TokenStore:
    from adapter.calendar import TokenStore

    return TokenStore(_store().engine)


@calendar_token_app.command("create")
def calendar_token_create(
    label: Annotated[
        str, typer.Option(metavar="TEXT", help="Who or what the feed is for (shown in lists).")
    ] = "",
    url: Annotated[
        str,
        typer.Option(metavar="URL", help="The service's public base URL, to print the feed URLs."),
    ] = "http://127.0.0.1:8000",
    owner: Annotated[
        str | None,
        typer.Option(metavar="EMAIL", help="Also print the URL of this owner's feed."),
    ] = None,
) -> None:
    """Make a feed token and print its feed URLs: the token is shown this once, only its
    hash is kept."""
    from adapter.calendar import feed_urls

    made, secret = _calendar_tokens().create(label)
    typer.echo(f"token {made.id} created; its feed URLs are shown only now:")
    for target in (None, owner) if owner else (None,):
        for link in feed_urls(url, secret, target.strip().lower() if target else None):
            typer.echo(f"  {link}")


@calendar_token_app.command("list")
def calendar_token_list() -> None:
    """Every feed token: id, created, revoked or active, label (never the token itself)."""
    for token in _calendar_tokens().list():
        state = f"revoked {iso_z(token.revoked_at)}" if token.revoked_at else "active"
        typer.echo(f"{token.id}  {iso_z(token.created_at)}  {state:<33}  {token.label}")


@calendar_token_app.command("revoke", cls=_PlainCommand)
def calendar_token_revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="The id `token list` shows.")],
) -> None:
    """Revoke a feed token: its feeds answer 404 from now on."""
    token = _calendar_tokens().revoke(token_id)
    if token is None:
        typer.echo(f"no feed token {token_id!r}", err=True)
        raise typer.Exit(1)
    typer.echo(f"token {token.id} revoked")


def _setting_source(name: str) -> str:
    """Where ``Settings`` read ``name`` from: the environment, else the ``.env`` file."""
    from dotenv import dotenv_values

    # pydantic-settings matches variable names case-insensitively, the environment first.
    if any(key.upper() == name for key in os.environ):
        return f"the {name} variable"
    dotenv = Path(".env")
    if dotenv.is_file() and any(key.upper() == name for key in dotenv_values(dotenv)):
        return f"{name} in {dotenv.resolve()}"
    return name


def _shared_secret(settings: Settings) -> tuple[str, str] | None:
    """The ``X-Webhook-Secret`` value ``serve`` accepts (the setting, else the stored one),
    and where it was read from."""
    if settings.crm_webhook_secret is not None:
        return (
            settings.crm_webhook_secret.get_secret_value(),
            _setting_source("CRM_WEBHOOK_SECRET"),
        )
    stored = settings.data_dir / WEBHOOK_SECRET_FILE
    if stored.exists():
        value = stored.read_text().strip()
        return (value, f"the data folder's {stored.resolve()}") if value else None
    return None


def main() -> None:
    app()


if __name__ == "__main__":
    main()
