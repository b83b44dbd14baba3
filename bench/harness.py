"""Processes and numbers for the benchmarks: servers on free loopback ports, the load
generator as its own process, peak RSS, outbox timestamps, percentiles.

Every wait here has a deadline; a process that outlives its scenario is
SIGTERMed, then SIGKILLed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select

from outbox.schema import events

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SECRET = "bench-webhook-secret-0123456789"  # noqa: S105 - a throwaway for loopback runs
ADMIN = "bench-admin-token-0123456789"
PG_ADMIN_URL = os.environ.get(
    "BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of ``values``; ``None`` when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


def ratio(value: float | None, baseline: float | None) -> float | None:
    if value is None or not baseline:
        return None
    return value / baseline


@dataclass
class Proc:
    """A child process with its log file; ``peak_rss_mb`` from the kernel's high-water mark."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    peak_rss_mb: float = 0.0

    def sample_rss(self) -> float:
        """Update ``peak_rss_mb`` from /proc (VmHWM: the peak resident set, kept by the kernel)."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_rss_mb = max(self.peak_rss_mb, int(line.split()[1]) / 1024)
        return self.peak_rss_mb

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        self.sample_rss()
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


@dataclass
class Procs:
    """Every process a scenario started; ``close`` stops them all (newest first)."""

    workdir: Path
    started: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}-{len(self.started)}.log"
        handle = log.open("wb")
        popen = subprocess.Popen(  # noqa: S603 - our own argv
            list(argv),
            cwd=self.workdir,  # no stray .env is read
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
        handle.close()
        proc = Proc(name, popen, log)
        self.started.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


@contextlib.contextmanager
def processes(workdir: Path) -> Iterator[Procs]:
    procs = Procs(workdir)
    try:
        yield procs
    finally:
        procs.close()


def wait_http(url: str, proc: Proc, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200 (the server is up), or fail with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited early:\n{tail(proc.log)}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(url, timeout=2) as answer,  # noqa: S310 - loopback
        ):
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{proc.name} not ready at {url} after {timeout}s:\n{tail(proc.log)}")


def wait_line(proc: Proc, marker: str, timeout: float = 30.0) -> str:
    """The first line of ``proc``'s log that contains ``marker``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proc.log.read_text(errors="replace").splitlines():
            if marker in line:
                return line
        if not proc.alive():
            break
        time.sleep(0.05)
    raise TimeoutError(f"{proc.name}: no {marker!r} in its log:\n{tail(proc.log)}")


def tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


def service_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``bookme-crm`` process for a benchmark."""
    return {
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "MAPPINGS_PATH": str(ROOT / "mappings" / "default.yaml"),
        "CRM_WEBHOOK_SECRET": SECRET,
        "ADMIN_TOKEN": ADMIN,
        "LOG_FORMAT": "json",
        **extra,
    }


def start_serve(
    procs: Procs, env: Mapping[str, str], *, no_worker: bool = False, name: str = "serve"
) -> tuple[Proc, str]:
    """``bookme-crm serve`` on a free port; returns the process and its base URL."""
    port = free_port()
    argv = [PYTHON, "-m", "adapter.cli", "serve", "--port", str(port)]
    if no_worker:
        argv.append("--no-worker")
    proc = procs.start(name, argv, env)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", proc)
    return proc, base


def start_bare(procs: Procs) -> tuple[Proc, str]:
    port = free_port()
    proc = procs.start("bare", [PYTHON, "-m", "bench.bare", "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", proc)
    return proc, base


def start_fake_hubspot(
    procs: Procs, *, real_limits: bool, latency: float = 0.0
) -> tuple[Proc, str, str]:
    """The fake HubSpot as its own process; returns (process, base URL, token)."""
    token = "bench-hubspot-token"  # noqa: S105
    argv = [PYTHON, "-m", "tests.fakes.hubspot", "--port", "0", "--token", token]
    if not real_limits:
        argv += ["--rate-limit", "0", "--search-rate-limit", "0"]
    if latency:
        argv += ["--latency", str(latency)]
    proc = procs.start("fake-hubspot", argv)
    url = wait_line(proc, "FAKE_HUBSPOT_READY").split()[-1]
    return proc, url, token


def fake_state(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/_fake/state", timeout=30) as answer:  # noqa: S310
        data: dict[str, Any] = json.load(answer)
    return data


def loadgen(workdir: Path, url: str, *, bound: float, **options: Any) -> dict[str, Any]:
    """Run the load generator as its own process; killed past ``bound`` seconds."""
    out = workdir / f"loadgen-{time.monotonic_ns()}.json"
    argv = [PYTHON, "-m", "bench.loadgen", "--url", url, "--secret", SECRET, "--out", str(out)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    subprocess.run(argv, cwd=ROOT, check=True, timeout=bound)  # noqa: S603
    data: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return data


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@dataclass(frozen=True)
class Outbox:
    """What the outbox says about a run: each booking's state and synced time (epoch s)."""

    states: dict[str, int]
    synced: dict[str, float]  # booking id -> synced_at, epoch seconds

    def throughput(self) -> float | None:
        """Events synced per second between the first and the last sync."""
        times = sorted(self.synced.values())
        if len(times) < 2 or times[-1] <= times[0]:
            return None
        return (len(times) - 1) / (times[-1] - times[0])


