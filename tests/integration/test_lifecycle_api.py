"""Contract §5 through the webhook, checked through the read API (§6)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import SAMPLES, WEBHOOK_SECRET, LiveServer

URL = "/api/bookings/incoming"
SECRET = {"X-Webhook-Secret": WEBHOOK_SECRET}
CREATED, RESCHEDULED, CANCELLED = json.loads((SAMPLES / "lifecycle-sequence.json").read_text())


class Crm:
    """The service over real HTTP: deliver webhooks, read the local CRM."""

    def __init__(self, live: LiveServer, admin: dict[str, str]) -> None:
        self.http = httpx.Client(base_url=live.url, timeout=30)
        self.admin = admin

    def deliver(self, body: dict[str, Any], **changes: Any) -> httpx.Response:
        return self.http.post(URL, json={**body, **changes}, headers=SECRET)

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params, headers=self.admin)
        response.raise_for_status()
        return response.json()

    def meeting(self) -> dict[str, Any]:
        (meeting,) = self.get("/api/activities", type="MEETING")
        return dict(meeting)

    def tasks(self) -> dict[str, dict[str, Any]]:
        return {t["key"]: t for t in self.get("/api/tasks", bookingId="bk_77c1")}

    def lead(self) -> dict[str, Any]:
        (lead,) = self.get("/api/leads")
        return dict(lead)


@pytest.fixture
def crm(live: LiveServer, admin: dict[str, str]) -> Iterator[Crm]:
    client = Crm(live, admin)
    yield client
    client.http.close()


def test_created_rescheduled_cancelled_in_order(crm: Crm, admin: dict[str, str]) -> None:
    """The sample lifecycle: one meeting updated in place, tasks moved, then cancelled."""
    created = crm.deliver(CREATED)
    assert created.status_code == 200, created.text
    first = crm.meeting()
    assert (first["outcome"], first["activityDate"]) == ("SCHEDULED", "2027-01-20T08:00:00.000Z")
    assert {k: (t["status"], t["dueDate"]) for k, t in crm.tasks().items()} == {
        "prep-info": ("todo", "2027-01-13T08:00:00.000Z"),
        "follow-up": ("todo", "2027-01-21T08:00:00.000Z"),
    }
    assert crm.lead()["stage"] == "CONTACTED"

    moved = crm.deliver(RESCHEDULED)
    assert moved.status_code == 200, moved.text
    meeting = crm.meeting()
    assert meeting["id"] == first["id"]
    assert (meeting["outcome"], meeting["activityDate"]) == (
        "RESCHEDULED",
        "2027-02-03T08:00:00.000Z",
    )
    assert {k: (t["status"], t["dueDate"]) for k, t in crm.tasks().items()} == {
        "prep-info": ("todo", "2027-01-27T08:00:00.000Z"),
        "follow-up": ("todo", "2027-02-04T08:00:00.000Z"),
    }

    cancelled = crm.deliver(CANCELLED)
    assert cancelled.status_code == 200, cancelled.text
    meeting = crm.meeting()
    assert meeting["outcome"] == "CANCELED"
    assert "Avbokad: Budget frozen" in meeting["description"]
    assert {t["status"] for t in crm.tasks().values()} == {"cancelled"}
    assert crm.get("/api/tasks", status="todo") == []
    assert crm.lead()["stage"] == "LOST"


def test_done_task_stays_done_across_reschedule_and_cancel(crm: Crm, admin: dict[str, str]) -> None:
    """A task the salesperson completed is neither moved nor cancelled."""
    crm.deliver(CREATED)
    prep = crm.tasks()["prep-info"]
    patched = crm.http.patch(f"/api/tasks/{prep['id']}", json={"status": "done"}, headers=admin)
    assert patched.json()["status"] == "done"
    crm.deliver(RESCHEDULED)
    crm.deliver(CANCELLED)
    tasks = crm.tasks()
    assert (tasks["prep-info"]["status"], tasks["prep-info"]["dueDate"]) == (
        "done",
        "2027-01-13T08:00:00.000Z",
    )
    assert tasks["follow-up"]["status"] == "cancelled"


def test_late_older_snapshot_is_superseded_and_changes_nothing(
    crm: Crm, admin: dict[str, str]
) -> None:
    """A creation arriving after its cancellation ends superseded; the cancellation stands."""
    assert crm.deliver(CANCELLED).status_code == 200
    before = crm.meeting()
    late = crm.deliver(CREATED)
    assert late.status_code == 202
    assert late.json()["status"] == "superseded"
    status = crm.get(late.headers["location"])
    assert status["status"] == "superseded"
    assert crm.meeting() == before
    assert crm.lead()["stage"] == "LOST"


def test_no_show_cancels_follow_ups_and_adds_reach_out(crm: Crm, admin: dict[str, str]) -> None:
    """A no-show marks the meeting, cancels the mapped tasks, adds the reach-out task."""
    crm.deliver(CREATED)
    answer = crm.deliver(CREATED, event="booking.no_show", updatedAt="2027-01-20T12:00:00Z")
    assert answer.status_code == 200, answer.text
    assert crm.meeting()["outcome"] == "NO_SHOW"
    tasks = crm.tasks()
    assert tasks["no-show-reach-out"]["status"] == "todo"
    assert tasks["no-show-reach-out"]["title"] == "Reach out after no-show"
    assert tasks["no-show-reach-out"]["dueDate"] == "2027-01-20T12:00:00.000Z"  # end + 1 h
    assert tasks["follow-up"]["status"] == "cancelled"
    assert crm.lead()["stage"] == "CONTACTED"


def test_cancelling_one_of_two_bookings_keeps_the_lead_live(
    crm: Crm, admin: dict[str, str]
) -> None:
    """A lead with another live booking is not marked lost."""
    crm.deliver(CREATED)
    crm.deliver(CREATED, bookingId="bk_other", scheduledDate="2027-03-01T08:00:00Z")
    crm.deliver(CANCELLED)
    assert crm.lead()["stage"] == "CONTACTED"
    crm.deliver(CANCELLED, bookingId="bk_other", scheduledDate="2027-03-01T08:00:00Z")
    assert crm.lead()["stage"] == "LOST"


def test_reschedule_across_dst_keeps_local_time(crm: Crm, admin: dict[str, str]) -> None:
    """Moved across the spring DST change, tasks keep the booking's local wall-clock time."""
    crm.deliver(CREATED, scheduledDate="2027-03-20T10:00:00+01:00")
    crm.deliver(RESCHEDULED, scheduledDate="2027-04-03T10:00:00+02:00")
    tasks = crm.tasks()
    # 10:00 in Stockholm: CET (+01) on 27 March, CEST (+02) on 4 April.
    assert tasks["prep-info"]["dueDate"] == "2027-03-27T09:00:00.000Z"
    assert tasks["follow-up"]["dueDate"] == "2027-04-04T08:00:00.000Z"
    assert crm.meeting()["activityDate"] == "2027-04-03T08:00:00.000Z"


