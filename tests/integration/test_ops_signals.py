"""A real ``bookme-crm worker`` process: SIGHUP reloads the mapping, SIGTERM stops cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from adapter.booking import parse_booking
from adapter.ingest import accept_booking
from adapter.services import Services, build_services
from adapter.settings import Settings
from outbox.schema import events
from tests.conftest import DEFAULT_MAPPING, WEBHOOK_SECRET, free_port, seed_booking

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent / "bookme-crm"
YOGA = "\n  yoga:\n    lead:\n      estimated_value: 100\n"


class WorkerProcess:
    """``bookme-crm worker`` (or ``serve``) on the test's SQLite file; its stderr (the log)
    and stdout (the first-run banner) in files."""

    def __init__(
        self,
        workdir: Path,
        env: dict[str, str],
        *args: str,
        command: str = "worker",
        ready: str = "worker running",
    ) -> None:
        self.log = workdir / f"{command}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "ADMIN_"))}
        self.stdout = workdir / f"{command}.out"
        with self.log.open("w") as err, self.stdout.open("w") as out:
            self.proc = subprocess.Popen(
                [str(BIN), command, *args],
                cwd=workdir,
                env={**base, "LOG_FORMAT": "json", **env},
                stdout=out,
                stderr=err,
            )
        self.wait_for_line(lambda line: line["event"].startswith(ready))

    def lines(self) -> list[dict[str, Any]]:
        found = []
        for raw in self.log.read_text().splitlines():
            try:
                found.append(json.loads(raw))
            except json.JSONDecodeError:
                pytest.fail(f"not a JSON log line: {raw!r}")
        return found

    def wait_for_line(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 20
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            for line in self.lines():
                if match(line):
                    return line
            time.sleep(0.05)
        pytest.fail(f"no matching log line in:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[dict[str, str], Services]]:
    """Worker env on a fresh SQLite file with a copy of the mapping; services to ingest."""
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(DEFAULT_MAPPING.read_text())
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'bookme.db'}",
        "MAPPINGS_PATH": str(mapping),
        "CRM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WORKER_POLL_SECONDS": "0.05",
    }
    settings = Settings(
        _env_file=None,
        database_url=env["DATABASE_URL"],
        mappings_path=mapping,
        crm_webhook_secret=WEBHOOK_SECRET,
        data_dir=tmp_path / "var",
    )
    services = build_services(settings, generate_secrets=False)
    yield env, services
    services.close()


def ingest(services: Services, **overrides: Any) -> str:
    raw = seed_booking(**overrides)
    event, _ = accept_booking(services.store, parse_booking(raw), raw, services.mappings.current)
    return event.id


def wait_state(services: Services, event_id: str, state: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = services.store.get(event_id)
        if event is not None and event.state == state:
            return
        time.sleep(0.05)
    pytest.fail(f"event {event_id} not {state}: {services.store.get(event_id)}")


def test_sighup_reloads_the_mapping_and_a_broken_file_keeps_the_old(
    setup: tuple[dict[str, str], Services], tmp_path: Path
) -> None:
    """After SIGHUP the worker places a new event type; a broken file changes nothing."""
    env, services = setup
    mapping = Path(env["MAPPINGS_PATH"])
    worker = WorkerProcess(tmp_path, env)
    try:
        yoga = ingest(services, bookingId="bk-yoga", eventType="yoga")
        wait_state(services, yoga, "quarantined")

        mapping.write_text(mapping.read_text() + YOGA)
        worker.proc.send_signal(signal.SIGHUP)
        reloaded = worker.wait_for_line(lambda line: line["event"] == "mapping reloaded")
        assert "yoga" in reloaded["event_types"]

        mapping.write_text("event_types: [not, a, mapping\n")
        worker.proc.send_signal(signal.SIGHUP)
        refused = worker.wait_for_line(lambda line: "reload refused" in line["event"])
        assert refused["level"] == "error"
        assert "mapping.yaml" in refused["event"]

        # The mapping in use is still the one with yoga: the replayed event now syncs.
        services.store.replay([yoga], actor="test")
        wait_state(services, yoga, "synced")
        assert worker.proc.poll() is None
    finally:
        worker.stop()


def test_sigterm_finishes_the_batch_in_hand_and_leaves_nothing_leased(
    setup: tuple[dict[str, str], Services], tmp_path: Path
) -> None:
    """SIGTERM while work is pending: exit 0 within the deadline, no lease left behind."""
    env, services = setup
    # Enough that the worker (hundreds a second) is still busy when SIGTERM lands.
    ids = [ingest(services, bookingId=f"bk-{n}") for n in range(1500)]
    worker = WorkerProcess(
        tmp_path,
        {**env, "WORKER_SHUTDOWN_SECONDS": "15", "WORKER_BATCH_SIZE": "5"},
        "--concurrency",
        "3",
    )
    pid = worker.proc.pid
    try:
        deadline = time.monotonic() + 20
        while services.store.counts()["synced"] < 5:
            assert time.monotonic() < deadline, worker.log.read_text()
            time.sleep(0.02)
        started = time.monotonic()
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(20) == 0, worker.log.read_text()
        assert time.monotonic() - started < 15
    finally:
        worker.stop()
    with services.engine.connect() as conn:
        leased = conn.execute(
            select(events.c.id, events.c.lease_owner).where(events.c.lease_owner.like(f"%:{pid}:%"))
        ).all()
    assert leased == []
    counts = services.store.counts()
    assert counts["synced"] + counts["queued"] == len(ids)
    assert counts["queued"] > 0, "the worker stopped claiming before the queue was empty"
    messages = [line["event"] for line in worker.lines()]
    assert any(m.startswith("stopping on SIGTERM") for m in messages)
    assert messages[-1] == "worker stopped"


def test_serve_reloads_the_mapping_on_sighup(
    setup: tuple[dict[str, str], Services], tmp_path: Path
) -> None:
    """``serve`` logs JSON (uvicorn's too), reloads its mapping on SIGHUP, exits 0 on SIGTERM."""
    env, _services = setup
    mapping = Path(env["MAPPINGS_PATH"])
    serve = WorkerProcess(
        tmp_path,
        env,
        "--no-worker",
        "--port",
        str(free_port()),
        command="serve",
        ready="Application startup complete",
    )
    try:
        mapping.write_text(mapping.read_text() + YOGA)
        serve.proc.send_signal(signal.SIGHUP)
        reloaded = serve.wait_for_line(lambda line: line["event"] == "mapping reloaded")
        assert "yoga" in reloaded["event_types"]
        assert any(line["logger"].startswith("uvicorn") for line in serve.lines())
        token = (tmp_path / "var" / "admin-token").read_text().strip()
        assert f"ADMIN_TOKEN={token}" in serve.stdout.read_text()
        assert token not in serve.log.read_text()
        serve.proc.terminate()
        assert serve.proc.wait(20) == 0
        assert serve.lines()[-1]["event"].startswith("Finished server process")
    finally:
        serve.stop()
