"""Several benchmark runs side by side: each target's value in every run, min / median /
max, and in how many runs it was met (the issue's "3 runs, min/median/max").

    .venv/bin/python -m bench --out /tmp/run1 && .venv/bin/python -m bench --out /tmp/run2 ...
    .venv/bin/python -m bench.summary /tmp/run1 /tmp/run2 /tmp/run3

Each folder holds one run's ``report.json``. A run that did not measure a target
(``--only``) is left out of that target's row. Ratios are each run's own (its
figure over the baseline of the same run), never across runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench.report import targets


def _fmt(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if abs(value) >= 100:
        return f"{value:,.0f}{unit}"
    return f"{value:,.1f}{unit}"


def summarize(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per target: the runs' values (``None`` where not measured), their min,
    median and max, and how many of the runs that measured it met it."""
    rows: list[dict[str, Any]] = []
    per_run = [targets(report) for report in reports]
    for index, first in enumerate(per_run[0] if per_run else []):
        checks = [run[index] for run in per_run]
        values = [c["value"] for c in checks if c["value"] is not None]
        rows.append(
            {
                "target": first["target"],
                "unit": first["unit"],
                "values": [c["value"] for c in checks],
                "min": min(values) if values else None,
                "median": statistics.median(values) if values else None,
                "max": max(values) if values else None,
                "met": sum(1 for c in checks if c["met"]),
                "measured": len(values),
            }
        )
    return rows


def render(rows: list[dict[str, Any]], runs: list[str]) -> str:
    lines = [
        f"Runs: {', '.join(runs)}",
        "",
        "| target | each run | min / median / max | met |",
        "| --- | --- | --- | :---: |",
    ]
    for row in rows:
        if not row["measured"]:
            continue
        unit = row["unit"]
        each = " / ".join("–" if v is None else _fmt(v, unit) for v in row["values"])
        spread = " / ".join(_fmt(row[k], unit) for k in ("min", "median", "max"))
        lines.append(f"| {row['target']} | {each} | {spread} | {row['met']} of {row['measured']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("folders", nargs="+", type=Path, help="folders with a report.json")
    args = parser.parse_args(argv)
    reports = []
    for folder in args.folders:
        path = folder / "report.json"
        if not path.is_file():
            parser.error(f"{path} does not exist (run python -m bench --out {folder})")
        reports.append(json.loads(path.read_text()))
    sys.stdout.write(render(summarize(reports), [str(f) for f in args.folders]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
