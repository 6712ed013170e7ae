"""Benchmark figures as files: each benchmark records its rows, ``make bench`` joins them.

    .venv/bin/python benchmarks/results.py        # runs/bench/summary.md from runs/bench/*.json

A row is one figure: ``{"benchmark", "size", "figure", "value", "goal", "met"}`` where ``value`` is
a ratio taken in the same run (machines are noisy) or a measured amount (MB, images/s) and
``goal`` the issue's target for it (empty when there is none).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(os.environ.get("SPARKVISION_BENCH_DIR", "runs/bench"))


def row(
    benchmark: str, size: str, figure: str, value: float, goal: str = "", met: bool | None = None
) -> dict[str, Any]:
    """One figure; ``met`` is None when the figure has no goal."""
    return {"benchmark": benchmark, "size": size, "figure": figure, "value": round(float(value), 3), "goal": goal,
            "met": met}  # fmt: skip


def bracketed(baselines: Sequence[float], candidates: Sequence[float]) -> list[float]:
    """Each candidate rate over the mean of the baseline runs just before and after it.

    A benchmark alternates them (baseline, candidate, baseline, candidate, ..., baseline), so
    ``len(baselines) == len(candidates) + 1``: these machines change speed by up to 2x within minutes
    (one in-memory ``fit`` measured 156, 234 and 312 images/s a thread within ten minutes), and
    a ratio to a baseline measured minutes earlier records that drift as much as the code.
    """
    if len(baselines) != len(candidates) + 1:
        raise ValueError(f"expected {len(candidates) + 1} baseline runs around {len(candidates)} candidate runs, "
                         f"found {len(baselines)}")  # fmt: skip
    return [c / ((baselines[i] + baselines[i + 1]) / 2) for i, c in enumerate(candidates)]


def spread(values: Sequence[float], unit: str = "") -> str:
    """``0.93 (0.88-0.97 over 3 rounds)``, or the value alone for one round; ``unit`` follows each figure."""
    if len(values) == 1:
        return f"{values[0]:.2f}{unit}"
    return (f"{statistics.median(values):.2f}{unit} ({min(values):.2f}{unit}-{max(values):.2f}{unit} over "
            f"{len(values)} rounds)")  # fmt: skip


def record(benchmark: str, rows: list[dict[str, Any]]) -> Path:
    """Write ``runs/bench/<benchmark>.json`` (with the machine and time) and return its path."""
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    path = BENCH_DIR / f"{benchmark}.json"
    facts = {"cores": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
             "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
             "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
    path.write_text(json.dumps({"benchmark": benchmark, **facts, "rows": rows}, indent=2) + "\n")
    print(f"figures -> {path}")
    return path


def summary(bench_dir: Path = BENCH_DIR) -> Path:
    """``summary.md``: one Markdown table of every recorded figure."""
    lines = [
        "# sparkvision benchmarks",
        "",
        "| benchmark | size | figure | value | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    notes = []
    for path in sorted(bench_dir.glob("*.json")):
        data = json.loads(path.read_text())
        notes.append(f"- `{data['benchmark']}`: {data['recorded_at']}, {data['cores']} cores, "
                     f"load average {data['load_average']:.1f} at the end")  # fmt: skip
        for r in data["rows"]:
            met = {True: "yes", False: "**no**", None: ""}[r["met"]]
            lines.append(f"| {r['benchmark']} | {r['size']} | {r['figure']} | {r['value']:g} | {r['goal']} | {met} |")
    out = bench_dir / "summary.md"
    out.write_text("\n".join([*lines, "", *notes, ""]))
    print(out.read_text())
    return out


if __name__ == "__main__":
    summary(Path(sys.argv[1]) if len(sys.argv) > 1 else BENCH_DIR)