def read_outbox(database_url: str) -> Outbox:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            states = {
                str(state): int(count)
                for state, count in conn.execute(
                    select(events.c.state, func.count()).group_by(events.c.state)
                )
            }
            synced: dict[str, float] = {}
            for key, synced_at in conn.execute(
                select(events.c.key, events.c.synced_at).where(events.c.synced_at.is_not(None))
            ):
                moment = _utc(synced_at)
                if moment is not None:
                    synced[str(key)] = moment.timestamp()
    finally:
        engine.dispose()
    return Outbox(states, synced)


def synced_count(database_url: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            query = select(func.count()).where(events.c.state == "synced")
            return int(conn.execute(query).scalar() or 0)
    finally:
        engine.dispose()


def wait_synced(
    database_url: str, expected: int, timeout: float, procs: Sequence[Proc] = ()
) -> bool:
    """Poll until ``expected`` events are synced; ``False`` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            proc.sample_rss()
        if synced_count(database_url) >= expected:
            return True
        time.sleep(0.2)
    return False


WRK_SCRIPT = ROOT / "bench" / "wrk" / "bookings.lua"
WRK_THREADS = 2  # one per core of the machine class; the server under test gets the rest


def wrk_path() -> str:
    """Debian's ``wrk`` (a C client); a clear error when it is not installed."""
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk (see .ci/run)")
    return path


def wrk(
    url: str,
    *,
    concurrency: int,
    duration: float,
    prefix: str,
    bound: float,
    limit: int = 0,
    people: int = 0,
    statuses: bool = False,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Closed-loop load from ``wrk`` with ``bench/wrk/bookings.lua``: distinct authentic
    bookings from ``concurrency`` connections for ``duration`` s (or about ``limit``
    answers). The summary has the keys of ``bench.loadgen.summarize`` (latencies in s)
    plus ``client``; ``accepted`` is wrk's answers minus its non-2xx/3xx count (exact
    codes with ``statuses``, counted in Lua's ``response()``); ``people`` repeats contacts
    as ``bench.loadgen``'s ``--people``."""
    threads = max(1, min(WRK_THREADS, concurrency))
    per_thread = -(-limit // threads) if limit else 0
    markers = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
    argv = [
        wrk_path(), f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout))}s", "-s", str(WRK_SCRIPT), url,
        "--", SECRET, prefix, str(per_thread), "1" if statuses else "0", f"{markers}/done-",
        str(people),
    ]  # fmt: skip
    try:
        with subprocess.Popen(  # noqa: S603 - our own argv
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as popen:
            deadline = time.monotonic() + bound
            while popen.poll() is None and time.monotonic() < deadline:
                if per_thread and len(list(markers.iterdir())) >= threads:
                    popen.send_signal(signal.SIGINT)  # every thread has its answers: report now
                    break
                time.sleep(0.02)
            try:
                stdout, stderr = popen.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                popen.kill()
                raise
    finally:
        shutil.rmtree(markers, ignore_errors=True)
    if popen.returncode != 0:
        raise RuntimeError(f"wrk exited {popen.returncode}:\n{stdout}\n{stderr}")
    line = next((x for x in stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no WRK_JSON line:\n{stdout}\n{stderr}")
    raw: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    seconds = raw["duration_us"] / 1e6
    errors = raw["errors"]
    accepted = raw["requests"] - errors["status"]
    counted = {str(k): int(v) for k, v in raw["statuses"].items()}
    if counted:
        accepted = sum(v for k, v in counted.items() if 200 <= int(k) < 300)
    else:
        counted = {"2xx/3xx": accepted, "4xx/5xx": errors["status"]}
    failed = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    if failed:
        counted["0"] = failed  # no answer, as the Python generator counts it
    latency = raw["latency_us"]
    return {
        "client": "wrk",
        "sent": raw["requests"] + failed,
        "accepted": accepted,
        "statuses": counted,
        "seconds": seconds,
        "accepted_per_second": accepted / seconds if seconds > 0 else 0.0,
        # wrk's percentiles are over every answer (the service answers only 2xx here)
        "p50": latency["p50"] / 1e6,
        "p99": latency["p99"] / 1e6,
        "max": latency["max"] / 1e6,
        "errors": errors,
    }
