"""Latency verdicts too close to call, measured again before the report is written.

A build times each artifact in one measuring child process. When a latency budget's interval from those runs
straddles the limit, the artifact is timed again in `EXTRA_PROCESSES` fresh child processes of `RUNS_FACTOR` times the
runs each; the runs of all its processes are pooled (Measurement.process_runs says how many each ran) and the verdict
is judged again, now by the two-level bootstrap over processes and runs (gates.noise_aware). On a shared machine one
process may run up to twice as slow as the next from start to end, so a verdict can only be trusted once several
processes agree. Still undecided, it fails with that reason unless --latency-tolerance says otherwise.

A definite fail from one process is re-measured the same way when the observed figure is within FAIL_REACH times the
limit: the interval of one process knows nothing of the next, and on the development machine 15 % of the processes
ran slow enough to fail an unchanged artifact with 25 % headroom outright (README, Gating in CI). A fail further over
the limit, and any clear pass, is not measured again.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, ContextManager, Sequence

from edgepack.records import FAIL, TOO_CLOSE, Measurement, Report

if TYPE_CHECKING:
    import numpy as np

    from edgepack.measure import Measurer

EXTRA_PROCESSES = 2  # fresh measuring children added to a verdict too close to call
RUNS_FACTOR = 2  # each of them times this many times the build's --runs
# a one-process fail is re-measured when observed <= this x the limit: between processes, one unchanged artifact's p50
# differed up to 2.2x here and its p90 up to 2.5x (a model with a heavy tail: its p90 far more, and only more runs help)
FAIL_REACH = 2.5

StageFn = Callable[[str], ContextManager[None]]


def undecided(report: Report, fails: bool = True) -> list[str]:
    """The artifacts (in report order), measured in one process only, with a latency verdict too close to call or
    (`fails`) a fail within FAIL_REACH of the limit."""
    names = {v.artifact for v in report.verdicts if v.metric == "latency" and (
        v.status == TOO_CLOSE or (fails and v.status == FAIL and v.observed is not None
                                  and v.observed <= FAIL_REACH * v.limit))}
    return [m.artifact for m in report.measurements
            if m.artifact in names and len(m.process_runs) <= 1 and len(m.samples_ms) >= 2]


def remeasure_close_calls(report: Report, measurer: "Measurer", inputs: Sequence["np.ndarray"],
                          stage: StageFn = lambda text: contextlib.nullcontext(),
                          extra_processes: int = EXTRA_PROCESSES, runs_factor: int = RUNS_FACTOR,
                          fails: bool = True) -> Report:
    """The report with every artifact whose latency verdict was too close to call (or, with `fails`, failed within
    FAIL_REACH of the limit) timed again in `extra_processes` fresh children (`runs_factor` x the runs of its first
    process each), its runs pooled, and the verdicts judged again (the report's verdicts must be those gates.judge
    gives it: they are judged anew). A report with no such verdict comes back unchanged (nothing is measured)."""
    from edgepack.gates import judge
    from edgepack.measure import pool_measurements

    names = undecided(report, fails)
    if not names:
        return report
    measured = {m.artifact: m for m in report.measurements}
    why = {v.artifact: "too close to call" if v.status == TOO_CLOSE else "a fail"
           for v in report.verdicts if v.metric == "latency" and v.artifact in names}
    for name in names:
        first = measured[name]
        artifact = report.artifact(name)
        runs = max(2, first.runs * runs_factor)
        rounds: list[Measurement] = [first]
        for i in range(1, extra_processes + 1):
            with stage(f"{name}: latency verdict {why[name]} after one process, re-measuring in a fresh process "
                       f"({i}/{extra_processes}, {runs} runs)"):
                rounds.append(measurer.measure(artifact, inputs, runs=runs))
        if any(len(m.samples_ms) < 2 for m in rounds[1:]):  # a runner that printed only a summary: nothing to pool
            continue
        measured[name] = pool_measurements(rounds, (
            f"re-measured: after 1 process of {first.runs} runs its latency verdict was {why[name]}, so "
            f"{extra_processes} more fresh processes of {runs} runs each were pooled with it ({len(rounds)} processes, "
            f"{sum(len(m.samples_ms) for m in rounds)} runs); init, first run and memory are the processes' medians"))
    updated = replace(report, measurements=tuple(measured[m.artifact] for m in report.measurements))
    return replace(updated, verdicts=tuple(judge(updated)))
