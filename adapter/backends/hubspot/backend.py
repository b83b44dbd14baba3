"""``HubSpotBackend``: a booking plan as HubSpot records, each exactly once.

What a booking becomes (contract §4 identity in brackets):

- contact [email]: batch upsert with ``idProperty=email``;
- company [name key]: batch upsert by the unique-value property ``bookme_company_key``;
  contact → company associated as primary (type 1);
- deal [lead key]: created with ``pipeline``, ``dealstage`` and its associations
  inline, keyed by the unique-value property ``bookme_lead_key``, then updated by
  id (``dealname``, ``amount``, tags); deal → contact (3), deal → company (5, primary);
- meeting [booking id]: ``bookme_booking_id``; → contact (200), deal (212), company (188);
- tasks [booking id | task key]: ``bookme_task_key``; → contact (204), deal (216).

Meetings and tasks cannot be upserted by a property, so their create follows
the intent protocol of ``store``: the intent is committed before the create,
the id right after it. An intent without an id means an earlier attempt died
between the two. The object was created associated with its deal and contact,
and association reads do not come from HubSpot's search index, so the deal's
(then the contact's) associated objects are listed and their key property read
(``_reconcile``); search is a second check. If neither shows it and the intent
is younger than ``search_lag_seconds``, the job is retried later rather than
risk a second object; an older intent means the create never landed, and it is
made again (logged, and reported as ``recreated_after_lag``).

Records someone deleted in HubSpot (an update answered 207 ``OBJECT_NOT_FOUND``,
or an id an upsert no longer returns) are created again while the booking is
live and left deleted for a cancelled or no-show one; either way the deletion
is recorded (``store.mark_deleted``) for the dashboard.

Lifecycle, as the local backend does it where HubSpot allows:

- the meeting is updated in place; ``hs_meeting_outcome`` is the plan's outcome;
- the deal's stage is derived from the outcomes of all the lead's meetings we
  recorded (see ``LeadPlan``), through the mapping's ``defaults.hubspot.deal_stages``
  (a booking moved to another lead leaves the old deal's stage as it was). It is
  set after the other writes, under the deal's lock, from that read to the
  batch's commit (``_stage_and_settle``), so workers applying bookings of one
  deal at once cannot lose each other's outcome, and only when it changes;
- HubSpot tasks have no "cancelled" status: a cancelled task is closed as
  ``COMPLETED`` with its subject prefixed ``[Cancelled]``, and reopened
  (``NOT_STARTED``) if a newer snapshot plans it again. Our table remembers that
  we closed it, so a task a salesperson completed is told apart and never
  touched; the booking's tasks the plan no longer names are archived unless a
  salesperson completed them.

Shared records take descriptive fields from the newest snapshot in the batch
(HubSpot keeps what the last write said); tags are the union of the batch's
and of those we wrote before (recorded in ``hubspot_objects.tags``), as the
local CRM unions them; tags someone added in HubSpot by hand are not read
back. Associations are added, never removed.

What sales staff change in HubSpot is read back by ``adapter.hubspot_sync``; so
that the service's own writes never read back as their changes, each job's
settle also records the tracked values it wrote (``adapter.changes.record_written``:
the meeting's start, length and outcome, each task's status) and ``_set_stages``
those of the deal stages it set, normalised, in the same transaction, and at no
extra HubSpot call.

Every HubSpot write is idempotent and the plan absolute, so a retry of a job
(after any failure, at any point) converges on the same records. Each job is
settled in a short transaction of our database after the HubSpot writes,
together with the ids and links it used.

A deal we hold no id for is created with its contact and company associations
inline (one call instead of an upsert and two association batches). Its lead key
has unique values, so HubSpot refuses a second copy (another worker won, or an
earlier answer was lost), as a 409 with or without the existing id or a 400
"already has that value": whichever, the deal is read by its key, updated by id
and associated.

Calls (measured against the fake): a first booking with a company costs 6
(company and contact upserts, the deal create, the contact → company
association batch, the meeting create, one task batch create); a repeat
booking 5 (6 when it changes the deal's stage, as a cancellation may); a burst
of 1,000 about 0.1 per booking in worker batches of 100 (``WORKER_BATCH_SIZE``).
With an ``owner`` in the mapping, one more per batch (the contacts' current
owners, one batch read by email) and the owners' listing once per process:
8 for the first booking, 6 for a repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from adapter.backends.base import (
    ActivityRef,
    CompanyRef,
    ContactRef,
    LeadRef,
    Pause,
    Settle,
    SyncJob,
    SyncResult,
    TaskRef,
)
from adapter.backends.hubspot import store
from adapter.backends.hubspot.client import (
    HubSpotApi,
    HubSpotConflict,
    HubSpotUnreachable,
)
from adapter.backends.hubspot.locks import DealLocks
from adapter.backends.hubspot.owners import OWNER_PROPERTY, OwnerDirectory
from adapter.backends.local.backend import translate_error as translate_db_error
from adapter.changes import normalise
from adapter.changes import store as changes_store
from adapter.errors import (
    AdapterError,
    CrmValidationError,
    MappingError,
    PausedError,
    RateLimitedError,
    RetryableError,
)
from adapter.mapping.models import HubSpotSettings
from adapter.plan import (
    BookingPlan,
    CompanyPlan,
    LeadPlan,
    MeetingPlan,
    PlannedProperty,
    TaskPlan,
)
from adapter.properties import as_text, needs_current, resolve_all
from adapter.timeutil import as_utc, iso_z, utcnow
from outbox.exceptions import LeaseLost

log = logging.getLogger(__name__)

CONTACTS, COMPANIES, DEALS, MEETINGS, TASKS = "contacts", "companies", "deals", "meetings", "tasks"

COMPANY_KEY = "bookme_company_key"
LEAD_KEY = "bookme_lead_key"
BOOKING_ID = "bookme_booking_id"
TASK_KEY = "bookme_task_key"

# HubSpot-defined association type ids (v4), from -> to.
CONTACT_TO_COMPANY_PRIMARY = 1
DEAL_TO_CONTACT = 3
DEAL_TO_COMPANY_PRIMARY = 5
MEETING_TO_COMPANY = 188
MEETING_TO_CONTACT = 200
MEETING_TO_DEAL = 212
TASK_TO_CONTACT = 204
TASK_TO_DEAL = 216

LIVE_OUTCOMES = frozenset({"SCHEDULED", "RESCHEDULED", "COMPLETED"})
PRIORITIES = {"high": "HIGH", "medium": "MEDIUM", "low": "LOW"}
COMPLETED = "COMPLETED"
CANCELLED_PREFIX = "[Cancelled] "
CANCELLED = "cancelled"
DEFAULT_SEARCH_LAG = 60.0
# The fewest HubSpot calls a booking's sync makes one after another (a repeat booking:
# contact, company, deal, meeting, task; a new one adds its associations).
SYNC_CALLS = 5
"""Seconds an interrupted create waits for HubSpot's search index before creating again."""


