"""``python -m bench.summary``: several runs' targets side by side."""

from __future__ import annotations

from typing import Any

from bench.summary import render, summarize


def _run(embedded: float | None, bare: float) -> dict[str, Any]:
    ingest: dict[str, Any] = {"bare": {"saturation": {"accepted_per_second": bare}}}
    if embedded is not None:
        ingest["service"] = {"saturation": {"accepted_per_second": embedded}}
        ingest["saturation_ratio"] = embedded / bare
    return {"scenarios": {"ingest": ingest}, "memory": {}}


def test_each_target_gets_every_runs_value_its_spread_and_how_often_it_was_met() -> None:
    rows = summarize([_run(900, 3000), _run(1600, 3000), _run(None, 3000), _run(1200, 2000)])
    (rate,) = (
        r for r in rows if r["target"].startswith("Ingest ≥ 1,000") and "embedded" in r["target"]
    )
    assert rate["values"] == [900, 1600, None, 1200]
    assert (rate["min"], rate["median"], rate["max"]) == (900, 1200, 1600)
    assert (rate["met"], rate["measured"]) == (2, 3)
    (share,) = (
        r for r in rows if r["target"] == "Ingest ≥ 0.5× the bare endpoint (serve, embedded worker)"
    )
    assert share["met"] == 2  # 0.53x and 0.6x; 0.3x is not
    text = render(rows, ["a", "b", "c", "d"])
    assert "| 900/s / 1,600/s / – / 1,200/s | 900/s / 1,200/s / 1,600/s | 2 of 3 |" in text
    assert "Drain" not in text  # no run measured it
