"""``benchmarks/results.py``: the ratios the benchmarks report against a drifting baseline."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_results", Path(__file__).parents[1] / "benchmarks" / "results.py")
results = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(results)


def test_each_candidate_is_compared_with_the_baseline_runs_around_it():
    # the machine slowed by half between the first and last baseline: each candidate ran at 0.9 of it
    baselines = [600.0, 400.0, 300.0]
    candidates = [0.9 * 500.0, 0.9 * 350.0]
    assert results.bracketed(baselines, candidates) == pytest.approx([0.9, 0.9])


def test_bracketing_needs_a_baseline_run_after_every_candidate():
    with pytest.raises(ValueError, match="expected 3 baseline runs around 2 candidate runs, found 2"):
        results.bracketed([600.0, 400.0], [450.0, 315.0])


def test_spread_gives_the_median_and_range_of_the_rounds():
    assert results.spread([0.96, 0.92, 0.93]) == "0.93 (0.92-0.96 over 3 rounds)"
    assert results.spread([1.61, 1.5, 1.67], "x") == "1.61x (1.50x-1.67x over 3 rounds)"
    assert results.spread([0.86]) == "0.86"