def derive_stage(lead: LeadPlan, outcomes: Iterable[str]) -> str:
    """The lead stage from the outcomes of all the lead's meetings (``LeadPlan``'s rule)."""
    every = list(outcomes)
    if any(outcome in LIVE_OUTCOMES for outcome in every):
        return lead.stage
    if "NO_SHOW" in every:
        return lead.no_show_stage or lead.stage
    return lead.cancelled_stage or lead.stage


def _stage_id(config: HubSpotSettings, stage: str) -> str:
    """HubSpot's id of the lead ``stage``, from the mapping's ``defaults.hubspot.deal_stages``."""
    if stage not in config.deal_stages:
        raise MappingError(
            f"lead stage {stage!r} has no HubSpot stage id in the mapping's "
            f"defaults.hubspot.deal_stages (known: {', '.join(sorted(config.deal_stages))})"
        )
    return config.deal_stages[stage]


def _links(**ids: str | None) -> str:
    return ";".join(f"{name}:{value}" for name, value in sorted(ids.items()) if value)


def _newest(plans: Iterable[BookingPlan]) -> BookingPlan:
    return max(plans, key=lambda plan: (as_utc(plan.snapshot_at), plan.booking_id))


def _group(
    plans: Iterable[BookingPlan], key: Callable[[BookingPlan], str | None]
) -> dict[str, list[BookingPlan]]:
    groups: dict[str, list[BookingPlan]] = {}
    for plan in plans:
        value = key(plan)
        if value is not None:
            groups.setdefault(value, []).append(plan)
    return groups


@dataclass
class _Bookkeeping:
    """What a job records in our database with its settle."""

    rows: list[tuple[str, str, str, dict[str, str | None]]] = field(default_factory=list)
    created_stage: str | None = None  # the stage id this job's deal was created with
    deleted: dict[tuple[str, str], str] = field(default_factory=dict)
    """(kind, key) -> the id HubSpot no longer holds: a record someone deleted there."""
    written: dict[tuple[str, str], dict[str, str | None]] = field(default_factory=dict)
    """(kind, key) -> the tracked values this job wrote to a meeting or task, normalised
    (``adapter.changes``): recorded with the settle, so reading them back is no change."""

    def add(self, object_type: str, key: str, hubspot_id: str, **fields: str | None) -> None:
        self.rows.append((object_type, key, hubspot_id, fields))

    def set_id(self, object_type: str, key: str, hubspot_id: str) -> None:
        """Fill in the id of a row added before its object was created."""
        self.rows = [
            (kind, k, hubspot_id if (kind, k) == (object_type, key) else value, fields)
            for kind, k, value, fields in self.rows
        ]


@dataclass
class _Known:
    """Our rows for a set of plans, read in one go."""

    contacts: dict[str, store.Row | None]
    companies: dict[str, store.Row | None]
    deals: dict[str, store.Row | None]
    meetings: dict[str, store.Row | None]
    tasks: dict[str, dict[str, store.Row]]
    outcomes: dict[str, dict[str, str]]


_NOT_APPLIED = (
    CrmValidationError,
    RateLimitedError,
    PausedError,
    HubSpotConflict,
    HubSpotUnreachable,
)
"""Create failures after which HubSpot certainly holds nothing: the intents are void
(a pause refuses before sending, or HubSpot answered 477 and applied nothing)."""


