"""Parsing budgets as users write them ("100MB", "20ms", "1pp") into Budget records, and merging them."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Iterable, Mapping, Optional

from edgepack.errors import UsageError
from edgepack.records import Budget

SIZE_UNITS = {
    "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3,
    "KIB": 1024, "MIB": 1024**2, "GIB": 1024**3,
}
TIME_UNITS = {"US": 1e-3, "MS": 1.0, "S": 1000.0}
ACCURACY_UNITS = {"PP": 1.0, "%": 1.0}
LATENCY_STATS = ("p50", "p90", "p99", "mean")
# a sign is accepted here only so that "-5MB" is refused as negative rather than as unreadable
NUMBER_UNIT = re.compile(r"^\s*([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z%]*)\s*$")
MAX_ACCURACY_DROP_PP = 100.0  # top-1 cannot drop by more than 100 percentage points

# metric -> (unit of the limit, accepted unit table, how to write it)
METRICS: dict[str, tuple[str, Mapping[str, float], str]] = {
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
    if not str(text).strip():
        raise UsageError(f"{option} is empty; give a number with a unit ({how}), or leave the option out")
    match = NUMBER_UNIT.match(str(text))
    if not match:
        raise UsageError(f"{option} {text!r} is not a number with a unit; use {how}")
    number, suffix = float(match.group(1)), match.group(2).upper()
    if not suffix:
        raise UsageError(f"{option} {text!r} has no unit; use {how}")
    if suffix not in table:
        raise UsageError(f"{option} {text!r}: unknown unit {match.group(2)!r}; use {how}")
    limit = number * table[suffix]
    if not math.isfinite(limit):  # 1e999GB parses as infinity, which strict JSON cannot hold
        raise UsageError(f"{option} {text!r} is too large to be a limit (not a finite number); use {how}")
    if metric == "accuracy_drop":
        if limit < 0:
            raise UsageError(f"{option} {text!r} is negative; use 0pp (no drop allowed) or more, e.g. 1pp")
        if limit > MAX_ACCURACY_DROP_PP:
            raise UsageError(f"{option} {text!r}: top-1 accuracy cannot drop by more than 100 percentage points; "
                             f"use a value from 0pp to 100pp, e.g. 1pp")
    elif limit <= 0:
        raise UsageError(f"{option} {text!r} must be greater than zero; use {how}")
    if metric == "latency":
        stat = stat or "p90"
        if stat not in LATENCY_STATS:
            raise UsageError(f"latency statistic {stat!r} is unknown; use one of {', '.join(LATENCY_STATS)}")
    name = f"{metric}" + (f" ({stat})" if stat else "")
    return Budget(name=name, metric=metric, limit=limit, unit=unit, text=str(text).strip(), stat=stat)


def merge_budgets(defaults: list[Budget], given: list[Budget]) -> list[Budget]:
    """Budgets given on the command line replace the target's default for the same metric."""
    given_metrics = {b.metric for b in given}
    return [b for b in defaults if b.metric not in given_metrics] + given


def optional_budget(metric: str, text: Optional[str], stat: str = "") -> list[Budget]:
    """None means the option was not given; anything else, the empty string included, must parse."""
    return [] if text is None else [parse_budget(metric, text, stat)]


TOLERANCE_FORMS = "fail (the default), pass, or a percentage such as 5%"


def parse_latency_tolerance(text: str) -> str:
    """`--latency-tolerance`: what a latency verdict too close to call becomes. "fail" fails it; "pass" passes it;
    "N%" passes it when the interval's upper end is at most N % above the limit. Returned normalised ("5%")."""
    value = str(text).strip().lower()
    if value in ("fail", "pass"):
        return value
    match = NUMBER_UNIT.match(value)
    if not match or match.group(2) != "%":
        raise UsageError(f"--latency-tolerance {text!r}: use {TOLERANCE_FORMS}")
    number = float(match.group(1))
    if not math.isfinite(number) or not 0 < number <= 100:
        raise UsageError(f"--latency-tolerance {text!r}: a percentage above 0% and at most 100%, e.g. 5%")
    return f"{number:g}%"


def tolerance_fraction(tolerance: str) -> Optional[float]:
    """How far above the limit (a fraction) a verdict too close to call may reach and pass; None: it fails;
    infinity: it passes. `tolerance` is what parse_latency_tolerance returned ("" means fail)."""
    if tolerance in ("", "fail"):
        return None
    if tolerance == "pass":
        return math.inf
    return float(tolerance.rstrip("%")) / 100.0


def with_latency_tolerance(budgets: Iterable[Budget], tolerance: Optional[str]) -> list[Budget]:
    """The budgets with `tolerance` (as the user wrote it) on each latency budget; None leaves them as they are."""
    budgets = list(budgets)
    if tolerance is None:
        return budgets
    parsed = parse_latency_tolerance(tolerance)
    if not any(b.metric == "latency" for b in budgets):
        raise UsageError(f"--latency-tolerance {tolerance} applies to latency budgets and there is none; add "
                         f"--max-latency TIME or drop --latency-tolerance")
    return [replace(b, tolerance=parsed) if b.metric == "latency" else b for b in budgets]
