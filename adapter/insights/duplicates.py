"""The duplicate check: does each identity rule of the contract hold in the CRM?

Local CRM: SQL over its tables on every report (contacts by email and companies by
name trimmed and lower-cased, so a variant the unique key let through is found).
HubSpot: every contact, company, deal, meeting and task is read back through the API,
under the same rate budget as the sync, at most once an hour, in a background thread;
the result and its time are stored in ``insights_duplicate_checks`` and every report
shows the last one.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, func, select

from adapter.db import upsert_insert
from adapter.insights import definitions as text
from adapter.insights.report import (
    DUPLICATE_RULES,
    TARGET_DUPLICATES,
    DuplicateGroup,
    Duplicates,
    Target,
)
from adapter.insights.tables import duplicate_checks
from adapter.mapping.planner import company_key

if TYPE_CHECKING:
    from adapter.backends.hubspot.client import HubSpotApi
    from adapter.services import Services

log = logging.getLogger(__name__)

CHECK_INTERVAL = timedelta(hours=1)
GROUP_LIMIT = 200
_running = threading.Lock()  # one HubSpot read-back per process at a time


def email_key(email: str | None) -> str:
    return (email or "").strip().lower()


def _groups(rule: str, pairs: Iterable[tuple[str | None, str]]) -> list[DuplicateGroup]:
    """Groups of ids sharing one (non-empty) identity."""
    by_key: dict[str, list[str]] = defaultdict(list)
    for key, record_id in pairs:
        if key:
            by_key[key].append(record_id)
    return [
        DuplicateGroup(rule=rule, key=key, record_ids=tuple(sorted(ids)))
        for key, ids in sorted(by_key.items())
        if len(ids) > 1
    ]


def _sql_groups(conn: Connection, rule: str, table: Any, *keys: Any) -> list[DuplicateGroup]:
    """Groups of rows sharing the key expressions, found by SQL."""
    labelled = [key.label(f"k{n}") for n, key in enumerate(keys)]
    dup = select(*labelled).group_by(*keys).having(func.count() > 1).subquery()
    rows = conn.execute(
        select(*keys, table.c.id).where(*(key == dup.c[f"k{n}"] for n, key in enumerate(keys)))
    ).all()
    return _groups(rule, (("|".join(str(v) for v in row[:-1]), row[-1]) for row in rows))


def local_groups(conn: Connection) -> list[DuplicateGroup]:
    """Every identity rule, checked by SQL in the local CRM's tables (an email or a name
    trimmed and lower-cased, so a variant the unique key let through is found)."""
    from adapter.backends.local.models import activities, companies, contacts, leads, tasks

    found = _sql_groups(conn, "contacts", contacts, func.lower(func.trim(contacts.c.email)))
    found += _sql_groups(conn, "companies", companies, func.lower(func.trim(companies.c.name)))
    found += _sql_groups(conn, "leads", leads, leads.c.lead_key)
    found += _sql_groups(conn, "meetings", activities, activities.c.booking_id)
    found += _sql_groups(conn, "tasks", tasks, tasks.c.booking_id, tasks.c.key)
    return found


def hubspot_groups(api: HubSpotApi) -> list[DuplicateGroup]:
    """Every identity rule, checked by reading HubSpot's objects back (paged, budgeted)."""
    from adapter.backends.hubspot.backend import BOOKING_ID, LEAD_KEY, TASK_KEY

    def listed(object_type: str, prop: str) -> list[tuple[str | None, str]]:
        return [(o.properties.get(prop), o.id) for o in api.list_objects(object_type, [prop])]

    found = _groups("contacts", ((email_key(k), i) for k, i in listed("contacts", "email")))
    found += _groups("companies", ((company_key(k), i) for k, i in listed("companies", "name")))
    found += _groups("leads", listed("deals", LEAD_KEY))
    found += _groups("meetings", listed("meetings", BOOKING_ID))
    found += _groups("tasks", listed("tasks", TASK_KEY))
    return found


def _report(
    groups: list[DuplicateGroup] | None,
    *,
    checked_at: datetime | None,
    backend: str,
    error: str | None = None,
) -> Duplicates:
    groups = groups or []
    per_rule = dict.fromkeys(DUPLICATE_RULES, 0)
    for group in groups:
        per_rule[group.rule] += len(group.record_ids) - 1
    count = sum(per_rule.values())
    return Duplicates(
        definition=text.DUPLICATES,
        target=Target("= 0", TARGET_DUPLICATES, None if checked_at is None else count == 0),
        count=count,
        per_rule=per_rule,
        groups=tuple(groups[:GROUP_LIMIT]),
        checked_at=checked_at,
        backend=backend,
        error=error,
    )