class HubSpotBackend:
    """Writes booking plans to HubSpot through ``HubSpotApi``; ids kept on ``engine``.

    ``apply`` writes a whole batch of jobs with HubSpot's batch endpoints (one
    upsert per object type, one batch create per meetings and tasks, ...); if
    any batch call fails, each job is applied again on its own (every write is
    idempotent), so one bad booking cannot fail the others.
    """

    name = "hubspot"

    def __init__(
        self,
        api: HubSpotApi,
        engine: Engine,
        hubspot: Callable[[], HubSpotSettings],
        *,
        clock: Callable[[], datetime] = utcnow,
        search_lag_seconds: float = DEFAULT_SEARCH_LAG,
        on_reconcile: Callable[[str], None] | None = None,
        mapping_in_use: Callable[[], object] | None = None,
    ) -> None:
        self.api = api
        self._engine = engine
        # Reads need no write lock (SQLite begins IMMEDIATE by default).
        self._reader = engine.execution_options(sqlite_begin="DEFERRED")
        self._hubspot = hubspot
        self._clock = clock
        self._lag = timedelta(seconds=search_lag_seconds)
        self._on_reconcile = on_reconcile
        self._deal_locks = DealLocks(engine)
        self.owners = OwnerDirectory(api)
        # The owner cache is refreshed when the mapping in use is another object.
        self._mapping_in_use = mapping_in_use
        self._owners_for: object | None = None

    # --- CrmBackend -------------------------------------------------------

    def apply(self, jobs: Sequence[SyncJob], settle: Settle) -> Mapping[str, AdapterError]:
        """Write the jobs to HubSpot, then settle each with its ids; failures by event id.

        A batch is written with the batch endpoints; if any batch call fails, each
        job is written again on its own (every write is idempotent). The deals'
        stages are then set, and the jobs settled, under the deals' locks
        (``_stage_and_settle``).
        """
        failures: dict[str, AdapterError] = {}
        if len(jobs) > 1:
            try:
                synced = self._sync([job.plan for job in jobs])
            except Exception as exc:
                log.info("batch of %d failed (%s); applying each job alone", len(jobs), exc)
            else:
                self._stage_and_settle(list(zip(jobs, synced, strict=True)), settle, failures)
                return failures
        for job in jobs:
            try:
                (alone,) = self._sync([job.plan])
            except AdapterError as exc:
                failures[job.event_id] = exc
                continue
            except Exception as exc:
                failures[job.event_id] = translate_db_error(exc, job)
                continue
            self._stage_and_settle([(job, alone)], settle, failures)
        return failures

    def _stage_and_settle(
        self,
        done: Sequence[tuple[SyncJob, tuple[SyncResult, _Bookkeeping]]],
        settle: Settle,
        failures: dict[str, AdapterError],
    ) -> None:
        """Set each deal's stage from all its meetings' outcomes, then settle the jobs.

        A deal's stage is derived from the outcomes of every meeting we recorded
        for it, this batch's included. The batch holds its deals' locks
        (``locks``) from reading those outcomes until its own are committed, so a
        worker applying another booking of the same deal at the same moment
        derives after this one's commit, never from before it. Only this step
        writes the stage of a deal that exists (a new deal is created with one),
        so a stale stage cannot land after a fresh one. ``hubspot_objects.status``
        of a deal is the stage id it holds in HubSpot; a deal whose stage is
        already right costs no call.
        """
        try:
            with self._deal_locks.hold(job.plan.lead.lead_key for job, _ in done):
                self._set_stages([(job.plan, book) for job, (_, book) in done])
                for job, (result, book) in done:
                    try:
                        with self._engine.begin() as conn:
                            now = self._clock()
                            for kind, key, hubspot_id, fields in book.rows:
                                store.save(
                                    conn, kind, key, now, hubspot_id=hubspot_id, fields=fields
                                )
                            for (kind, key), gone in book.deleted.items():
                                store.mark_deleted(conn, kind, key, gone, now)
                            _record_written(conn, job.plan, book, now)
                            settle(conn, job, result)
                    except LeaseLost:
                        continue  # another worker owns the event now; HubSpot writes are idempotent
                    except AdapterError as exc:
                        failures[job.event_id] = exc
                    except Exception as exc:
                        failures[job.event_id] = translate_db_error(exc, job)
        except AdapterError as exc:  # the deal busy, or the stage write failed: retry them all
            failures.update({job.event_id: exc for job, _ in done if job.event_id not in failures})
        except Exception as exc:
            failures.update({job.event_id: translate_db_error(exc, job) for job, _ in done})

    def _set_stages(self, done: Sequence[tuple[BookingPlan, _Bookkeeping]]) -> None:
        """Write each deal's derived stage where HubSpot holds another, and record the
        stage every deal holds now (before any job settles: a job that then loses its
        lease must not leave the record behind HubSpot). Called with the deals locked."""
        config = self._hubspot()
        deals = _group([plan for plan, _ in done], lambda p: p.lead.lead_key)
        created = {
            plan.lead.lead_key: book.created_stage for plan, book in done if book.created_stage
        }
        deal_ids = {
            key: hubspot_id
            for _, book in done
            for kind, key, hubspot_id, _fields in book.rows
            if kind == "deal"
        }
        left = {
            key
            for _, book in done
            for (kind, key), gone_id in book.deleted.items()
            if kind == "deal" and deal_ids.get(key) == gone_id
        }
        with self._reader.connect() as conn:
            rows = {key: store.get(conn, "deal", key) for key in deals}
            recorded = {key: store.statuses_for_lead(conn, "meeting", key) for key in deals}
        holds: dict[str, str] = {}
        changes: list[tuple[str, Mapping[str, str]]] = []
        wrote: dict[str, str] = {}  # lead key -> booking id: deals whose stage we set now
        for key, group in deals.items():
            outcomes = {**recorded[key], **{p.booking_id: p.meeting.outcome for p in group}}
            stage = _stage_id(config, derive_stage(_newest(group).lead, outcomes.values()))
            row = rows[key]
            # This job's create set the stage; else the recorded one was written
            # under this lock, after any create of the deal.
            current = created.get(key) or (row.status if row is not None else None)
            if key in left:
                continue  # deleted in HubSpot for a booking no longer live: stays deleted
            if current != stage:
                changes.append((deal_ids[key], {"pipeline": config.pipeline, "dealstage": stage}))
            if current != stage or key in created:
                wrote[key] = _newest(group).booking_id
            holds[key] = stage
        gone = self.api.batch_update(DEALS, changes) if changes else set()
        if gone:
            raise RetryableError(
                f"deals {sorted(gone)} were deleted in HubSpot while their stage was set; "
                "the next attempt recreates them"
            )
        with self._engine.begin() as conn:
            now = self._clock()
            for key, stage in holds.items():
                store.save(
                    conn, "deal", key, now, hubspot_id=deal_ids[key], fields={"status": stage}
                )
                if key in wrote:
                    changes_store.record_written(
                        conn,
                        "deal",
                        deal_ids[key],
                        booking_id=wrote[key],
                        lead_key=key,
                        values={"stage": normalise("stage", stage, deal_stages=config.deal_stages)},
                        now=now,
                    )

    def ping(self) -> None:
        self.api.ping()

    def paused(self) -> Pause | None:
        """HubSpot's pause of the portal (477, daily limit), if one is in force."""
        return self.api.paused()

    def sync_estimate(self) -> float | None:
        """Seconds a booking's sync can be expected to take at HubSpot's recent answer
        time: ``SYNC_CALLS`` calls one after another (``None`` before any call)."""
        round_trip = self.api.round_trip
        return None if round_trip is None else SYNC_CALLS * round_trip

    def close(self) -> None:
        self.api.close()

    # --- plans ------------------------------------------------------------

    def _sync(self, plans: Sequence[BookingPlan]) -> list[tuple[SyncResult, _Bookkeeping]]:
        """Make HubSpot hold what ``plans`` say; their results, in order. Raises on any failure."""
        config = self._hubspot()
        tags = config.tags_property
        known = self._known(plans)
        owner_ids, contact_owners = self._owner_ids(plans)
        books = [_Bookkeeping() for _ in plans]
        links: dict[tuple[str, str], set[tuple[str, str, int]]] = {}

        def link(from_type: str, to_type: str, from_id: str, to_id: str, type_id: int) -> None:
            links.setdefault((from_type, to_type), set()).add((from_id, to_id, type_id))

        def note(kind: str, key: str, gone: str) -> None:
            for plan, book in zip(plans, books, strict=True):
                if _key_of(kind, plan) == key:
                    book.deleted[(kind, key)] = gone

        companies = _group(plans, lambda p: p.company.name_key if p.company else None)
        company_tags = {
            key: _tags(group, "company", known.companies.get(key))
            for key, group in companies.items()
        }
        company_mapped = self._mapped(
            COMPANIES,
            {
                key: _group_properties([p.company.properties for p in _by_age(group) if p.company])
                for key, group in companies.items()
            },
            known.companies,
        )
        company_ids = self._shared(
            COMPANIES,
            "company",
            COMPANY_KEY,
            {
                key: _over(
                    {"name": _company(group).name, tags: company_tags[key]}, company_mapped[key]
                )
                for key, group in companies.items()
            },
            companies,
            known.companies,
            note,
        )

        contacts = _group(plans, lambda p: p.contact.email_key)
        contact_tags = {
            key: _tags(group, "contact", known.contacts.get(key)) for key, group in contacts.items()
        }
        contact_mapped = self._mapped(
            CONTACTS,
            {
                key: _group_properties([p.contact.properties for p in _by_age(group)])
                for key, group in contacts.items()
            },
            known.contacts,
        )
        contact_ids = self._shared(
            CONTACTS,
            "contact",
            "email",
            {
                key: _over(
                    _contact_properties(group, tags, contact_tags[key])
                    | _contact_owner(plans, owner_ids, key, contact_owners),
                    contact_mapped[key],
                )
                for key, group in contacts.items()
            },
            contacts,
            known.contacts,
            note,
        )

        deals = _group(plans, lambda p: p.lead.lead_key)
        deal_tags = {
            key: _tags(group, "lead", known.deals.get(key)) for key, group in deals.items()
        }
        deal_props: dict[str, Mapping[str, str]] = {}
        stages: dict[str, str] = {}
        deal_mapped = self._mapped(
            DEALS,
            {
                key: _group_properties([p.lead.properties for p in _by_age(group)])
                for key, group in deals.items()
            },
            known.deals,
        )
        for key, group in deals.items():
            lead = _newest(group).lead
            # The stage a deal is created (or recreated) with; ``_set_stages`` corrects it.
            outcomes = {**known.outcomes.get(key, {})}
            outcomes.update({plan.booking_id: plan.meeting.outcome for plan in group})
            stages[key] = _stage_id(config, derive_stage(lead, outcomes.values()))
            deal_props[key] = _over(
                {
                    "dealname": lead.title,
                    "amount": str(lead.estimated_value),
                    tags: deal_tags[key],
                    **_deal_owner(plans, owner_ids, key),
                },
                deal_mapped[key],
            )
        deal_targets: dict[str, set[tuple[str, int]]] = {}
        for key, group in deals.items():
            for plan in group:
                found = deal_targets.setdefault(key, set())
                found.add((contact_ids[plan.contact.email_key], DEAL_TO_CONTACT))
                if plan.company is not None:
                    found.add((company_ids[plan.company.name_key], DEAL_TO_COMPANY_PRIMARY))
        deal_ids, created_deals = self._deals(
            deal_props, stages, deal_targets, deals, known.deals, note
        )
        for plan, book in zip(plans, books, strict=True):
            if plan.lead.lead_key in created_deals:
                book.created_stage = stages[plan.lead.lead_key]

        ids: list[tuple[str, str | None, str]] = []
        for plan, book in zip(plans, books, strict=True):
            contact_id = contact_ids[plan.contact.email_key]
            company_id = company_ids[plan.company.name_key] if plan.company else None
            deal_id = deal_ids[plan.lead.lead_key]
            ids.append((contact_id, company_id, deal_id))
            contact_links = _links(company=company_id)
            row = known.contacts[plan.contact.email_key]
            changed = row is None or row.links != contact_links or row.hubspot_id != contact_id
            if company_id is not None and changed:
                link(CONTACTS, COMPANIES, contact_id, company_id, CONTACT_TO_COMPANY_PRIMARY)
            book.add(
                "contact",
                plan.contact.email_key,
                contact_id,
                links=contact_links,
                tags=contact_tags[plan.contact.email_key],
            )
            if plan.company is not None and company_id is not None:
                key = plan.company.name_key
                book.add("company", key, company_id, tags=company_tags[key])
            deal_links = _links(contact=contact_id, company=company_id)
            row = known.deals[plan.lead.lead_key]
            if plan.lead.lead_key in created_deals:
                pass  # associated on creation
            elif row is None or row.links != deal_links or row.hubspot_id != deal_id:
                link(DEALS, CONTACTS, deal_id, contact_id, DEAL_TO_CONTACT)
                if company_id is not None:
                    link(DEALS, COMPANIES, deal_id, company_id, DEAL_TO_COMPANY_PRIMARY)
            book.add(
                "deal",
                plan.lead.lead_key,
                deal_id,
                links=deal_links,
                tags=deal_tags[plan.lead.lead_key],
            )

        meeting_ids = self._sync_meetings(plans, ids, known, books, link, owner_ids)
        task_refs = self._sync_tasks(plans, ids, known, books, owner_ids)
        for (from_type, to_type), pairs in links.items():
            self.api.associate_batch(from_type, to_type, sorted(pairs))

        results: list[tuple[SyncResult, _Bookkeeping]] = []
        for index, plan in enumerate(plans):
            contact_id, company_id, deal_id = ids[index]
            result = SyncResult(
                lead=LeadRef(id=deal_id, title=plan.lead.title),
                contact=ContactRef(id=contact_id, email=plan.contact.email),
                company=(
                    CompanyRef(id=company_id, name=plan.company.name)
                    if plan.company and company_id
                    else None
                ),
                activity=ActivityRef(id=meeting_ids[index]),
                tasks=task_refs[index],
            )
            results.append((result, books[index]))
        return results

    def _mapped(
        self,
        object_type: str,
        planned: Mapping[str, Mapping[str, PlannedProperty]],
        rows: Mapping[str, store.Row | None],
    ) -> dict[str, dict[str, str | None]]:
        """Key -> the mapped properties under their policies (``_written``).

        A policy other than ``always`` needs the value HubSpot holds now (a
        salesperson may have set it since our last write): one batch read for the
        object type, of the objects we hold ids for, and only of the properties
        such policies name. An object we hold no id for has nothing to keep yet.
        """
        ids = {
            key: row.hubspot_id
            for key, row in rows.items()
            if row is not None and row.hubspot_id and needs_current(planned.get(key, {}))
        }
        names = sorted({name for key in ids for name in needs_current(planned[key])})
        found = self.api.batch_read(object_type, sorted(set(ids.values())), names) if ids else {}
        return {
            key: _written(props, found[ids[key]].properties if ids.get(key) in found else {})
            for key, props in planned.items()
        }

    def _shared(
        self,
        object_type: str,
        kind: str,
        id_property: str,
        props: Mapping[str, Mapping[str, str]],
        groups: Mapping[str, Sequence[BookingPlan]],
        rows: Mapping[str, store.Row | None],
        note: Callable[[str, str, str], None],
    ) -> dict[str, str]:
        """Contacts or companies by key: upserted by their unique property, which also
        recreates one deleted in HubSpot, while a booking of theirs is live; otherwise
        (every booking cancelled or no-show) updated by the id we hold, and one deleted
        in HubSpot stays deleted (``note``)."""
        upserts: list[tuple[str, Mapping[str, str]]] = []
        updates: list[tuple[str, Mapping[str, str]]] = []
        held: dict[str, str] = {}
        for key, values in props.items():
            row = rows.get(key)
            if row is not None and row.hubspot_id and not any(map(_live, groups[key])):
                held[row.hubspot_id] = key
                updates.append((row.hubspot_id, values))
            else:
                upserts.append((key, values))
        ids = {key: hubspot_id for hubspot_id, key in held.items()}
        for gone in self.api.batch_update(object_type, updates) if updates else set():
            note(kind, held[gone], gone)
        if upserts:
            ids.update(self.api.upsert(object_type, id_property, upserts))
        for key, _ in upserts:
            row = rows.get(key)
            if row is not None and row.hubspot_id and row.hubspot_id != ids[key]:
                log.warning(
                    "%s %s: HubSpot no longer holds %s (deleted or merged); now %s",
                    kind,
                    key,
                    row.hubspot_id,
                    ids[key],
                )
                note(kind, key, row.hubspot_id)
        return ids

    def _deals(
        self,
        props: Mapping[str, Mapping[str, str]],
        stages: Mapping[str, str],
        targets: Mapping[str, set[tuple[str, int]]],
        groups: Mapping[str, Sequence[BookingPlan]],
        rows: Mapping[str, store.Row | None],
        note: Callable[[str, str, str], None],
    ) -> tuple[dict[str, str], set[str]]:
        """Deal ids by lead key, and the keys created here (with stage and associations).

        A deal we hold an id for is updated by it, without its stage (only
        ``_set_stages`` changes an existing deal's). One HubSpot no longer holds
        was deleted there: it is created again while a booking of its is live,
        else left deleted (``note``). A deal we hold no id for is created with its
        pipeline, stage and associations inline; its lead key has unique values,
        so if HubSpot already has it (a lost answer, a concurrent worker), the
        conflict, in whichever shape, is resolved by reading the key.
        """
        ids: dict[str, str] = {}
        fresh: list[str] = []
        updates: list[tuple[str, Mapping[str, str]]] = []
        held: dict[str, str] = {}
        for key, values in props.items():
            row = rows.get(key)
            if row is not None and row.hubspot_id:
                held[row.hubspot_id] = key
                ids[key] = row.hubspot_id
                updates.append((row.hubspot_id, values))
            else:
                fresh.append(key)
        for gone in self.api.batch_update(DEALS, updates) if updates else set():
            key = held[gone]
            note("deal", key, gone)
            if any(map(_live, groups[key])):
                log.warning("deal %s: deleted in HubSpot (%s); creating it again", key, gone)
                del ids[key]
                fresh.append(key)
        config = self._hubspot()
        creates = [
            (
                key,
                {
                    **props[key],
                    LEAD_KEY: key,
                    "pipeline": config.pipeline,
                    "dealstage": stages[key],
                },
                sorted(targets[key]),
            )
            for key in fresh
        ]
        created = self._create_unique(DEALS, LEAD_KEY, creates)
        ids.update(created)
        existing = [key for key in fresh if key not in created]
        if existing:  # HubSpot had them: found by key, updated like known deals
            found = self.api.read_by_unique(DEALS, LEAD_KEY, existing)
            lost = [key for key in existing if key not in found]
            if lost:
                raise RetryableError(f"deals {lost}: HubSpot refused them as taken, yet has none")
            ids.update({key: found[key].id for key in existing})
            vanished = self.api.batch_update(
                DEALS, [(found[key].id, props[key]) for key in existing]
            )
            if vanished:
                raise RetryableError(f"deals {sorted(vanished)} vanished while being resolved")
        return ids, set(created)

    def _create_unique(
        self,
        object_type: str,
        key_property: str,
        items: Sequence[tuple[str, Mapping[str, str], Sequence[tuple[str, int]]]],
    ) -> dict[str, str]:
        """Create objects keyed by a unique-value property; key -> id of those created.

        HubSpot refuses a taken value (409 or 400, ``HubSpotConflict``) and a batch
        create as a whole, so after a batch conflict each is created alone; the
        keys it refuses are left out for the caller to read by key.
        """
        if not items:
            return {}
        try:
            if len(items) == 1:
                key, values, links = items[0]
                return {key: self.api.create(object_type, values, links, unique=True)}
            return self.api.batch_create(
                object_type, key_property, [(v, links) for _, v, links in items], unique=True
            )
        except HubSpotConflict:
            if len(items) == 1:
                return {}
        created: dict[str, str] = {}
        for item in items:
            created.update(self._create_unique(object_type, key_property, [item]))
        return created

    def _known(self, plans: Sequence[BookingPlan]) -> _Known:
        with self._reader.connect() as conn:
            return _Known(
                contacts={
                    p.contact.email_key: store.get(conn, "contact", p.contact.email_key)
                    for p in plans
                },
                companies={
                    p.company.name_key: store.get(conn, "company", p.company.name_key)
                    for p in plans
                    if p.company is not None
                },
                deals={p.lead.lead_key: store.get(conn, "deal", p.lead.lead_key) for p in plans},
                meetings={p.booking_id: store.get(conn, "meeting", p.booking_id) for p in plans},
                tasks={
                    p.booking_id: {
                        row.natural_key: row
                        for row in store.with_prefix(conn, "task", f"{p.booking_id}|")
                    }
                    for p in plans
                },
                outcomes={
                    p.lead.lead_key: store.statuses_for_lead(conn, "meeting", p.lead.lead_key)
                    for p in plans
                },
            )

    # --- meetings and tasks: intent, create, reconcile ---------------------

    def _reconcile(
        self,
        object_type: str,
        kind: str,
        key: str,
        key_property: str,
        row: store.Row,
        parents: Sequence[tuple[str, str]],
        children: dict[tuple[str, str], dict[str, str]],
    ) -> str | None:
        """The id of an interrupted create; ``None``: create it again.

        Meetings and tasks are created associated with their deal and contact
        (``parents``), and association reads are not served from the search
        index: the parents' ``object_type`` associations are listed and their
        ``key_property`` read, and the object found is adopted. Search is a
        second check. Only when neither finds it and the intent is older than
        ``search_lag_seconds`` is the object created again (logged, counted);
        before that the job is retried. ``children`` caches each parent's
        listing for the batch.
        """
        for parent_type, parent_id in parents:
            listing = children.get((parent_type, parent_id))
            if listing is None:
                listing = self._children(parent_type, parent_id, object_type, key_property)
                children[(parent_type, parent_id)] = listing
            if key in listing:
                return self._adopt(kind, key, listing[key], "associations")
        found = self.api.search_ids(object_type, key_property, key)
        if found:
            return self._adopt(kind, key, _lowest(found), "search")
        if self._clock() - as_utc(row.updated_at) < self._lag:
            raise RetryableError(
                f"{kind} {key!r}: an earlier create is neither associated nor searchable yet; "
                f"retrying until HubSpot's search lag ({self._lag.total_seconds():.0f}s) has passed"
            )
        log.warning(
            "%s %r: an interrupted create is neither associated nor searchable after %.0fs; "
            "creating it again",
            kind,
            key,
            self._lag.total_seconds(),
        )
        self._report("recreated_after_lag")
        return None

    def _children(
        self, parent_type: str, parent_id: str, object_type: str, key_property: str
    ) -> dict[str, str]:
        """``key_property`` value -> id of the parent's associated ``object_type``s."""
        ids = self.api.associated_ids(parent_type, parent_id, object_type)
        found = self.api.batch_read(object_type, ids, [key_property]) if ids else {}
        by_key: dict[str, list[str]] = {}
        for hit in found.values():
            value = hit.properties.get(key_property)
            if value:
                by_key.setdefault(value, []).append(hit.id)
        return {value: _lowest(hit_ids) for value, hit_ids in by_key.items()}

    def _adopt(self, kind: str, key: str, hubspot_id: str, how: str) -> str:
        self._save([(kind, key, hubspot_id)], store.CREATED)
        log.info("%s %r: an interrupted create found through %s: %s", kind, key, how, hubspot_id)
        self._report(how)
        return hubspot_id

    def _report(self, how: str) -> None:
        if self._on_reconcile is not None:
            self._on_reconcile(how)

    def _create(
        self,
        object_type: str,
        kind: str,
        key_property: str,
        items: Sequence[tuple[str, Mapping[str, str], Sequence[tuple[str, int]]]],
    ) -> dict[str, str]:
        """Create objects under the intent protocol; returns key -> id."""
        if not items:
            return {}
        self._save([(kind, key, None) for key, _, _ in items], store.INTENT)
        try:
            if len(items) == 1:
                key, props, targets = items[0]
                created = {key: self.api.create(object_type, {**props, key_property: key}, targets)}
            else:
                created = self.api.batch_create(
                    object_type,
                    key_property,
                    [({**props, key_property: key}, targets) for key, props, targets in items],
                )
        except _NOT_APPLIED:
            self._forget([(kind, key) for key, _, _ in items])
            raise
        self._save([(kind, key, hubspot_id) for key, hubspot_id in created.items()], store.CREATED)
        missing = [key for key, _, _ in items if key not in created]
        if missing:
            raise RetryableError(f"create {object_type}: no id returned for {missing}")
        return created

    def _save(self, rows: Sequence[tuple[str, str, str | None]], state: str) -> None:
        with self._engine.begin() as conn:
            now = self._clock()
            for kind, key, hubspot_id in rows:
                store.save(conn, kind, key, now, hubspot_id=hubspot_id, state=state)

    def _forget(self, rows: Sequence[tuple[str, str]]) -> None:
        with self._engine.begin() as conn:
            for kind, key in rows:
                store.forget(conn, kind, key)

    def _owner_ids(self, plans: Sequence[BookingPlan]) -> tuple[list[str | None], dict[str, str]]:
        """Each plan's owner id (``None``: no owner), and the owner id each of the
        batch's contacts already has in HubSpot, by email key.

        Contacts' owners come from one batch read by email, before anything is
        written: a contact keeps an owner it has, and with ``keep_existing`` that
        owner is the booking's. Other emails become ids through the directory,
        refreshed when the mapping was reloaded; an unknown one fails the batch
        (``UnknownOwner``), so each job is tried alone and only its own dead-letter.
        """
        owned = [plan for plan in plans if plan.owner is not None]
        if not owned:
            return [None] * len(plans), {}
        in_use = self._mapping_in_use() if self._mapping_in_use is not None else None
        if in_use is not self._owners_for:
            self.owners.clear()
            self._owners_for = in_use
        emails = sorted({plan.contact.email_key for plan in owned})
        found = self.api.read_by_unique(CONTACTS, "email", emails, [OWNER_PROPERTY])
        existing: dict[str, str] = {}
        for key, item in found.items():
            if item.properties.get(OWNER_PROPERTY):
                existing[key] = str(item.properties[OWNER_PROPERTY])
        ids = self.owners.ids(
            plan.owner.email
            for plan in owned
            if plan.owner is not None
            and plan.owner.email
            and not (plan.owner.keep_existing and plan.contact.email_key in existing)
        )
        owners: list[str | None] = []
        for plan in plans:
            owner = plan.owner
            if owner is None:
                owners.append(None)
            elif owner.keep_existing and plan.contact.email_key in existing:
                owners.append(existing[plan.contact.email_key])
            else:
                owners.append(ids[owner.email] if owner.email else None)
        return owners, existing

    def _sync_meetings(
        self,
        plans: Sequence[BookingPlan],
        ids: Sequence[tuple[str, str | None, str]],
        known: _Known,
        books: Sequence[_Bookkeeping],
        link: Callable[[str, str, str, str, int], None],
        owner_ids: Sequence[str | None],
    ) -> list[str]:
        meeting_ids: dict[int, str] = {}
        updates: list[tuple[int, str, Mapping[str, str]]] = []
        creates: list[tuple[int, Mapping[str, str]]] = []
        targets: dict[int, list[tuple[str, int]]] = {}
        children: dict[tuple[str, str], dict[str, str]] = {}
        relink: set[int] = set()
        mapped = self._mapped(
            MEETINGS,
            {plan.booking_id: plan.meeting.properties for plan in plans},
            known.meetings,
        )
        for index, plan in enumerate(plans):
            contact_id, company_id, deal_id = ids[index]
            props = _over(
                _meeting_properties(plan.meeting) | _owned(owner_ids[index]),
                mapped[plan.booking_id],
            )
            targets[index] = [(contact_id, MEETING_TO_CONTACT), (deal_id, MEETING_TO_DEAL)]
            if company_id is not None:
                targets[index].append((company_id, MEETING_TO_COMPANY))
            links = _links(contact=contact_id, deal=deal_id, company=company_id)
            row = known.meetings[plan.booking_id]
            meeting_id = row.hubspot_id if row else None
            if row is not None and meeting_id is None:
                parents = [(DEALS, deal_id), (CONTACTS, contact_id)]
                meeting_id = self._reconcile(
                    MEETINGS, "meeting", plan.booking_id, BOOKING_ID, row, parents, children
                )
            if meeting_id is None:
                creates.append((index, props))
            else:
                meeting_ids[index] = meeting_id
                updates.append((index, meeting_id, props))
                if row is None or row.links != links:
                    relink.add(index)
            books[index].add(
                "meeting",
                plan.booking_id,
                "",
                links=links,
                lead_key=plan.lead.lead_key,
                status=plan.meeting.outcome,
            )
            books[index].written[("meeting", plan.booking_id)] = _meeting_written(props)
        gone = self.api.batch_update(MEETINGS, [(mid, p) for _, mid, p in updates])
        for index, meeting_id, changes in updates:
            if meeting_id not in gone:
                if index in relink:
                    to_types = {MEETING_TO_CONTACT: CONTACTS, MEETING_TO_DEAL: DEALS}
                    for to_id, type_id in targets[index]:
                        to_type = to_types.get(type_id, COMPANIES)
                        link(MEETINGS, to_type, meeting_id, to_id, type_id)
                continue
            plan = plans[index]
            books[index].deleted[("meeting", plan.booking_id)] = meeting_id
            if _live(plan):
                log.warning(
                    "meeting %s: deleted in HubSpot (%s); creating it again",
                    plan.booking_id,
                    meeting_id,
                )
                del meeting_ids[index]
                creates.append((index, changes))
        created = self._create(
            MEETINGS,
            "meeting",
            BOOKING_ID,
            [(plans[index].booking_id, props, targets[index]) for index, props in creates],
        )
        for index, _ in creates:
            meeting_ids[index] = created[plans[index].booking_id]
        for index, book in enumerate(books):
            book.set_id("meeting", plans[index].booking_id, meeting_ids[index])
        return [meeting_ids[index] for index in range(len(plans))]

    def _sync_tasks(
        self,
        plans: Sequence[BookingPlan],
        ids: Sequence[tuple[str, str | None, str]],
        known: _Known,
        books: Sequence[_Bookkeeping],
        owner_ids: Sequence[str | None],
    ) -> list[list[TaskRef]]:
        every = [
            row.hubspot_id
            for rows in known.tasks.values()
            for row in rows.values()
            if row.hubspot_id
        ]
        # The one batch read of tasks also brings the values their policies need.
        policed = {
            name for plan in plans for task in plan.tasks for name in needs_current(task.properties)
        }
        current = (
            self.api.batch_read(TASKS, every, ["hs_task_status", *sorted(policed)]) if every else {}
        )

        def state(row: store.Row) -> str:
            """``deleted`` in HubSpot, ``done`` by a salesperson, or ``ours`` to write."""
            found = current.get(row.hubspot_id or "")
            if found is None:
                return "deleted"
            status = found.properties.get("hs_task_status")
            return "done" if status == COMPLETED and row.status != CANCELLED else "ours"

        task_ids: dict[str, str] = {}
        updates: list[tuple[str, Mapping[str, str]]] = []
        creates: list[tuple[str, Mapping[str, str], Sequence[tuple[str, int]]]] = []
        archives: list[tuple[str, str]] = []
        children: dict[tuple[str, str], dict[str, str]] = {}
        for index, plan in enumerate(plans):
            contact_id, _, deal_id = ids[index]
            targets = [(contact_id, TASK_TO_CONTACT), (deal_id, TASK_TO_DEAL)]
            rows = known.tasks[plan.booking_id]
            prefix = f"{plan.booking_id}|"
            for task in plan.tasks:
                key = prefix + task.key
                row = rows.get(key)
                held = current.get(row.hubspot_id or "") if row is not None else None
                props = _over(
                    _task_properties(task) | _owned(owner_ids[index]),
                    _written(task.properties, held.properties if held is not None else {}),
                )
                task_id = row.hubspot_id if row else None
                if row is not None and task_id is None:
                    parents = [(DEALS, deal_id), (CONTACTS, contact_id)]
                    task_id = self._reconcile(TASKS, "task", key, TASK_KEY, row, parents, children)
                    row = None  # found: updated like any open task
                elif row is not None and task_id is not None and state(row) == "deleted":
                    books[index].deleted[("task", key)] = task_id
                    if _live(plan) and task.status != CANCELLED:
                        log.warning(
                            "task %s: deleted in HubSpot (%s); creating it again", key, task_id
                        )
                        task_id = None
                    else:
                        task_ids[key] = task_id  # left deleted: the booking no longer needs it
                        continue
                if task_id is None:
                    creates.append((key, props, targets))
                    books[index].add(
                        "task", key, "", status=task.status, lead_key=plan.lead.lead_key
                    )
                    books[index].written[("task", key)] = _task_written(props)
                    continue
                task_ids[key] = task_id
                if row is not None and state(row) == "done":
                    continue  # a salesperson completed it: never touched again
                updates.append((task_id, props))
                books[index].add(
                    "task", key, task_id, status=task.status, lead_key=plan.lead.lead_key
                )
                books[index].written[("task", key)] = _task_written(props)
            planned = {prefix + task.key for task in plan.tasks}
            for key, row in rows.items():
                if key in planned or row.hubspot_id is None or state(row) != "ours":
                    continue
                archives.append((key, row.hubspot_id))
        gone = self.api.batch_update(TASKS, updates)
        if gone:  # deleted since the read above: the next attempt recreates them
            raise RetryableError(f"tasks {sorted(gone)} were deleted in HubSpot while updated")
        task_ids.update(self._create(TASKS, "task", TASK_KEY, creates))
        for key, task_id in archives:
            self.api.archive(TASKS, task_id)
            self._forget([("task", key)])
        refs: list[list[TaskRef]] = []
        for index, plan in enumerate(plans):
            prefix = f"{plan.booking_id}|"
            for task in plan.tasks:
                books[index].set_id("task", prefix + task.key, task_ids[prefix + task.key])
            refs.append([_task_ref(task_ids[prefix + task.key], task) for task in plan.tasks])
        return refs


