"""The service's one settings object, read from the environment and a ``.env`` file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_PLACEHOLDERS = {
    "changeme",
    "change-me",
    "change_me",
    "secret",
    "password",
    "placeholder",
    "todo",
    "xxx",
    "your-secret",
    "your-secret-here",
    "your-webhook-secret",
    "webhook-secret",
}
MIN_SECRET_LENGTH = 16
HUBSPOT_BATCH = 100
LOCAL_BATCH = 10
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*s\s*$")


def _is_placeholder(value: str) -> bool:
    lowered = value.strip().lower()
    return lowered in _PLACEHOLDERS or lowered.startswith(("your-", "your_", "<", "${"))


class Settings(BaseSettings):
    """Contract §2, plus the knobs the contract leaves to us (documented in the README)."""

    # hide_input_in_errors: a refused value may hold a password (SMTP_URL's userinfo).
    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    crm_webhook_secret: SecretStr | None = None
    crm_webhook_signing_secrets: str | None = None
    database_url: str = "sqlite:///./var/bookme_crm.db"
    crm_backend: Literal["local", "hubspot"] = "local"
    hubspot_access_token: SecretStr | None = None
    hubspot_base_url: str = "https://api.hubapi.com"
    hubspot_rate_limit: str = "100/10s"
    # HubSpot allows 5 searches per second per account, shared with its other apps.
    hubspot_search_rate_limit: str = "4/1s"
    mappings_path: Path = Path("mappings/default.yaml")
    admin_token: SecretStr | None = None
    sync_wait_ms: int = Field(default=2000, ge=0, le=60_000)

    # Not in the contract: where generated secrets live, and the worker's knobs.
    data_dir: Path = Path("var")
    worker_concurrency: int = Field(default=1, ge=1, le=64)
    worker_batch_size: int | None = Field(default=None, ge=1, le=100)  # see ``batch_size``
    worker_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    # The share of serve's CPU each embedded worker takes while webhooks keep arriving
    # (``Worker._yield``): higher syncs faster during a long burst, lower accepts more.
    worker_burst_share: float = Field(default=0.05, gt=0, le=1)
    # PostgreSQL: workers also woken by NOTIFY (``outbox.wakeup``); off leaves the poll alone.
    worker_listen: bool = True
    outbox_lease_seconds: float = Field(default=60.0, gt=0)
    # A worker process's heartbeat, and how long one may be silent before its claims are
    # taken over (several beats: one slow write must not make a live process look dead).
    worker_heartbeat_seconds: float = Field(default=2.0, gt=0, le=60)
    worker_stale_seconds: float = Field(default=8.0, gt=0, le=3600)
    outbox_max_attempts: int = Field(default=20, ge=1)
    outbox_retry_base_seconds: float = Field(default=5.0, gt=0)
    outbox_retry_cap_seconds: float = Field(default=3 * 3600.0, gt=0)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    # The HTTP server (``serve``): idle time between requests, and how long a client
    # may take to send a request's head and then its body (``adapter.api.server``).
    http_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    # Wrong credentials allowed per client address before 429s (``adapter.api.throttle``).
    auth_failure_limits: str = "5/minute;30/hour;100/day"
    # How long a HubSpot create that may have landed is trusted to HubSpot's search
    # index before it is made again (HubSpot documents "a few seconds"; 60 s is safe).
    hubspot_search_lag_seconds: float = Field(default=60.0, ge=0, le=3600)
    # Changes made in HubSpot (``adapter.hubspot_sync``): the poll's period (0: no poll),
    # and the app's client secret that signs its webhook deliveries to
    # /api/hubspot/webhooks, at the target URL configured in the app (the signature
    # covers it; unset: the URL this service sees, fine without a rewriting proxy).
    hubspot_poll_seconds: float = Field(default=60.0, ge=0, le=86_400)
    hubspot_client_secret: SecretStr | None = None
    hubspot_webhook_url: str | None = None
    worker_shutdown_seconds: float = Field(default=20.0, ge=0)
    log_format: Literal["json", "console"] | None = None  # None: console on a terminal
    # The dashboard (/ui): dates are shown in UI_TIMEZONE; HubSpot record links need the portal.
    ui_timezone: str = "UTC"
    hubspot_portal_id: str | None = Field(default=None, pattern=r"^\d{1,20}$")

    # Automatic emails (``adapter.notify``): unset, automatic tasks stay ordinary tasks.
    smtp_url: SecretStr | None = None
    smtp_from: str | None = None
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    # Import and backfill from BookMe's API (``bookme-crm import``).
    bookme_api_url: str | None = None
    bookme_api_token: SecretStr | None = None
    # Pushing changes made in the CRM back to BookMe (``adapter.changes.push``): how long
    # one reschedule or cancel may take before it is retried (same Idempotency-Key).
    bookme_push_timeout_seconds: float = Field(default=10.0, gt=0, le=120)

    @field_validator(
        "crm_webhook_secret",
        "admin_token",
        "hubspot_access_token",
        "hubspot_client_secret",
        "hubspot_webhook_url",
        mode="before",
    )
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("smtp_url", "smtp_from", mode="before")
    @classmethod
    def _smtp_blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        from adapter.notify.smtp import SmtpTarget

        if value is not None:
            SmtpTarget.parse(value.get_secret_value())  # the message names no credential
        return value

    @model_validator(mode="after")
    def _smtp_needs_from(self) -> Settings:
        if self.smtp_url is not None and not self.smtp_from:
            raise ValueError("SMTP_FROM is required when SMTP_URL is set")
        return self

    @field_validator("bookme_api_url", "bookme_api_token", mode="before")
    @classmethod
    def _bookme_blank_is_none(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("bookme_api_url")
    @classmethod
    def _bookme_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().lower().startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL, e.g. 'https://api.bookme.example'")
        return None if value is None else value.strip().rstrip("/")

    @field_validator("crm_webhook_secret", "admin_token")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if _is_placeholder(raw):
            raise ValueError("is a placeholder; set a real secret")
        if len(raw) < MIN_SECRET_LENGTH:
            raise ValueError(f"must be at least {MIN_SECRET_LENGTH} characters")
        return value

    @field_validator("crm_webhook_signing_secrets")
    @classmethod
    def _signing_secrets(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        for secret in _split(value):
            if _is_placeholder(secret) or not secret.startswith("whsec_") or len(secret) < 16:
                raise ValueError("each secret must be a real 'whsec_…' value")
        return value

    @field_validator("hubspot_webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().lower().startswith(("http://", "https://")):
            raise ValueError(
                "must be the full URL HubSpot calls, e.g. 'https://crm.example/api/hubspot/webhooks'"
            )
        return None if value is None else value.strip()

    @field_validator("ui_timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("must be an IANA timezone name such as 'Europe/Stockholm'") from exc
        return value

    @field_validator("hubspot_portal_id", mode="before")
    @classmethod
    def _blank_portal(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("hubspot_rate_limit", "hubspot_search_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        match = _RATE.match(value)
        if not match or int(match.group(1)) < 1 or float(match.group(2)) <= 0:
            raise ValueError("must look like '100/10s'")
        return value

    @field_validator("auth_failure_limits")
    @classmethod
    def _failure_limits(cls, value: str) -> str:
        from adapter.api.throttle import parse_limits

        try:
            parse_limits(value)
        except ValueError as exc:
            raise ValueError("must look like '5/minute;30/hour;100/day'") from exc
        return value

    @model_validator(mode="after")
    def _stale_after_beats(self) -> Settings:
        if self.worker_stale_seconds < 2 * self.worker_heartbeat_seconds:
            raise ValueError(
                "WORKER_STALE_SECONDS must be at least twice WORKER_HEARTBEAT_SECONDS, "
                "or a live worker whose beat is a little late loses its claims"
            )
        return self

    @model_validator(mode="after")
    def _hubspot_needs_token(self) -> Settings:
        if self.crm_backend == "hubspot" and self.hubspot_access_token is None:
            raise ValueError("HUBSPOT_ACCESS_TOKEN is required when CRM_BACKEND=hubspot")
        return self

    @property
    def signing_secrets(self) -> list[str]:
        """The Standard Webhooks secrets, in the order given."""
        return _split(self.crm_webhook_signing_secrets or "")

    @property
    def rate_limit(self) -> tuple[int, float]:
        """``HUBSPOT_RATE_LIMIT`` as (requests, seconds)."""
        match = _RATE.match(self.hubspot_rate_limit)
        assert match is not None
        return int(match.group(1)), float(match.group(2))

    @property
    def search_rate_limit(self) -> tuple[int, float]:
        """``HUBSPOT_SEARCH_RATE_LIMIT`` as (searches, seconds)."""
        match = _RATE.match(self.hubspot_search_rate_limit)
        assert match is not None
        return int(match.group(1)), float(match.group(2))

    @property
    def batch_size(self) -> int:
        """``WORKER_BATCH_SIZE``, else by backend: HubSpot's batch maximum (a backlog costs
        the fewest calls), or ten on the local backend, whose batch is one write
        transaction that webhooks wait behind on SQLite (ten batched bookings hold it
        about as long as five did one by one)."""
        if self.worker_batch_size is not None:
            return self.worker_batch_size
        return HUBSPOT_BATCH if self.crm_backend == "hubspot" else LOCAL_BATCH

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]
