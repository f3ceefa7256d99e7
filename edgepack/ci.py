"""What `build` and `check` do for a CI job beside judging budgets: the regression gate against a baseline report,
JUnit XML, the GitHub Actions step summary and the build history.

`prepare` runs every check that needs no build before any work (a bad baseline, threshold, --junit or --history path
exits 2 in milliseconds); `regression_verdicts` is judged inside the build, before its report is written,
and `write_outputs` runs once the report is final.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from edgepack.errors import UsageError, one_line
from edgepack.records import Report, Verdict
from edgepack.regression import Threshold, check_comparable, compare, parse_max_regression

WarnFn = Callable[[str], None]


@dataclass(frozen=True)
class CiRequest:
    """The CI options as given (None: not given)."""

    baseline: Optional[Path] = None
    max_regression: Optional[str] = None
    junit: Optional[Path] = None
    history: Optional[Path] = None


@dataclass(frozen=True)
class CiPlan:
    baseline: Optional[Report] = None
    baseline_path: Optional[Path] = None
    thresholds: tuple[Threshold, ...] = ()
    junit: Optional[Path] = None
    history: Optional[Path] = None


def prepare(request: CiRequest, target: Optional[str] = None) -> CiPlan:
    """Check the CI options and read the baseline. `target`: the target a build is for, known before it runs."""
    from edgepack.report.reading import read_report

    if request.max_regression is not None and request.baseline is None:
        raise UsageError("--max-regression needs --baseline BASE.json (the report to compare against)")
    if request.baseline is not None and request.max_regression is None:
        raise UsageError("--baseline needs --max-regression: how much worse a metric may get, e.g. 10% or "
                         "latency=10%,size=5%")
    thresholds = parse_max_regression(request.max_regression) if request.max_regression is not None else ()
    baseline = read_report(request.baseline, "baseline") if request.baseline is not None else None
    if baseline is not None and target is not None and baseline.target != target:
        raise UsageError(f"{request.baseline}: the baseline was built for target {baseline.target!r} and this build "
                         f"is for {target!r}; compare builds of one target")
    if request.junit is not None:
        check_writable_file(request.junit, "--junit")
    if request.history is not None:
        from edgepack.history import check_history_file

        check_history_file(request.history)
    return CiPlan(baseline, request.baseline, thresholds, request.junit, request.history)


def regression_verdicts(report: Report, plan: CiPlan) -> list[Verdict]:
    """The regression gate's verdicts (none without a baseline); a baseline of another model or target exits 2."""
    if plan.baseline is None:
        return []
    name = str(plan.baseline_path)
    check_comparable(report, plan.baseline, name)
    return compare(report, plan.baseline, plan.thresholds, name)


def write_outputs(report: Report, verdicts: Sequence[Verdict], plan: CiPlan, command: str, warn: WarnFn) -> None:
    """JUnit (--junit), the step summary ($GITHUB_STEP_SUMMARY) and the history (--history), as asked."""
    if plan.junit is not None:
        from edgepack.report.junit import write_junit

        write_junit(report, verdicts, plan.junit, command)
    from edgepack.report.step_summary import append_step_summary, summary_markdown

    try:
        append_step_summary(summary_markdown(report, verdicts, command))
    except OSError as exc:  # the summary is a courtesy to the CI page; the verdicts and exit code stand without it
        warn(f"could not append to $GITHUB_STEP_SUMMARY: {one_line(exc)}")
    if plan.history is not None:
        from edgepack.history import git_info, record

        try:
            record(plan.history, report, verdicts, git_info())
        except sqlite3.Error as exc:
            raise UsageError(f"--history {plan.history}: could not record this build ({one_line(exc)})") from None


def check_writable_file(path: Path, option: str) -> None:
    """A file that can be written once the build is done: its directory exists or can be created (it may be the
    build's own --out, made later)."""
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory; name a file")
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: {existing} is not a writable directory; choose a writable path")