def _meeting_written(props: Mapping[str, str]) -> dict[str, str | None]:
    """The tracked values of a meeting write, as ``adapter.changes`` spells them."""
    start = props.get("hs_meeting_start_time") or None
    end = props.get("hs_meeting_end_time") or None
    minutes = None
    if start and end:
        span = as_utc(datetime.fromisoformat(end.replace("Z", "+00:00"))) - as_utc(
            datetime.fromisoformat(start.replace("Z", "+00:00"))
        )
        minutes = str(round(span.total_seconds() / 60))
    return {
        "start": normalise("start", start),
        "duration": normalise("duration", minutes),
        "outcome": normalise("outcome", props.get("hs_meeting_outcome")),
    }


def _task_written(props: Mapping[str, str]) -> dict[str, str | None]:
    return {"status": normalise("status", props.get("hs_task_status"))}


def _record_written(conn: Connection, plan: BookingPlan, book: _Bookkeeping, now: datetime) -> None:
    """Record the tracked values the job wrote to its meeting and tasks (``adapter.changes``),
    in the settle's transaction: read back, they are echoes, not sales staff's changes."""
    ids = {(kind, key): hubspot_id for kind, key, hubspot_id, _ in book.rows}
    for (kind, key), values in book.written.items():
        hubspot_id = ids.get((kind, key))
        if not hubspot_id or book.deleted.get((kind, key)) == hubspot_id:
            continue
        changes_store.record_written(
            conn,
            kind,
            hubspot_id,
            booking_id=plan.booking_id,
            lead_key=plan.lead.lead_key,
            task_key=key.split("|", 1)[1] if kind == "task" else None,
            values=values,
            now=now,
        )


