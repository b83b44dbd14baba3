"""``bookme-crm import`` (by id and --since) in-process on real files, BookMe on respx."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import respx
from typer.testing import CliRunner

from adapter.cli import app
from adapter.db import make_engine
from outbox.store import OutboxStore
from tests.conftest import DEFAULT_MAPPING, WEBHOOK_SECRET
from tests.integration.test_bookme_import import BOOKME, TOKEN, resource

runner = CliRunner()


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("MAPPINGS_PATH", str(DEFAULT_MAPPING))
    monkeypatch.setenv("CRM_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("BOOKME_API_URL", BOOKME)
    monkeypatch.setenv("BOOKME_API_TOKEN", TOKEN)


def stored(tmp_path: Path) -> dict[str, int]:
    engine = make_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    try:
        return OutboxStore(engine).counts()
    finally:
        engine.dispose()


def test_import_by_id_stores_once_and_says_so(bookme: respx.MockRouter, tmp_path: Path) -> None:
    """The first import stores a queued event; the second says it is already present."""
    bookme.get("/api/bookings/bk_9f3a21").respond(200, json=resource())
    first = runner.invoke(app, ["import", "bk_9f3a21"])
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("bk_9f3a21  new ")
    assert "queued" in first.stdout
    second = runner.invoke(app, ["import", "bk_9f3a21"])
    assert second.exit_code == 0, second.output
    assert "already present" in second.stdout
    assert stored(tmp_path)["queued"] == 1


def test_import_reports_each_failure_and_exits_1(bookme: respx.MockRouter, tmp_path: Path) -> None:
    """Of several ids, a missing and a malformed one are reported; the good one is stored."""
    bookme.get("/api/bookings/bk_9f3a21").respond(200, json=resource())
    bookme.get("/api/bookings/bk_gone").respond(404)
    bookme.get("/api/bookings/bk_bad").respond(200, json=resource(id="bk_bad", email="nope"))
    result = runner.invoke(app, ["import", "bk_gone", "bk_9f3a21", "bk_bad"])
    assert result.exit_code == 1
    assert "bk_gone: BookMe has no booking 'bk_gone'" in result.stderr
    assert "bk_bad: BookMe's booking 'bk_bad' is malformed: email:" in result.stderr
    assert "bk_9f3a21  new" in result.stdout
    assert stored(tmp_path)["queued"] == 1


def test_import_without_bookme_url_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No BOOKME_API_URL: exit 2 naming the variable."""
    monkeypatch.delenv("BOOKME_API_URL")
    result = runner.invoke(app, ["import", "bk_1"])
    assert result.exit_code == 2
    assert "BOOKME_API_URL is not set" in result.stderr


@pytest.mark.parametrize(
    "args", [["import"], ["import", "bk_1", "--since", "2026-11-01"], ["import", "--since", "x"]]
)
def test_import_needs_ids_or_a_valid_since(args: list[str], bookme: respx.MockRouter) -> None:
    """Neither ids nor --since, both, or an unreadable date: exit 2 before any request."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert bookme.calls.call_count == 0


def _list(bookme: respx.MockRouter, fail: bool = False) -> respx.Route:
    pages = {
        None: {"data": [resource(id="bk_a", email="a@example.com")], "nextCursor": "p1"},
        "p1": {"data": [resource(id="bk_b", email="b@example.com")], "nextCursor": None},
    }

    def answer(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        if fail and cursor == "p1":
            return httpx.Response(500)
        return httpx.Response(200, json=pages[cursor])

    return bookme.get("/api/bookings").mock(side_effect=answer)


def test_backfill_counts_and_a_second_run_finds_everything_present(
    bookme: respx.MockRouter, tmp_path: Path
) -> None:
    """import --since imports every page; run again, it reports all already present."""
    _list(bookme)
    first = runner.invoke(app, ["import", "--since", "2026-11-01"])
    assert first.exit_code == 0, first.output
    assert "fetched 2, new 2, already present 0, quarantined 0, failed 0" in first.stdout
    second = runner.invoke(app, ["import", "--since", "2026-11-01"])
    assert second.exit_code == 0, second.output
    assert "fetched 2, new 0, already present 2, quarantined 0, failed 0" in second.stdout
    assert stored(tmp_path)["queued"] == 2


def test_backfill_stopped_by_bookme_resumes_on_the_next_run(
    bookme: respx.MockRouter, tmp_path: Path
) -> None:
    """BookMe failing mid-list: exit 1 with how to resume; the rerun starts at the saved page."""
    _list(bookme, fail=True)
    first = runner.invoke(app, ["import", "--since", "2026-11-01"])
    assert first.exit_code == 1
    assert "fetched 1, new 1" in first.stdout
    assert "run the same command again to resume" in first.stderr
    bookme.routes.clear()
    route = _list(bookme)
    second = runner.invoke(app, ["import", "--since", "2026-11-01"])
    assert second.exit_code == 0, second.output
    assert "resumed the unfinished backfill since 2026-11-01" in second.stdout
    assert "fetched 1, new 1" in second.stdout
    assert [call.request.url.params.get("cursor") for call in route.calls] == ["p1"]
    assert stored(tmp_path)["queued"] == 2


def test_a_bookme_url_that_is_not_http_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """BOOKME_API_URL must be an http(s) URL; anything else stops with the variable named."""
    monkeypatch.setenv("BOOKME_API_URL", "bookme.example.com")
    result = runner.invoke(app, ["import", "bk_1"])
    assert result.exit_code == 2
    assert "configuration error: BOOKME_API_URL: Value error, must be an http(s) URL" in (
        result.stderr
    )
