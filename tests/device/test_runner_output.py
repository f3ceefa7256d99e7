"""Parsing what executor_runner and benchmark_model print, on recorded output in their documented formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepack.device.runner_output import (
    parse_benchmark_model,
    parse_executor_runner,
)
from edgepack.errors import ToolError
from edgepack.stats import latency_summary

FIXTURES = Path(__file__).parent / "fixtures"
MIB = 1024 * 1024


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def test_executor_runner_drops_warmup_and_computes_percentiles():
    stats = parse_executor_runner(fixture("executor_runner_recent.txt"), warmup=3)
    timed = [0.351, 0.348, 0.355, 0.349, 0.360, 0.347, 0.352, 0.650, 0.346, 0.350]
    assert stats.runs == 10
    assert stats.min_ms == pytest.approx(0.346) and stats.max_ms == pytest.approx(0.650)
    assert stats.mean_ms == pytest.approx(sum(timed) / 10)
    assert stats.p50_ms == pytest.approx(0.3505)  # between the 5th and 6th of the sorted ten
    assert stats.p50_ms <= stats.p90_ms <= stats.p99_ms <= stats.max_ms
    assert stats.first_run_ms == pytest.approx(0.912)
    assert stats.init_ms == pytest.approx(2.498)
    assert stats.peak_rss_bytes is None and any("memory: not reported" in n for n in stats.notes)


def test_executor_runner_without_per_iteration_lines_is_refused():
    with pytest.raises(ToolError, match="per-iteration"):
        parse_executor_runner(fixture("executor_runner_total_only.txt"), warmup=3)


def test_executor_runner_with_too_few_iterations_is_refused():
    with pytest.raises(ToolError, match="warm-up"):
        parse_executor_runner(fixture("executor_runner_recent.txt"), warmup=13)


def test_executor_runner_failure_quotes_the_last_line():
    with pytest.raises(ToolError, match="Loading of method forward failed"):
        parse_executor_runner("E 00:00:00.001 executorch:method.cpp:1] Loading of method forward failed with "
                              "status 0x14\n", warmup=0)


def test_benchmark_model_recent_build():
    stats = parse_benchmark_model(fixture("benchmark_model_recent.txt"))
    assert stats.runs == 8912  # the timed runs, not the warm-up summary printed first
    assert stats.p50_ms == pytest.approx(0.102)
    assert stats.p90_ms == pytest.approx(0.152)  # its p95: an upper bound, and the notes say so
    assert stats.p99_ms == pytest.approx(2.210) == stats.max_ms
    assert stats.mean_ms == pytest.approx(0.1109) and stats.std_ms == pytest.approx(0.037)
    assert stats.min_ms == pytest.approx(0.090)
    assert stats.init_ms == pytest.approx(3.412) and stats.first_run_ms == pytest.approx(0.412)
    assert stats.peak_rss_bytes == int(9.875 * MIB)
    assert stats.peak_over_baseline_bytes == int(3.05078 * MIB)
    assert any("p90 is benchmark_model's p95" in n for n in stats.notes)
    assert any("p99 is benchmark_model's max" in n for n in stats.notes)


def test_benchmark_model_without_median_is_refused():
    with pytest.raises(ToolError, match="median"):
        parse_benchmark_model(fixture("benchmark_model_no_percentiles.txt"))


def test_benchmark_model_failure_quotes_the_last_line():
    with pytest.raises(ToolError, match="Benchmarking failed"):
        parse_benchmark_model(fixture("benchmark_model_failed.txt"))


def test_summarise_one_sample():
    stats = latency_summary([2.0])
    assert stats["p50_ms"] == stats["p99_ms"] == stats["max_ms"] == 2.0 and stats["std_ms"] == 0.0