def test_reschedule_past_the_prep_threshold_removes_the_open_prep_task(crm: Crm) -> None:
    """Moved to three days from now, the 7-days-before task has no moment left: it goes."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    crm.deliver(CREATED)
    assert set(crm.tasks()) == {"prep-info", "follow-up"}
    soon = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    crm.deliver(RESCHEDULED, scheduledDate=soon.isoformat())
    tasks = crm.tasks()
    assert set(tasks) == {"follow-up"}
    local = soon.astimezone(ZoneInfo("Europe/Stockholm"))  # days are calendar days there
    expected = (local + timedelta(days=1)).astimezone(UTC).isoformat(timespec="milliseconds")
    assert tasks["follow-up"]["dueDate"] == expected.replace("+00:00", "Z")


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_far_future_updated_at_cannot_freeze_the_booking_or_its_contact(crm: Crm) -> None:
    """A 9999 updatedAt is ordered by its receipt: a later cancellation and contact edit land."""
    frozen = crm.deliver(CREATED, updatedAt="9999-12-31T23:59:59Z")
    assert frozen.status_code == 200, frozen.text
    cancel = crm.deliver(
        CANCELLED, updatedAt=_iso(datetime.now(UTC)), name="Erik Holm-Lind", phone="+46 70 1"
    )
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["status"] == "synced"
    assert crm.meeting()["outcome"] == "CANCELED"
    (contact,) = crm.get("/api/contacts", email="erik@holmdesign.se")
    assert (contact["lastName"], contact["phone"]) == ("Holm-Lind", "+46 70 1")


def test_a_few_seconds_of_sender_clock_skew_keeps_the_senders_order(crm: Crm) -> None:
    """Stamps a few seconds ahead are trusted as sent: an older one is superseded."""
    start = datetime.now(UTC)
    ahead = crm.deliver(CREATED, updatedAt=_iso(start + timedelta(seconds=3)))
    assert ahead.status_code == 200, ahead.text
    # Sent later but stamped earlier than the first (both within the 5-minute tolerance).
    older = crm.deliver(RESCHEDULED, updatedAt=_iso(start + timedelta(seconds=1)))
    assert older.json()["status"] == "superseded", older.text
    newer = crm.deliver(CANCELLED, updatedAt=_iso(start + timedelta(seconds=4)))
    assert newer.json()["status"] == "synced", newer.text
    assert crm.meeting()["outcome"] == "CANCELED"
