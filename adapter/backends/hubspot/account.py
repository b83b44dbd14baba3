"""``hubspot_account``: what the portal told us about itself, so the dashboard links into it.

``hubspot setup`` stores the account info (``HubSpotApi.account_info``); ``serve``
and ``worker`` refresh it once at start-up, in the background, a failure only
logged. The dashboard builds its HubSpot links from the stored UI domain
(``app-eu1.hubspot.com`` for an EU portal), ``app.hubspot.com`` until one is
known. Migration ``0010_hubspot_account`` mirrors the table.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, select

from adapter.backends.hubspot.client import DEFAULT_UI_DOMAIN, AccountInfo, HubSpotApi
from adapter.backends.local.models import UtcDateTime
from adapter.db import upsert_insert
from adapter.timeutil import utcnow

log = logging.getLogger(__name__)

account_metadata = MetaData()
hubspot_account = Table(
    "hubspot_account",
    account_metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(500), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

_HOST = re.compile(r"^[a-z0-9-]+(?:\.[a-z0-9-]+)+$")
"""A bare host name: the UI domain goes into links, so nothing else is stored."""


@dataclass(frozen=True)
class StoredAccount:
    """The portal as last stored; the defaults until ``hubspot setup`` or a start-up read it."""

    portal_id: str | None = None
    ui_domain: str = DEFAULT_UI_DOMAIN
    data_hosting_location: str | None = None


def load(conn: Connection) -> StoredAccount:
    """The stored account info, or the defaults."""
    values = dict(conn.execute(select(hubspot_account.c.name, hubspot_account.c.value)).all())
    return StoredAccount(
        portal_id=values.get("portal_id"),
        ui_domain=values.get("ui_domain") or DEFAULT_UI_DOMAIN,
        data_hosting_location=values.get("data_hosting_location"),
    )


def save(engine: Engine, info: AccountInfo) -> None:
    """Store ``info``; a UI domain that is not a bare host name is refused (``ValueError``)."""
    domain = info.ui_domain.strip().lower()
    if not _HOST.match(domain):
        raise ValueError(f"HubSpot's uiDomain {info.ui_domain!r} is not a host name")
    now = utcnow()
    values = {
        "portal_id": info.portal_id,
        "ui_domain": domain,
        "data_hosting_location": info.data_hosting_location,
    }
    with engine.begin() as conn:
        for name, value in values.items():
            stmt = upsert_insert(conn, hubspot_account).values(
                name=name, value=value, updated_at=now
            )
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[hubspot_account.c.name],
                    set_={"value": value, "updated_at": now},
                )
            )


def refresh(api: HubSpotApi, engine: Engine) -> StoredAccount | None:
    """Read the account info and store it; on any failure log why and return ``None``."""
    try:
        info = api.account_info()
        api.use_time_zone(info.time_zone)
        save(engine, info)
    except Exception as exc:  # the links keep the stored (or default) domain
        log.warning("could not refresh the HubSpot account info: %s", exc)
        return None
    log.info(
        "HubSpot portal %s at %s (data in %s)",
        info.portal_id,
        info.ui_domain,
        info.data_hosting_location,
        extra={"portal_id": info.portal_id, "ui_domain": info.ui_domain},
    )
    with engine.connect() as conn:
        return load(conn)


def refresh_in_background(api: HubSpotApi, engine: Engine) -> threading.Thread:
    """``refresh`` once in a daemon thread, so a slow HubSpot never delays a start."""
    thread = threading.Thread(
        target=refresh, args=(api, engine), name="hubspot-account", daemon=True
    )
    thread.start()
    return thread
