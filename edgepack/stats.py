"""Statistics of latency samples: summaries shared by the host harness and the phone runners' output parsers, and the
confidence intervals the latency gates judge by.

The measuring child imports this module, so nothing heavy is imported at the top (numpy only inside the bootstrap).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
QUANTILE_OF_STAT = {"p50": 50.0, "p90": 90.0, "p99": 99.0}


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


def latency_summary(samples: Sequence[float]) -> dict[str, Any]:
    """The fields that summarise latency runs (runs, p50/p90/p99, mean, std, min, max), in ms: a Measurement's and
    a phone runner's alike."""
    ordered = sorted(float(s) for s in samples)
    return {"runs": len(ordered), "p50_ms": percentile(ordered, 50), "p90_ms": percentile(ordered, 90),
            "p99_ms": percentile(ordered, 99), "mean_ms": sum(ordered) / len(ordered), "std_ms": std(ordered),
            "min_ms": ordered[0], "max_ms": ordered[-1]}


@dataclass(frozen=True)
class Interval:
    """A confidence interval of one statistic of the samples."""

    low: float
    high: float
    confidence: float
    method: str


def interval(samples: Sequence[float], stat: str, confidence: float = CONFIDENCE) -> Interval:
    """The `confidence` interval of `stat` (p50, p90, p99 or mean) of the samples.

    Percentiles get the distribution-free interval between two order statistics when the samples are enough for one
    at this confidence (at 95 %: p50 needs 6 runs, p90 36, p99 368); otherwise, and for the mean, a seeded percentile
    bootstrap, which is always defined but trusts few samples more than they deserve (the method says which).
    """
    if len(samples) < 2:
        raise ValueError("an interval needs at least two samples")
    ordered = sorted(samples)
    q = QUANTILE_OF_STAT.get(stat)
    if q is not None:
        bounds = order_statistic_bounds(len(ordered), q / 100.0, confidence)
        if bounds is not None:
            return Interval(float(ordered[bounds[0]]), float(ordered[bounds[1]]), confidence,
                            f"order statistics, {len(ordered)} runs")
        why = f"{len(ordered)} runs are too few for a distribution-free bound of {stat}"
    elif stat == "mean":
        why = f"{len(ordered)} runs"
    else:
        raise ValueError(f"unknown latency statistic {stat!r}")
    low, high = bootstrap_interval(ordered, stat, confidence)
    return Interval(low, high, confidence, f"bootstrap ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}; "
                                           f"{why})")


@functools.lru_cache(maxsize=256)  # one binomial table per (runs, quantile, confidence), not per verdict
def order_statistic_bounds(n: int, q: float, confidence: float) -> Optional[tuple[int, int]]:
    """0-based indices (l, u) into n sorted samples with P(x_(l) <= true q-quantile < x_(u)) >= confidence, for any
    continuous distribution; None when n samples cannot give such bounds.

    The number of samples below the true quantile is Binomial(n, q): the lower index is the largest whose binomial
    tail below it is at most (1 - confidence) / 2, the upper index the smallest whose cumulative reaches
    1 - (1 - confidence) / 2.
    """
    tail = (1.0 - confidence) / 2.0
    cdf = _binomial_cdf(n, q)  # cdf[k] = P(B <= k)
    lower = [k for k in range(1, n + 1) if cdf[k - 1] <= tail]  # 1-based order statistic k: P(B < k) <= tail
    upper = [k for k in range(1, n + 1) if cdf[k - 1] >= 1.0 - tail]
    if not lower or not upper:
        return None
    return lower[-1] - 1, upper[0] - 1


def _binomial_cdf(n: int, p: float) -> list[float]:
    """P(B <= k) for k = 0..n, B ~ Binomial(n, p), through log-probabilities (no overflow for large n)."""
    log_p, log_q = math.log(p), math.log1p(-p)
    total, out = 0.0, []
    for k in range(n + 1):
        log_pmf = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q
        total += math.exp(log_pmf)
        out.append(min(total, 1.0))
    return out


