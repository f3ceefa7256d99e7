"""Summary statistics of latency samples, shared by the host harness and the phone runners' output parsers."""

from __future__ import annotations

from typing import Sequence


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile of already sorted samples."""
    if not sorted_samples:
        raise ValueError("no samples")
    pos = (len(sorted_samples) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(sorted_samples) - 1)
    return float(sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * (pos - lo))


def std(samples: Sequence[float]) -> float:
    mean = sum(samples) / len(samples)
    return (sum((s - mean) ** 2 for s in samples) / max(1, len(samples) - 1)) ** 0.5
