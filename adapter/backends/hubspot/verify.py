"""``bookme-crm hubspot verify``: what the backend assumes of HubSpot, checked on a real portal.

Run once by a user, with their token, against a sandbox or developer test
portal: no machine of ours reaches HubSpot, so this is where the assumptions
the fake encodes meet the real thing. Under one ``bookme-verify-<random>`` key
it creates a company, contact, deal, meeting and task (HubSpot's batch create,
associated inline, as the backend writes a backlog), reads them back, provokes
a unique-value conflict, a batch update naming a missing id and a search right
after a create, upserts the company again, then archives all it made.

Each step is one ``Check`` row: the assumption, what the portal answered, and
whether the backend handles that answer. ``VerifyReport.exit_code`` is 0 when
every row is handled, 1 when one is not, 2 when the portal is not ready (token
refused, ``hubspot setup`` not run): then nothing is created.
"""

from __future__ import annotations

import secrets
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from adapter.backends.hubspot.backend import (
    BOOKING_ID,
    COMPANIES,
    COMPANY_KEY,
    CONTACT_TO_COMPANY_PRIMARY,
    CONTACTS,
    DEAL_TO_COMPANY_PRIMARY,
    DEAL_TO_CONTACT,
    DEALS,
    LEAD_KEY,
    MEETING_TO_COMPANY,
    MEETING_TO_CONTACT,
    MEETING_TO_DEAL,
    MEETINGS,
    TASK_KEY,
    TASK_TO_CONTACT,
    TASK_TO_DEAL,
    TASKS,
)
from adapter.backends.hubspot.client import HubSpotApi, HubSpotAuthError, HubSpotConflict
from adapter.changes import normalise
from adapter.errors import AdapterError
from adapter.hubspot_sync.reading import AUTOMATED
from adapter.mapping.models import HubSpotSettings
from adapter.timeutil import iso_z, utcnow

ROW_ACCESS = "token and scopes work"
ROW_PROPERTIES = "setup's properties exist, keys unique-valued"
ROW_CREATES = "creates with inline associations read back"
ROW_ASSOCIATIONS = "a new meeting is listed on its deal at once"
ROW_SEARCH = "search finds a new meeting (informational)"
ROW_CONFLICT = "a duplicate bookme_lead_key is a conflict"
ROW_MISSING_ID = "batch update returns a missing id, does the rest"
ROW_UPSERT = "upsert by bookme_company_key keeps the id"
ROW_HISTORY = "a meeting's history names our write's source"
ROW_ARCHIVE = "what verify made is archived"
ASSUMPTIONS = (
    ROW_ACCESS,
    ROW_PROPERTIES,
    ROW_CREATES,
    ROW_ASSOCIATIONS,
    ROW_SEARCH,
    ROW_CONFLICT,
    ROW_MISSING_ID,
    ROW_UPSERT,
    ROW_HISTORY,
)
"""The rows in order (``ROW_ARCHIVE`` ends every run that made something)."""

KEY_PREFIX = "bookme-verify-"
SEARCH_POLL = 1.0
"""Seconds between searches while waiting for the index (HubSpot allows 4 per second)."""
JOIN_LINK = "https://meet.example.com/bookme-verify"
_ANSWER_WIDTH = 56


class _NotReady(Exception):
    """The portal or token is not ready for the backend: nothing more is tried (exit 2)."""


@dataclass(frozen=True)
class Check:
    """One row: an assumption of the backend, the portal's answer, and whether it is handled."""

    assumption: str
    answer: str
    handled: bool


