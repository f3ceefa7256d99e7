"""Synthetic reports for the CI gates' tests: one shipped int8 artifact whose latency samples, size, memory and
accuracy each test sets, and noisy latency samples with a known true distribution."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgepack.records import Accuracy, Artifact, Measurement, Provenance, Report, TensorSpec
from edgepack.stats import percentile

SIGMA = 0.15  # log-normal spread of the simulated latencies: a p90/p50 of 1.21, like a noisy shared runner
Z90 = 1.2815515655446004  # the standard normal's 0.9 quantile


def latencies(rng: np.random.Generator, n: int, median_ms: float = 1.0, sigma: float = SIGMA) -> list[float]:
    """n log-normal latencies with the given true median."""
    return list(median_ms * np.exp(rng.normal(0.0, sigma, n)))


def true_p90(median_ms: float = 1.0, sigma: float = SIGMA) -> float:
    return median_ms * math.exp(sigma * Z90)


def measurement(artifact: str, samples: Sequence[float], peak: Optional[int] = 10_000_000) -> Measurement:
    s = sorted(samples)
    return Measurement(artifact, "rt", "host x86_64 (cpu)", "cpu", 1, 10, len(s), percentile(s, 50),
                       percentile(s, 90), percentile(s, 99), sum(s) / len(s), 0.0, s[0], s[-1], 1.0, 1.0,
                       60_000_000, 50_000_000, peak, samples_ms=tuple(samples))


def report(samples: Sequence[float] = (1.0, 1.1, 0.9), size: int = 1000, peak: Optional[int] = 10_000_000,
           top1: Optional[float] = 0.95, target: str = "x86-cpu", model: str = "tiny",
           version: str = "0.1.0") -> Report:
    prov = Provenance(f"zoo:{model}", "zoo", model, "tensor", 10, 100, ((1, 1, 8, 8),))
    spec = (TensorSpec("input", (1, 1, 8, 8), "float32"),)
    art = Artifact("rt-int8", "x-int8.onnx", "onnx", "rt", "int8", size, "b" * 64, spec, spec)
    accuracy = () if top1 is None else (Accuracy("eager", "held-out", 100, 0.96),
                                        Accuracy("rt-int8", "held-out", 100, top1))
    return Report(version, "2026-01-01T00:00:00+00:00", target, "out", prov, shipping=("rt-int8",),
                  artifacts=(art,), measurements=(measurement("rt-int8", samples, peak),), accuracy=accuracy)


def write(report_: Report, path: Path) -> Path:
    path.write_text(report_.to_json())
    return path


def with_samples(report_dict: dict, samples_of: dict[str, Sequence[float]]) -> dict:
    """A report.json (as a dict) whose measurements carry these samples, summaries recomputed from them."""
    data = json.loads(json.dumps(report_dict))
    for m in data["measurements"]:
        if m["artifact"] in samples_of:
            fresh = measurement(m["artifact"], samples_of[m["artifact"]], m["peak_over_baseline_bytes"])
            m.update({k: v for k, v in fresh.to_dict().items() if k not in ("artifact", "runtime", "where", "cpu",
                                                                          "peak_rss_bytes", "baseline_rss_bytes",
                                                                          "versions", "notes")})
    return data


def scaled(report_: Report, factor: float) -> Report:
    """The report with every latency sample multiplied by `factor`."""
    return replace(report_, measurements=tuple(measurement(m.artifact, [s * factor for s in m.samples_ms],
                                                           m.peak_over_baseline_bytes)
                                               for m in report_.measurements))