def _lowest(ids: Iterable[str]) -> str:
    """The oldest of several HubSpot ids (ids grow): the one to keep."""
    return min(ids, key=lambda value: (len(value), value))


def _live(plan: BookingPlan) -> bool:
    """The booking still happens (its newest snapshot is not cancelled or a no-show)."""
    return plan.meeting.outcome in LIVE_OUTCOMES


def _key_of(kind: str, plan: BookingPlan) -> str | None:
    """The natural key ``plan`` has for a record ``kind`` (shared records)."""
    if kind == "contact":
        return plan.contact.email_key
    if kind == "company":
        return plan.company.name_key if plan.company else None
    if kind == "deal":
        return plan.lead.lead_key
    return plan.booking_id


def _company(group: Sequence[BookingPlan]) -> CompanyPlan:
    company = _newest(group).company
    assert company is not None
    return company


def _tags(group: Sequence[BookingPlan], record: str, row: store.Row | None) -> str:
    """The union of the group's tags for ``record`` and those we wrote to it before
    (``row``), sorted and ``;``-joined as HubSpot takes them: a later booking adds its
    tags, as in the local CRM."""
    found: set[str] = row.tag_set() if row is not None else set()
    for plan in group:
        if record == "company" and plan.company is not None:
            found.update(plan.company.tags)
        elif record == "contact":
            found.update(plan.contact.tags)
        elif record == "lead":
            found.update(plan.lead.tags)
    return ";".join(sorted(found))