def bootstrap_interval(samples: Sequence[float], stat: str, confidence: float,
                       resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile-bootstrap interval of `stat`, seeded so the same samples always give the same verdict."""
    import numpy as np

    data = np.asarray(samples, dtype=float)
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // len(data))  # resamples per batch: tens of MB at most, even for 100k runs
    values = []
    for start in range(0, resamples, chunk):
        draws = data[rng.integers(0, len(data), size=(min(chunk, resamples - start), len(data)))]
        values.append(draws.mean(axis=1) if stat == "mean" else np.percentile(draws, QUANTILE_OF_STAT[stat], axis=1))
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.concatenate(values), [tail, 1.0 - tail])
    return float(low), float(high)


def median_of_medians(rounds: Sequence[Sequence[float]]) -> float:
    """The median of each round's median: one slow round (a process that ran slow throughout) cannot move it."""
    return percentile(sorted(percentile(sorted(r), 50) for r in rounds), 50)


def median_ratio_interval(a_rounds: Sequence[Sequence[float]], b_rounds: Sequence[Sequence[float]],
                          confidence: float = CONFIDENCE, resamples: int = BOOTSTRAP_RESAMPLES,
                          seed: int = BOOTSTRAP_SEED) -> Interval:
    """The `confidence` interval of median_of_medians(B) / median_of_medians(A) for two artifacts timed in
    interleaved rounds (round i of A and of B ran one after the other, each in its own process).

    A two-level seeded bootstrap: rounds are drawn with replacement, the same round indices for A and B (so a slow
    spell of the machine moves both), then runs within each drawn round. Process-to-process variation between rounds
    widens the interval, as it should: the runs of one process are not independent of each other.
    """
    import numpy as np

    if len(a_rounds) != len(b_rounds) or not a_rounds:
        raise ValueError("both artifacts need the same number of rounds, at least one")
    if any(len(r) < 1 for r in (*a_rounds, *b_rounds)):
        raise ValueError("every round needs at least one run")
    a = [np.asarray(r, dtype=float) for r in a_rounds]
    b = [np.asarray(r, dtype=float) for r in b_rounds]
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, len(a), size=(resamples, len(a)))  # the rounds each resample draws, shared by A and B

    def medians(rounds: list[Any]) -> Any:
        """Per resample, the median over its drawn rounds of a fresh resample of each drawn round's runs."""
        out = np.empty(picked.shape)
        for k, runs in enumerate(rounds):
            where = picked == k
            out[where] = np.median(runs[rng.integers(0, len(runs), size=(int(where.sum()), len(runs)))], axis=1)
        return np.median(out, axis=1)

    ratios = medians(b) / medians(a)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(ratios, [tail, 1.0 - tail])
    return Interval(float(low), float(high), confidence,
                    f"two-level bootstrap over {len(a)} rounds and their runs ({resamples} resamples, seed {seed})")


def split_runs(samples: Sequence[float], process_runs: Sequence[int]) -> list[list[float]]:
    """The pooled `samples` cut back into the runs of each measuring process (`process_runs`: how many each ran)."""
    if sum(process_runs) != len(samples) or any(n < 1 for n in process_runs):
        raise ValueError(f"{len(samples)} samples cannot be the runs of processes of {list(process_runs)} runs")
    out, start = [], 0
    for n in process_runs:
        out.append(list(samples[start:start + n]))
        start += n
    return out


def pooled_interval(rounds: Sequence[Sequence[float]], stat: str, confidence: float = CONFIDENCE,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Interval:
    """The `confidence` interval of `stat` (p50, p90, p99 or mean) of the runs of several measuring processes pooled.

    The same two-level seeded bootstrap as median_ratio_interval: processes are drawn with replacement, then runs
    within each drawn process, and the statistic is taken over the drawn runs pooled. A process is the unit of
    replication: on a shared machine one process may run slow from start to end, so its runs are not independent
    draws, and an interval from runs pooled as if they were (order statistics) would be far too narrow.
    """
    import numpy as np

    if len(rounds) < 2:
        raise ValueError("a pooled interval needs at least two processes; use interval() for one")
    if any(len(r) < 1 for r in rounds):
        raise ValueError("every process needs at least one run")
    if stat != "mean" and stat not in QUANTILE_OF_STAT:
        raise ValueError(f"unknown latency statistic {stat!r}")
    data = [np.asarray(r, dtype=float) for r in rounds]
    rng = np.random.default_rng(seed)
    picked = rng.integers(0, len(data), size=(resamples, len(data)))  # the processes each resample draws
    values = np.empty(resamples)
    for i, row in enumerate(picked):
        drawn = np.concatenate([data[k][rng.integers(0, len(data[k]), size=len(data[k]))] for k in row])
        values[i] = drawn.mean() if stat == "mean" else np.percentile(drawn, QUANTILE_OF_STAT[stat])
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    runs = "+".join(str(len(r)) for r in rounds)
    return Interval(float(low), float(high), confidence,
                    f"two-level bootstrap over {len(rounds)} measuring processes and their runs ({runs}; "
                    f"{resamples} resamples, seed {seed})")
