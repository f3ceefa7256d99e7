"""Parsing budgets as users write them ("100MB", "20ms", "1pp") into Budget records, and merging them."""

from __future__ import annotations

import re
from typing import Optional

from edgepack.errors import UsageError
from edgepack.records import Budget

SIZE_UNITS = {
    "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
    "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3,
}
TIME_UNITS = {"US": 1e-3, "MS": 1.0, "S": 1000.0}
ACCURACY_UNITS = {"PP": 1.0, "%": 1.0}
LATENCY_STATS = ("p50", "p90", "p99", "mean")
_NUMBER_UNIT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z%]*)\s*$")

# metric -> (unit of the limit, accepted unit table, how to write it)
METRICS = {
    "size": ("bytes", SIZE_UNITS, "B, KB, MB, GB, KiB, MiB or GiB, e.g. 100MB"),
    "latency": ("ms", TIME_UNITS, "us, ms or s, e.g. 20ms"),
    "memory": ("bytes", SIZE_UNITS, "B, KB, MB, GB, KiB, MiB or GiB, e.g. 200MiB"),
    "accuracy_drop": ("pp", ACCURACY_UNITS, "pp or %, e.g. 1pp (percentage points of top-1)"),
}
OPTION_OF_METRIC = {"size": "--budget", "latency": "--max-latency", "memory": "--max-memory",
                    "accuracy_drop": "--max-accuracy-drop"}


def parse_budget(metric: str, text: str, stat: str = "") -> Budget:
    """`parse_budget("size", "1MB")` -> Budget(limit=1e6, unit="bytes"). Raises UsageError naming valid units."""
    unit, table, how = METRICS[metric]
    option = OPTION_OF_METRIC[metric]
    match = _NUMBER_UNIT.match(str(text))
    if not match:
        raise UsageError(f"{option} {text!r} is not a number with a unit; use {how}")
    number, suffix = float(match.group(1)), match.group(2).upper()
    if not suffix:
        raise UsageError(f"{option} {text!r} has no unit; use {how}")
    if suffix not in table:
        raise UsageError(f"{option} {text!r}: unknown unit {match.group(2)!r}; use {how}")
    if number <= 0 and metric != "accuracy_drop":
        raise UsageError(f"{option} {text!r} must be greater than zero")
    if metric == "latency":
        stat = stat or "p90"
        if stat not in LATENCY_STATS:
            raise UsageError(f"latency statistic {stat!r} is unknown; use one of {', '.join(LATENCY_STATS)}")
    name = f"{metric}" + (f" ({stat})" if stat else "")
    return Budget(name=name, metric=metric, limit=number * table[suffix], unit=unit, text=str(text).strip(), stat=stat)



def merge_budgets(defaults: list[Budget], given: list[Budget]) -> list[Budget]:
    """Budgets given on the command line replace the target's default for the same metric."""
    given_metrics = {b.metric for b in given}
    return [b for b in defaults if b.metric not in given_metrics] + given


def optional_budget(metric: str, text: Optional[str], stat: str = "") -> list[Budget]:
    return [parse_budget(metric, text, stat)] if text else []
