"""The benchmark command runs end to end in ``--quick`` mode and writes both reports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL

ROOT = Path(__file__).resolve().parents[2]


def _postgres_reachable() -> bool:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError:
        return False
    finally:
        engine.dispose()
    return True


def _need_wrk() -> None:
    """The saturation runs need Debian's wrk: skipped without it, but failed in CI."""
    if shutil.which("wrk") is None:
        message = "wrk is not installed (apt-get install -y wrk; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.mark.slow
def test_bench_quick_writes_both_reports(tmp_path: Path) -> None:
    """``python -m bench --quick`` ends in bounded time with sane figures in JSON and markdown."""
    _need_wrk()
    only = "ingest,e2e,drain,hubspot,slowcrm" + (
        ",postgres,pgwake" if _postgres_reachable() else ""
    )
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(tmp_path), "--only", only],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    markdown = (tmp_path / "report.md").read_text()

    assert report["errors"] == {}
    assert {"machine", "sizes", "scenarios", "memory"} <= set(report)
    scenarios = report["scenarios"]
    assert set(only.split(",")) == set(scenarios)

    ingest = scenarios["ingest"]
    for name in ("bare", "service", "service_no_worker", "service_split_worker"):
        for run in ("fixed_rate", "saturation"):
            figures = ingest[name][run]
            assert figures["accepted"] > 0
            assert figures["p50_ms"] <= figures["p99_ms"]
        assert ingest[name]["saturation"]["statuses"].get("4xx/5xx") == 0  # wrk's count
    assert ingest["saturation_ratio"] > 0
    check = ingest["client_check"]  # bare under wrk beside the target and the Python client
    assert check["bare_wrk_per_second"] > 0
    assert check["bare_python_per_second"] > 0
    assert ingest["bare"]["saturation_python_client"]["accepted"] > 0
    assert "with wrk =" in markdown

    e2e = scenarios["e2e"]
    assert e2e["all_synced"]
    assert e2e["bookings"] > 0
    assert 0 < e2e["p50_ms"] <= e2e["p99_ms"]

    drain = scenarios["drain"]
    assert drain["all_synced"]
    assert drain["drain_per_second"] > 0

    hubspot = scenarios["hubspot"]
    for run in ("single_new", "repeat", "burst"):
        assert hubspot[run]["calls"] > 0
        assert hubspot[run]["rate_limited_429"] == 0
    assert (
        hubspot["burst"]["calls_per_booking"] < hubspot["baseline_unbatched"]["calls_per_booking"]
    )

    slow = scenarios["slowcrm"]
    for run in ("no_wait", "default_wait"):
        assert slow[run]["accepted"] > 0
        assert slow[run]["all_synced"]
        assert slow[run]["healthz"]["probes"] > 0
    assert slow["ratio"] > 0
    assert "## 3b. A slow CRM" in markdown
    assert "beside a `worker` process" in markdown

    if "postgres" in scenarios:
        runs = scenarios["postgres"]["runs"]
        assert set(runs) == {"1", "2", "4"}
        assert all(run["all_synced"] and run["drain_per_second"] > 0 for run in runs.values())
        wake = scenarios["pgwake"]
        assert wake["poll"]["all_synced"]
        assert wake["notify"]["all_synced"]
        assert wake["p50_ratio"] > 0
        assert "## 4b. PostgreSQL: a worker process woken by NOTIFY" in markdown

    assert report["memory"]["serve_peak_rss_mb"] > 0
    for heading in ("## 1. Ingest", "## 2. End-to-end", "## 3. HubSpot", "## Targets"):
        assert heading in markdown

    # Several runs side by side (here the same run twice): every measured target has a row.
    summary = subprocess.run(
        [sys.executable, "-m", "bench.summary", str(tmp_path), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    drained = f"{drain['drain_per_second']:,.0f}/s" if drain["drain_per_second"] >= 100 else ""
    row = next(line for line in summary.splitlines() if line.startswith("| Drain ≥ 300"))
    assert drained in row
    assert row.endswith(("| 2 of 2 |", "| 0 of 2 |"))


def test_wrk_counts_refused_bookings_and_accepted_ones(tmp_path: Path) -> None:
    """The wrk script's bookings are authentic and distinct, and refusals are counted:
    the right secret stores one booking per answer; a wrong one is refused every time
    (401, then 429 once the service limits failed authentications)."""
    _need_wrk()
    from bench import harness

    url_db = f"sqlite:///{tmp_path}/wrk.db"
    for secret, expect in ((harness.SECRET, "202"), ("not-the-secret-0123456789", "401")):
        env = harness.service_env(url_db, tmp_path / "var", SYNC_WAIT_MS="0")
        env["CRM_WEBHOOK_SECRET"] = secret
        with harness.processes(tmp_path) as procs:
            proc, base = harness.start_serve(procs, env, no_worker=True)
            counted = harness.wrk(
                f"{base}/api/bookings/incoming", concurrency=4, duration=1, prefix=expect,
                bound=30, statuses=True,
            )  # fmt: skip
            quick = harness.wrk(
                f"{base}/api/bookings/incoming", concurrency=4, duration=1, prefix=f"q{expect}",
                bound=30, limit=40,
            )  # fmt: skip
            proc.stop()
        assert counted["sent"] > 0
        if expect == "401":
            assert "401" in counted["statuses"]
            assert set(counted["statuses"]) <= {"401", "429"}
            assert sum(counted["statuses"].values()) == counted["sent"]
            assert counted["accepted"] == 0
            assert quick["statuses"]["4xx/5xx"] == quick["sent"]
            assert quick["accepted"] == 0
        else:
            stored = sum(harness.read_outbox(url_db).states.values())
            assert set(counted["statuses"]) <= {"200", "202"}
            assert counted["accepted"] == counted["sent"]
            assert stored >= counted["accepted"] + quick["accepted"] >= counted["sent"] + 40
