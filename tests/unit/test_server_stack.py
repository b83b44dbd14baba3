"""``serve`` runs on uvicorn's fast stack, with the slow-client deadlines on it."""

from __future__ import annotations

from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from adapter.api.server import server_options
from adapter.settings import Settings


def test_serve_uses_httptools_and_uvloop_with_its_deadlines(
    make_settings: Callable[..., Settings],
) -> None:
    """The protocol is httptools' (carrying the configured deadlines) and the loop uvloop."""
    settings = make_settings(http_header_timeout_seconds=3, http_body_timeout_seconds=4)
    options = server_options(settings)
    assert issubclass(options["http"], HttpToolsProtocol)
    assert (options["http"].header_timeout, options["http"].body_timeout) == (3, 4)
    assert options["loop"] == "uvloop"
