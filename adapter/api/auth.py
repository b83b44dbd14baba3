"""Webhook authentication: the seed's shared secret, or Standard Webhooks signatures."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from standardwebhooks.webhooks import Webhook

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class Unauthorized(Exception):
    """The request is not from BookMe; the reason is for logs, never for the client."""


@dataclass(frozen=True)
class Authenticated:
    scheme: str
    webhook_id: str | None


def is_signed(headers: Mapping[str, str]) -> bool:
    """Whether the request is judged by a Standard Webhooks signature (which needs the
    body) rather than the shared secret (which the headers alone settle)."""
    lowered = {key.lower() for key in headers}
    if "webhook-signature" in lowered or "webhook-timestamp" in lowered:
        return True
    return "webhook-id" in lowered and "x-webhook-secret" not in lowered


def authenticate(
    headers: Mapping[str, str],
    body: bytes,
    *,
    shared_secret: str | None,
    signing_secrets: Sequence[str],
) -> Authenticated:
    """Accept a valid Standard Webhooks signature or a matching ``X-Webhook-Secret``.

    A request that carries a signature (or its timestamp) is judged by it
    alone, so a bad signature cannot fall back to a leaked shared secret. A
    ``webhook-id`` beside ``X-Webhook-Secret`` and no signature is a relay
    that names its deliveries: the secret decides, and the id dedupes.
    """
    lowered = {key.lower(): value for key, value in headers.items()}
    if is_signed(lowered):
        if not signing_secrets:
            raise Unauthorized("signature headers sent but no signing secret is configured")
        for secret in signing_secrets:
            try:
                Webhook(secret).verify(body, lowered, json_parse=False)
            except Exception:  # noqa: S112 - malformed headers raise all sorts: each is a 401
                continue
            return Authenticated("standard-webhooks", lowered["webhook-id"])
        raise Unauthorized("no configured secret verifies the signature")

    presented = lowered.get("x-webhook-secret")
    if shared_secret is None or presented is None:
        raise Unauthorized("no credentials")
    if not hmac.compare_digest(presented.encode(), shared_secret.encode()):
        raise Unauthorized("wrong shared secret")
    return Authenticated("shared-secret", lowered.get("webhook-id"))