def _contact_properties(group: Sequence[BookingPlan], tags: str, tag_value: str) -> dict[str, str]:
    contact = _newest(group).contact
    props = {
        "email": contact.email_key,
        "firstname": contact.first_name,
        "lastname": contact.last_name,
        tags: tag_value,
    }
    with_phone = [plan for plan in group if plan.contact.phone]
    if with_phone:
        props["phone"] = _newest(with_phone).contact.phone or ""
    return props


def _owned(owner_id: str | None) -> dict[str, str]:
    return {OWNER_PROPERTY: owner_id} if owner_id else {}


def _contact_owner(
    plans: Sequence[BookingPlan],
    owner_ids: Sequence[str | None],
    email_key: str,
    existing: Mapping[str, str],
) -> dict[str, str]:
    """A contact without an owner gets its newest booking's; one with an owner keeps it."""
    if email_key in existing:
        return {}
    mine = [i for i, plan in enumerate(plans) if plan.contact.email_key == email_key]
    newest = max(mine, key=lambda i: (as_utc(plans[i].snapshot_at), plans[i].booking_id))
    return _owned(owner_ids[newest])


def _deal_owner(
    plans: Sequence[BookingPlan], owner_ids: Sequence[str | None], lead_key: str
) -> dict[str, str]:
    """A deal belongs to the owner of its newest booking in the batch."""
    mine = [i for i, plan in enumerate(plans) if plan.lead.lead_key == lead_key]
    newest = max(mine, key=lambda i: (as_utc(plans[i].snapshot_at), plans[i].booking_id))
    return _owned(owner_ids[newest])


