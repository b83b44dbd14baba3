"""The real ``bookme-crm serve`` process: first run, and a SIGKILL mid-stream."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.pool import NullPool

from tests.conftest import ADMIN_TOKEN, DEFAULT_MAPPING, WEBHOOK_SECRET, free_port, seed_booking

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent / "bookme-crm"


class Serve:
    """``bookme-crm serve`` as a child process on a free loopback port."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"serve-{self.port}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CRM_", "ADMIN_"))}
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [str(BIN), "serve", "--port", str(self.port)],
                cwd=workdir,
                env={**base, "MAPPINGS_PATH": str(DEFAULT_MAPPING), **env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.1)

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    started: list[Serve] = []

    def start(**env: str) -> Serve:
        server = Serve(tmp_path, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_first_run_generates_and_prints_a_secret_once(spawn: Any, tmp_path: Path) -> None:
    """With no secret configured, serve makes one, prints it with a curl, and uses it."""
    first = spawn()
    match = re.search(r"CRM_WEBHOOK_SECRET=(\S+)", first.output())
    assert match, first.output()
    secret = match.group(1)
    assert f"X-Webhook-Secret: {secret}" in first.output()
    assert (tmp_path / "var" / "webhook-secret").stat().st_mode & 0o077 == 0
    answer = httpx.post(
        first.url + "/api/bookings/incoming",
        json=seed_booking(),
        headers={"X-Webhook-Secret": secret},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    first.stop()
    second = spawn()
    assert secret not in second.output()
    assert (
        httpx.post(
            second.url + "/api/bookings/incoming",
            json=seed_booking(),
            headers={"X-Webhook-Secret": "wrong-but-long-enough"},
            timeout=30,
        ).status_code
        == 401
    )


def test_placeholder_secret_refuses_to_start(tmp_path: Path) -> None:
    """A placeholder secret is a configuration error, not a weak service."""
    result = subprocess.run(
        [str(BIN), "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env={**os.environ, "CRM_WEBHOOK_SECRET": "changeme"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "CRM_WEBHOOK_SECRET" in result.stderr
    assert "placeholder" in result.stderr


def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(spawn: Any, tmp_path: Path) -> None:
    """50 bookings accepted (SYNC_WAIT_MS=0), serve SIGKILLed and restarted: each synced once."""
    env = {
        "CRM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "SYNC_WAIT_MS": "0",
        "OUTBOX_LEASE_SECONDS": "2",
        "WORKER_POLL_SECONDS": "0.1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'crash.db'}",
    }
    server = spawn(**env)
    accepted: list[str] = []
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for n in range(50):
            body = seed_booking(
                bookingId=f"crash-{n}",
                email=f"person{n % 20}@example.com",
                company=f"Company {n % 7}",
                eventType="workshop" if n % 2 else "30min-consultation",
            )
            answer = http.post(
                "/api/bookings/incoming", json=body, headers={"X-Webhook-Secret": WEBHOOK_SECRET}
            )
            assert answer.status_code == 202, answer.text
            accepted.append(answer.json()["eventId"])
    server.kill()

    restarted = spawn(**env)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.Client(base_url=restarted.url, headers=admin, timeout=30) as http:
        deadline = time.monotonic() + 60
        while (counts := http.get("/admin/outbox").json()["counts"])["synced"] < 50:
            assert time.monotonic() < deadline, counts
            time.sleep(0.2)
        assert counts == {**counts, "synced": 50, "queued": 0, "retrying": 0, "dead": 0}
        for event_id in accepted:
            assert http.get(f"/api/bookings/events/{event_id}").json()["status"] == "synced"
        activities = http.get("/api/activities", params={"limit": 1000}).json()
        assert sorted(a["metadata"]["bookingId"] for a in activities) == sorted(
            f"crash-{n}" for n in range(50)
        )
        assert len(http.get("/api/contacts", params={"limit": 1000}).json()) == 20
        assert len(http.get("/api/companies", params={"limit": 1000}).json()) == 7
        tasks = http.get("/api/tasks", params={"limit": 1000}).json()
        assert len(tasks) == len({(t["bookingId"], t["key"]) for t in tasks}) == 25 * 2 + 25
        leads = http.get("/api/leads", params={"limit": 1000}).json()
        assert len(leads) == len({lead["title"] for lead in leads})


def test_several_processes_share_one_sqlite_file(spawn: Any, tmp_path: Path) -> None:
    """Two serve processes and a worker on one SQLite file, 160 bookings: never locked."""
    import threading

    env = {
        "CRM_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "SYNC_WAIT_MS": "0",
        "WORKER_POLL_SECONDS": "0.05",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'shared.db'}",
    }
    servers = [spawn(**env), spawn(**env)]
    worker_log = tmp_path / "worker.log"
    with worker_log.open("w") as log:
        worker = subprocess.Popen(
            [str(BIN), "worker", "--concurrency", "2"],
            cwd=tmp_path,
            env={**os.environ, "MAPPINGS_PATH": str(DEFAULT_MAPPING), **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    failures: list[str] = []

    def send(server: Serve, offset: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for n in range(offset, offset + 40):
                answer = http.post(
                    "/api/bookings/incoming",
                    json=seed_booking(bookingId=f"mp-{n}", email=f"p{n % 9}@example.com"),
                    headers={"X-Webhook-Secret": WEBHOOK_SECRET},
                )
                if answer.status_code != 202:
                    failures.append(answer.text)

    try:
        senders = [
            threading.Thread(target=send, args=(server, 100 * i))
            for i, server in enumerate(servers * 2)
        ]
        for thread in senders:
            thread.start()
        for thread in senders:
            thread.join(60)
        assert failures == []
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=servers[0].url, headers=admin, timeout=30) as http:
            deadline = time.monotonic() + 60
            while (counts := http.get("/admin/outbox").json()["counts"])["synced"] < 160:
                assert time.monotonic() < deadline, counts
                time.sleep(0.2)
            assert len(http.get("/api/activities", params={"limit": 1000}).json()) == 160
            assert len(http.get("/api/contacts", params={"limit": 1000}).json()) == 9
    finally:
        worker.terminate()
        worker.wait(15)
    logs = worker_log.read_text() + "".join(server.output() for server in servers)
    assert "database is locked" not in logs
    assert "Traceback" not in logs


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_sigkilled_serve_claims_taken_over_in_seconds(
    database: str, spawn: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """With the default 60 s lease, a SIGKILLed serve's claims are synced once within 15 s.

    The CRM is the fake HubSpot, answering every object call 3 s late while the first
    serve runs, so that serve is certainly holding claims (in the middle of a write)
    when it is killed, whatever the machine's speed; the restarted one finds the
    fake prompt again.
    """
    from sqlalchemy import create_engine

    from adapter.backends.hubspot import build_api, run_setup
    from adapter.mapping import load_mapping
    from tests.fakes.hubspot import FakeHubSpot

    url = (
        f"sqlite:///{tmp_path / 'takeover.db'}"
        if database == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    with FakeHubSpot(rate_limit=None, search_rate_limit=None) as fake:
        api = build_api(fake.token or "", fake.url, (1000, 10.0))
        try:
            assert run_setup(api, load_mapping(DEFAULT_MAPPING)).ok
        finally:
            api.close()
        fake.slow("/crm/v3/objects/*", seconds=3, times=None)
        env = {
            "CRM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "SYNC_WAIT_MS": "0",
            "DATABASE_URL": url,
            "CRM_BACKEND": "hubspot",
            "HUBSPOT_ACCESS_TOKEN": fake.token or "",
            "HUBSPOT_BASE_URL": fake.url,
        }
        server = spawn(**env)
        with httpx.Client(base_url=server.url, timeout=30) as http:
            for n in range(50):
                answer = http.post(
                    "/api/bookings/incoming",
                    json=seed_booking(bookingId=f"takeover-{n}", email=f"p{n % 10}@example.com"),
                    headers={"X-Webhook-Secret": WEBHOOK_SECRET},
                )
                assert answer.status_code == 202, answer.text
        engine = create_engine(url, poolclass=NullPool)
        try:
            deadline = time.monotonic() + 10
            while not _leased(engine):
                assert time.monotonic() < deadline, "serve never held a claim"
                time.sleep(0.005)
            server.kill()
            killed = time.monotonic()
            held = _leased(engine)
        finally:
            engine.dispose()
        assert held > 0
        fake.clear_faults()
        restarted = spawn(**env)
        ready = time.monotonic()
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        with httpx.Client(base_url=restarted.url, headers=admin, timeout=30) as http:
            while (counts := http.get("/admin/outbox").json()["counts"])["synced"] < 50:
                assert time.monotonic() - ready < 15, (counts, held)
                time.sleep(0.2)
            synced = time.monotonic()
        assert counts == {**counts, "synced": 50, "queued": 0, "retrying": 0, "dead": 0}
        booked = sorted(m["properties"]["bookme_booking_id"] for m in fake.objects("meetings"))
        assert booked == sorted(f"takeover-{n}" for n in range(50))  # each exactly once
    assert "took over its" in restarted.output()
    print(
        f"\nTAKEOVER {database}: claims_held_at_kill={held} restart_ready={ready - killed:.1f}s "
        f"all_synced_after_ready={synced - ready:.1f}s after_kill={synced - killed:.1f}s"
    )


def _leased(engine: Engine) -> int:
    """How many pending events of the outbox hold a lease."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM outbox_events "
                    "WHERE state IN ('queued', 'retrying') AND lease_token IS NOT NULL"
                )
            ).scalar_one()
        )
