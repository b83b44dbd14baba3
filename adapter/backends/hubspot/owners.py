"""Owner emails as HubSpot owner ids, for ``hubspot_owner_id``.

HubSpot assigns records to owners by id; the mapping names them by email.
``OwnerDirectory`` lists the portal's active owners once (``GET
/crm/v3/owners``, paged) and keeps them for the process: the backend clears
it when the mapping is reloaded, and an email it does not know makes it list
again, at most once per ``refresh_seconds``, so an owner added in HubSpot is
found without a restart and a wrong email does not cost a call per booking.
An email still unknown is a ``CrmValidationError`` naming it: the event
dead-letters and is replayable once the mapping or the portal is fixed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from adapter.backends.hubspot.client import HubSpotApi
from adapter.errors import CrmValidationError

OWNER_PROPERTY = "hubspot_owner_id"


class UnknownOwner(CrmValidationError):
    """An owner email of the mapping is not an active owner of the portal."""


class OwnerDirectory:
    """Active owners' ids by lower-cased email, cached per process."""

    def __init__(
        self,
        api: HubSpotApi,
        *,
        refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api = api
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._ids: dict[str, str] | None = None
        self._listed_at = 0.0

    def clear(self) -> None:
        """Forget the owners: the next lookup lists them again (a mapping reload)."""
        with self._lock:
            self._ids = None

    def ids(self, emails: Iterable[str]) -> dict[str, str]:
        """Each email's owner id; ``UnknownOwner`` names the first that has none."""
        wanted = sorted({email.strip().lower() for email in emails})
        if not wanted:
            return {}
        with self._lock:
            if self._ids is None or (
                any(email not in self._ids for email in wanted)
                and self._clock() - self._listed_at >= self._refresh
            ):
                self._ids = {owner.email: owner.id for owner in self._api.owners()}
                self._listed_at = self._clock()
            known = self._ids
        missing = [email for email in wanted if email not in known]
        if missing:
            raise UnknownOwner(
                f"owner {missing[0]} is not an active owner of this HubSpot portal "
                "(fix the mapping's owner or add the user in HubSpot, then replay)"
            )
        return {email: known[email] for email in wanted}