def _meeting_properties(meeting: MeetingPlan) -> dict[str, str]:
    start, end = iso_z(meeting.start) or "", iso_z(meeting.end) or ""
    return {
        "hs_timestamp": start,
        "hs_meeting_start_time": start,
        "hs_meeting_end_time": end,
        "hs_meeting_title": meeting.subject,
        "hs_meeting_body": meeting.description,
        "hs_meeting_location": meeting.meeting_url or "",
        "hs_meeting_outcome": meeting.outcome,
    }


def _task_properties(task: TaskPlan) -> dict[str, str]:
    cancelled = task.status == CANCELLED
    return {
        "hs_timestamp": iso_z(task.due) or "",
        "hs_task_subject": (CANCELLED_PREFIX if cancelled else "") + task.title,
        "hs_task_body": task.description,
        "hs_task_priority": PRIORITIES[task.priority],
        "hs_task_status": COMPLETED if cancelled else "NOT_STARTED",
        "hs_task_type": "TODO",
    }


def _by_age(group: Sequence[BookingPlan]) -> list[BookingPlan]:
    return sorted(group, key=lambda plan: (as_utc(plan.snapshot_at), plan.booking_id))


def _group_properties(
    oldest_first: Sequence[Mapping[str, PlannedProperty]],
) -> dict[str, PlannedProperty]:
    """One shared record's properties from several bookings in a batch: the newest
    snapshot's value, except ``append``, whose items are the union of all of them (as
    applying the bookings one by one would leave)."""
    merged: dict[str, PlannedProperty] = {}
    for props in oldest_first:
        for name, prop in props.items():
            before = merged.get(name)
            if prop.policy == "append" and before is not None and before.policy == "append":
                items = [*as_text(before.value).split(";"), *as_text(prop.value).split(";")]
                prop = prop.model_copy(update={"value": ";".join(dict.fromkeys(items))})
            merged[name] = prop
    return merged


def _written(
    planned: Mapping[str, PlannedProperty], current: Mapping[str, str | None]
) -> dict[str, str | None]:
    """Each mapped property as HubSpot takes it (text), or ``None`` where its policy
    leaves the value HubSpot holds."""
    writes = resolve_all(planned, {name: current.get(name) for name in planned})
    return {name: as_text(writes[name]) if name in writes else None for name in planned}


def _over(core: Mapping[str, str], mapped: Mapping[str, str | None]) -> dict[str, str]:
    """``core`` with the mapped properties laid over it. A property the mapping names is
    the mapping's: where its policy leaves HubSpot's value, our default is not written
    either (a task type a salesperson changed stays changed)."""
    props = {name: value for name, value in core.items() if name not in mapped}
    props.update({name: value for name, value in mapped.items() if value is not None})
    return props


def _task_ref(task_id: str, task: TaskPlan) -> TaskRef:
    return TaskRef(id=task_id, title=task.title, dueDate=iso_z(task.due) or "")
