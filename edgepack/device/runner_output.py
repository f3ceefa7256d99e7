"""Parsers for what the on-device runners print: ExecuTorch's executor_runner and TFLite/LiteRT's benchmark_model.

Pure functions over text, so they are tested on recorded output without a phone. Each returns `RunnerStats` holding
only what the runner printed; where a runner does not print a statistic the Measurement record needs, the stats say
which measured value stands in for it and why (`notes`), and never invent one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgepack.errors import ToolError
from edgepack.stats import latency_summary

_MIB = 1024 * 1024
_NUMBER = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"


@dataclass(frozen=True)
class RunnerStats:
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    init_ms: float | None = None
    first_run_ms: float | None = None
    peak_rss_bytes: int | None = None
    peak_over_baseline_bytes: int | None = None
    notes: tuple[str, ...] = ()


# ---- ExecuTorch executor_runner -------------------------------------------------------------------------------------
# Lines come through ET_LOG: "I 00:00:00.123456 executorch:executor_runner.cpp:512] <message>".
_ET_LOADED = re.compile(rf"Model loaded in {_NUMBER} ms")
_ET_ITERATION = re.compile(rf"Iteration (\d+) of (\d+): {_NUMBER} ms")
_ET_TOTAL = re.compile(rf"Model executed successfully (\d+) time\(s\)(?: in {_NUMBER} ms)?")


def parse_executor_runner(text: str, warmup: int) -> RunnerStats:
    """Stats from an executor_runner run of `warmup + runs` executions; the first `warmup` iterations are dropped.

    Percentiles need the per-iteration lines ("Iteration i of n: t ms") that recent runners print; a runner that only
    prints the total gives a mean and nothing else, so it is refused rather than reported with made-up percentiles.
    """
    total = _ET_TOTAL.search(text)
    if total is None:
        raise ToolError("executor_runner did not report a successful run ('Model executed successfully ...'); "
                        f"last output line: {_last_line(text)}")
    iterations = {int(m.group(1)): float(m.group(3)) for m in _ET_ITERATION.finditer(text)}
    if not iterations:
        raise ToolError("executor_runner printed only a total time, no per-iteration lines ('Iteration i of n: t ms')"
                        "; build executor_runner from a recent ExecuTorch to get latency percentiles")
    ordered = [iterations[i] for i in sorted(iterations)]
    if len(ordered) <= warmup:
        raise ToolError(f"executor_runner printed {len(ordered)} iteration(s), not more than the {warmup} warm-up runs")
    loaded = _ET_LOADED.search(text)
    stats = latency_summary(ordered[warmup:])
    return RunnerStats(
        **stats,
        init_ms=float(loaded.group(1)) if loaded else None,
        first_run_ms=ordered[0],
        notes=("latency: executor_runner's per-iteration execute() time on the device (inputs set to ones)",
               "memory: not reported by executor_runner"),
    )


# ---- TFLite / LiteRT benchmark_model --------------------------------------------------------------------------------
# "count=50 first=1234 curr=1100 min=1000 max=1500 avg=1111.1 std=80 [p5=... median=... p95=...]" (microseconds),
# printed once for the warm-up runs and once for the timed runs.
_BM_STAT = re.compile(r"count=(\d+)((?:\s+\w+=[-+\d.eE]+)+)")
_BM_TIMINGS = re.compile(r"Inference timings in us: (.*)")
_BM_MEMORY_DELTA = re.compile(rf"(?:Memory footprint delta from the start of the tool|Peak memory footprint) \(MB\): "
                              rf"init={_NUMBER} overall={_NUMBER}")
_BM_PEAK = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: {_NUMBER}")


def parse_benchmark_model(text: str) -> RunnerStats:
    """Stats from benchmark_model's summary lines.

    benchmark_model prints count/first/min/max/avg/std (and, in recent builds, p5/median/p95) but no per-run times,
    so p90 and p99 cannot be computed. They are filled with the closest statistic that bounds them from above (p95
    for p90, max for p99) and a note says so: a latency gate on them can only be stricter than the truth.
    """
    timings = _BM_TIMINGS.search(text)
    stats = [_fields(m.group(2)) | {"count": float(m.group(1))} for m in _BM_STAT.finditer(text)]
    stats = [s for s in stats if {"min", "max", "avg"} <= s.keys()]
    if timings is None or not stats:
        raise ToolError("benchmark_model output has no timing summary ('Inference timings in us: ...'); "
                        f"last output line: {_last_line(text)}")
    summary = _timings(timings.group(1))
    timed = stats[-1]  # the warm-up summary comes first, the timed runs last
    notes = ["latency: benchmark_model's per-invoke time on the device (random inputs)"]
    us = 1e-3
    if "median" in timed:
        p50 = timed["median"] * us
    else:
        raise ToolError("benchmark_model printed no median ('median=' in its 'count=...' line); "
                        "use a recent TFLite/LiteRT benchmark_model build")
    if "p95" in timed:
        p90 = timed["p95"] * us
        notes.append("p90 is benchmark_model's p95 (it prints no p90; p95 bounds it from above)")
    else:
        p90 = timed["max"] * us
        notes.append("p90 is benchmark_model's max (it prints no p90 or p95)")
    notes.append("p99 is benchmark_model's max (it prints no p99; max bounds it from above)")

    peak = _BM_PEAK.search(text)
    delta = _BM_MEMORY_DELTA.search(text)
    if delta:
        notes.append("memory: benchmark_model's max-RSS growth from tool start (init and runs); peak: periodic "
                     "monitoring of the whole tool process")
    else:
        notes.append("memory: not reported by this benchmark_model build")
    return RunnerStats(
        runs=int(timed["count"]),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=timed["max"] * us,
        mean_ms=timed["avg"] * us,
        std_ms=timed.get("std", 0.0) * us,
        min_ms=timed["min"] * us,
        max_ms=timed["max"] * us,
        init_ms=summary["Init"] * us if "Init" in summary else None,
        first_run_ms=summary["First inference"] * us if "First inference" in summary else None,
        peak_rss_bytes=int(float(peak.group(1)) * _MIB) if peak else None,
        peak_over_baseline_bytes=int(float(delta.group(2)) * _MIB) if delta else None,
        notes=tuple(notes),
    )


# ---- shared ---------------------------------------------------------------------------------------------------------
def _fields(text: str) -> dict[str, float]:
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-+\d.eE]+)", text)}


def _timings(text: str) -> dict[str, float]:
    """ "Init: 1234, First inference: 567, Warmup (avg): 123.4, Inference (avg): 111.1" -> {name: value}."""
    out = {}
    for part in text.split(","):
        name, _, value = part.partition(":")
        try:
            out[name.strip()] = float(value.strip())
        except ValueError:
            continue
    return out


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"
