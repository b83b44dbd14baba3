"""HubSpot's view of an automatic task: its status read back, and the sent mail logged
as an email engagement (``POST /crm/v3/objects/emails``) on the contact and the deal.

Cost per send: one batch read of the task's status before SMTP, then one create
(with both associations on creation) and one task update after. The record is
best effort: the mail is already sent and marked so, and an engagement that
cannot be written is logged rather than turning a delivered mail into a retry.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection

from adapter.backends.hubspot import store as hubspot_store
from adapter.backends.hubspot.client import HubSpotApi
from adapter.errors import AdapterError

log = logging.getLogger(__name__)

EMAIL_TO_CONTACT = 198  # hubspot.crm.association_type.AssociationType, HUBSPOT_DEFINED
EMAIL_TO_DEAL = 210
_STATUS = {"COMPLETED": "done"}


class HubSpotMailRecord:
    """The task and the booking's contact and deal, by the ids the backend recorded."""

    remote = True

    def __init__(self, api: HubSpotApi) -> None:
        self.api = api

    def _task_id(self, conn: Connection, booking_id: str, task_key: str) -> str | None:
        row = hubspot_store.get(conn, "task", f"{booking_id}|{task_key}")
        return row.hubspot_id if row is not None and row.hubspot_id else None

    def task_status(self, conn: Connection, booking_id: str, task_key: str) -> str | None:
        """``done`` when a salesperson completed the task in HubSpot; ``cancelled`` when it
        was deleted there; else ``None`` (the plan's status stands)."""
        task_id = self._task_id(conn, booking_id, task_key)
        if task_id is None:
            return None
        found = self.api.batch_read("tasks", [task_id], ["hs_task_status"])
        if task_id not in found:
            return "cancelled"
        return _STATUS.get(found[task_id].properties.get("hs_task_status") or "")

    def record(
        self,
        conn: Connection,
        booking_id: str,
        task_key: str,
        *,
        subject: str,
        text: str,
        at: datetime,
    ) -> None:
        meeting = hubspot_store.get(conn, "meeting", booking_id)
        links = dict(
            part.split(":", 1)
            for part in ((meeting.links if meeting else None) or "").split(";")
            if ":" in part
        )
        associations = [
            (object_id, type_id)
            for object_id, type_id in (
                (links.get("contact"), EMAIL_TO_CONTACT),
                (links.get("deal"), EMAIL_TO_DEAL),
            )
            if object_id
        ]
        properties = {
            "hs_timestamp": at.isoformat().replace("+00:00", "Z"),
            "hs_email_direction": "EMAIL",
            "hs_email_status": "SENT",
            "hs_email_subject": subject,
            "hs_email_text": text,
        }
        try:
            self.api.create("emails", properties, associations)
            task_id = self._task_id(conn, booking_id, task_key)
            if task_id is not None:
                self.api.update("tasks", task_id, {"hs_task_status": "COMPLETED"})
        except AdapterError as exc:
            log.warning(
                "mail sent but not recorded in HubSpot: %s",
                exc,
                extra={"booking_id": booking_id, "task_key": task_key},
            )