@dataclass
class VerifyReport:
    """Every row so far; ``not_ready`` when the portal is not set up (exit 2)."""

    key: str
    checks: list[Check] = field(default_factory=list)
    not_ready: str | None = None

    @property
    def exit_code(self) -> int:
        if self.not_ready is not None:
            return 2
        return 0 if all(check.handled for check in self.checks) else 1

    def table(self) -> str:
        """The rows as an aligned plain-text table (long answers wrapped)."""
        header = ("#", "assumption", "what the portal answered", "handled")
        rows = [
            (str(n), c.assumption, c.answer, "yes" if c.handled else "NO")
            for n, c in enumerate(self.checks, 1)
        ]
        number = max(len(r[0]) for r in [header, *rows])
        assumption = max(len(r[1]) for r in [header, *rows])
        answer = max(_ANSWER_WIDTH, len(header[2]))
        indent = " " * (number + assumption + 4)
        lines = []
        for row in [header, *rows]:
            wrapped = textwrap.wrap(row[2], _ANSWER_WIDTH) or [""]
            lines.append(
                f"{row[0]:<{number}}  {row[1]:<{assumption}}  {wrapped[0]:<{answer}}  {row[3]}"
            )
            lines.extend(f"{indent}{more}" for more in wrapped[1:])
        rule = "-" * (len(indent) + answer + 2 + len(header[3]))
        return "\n".join([lines[0], rule, *lines[1:]])


def new_key() -> str:
    """``bookme-verify-<8 hex>``: every object verify makes carries it."""
    return KEY_PREFIX + secrets.token_hex(4)


