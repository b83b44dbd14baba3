"""Each metric's definition, as the page, the API and the README state it."""

from __future__ import annotations

WEBHOOK = (
    "Accepted deliveries / all authenticated deliveries, per UTC day of receipt. A delivery is "
    "a booking event the webhook (or an import) stored, plus each authenticated delivery the "
    "webhook refused before storing anything (400 invalid payload, 409 reused webhook-id, "
    "415 not JSON). Accepted: the event was written to the CRM (synced) or made moot by a "
    "newer snapshot of the same booking (superseded). Refused, by reason: invalid (refused "
    "at the webhook), quarantined (stored, but the mapping cannot place its event type), "
    "dead (failed for good). A repeat of a stored delivery counts once; events still queued "
    "or retrying are shown as pending and left out of the rate until they settle. "
    "Target: above 99 %."
)

SYNC = (
    "Receipt → CRM write committed: from the moment the event was stored (received_at) to "
    "the moment its CRM write was settled in the outbox (synced_at), in seconds, for every "
    "synced booking event received in the period, per UTC day of receipt. Retries and waits "
    "count. Computed from the stored timestamps, so it survives restarts and covers every "
    "worker process. p50/p95/p99 are nearest-rank percentiles. Target: a mean below 2 s."
)

DUPLICATES = (
    "A live check of each identity rule in the CRM: contacts per email (trimmed, lower-case), "
    "companies per name (trimmed, lower-case; HubSpot's also with inner whitespace "
    "collapsed), leads per lead key, meetings per "
    "booking id, tasks per (booking id, task key). The figure is the number of extra records: "
    "in each group sharing one identity, every record but one. Local CRM: checked by SQL on "
    "every report. HubSpot: the objects are read back through the API within the rate "
    "budget, at most once an hour; the figure is that of the last check, shown with its "
    "time. Target: 0."
)

FOLLOW_UPS = (
    "Bookings whose mapped follow-up tasks all exist in the CRM / bookings that expect at "
    "least one, per event type, over bookings first received in the period and not waiting "
    "in the queue. Expected: the event type's tasks, plus on_cancel tasks for a cancelled "
    "booking and on_no_show tasks for a no-show; tasks marked skip_if_past are not expected "
    "(the mapping may rightly skip them). A task exists whatever its status (done, open or "
    "cancelled); on HubSpot, once created there and not found deleted since. Target: 100 %."
)

RESPONSE = (
    "Booking received (first receipt) → first sales action recorded in the CRM for it: a "
    "task completed, a meeting marked completed, or a deal stage changed (by a salesperson, "
    "not by the service). Median over answered bookings, and the share answered within 24 h "
    "over bookings received in the period that were answered or are older than 24 h "
    "(younger unanswered ones cannot be judged yet). Per owner: the booking's owner when it "
    "was written to the CRM (the local CRM's meeting owner, or the round robin's choice). "
    "Target: a median below 24 h."
)

FUNNEL = (
    "Cohorts by the month of a booking's first receipt and its event type, so a late "
    "conversion counts for its booking's month. Bookings → meetings held: the meeting's "
    "start has passed and its outcome is neither cancelled nor no-show (the newest of "
    "BookMe's status and the outcome set in the CRM) → consultations: a held meeting marked "
    "COMPLETED in the CRM, or whose lead moved to a stage beyond those a booking sets itself "
    "(the mapping's lead stages, its cancel and no-show stages, LOST) → won: a held meeting "
    "whose lead reached stage WON (in HubSpot, the deal stage defaults.hubspot.deal_stages "
    "maps WON to). Conversion is each step / the step before; time to conversion is the "
    "median from booking to WON, in days. A change made in the CRM counts for the booking "
    "the change names."
)

CANCELLATIONS = (
    "Bookings first received in the period, by event type and by the UTC weekday of the "
    "meeting's start: how many were cancelled and how many were no-shows (the newest of "
    "BookMe's status and the outcome set in the CRM)."
)
