"""The one timing loop every benchmark script uses, so their figures compare."""

from __future__ import annotations

import statistics
import time
from typing import Callable


def time_p50(fn: Callable[[], object], runs: int, warmup: int = 10) -> float:
    """Median wall time of `fn` in milliseconds over `runs` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)