class Verifier:
    """Runs the checks in order on ``api``; see the module docstring."""

    def __init__(
        self,
        api: HubSpotApi,
        hubspot: HubSpotSettings,
        *,
        key: str | None = None,
        search_wait: float = 30.0,
        keep: bool = False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.hubspot = hubspot
        self.report = VerifyReport(key or new_key())
        self.search_wait = search_wait
        self.keep = keep
        self._clock = clock
        self._sleep = sleep
        self.made: list[tuple[str, str]] = []
        """Every object made, in order: what ``archive`` removes."""
        self.ids: dict[str, str] = {}
        self.written: dict[str, dict[str, str]] = {}
        """The first object of each type: its id and the properties it was created with."""

    @property
    def key(self) -> str:
        return self.report.key

    def _row(self, assumption: str, answer: str, handled: bool) -> None:
        self.report.checks.append(Check(assumption, answer, handled))

    def run(self) -> VerifyReport:
        """Every check, then the archive of what was made (unless ``keep``)."""
        try:
            self.check_access()
            self.check_properties()
            if self.check_creates():
                self.check_association_read()
                self.check_search()
                self.check_unique_conflict()
                self.check_batch_update_of_a_missing_id()
                self.check_upsert_by_key()
                self.check_history()
        except _NotReady as exc:
            self.report.not_ready = str(exc)
        finally:
            if self.made:
                self.archive()
        return self.report

    # --- 1, 2: the portal is ready -------------------------------------------------

    def check_access(self) -> None:
        assumption = ROW_ACCESS
        try:
            account = self.api.account_info()
            self.api.ping()
        except AdapterError as exc:
            self._row(assumption, str(exc), False)
            hint = "check HUBSPOT_ACCESS_TOKEN and the private app's scopes"
            if not isinstance(exc, HubSpotAuthError):
                hint = f"HubSpot did not answer the cheap reads ({type(exc).__name__})"
            raise _NotReady(hint) from exc
        self._row(
            assumption,
            f"portal {account.portal_id} ({account.account_type}) on {account.ui_domain}, "
            f"data in {account.data_hosting_location}",
            True,
        )

    def check_properties(self) -> None:
        assumption = ROW_PROPERTIES
        wanted = {
            COMPANIES: (COMPANY_KEY, True),
            DEALS: (LEAD_KEY, True),
            MEETINGS: (BOOKING_ID, False),
            TASKS: (TASK_KEY, False),
        }
        found, missing = [], []
        try:
            for object_type, (name, unique) in wanted.items():
                names = self.api.property_names(object_type)
                if name not in names:
                    missing.append(f"{object_type}.{name} missing")
                elif unique and not names[name]:
                    missing.append(f"{object_type}.{name} not unique-valued")
                else:
                    found.append(f"{object_type}.{name}{' unique' if unique else ''}")
        except AdapterError as exc:
            self._row(assumption, str(exc), False)
            raise _NotReady("cannot read the portal's properties") from exc
        if missing:
            self._row(assumption, "; ".join(missing), False)
            raise _NotReady("run `bookme-crm hubspot setup` first")
        self._row(assumption, "; ".join(found), True)

    # --- 3: the creates the backend makes --------------------------------------------

    def _create(
        self,
        object_type: str,
        key_property: str,
        props: dict[str, str],
        links: Sequence[tuple[str, int]] = (),
        *,
        unique: bool = True,
    ) -> str:
        """One object through the batch create the backend uses; recorded for the read-back
        and the archive."""
        ids = self.api.batch_create(object_type, key_property, [(props, links)], unique=unique)
        object_id = ids.get(props[key_property])
        if object_id is None:
            raise AdapterError(f"batch create {object_type}: HubSpot answered no id")
        self.made.append((object_type, object_id))
        self.ids[object_type] = object_id
        self.written[object_type] = props
        return object_id

    def _company_properties(self) -> dict[str, str]:
        return {"name": f"BookMe verify {self.key}", COMPANY_KEY: self.key}

    def _contact_properties(self) -> dict[str, str]:
        return {"email": f"{self.key}@example.com", "firstname": "BookMe", "lastname": "Verify"}

    def _deal_properties(self) -> dict[str, str]:
        stage = next(iter(self.hubspot.deal_stages.values()), "appointmentscheduled")
        return {
            "dealname": f"BookMe verify {self.key}",
            "pipeline": self.hubspot.pipeline,
            "dealstage": stage,
            LEAD_KEY: self.key,
        }

    def _meeting_properties(self) -> dict[str, str]:
        start = _iso_in(days=7)
        return {
            "hs_timestamp": start,
            "hs_meeting_start_time": start,
            "hs_meeting_end_time": _iso_in(days=7, minutes=30),
            "hs_meeting_title": f"BookMe verify {self.key}",
            "hs_meeting_body": "Made by bookme-crm hubspot verify; archived when it ends.",
            "hs_meeting_location": JOIN_LINK,
            "hs_meeting_external_url": JOIN_LINK,
            "hs_meeting_outcome": "SCHEDULED",
            BOOKING_ID: self.key,
        }

    def _task_properties(self, task_key: str) -> dict[str, str]:
        return {
            "hs_timestamp": _iso_in(days=1),
            "hs_task_subject": f"BookMe verify {self.key}",
            "hs_task_body": "Made by bookme-crm hubspot verify; archived when it ends.",
            "hs_task_priority": "LOW",
            "hs_task_status": "NOT_STARTED",
            "hs_task_type": "TODO",
            TASK_KEY: task_key,
        }

    def check_creates(self) -> bool:
        """Company, contact, deal, meeting and task, associated inline, then read back."""
        assumption = ROW_CREATES
        try:
            company = self._create(COMPANIES, COMPANY_KEY, self._company_properties())
            contact = self._create(
                CONTACTS,
                "email",
                self._contact_properties(),
                [(company, CONTACT_TO_COMPANY_PRIMARY)],
            )
            deal = self._create(
                DEALS,
                LEAD_KEY,
                self._deal_properties(),
                [(contact, DEAL_TO_CONTACT), (company, DEAL_TO_COMPANY_PRIMARY)],
            )
            self._create(
                MEETINGS,
                BOOKING_ID,
                self._meeting_properties(),
                [
                    (contact, MEETING_TO_CONTACT),
                    (deal, MEETING_TO_DEAL),
                    (company, MEETING_TO_COMPANY),
                ],
                unique=False,
            )
            self._create(
                TASKS,
                TASK_KEY,
                self._task_properties(f"{self.key}|follow-up"),
                [(contact, TASK_TO_CONTACT), (deal, TASK_TO_DEAL)],
                unique=False,
            )
            differences = self._read_back()
        except AdapterError as exc:
            made = ", ".join(f"{_one(t)} {i}" for t, i in self.made) or "nothing"
            self._row(assumption, f"{exc} (made: {made})", False)
            for skipped in ASSUMPTIONS[ASSUMPTIONS.index(ROW_CREATES) + 1 :]:
                self._row(skipped, "not tried: the creates failed", False)
            return False
        made = ", ".join(f"{_one(t)} {i}" for t, i in self.made)
        if differences:
            self._row(assumption, f"{made}; read back differently: {'; '.join(differences)}", False)
        else:
            self._row(assumption, f"{made}; read back as written", True)
        return True

    def _read_back(self) -> list[str]:
        """Properties that did not read back as written (times are normalised by HubSpot)."""
        differences = []
        for object_type, props in self.written.items():
            plain = {k: v for k, v in props.items() if not _is_time(k)}
            object_id = self.ids[object_type]
            found = self.api.batch_read(object_type, [object_id], sorted(plain)).get(object_id)
            if found is None:
                differences.append(f"{_one(object_type)} {object_id} not found")
                continue
            for name, value in plain.items():
                have = found.properties.get(name)
                same = (have or "").lower() == value.lower() if name == "email" else have == value
                if not same:
                    differences.append(f"{_one(object_type)}.{name}={have!r}")
        return differences

    # --- 4-8: what the backend's recovery paths rely on -------------------------------

    def check_association_read(self) -> None:
        assumption = ROW_ASSOCIATIONS
        deal, meeting = self.ids[DEALS], self.ids[MEETINGS]
        try:
            listed = self.api.associated_ids(DEALS, deal, MEETINGS)
        except AdapterError as exc:
            self._row(assumption, str(exc), False)
            return
        if meeting in listed:
            self._row(assumption, f"deal {deal} -> meeting {meeting} listed at once", True)
        else:
            self._row(
                assumption,
                f"deal {deal} lists {listed or 'no meetings'}, not meeting {meeting}: the "
                "reconcile of an interrupted create cannot rely on it",
                False,
            )

    def check_search(self) -> None:
        """Informational: the backend never relies on search right after a create."""
        assumption = ROW_SEARCH
        meeting = self.ids[MEETINGS]
        started = self._clock()
        while True:
            try:
                hits = self.api.search_ids(MEETINGS, BOOKING_ID, self.key)
            except AdapterError as exc:  # the reconcile after an interrupted create searches
                self._row(assumption, f"search failed: {exc}", False)
                return
            waited = self._clock() - started
            if meeting in hits:
                when = "at once" if waited < SEARCH_POLL else f"after {waited:.0f} s"
                self._row(assumption, f"found {when}; the backend does not rely on it", True)
                return
            if waited + SEARCH_POLL > self.search_wait:
                self._row(
                    assumption,
                    f"not found within {self.search_wait:g} s (--search-wait); the backend "
                    "does not rely on it, but keep HUBSPOT_SEARCH_LAG_SECONDS above the lag",
                    True,
                )
                return
            self._sleep(SEARCH_POLL)

    def check_unique_conflict(self) -> None:
        assumption = ROW_CONFLICT
        deal = self.ids[DEALS]
        try:
            duplicate = self.api.create(DEALS, self._deal_properties(), unique=True)
        except HubSpotConflict as conflict:
            shape = _conflict_shape(conflict)
            try:
                found = self.api.read_by_unique(DEALS, LEAD_KEY, [self.key])
            except AdapterError as exc:
                self._row(assumption, f"{shape}; reading the key failed: {exc}", False)
                return
            hit = found.get(self.key)
            if hit is not None and hit.id == deal:
                self._row(assumption, f"{shape}; read by key -> deal {deal}", True)
            else:
                where = f"deal {hit.id}" if hit else "nothing"
                self._row(assumption, f"{shape}; read by key -> {where}, not {deal}", False)
            return
        except AdapterError as exc:
            status = getattr(exc.__cause__, "status", None)
            self._row(
                assumption,
                f"{status or type(exc).__name__}, not read as a conflict: {exc}",
                False,
            )
            return
        self.made.append((DEALS, duplicate))
        self._row(
            assumption,
            f"created a second deal {duplicate}: {LEAD_KEY} is not unique-valued",
            False,
        )

    def check_batch_update_of_a_missing_id(self) -> None:
        assumption = ROW_MISSING_ID
        task = self.ids[TASKS]
        try:
            # A task of our own, archived: its id is certainly missing and no one else's.
            gone = self.api.create(TASKS, self._task_properties(f"{self.key}|gone"))
            self.made.append((TASKS, gone))
            self.api.archive(TASKS, gone)
            body = f"Updated by bookme-crm hubspot verify ({self.key})."
            before = self.api.calls["update tasks"]
            missing = self.api.batch_update(
                TASKS, [(gone, {"hs_task_body": body}), (task, {"hs_task_body": body})]
            )
            alone = self.api.calls["update tasks"] - before
            read = self.api.batch_read(TASKS, [task], ["hs_task_body"]).get(task)
        except AdapterError as exc:
            self._row(assumption, str(exc), False)
            return
        how = "whole batch refused, then one by one" if alone else "207 with errors"
        updated = read is not None and read.properties.get("hs_task_body") == body
        reported = ", ".join(sorted(missing)) or "none"
        expected = "" if missing == {gone} else f" (expected {gone})"
        answer = f"{how}: missing {reported}{expected}; task {task} "
        self._row(
            assumption,
            answer + ("updated" if updated else "NOT updated"),
            missing == {gone} and updated,
        )

    def check_upsert_by_key(self) -> None:
        assumption = ROW_UPSERT
        company = self.ids[COMPANIES]
        try:
            ids = self.api.upsert(
                COMPANIES, COMPANY_KEY, [(self.key, {"name": f"BookMe verify {self.key}"})]
            )
        except AdapterError as exc:
            self._row(assumption, str(exc), False)
            return
        got = ids.get(self.key)
        if got == company:
            self._row(assumption, f"company {company}, the same", True)
        else:
            self._row(assumption, f"company {got}, not {company}: a duplicate", False)

    # --- 9: leave nothing behind ----------------------------------------------------

    def check_history(self) -> None:
        """The poll (``adapter.hubspot_sync``) reads meetings with ``propertiesWithHistory``
        and tells the service's own writes by the source of the entries carrying them."""
        assumption = ROW_HISTORY
        meeting = self.ids[MEETINGS]
        start = "hs_meeting_start_time"
        try:
            found = self.api.read_with_history(MEETINGS, [meeting], [start], [start])
        except AdapterError as exc:
            self._row(assumption, f"batch read with propertiesWithHistory failed: {exc}", False)
            return
        history = found[meeting].history.get(start, []) if meeting in found else []
        wrote = normalise("start", self.written[MEETINGS][start])
        ours = [r for r in history if normalise("start", r.value) == wrote]
        if not ours:
            self._row(
                assumption,
                f"{len(history)} entr(ies), none with the value written: the poll cannot tell "
                "its own writes by their source (it still compares values)",
                False,
            )
            return
        entry = ours[0]
        # The poll learns a source as its own only with an id (``adapter.hubspot_sync.reading``).
        handled = entry.source_type in AUTOMATED and bool(entry.source_id)
        self._row(
            assumption,
            f"{entry.source_type}:{entry.source_id or ''} at {iso_z(entry.timestamp)}",
            handled,
        )

    def archive(self) -> None:
        assumption = ROW_ARCHIVE
        made = ", ".join(f"{_one(t)} {i}" for t, i in self.made)
        if self.keep:
            self._row(assumption, f"kept (--keep): {made}", True)
            return
        failed = []
        for object_type, object_id in reversed(self.made):
            try:
                self.api.archive(object_type, object_id)
            except AdapterError as exc:
                failed.append(f"{_one(object_type)} {object_id} ({exc})")
        if failed:
            self._row(assumption, f"could not archive, delete by hand: {'; '.join(failed)}", False)
        else:
            self._row(assumption, f"archived {len(self.made)}: {made}", True)


def _conflict_shape(conflict: HubSpotConflict) -> str:
    """Which of HubSpot's conflict answers came: the backend reads each one as a conflict."""
    status = getattr(conflict.__cause__, "status", None)
    if status == 409 and conflict.existing_id:
        return f"409 naming the existing id ({conflict.existing_id})"
    if status == 409:
        return "409 without the existing id"
    return f"{status} 'already has that value' (a validation error read as a conflict)"


def _one(object_type: str) -> str:
    return {COMPANIES: "company", CONTACTS: "contact", DEALS: "deal"}.get(
        object_type, object_type.rstrip("s")
    )


def _is_time(name: str) -> bool:
    return name == "hs_timestamp" or name.endswith("_time")


def _iso_in(*, days: int = 0, minutes: int = 0) -> str:
    moment = (utcnow() + timedelta(days=days, minutes=minutes)).replace(microsecond=0)
    return iso_z(moment) or ""
