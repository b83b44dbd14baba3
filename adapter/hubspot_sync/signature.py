"""HubSpot's v3 request signature on app webhook deliveries, checked before anything is read.

HubSpot (request validation, v3): ``X-HubSpot-Signature-v3`` is the base64 of an
HMAC-SHA256, keyed with the app's client secret, over the UTF-8 of
``method + URI + body + X-HubSpot-Request-Timestamp``, where the URI is the full
target URL with some escapes decoded (``%3A`` ``%2F`` ``%3F`` ``%40`` ``%21``
``%24`` ``%27`` ``%28`` ``%29`` ``%2A`` ``%2C`` ``%3B``). A request whose
timestamp is more than five minutes old is to be refused. The hash itself is
the SDK's (``hubspot.utils.signature.Signature``); the timestamp rule and the
URI decoding are here, since the SDK's check lets any future timestamp pass and
leaves the URI to the caller.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime

from hubspot.utils.signature import Signature

MAX_AGE_SECONDS = 300.0
"""HubSpot: reject a request whose timestamp is older than five minutes."""
MAX_AHEAD_SECONDS = 60.0
"""A timestamp this far ahead of our clock is refused too (clock skew allowed)."""
SIGNATURE_HEADER = "x-hubspot-signature-v3"
TIMESTAMP_HEADER = "x-hubspot-request-timestamp"
_DECODED = (
    ("%3A", ":"), ("%2F", "/"), ("%3F", "?"), ("%40", "@"), ("%21", "!"), ("%24", "$"),
    ("%27", "'"), ("%28", "("), ("%29", ")"), ("%2A", "*"), ("%2C", ","), ("%3B", ";"),
)  # fmt: skip


class BadSignature(Exception):
    """The delivery is unsigned, forged or stale; the message says which (never a secret)."""


def signed_uri(uri: str) -> str:
    """The URI as HubSpot signs it: the escapes its documentation lists, decoded."""
    for escaped, char in _DECODED:
        uri = uri.replace(escaped, char).replace(escaped.lower(), char)
    return uri


def verify(
    headers: Mapping[str, str],
    *,
    method: str,
    uri: str,
    body: bytes,
    client_secret: str,
    now: datetime,
) -> None:
    """Raise ``BadSignature`` unless ``headers`` sign this request with ``client_secret``
    within the last five minutes."""
    signature = headers.get(SIGNATURE_HEADER)
    stamp = headers.get(TIMESTAMP_HEADER)
    if not signature or not stamp:
        raise BadSignature("no X-HubSpot-Signature-v3 / X-HubSpot-Request-Timestamp")
    if not stamp.isdigit():
        raise BadSignature("X-HubSpot-Request-Timestamp is not epoch milliseconds")
    age = now.timestamp() - int(stamp) / 1000
    if age > MAX_AGE_SECONDS:
        raise BadSignature(f"timestamp {age:.0f}s old (more than {MAX_AGE_SECONDS:.0f}s)")
    if age < -MAX_AHEAD_SECONDS:
        raise BadSignature(f"timestamp {-age:.0f}s ahead of our clock")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadSignature("body is not UTF-8") from None
    expected = Signature.get_signature(
        client_secret, text, "v3", http_uri=signed_uri(uri), http_method=method.upper(),
        timestamp=stamp,
    )  # fmt: skip
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise BadSignature("signature does not match")