def _encode(groups: list[DuplicateGroup]) -> str:
    return json.dumps([[g.rule, g.key, list(g.record_ids)] for g in groups])


def _decode(value: str | None) -> list[DuplicateGroup]:
    if not value:
        return []
    return [DuplicateGroup(rule=r, key=k, record_ids=tuple(ids)) for r, k, ids in json.loads(value)]


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def stored(engine: Engine, backend: str) -> Duplicates:
    """The last stored check (``checked_at`` ``None``: never checked)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(duplicate_checks).where(duplicate_checks.c.backend == backend)
        ).first()
    if row is None:
        return _report(None, checked_at=None, backend=backend)
    return _report(
        _decode(row.result), checked_at=_utc(row.checked_at), backend=backend, error=row.error
    )


def _save(
    engine: Engine,
    backend: str,
    *,
    attempted_at: datetime,
    groups: list[DuplicateGroup] | None = None,
    error: str | None = None,
) -> None:
    values: dict[str, Any] = {"backend": backend, "attempted_at": attempted_at, "error": error}
    if groups is not None:
        values |= {"checked_at": attempted_at, "result": _encode(groups)}
    with engine.begin() as conn:
        stmt = upsert_insert(conn, duplicate_checks).values(values)
        update = {k: v for k, v in values.items() if k != "backend"}
        conn.execute(
            stmt.on_conflict_do_update(index_elements=[duplicate_checks.c.backend], set_=update)
        )


def _claim(engine: Engine, backend: str, now: datetime) -> bool:
    """Whether this caller may run the check now (none attempted within the hour);
    claims it by writing ``attempted_at`` first, so processes do not run it together."""
    with engine.begin() as conn:
        row = conn.execute(
            select(duplicate_checks.c.attempted_at).where(duplicate_checks.c.backend == backend)
        ).first()
        last = _utc(row.attempted_at) if row is not None else None
        if last is not None and now - last < CHECK_INTERVAL:
            return False
        stmt = upsert_insert(conn, duplicate_checks).values(backend=backend, attempted_at=now)
        if last is None:
            result = conn.execute(stmt.on_conflict_do_nothing(index_elements=["backend"]))
        else:
            result = conn.execute(
                duplicate_checks.update()
                .where(
                    duplicate_checks.c.backend == backend,
                    duplicate_checks.c.attempted_at == row.attempted_at,  # type: ignore[union-attr]
                )
                .values(attempted_at=now)
            )
        return bool(result.rowcount)


def check_hubspot(engine: Engine, api: HubSpotApi, *, now: datetime | None = None) -> bool:
    """Run the HubSpot read-back if it is due; ``False`` when one ran within the hour."""
    now = now or datetime.now(UTC)
    if not _claim(engine, "hubspot", now):
        return False
    try:
        groups = hubspot_groups(api)
    except Exception as exc:  # recorded and shown; the next one is due in an hour
        log.warning("insights: the HubSpot duplicate check failed: %s", exc)
        _save(engine, "hubspot", attempted_at=now, error=f"{type(exc).__name__}: {exc}"[:1000])
        return True
    _save(engine, "hubspot", attempted_at=now, groups=groups)
    return True


def _check_in_background(engine: Engine, api: HubSpotApi) -> None:
    if not _running.acquire(blocking=False):
        return

    def run() -> None:
        try:
            check_hubspot(engine, api)
        finally:
            _running.release()

    threading.Thread(target=run, name="insights-duplicates", daemon=True).start()


def duplicates_report(
    services: Services, *, now: datetime | None = None, wait: bool = False
) -> Duplicates:
    """The duplicate figure: live for the local CRM; for HubSpot the last stored check,
    after starting a new one when due (``wait``: run it here, as the CLI does)."""
    now = now or datetime.now(UTC)
    if services.settings.crm_backend != "hubspot":
        with services.engine.connect() as conn:
            groups = local_groups(conn)
        return _report(groups, checked_at=now, backend="local")
    api = getattr(services.backend, "api", None)
    if api is not None:
        if wait:
            check_hubspot(services.engine, api, now=now)
        else:
            _check_in_background(services.engine, api)
    return stored(services.engine, "hubspot")
