"""Budgets against records: pure functions, so `edgepack check` re-judges a saved report without re-running."""

from __future__ import annotations

from typing import Optional, Sequence

from edgepack.records import Accuracy, Artifact, Budget, Measurement, Report, Verdict

# Accuracy drops are measured against the model the user gave: "original" (before compression passes) when passes
# ran in the build, otherwise "eager" (the same model in PyTorch).
REFERENCE_ACCURACY = ("original", "eager")


def delegation_budget() -> Budget:
    """`--require-full-delegation`: any node left outside the accelerated delegate fails."""
    return Budget(name="full delegation", metric="delegation", limit=0, unit="nodes", text="0 fallback nodes")


def every_runtime_budget() -> Budget:
    """A runtime that failed fails the build (exit 3) unless partial results were accepted (--allow-partial)."""
    return Budget(name="every runtime builds", metric="runtimes", limit=0, unit="failed", text="0 failed runtimes")


def judge(report: Report, budgets: Optional[Sequence[Budget]] = None) -> list[Verdict]:
    """One verdict per (budget, shipping artifact). Budgets default to those saved in the report."""
    budgets = report.budgets if budgets is None else budgets
    shipping = [a for a in report.artifacts if a.name in report.shipping] or list(report.artifacts)
    verdicts = []
    for budget in budgets:
        if budget.metric == "runtimes":
            verdicts += [_verdict(budget, f"{f.runtime} (failed at {f.stage})", 1.0, f.reason)
                         for f in report.failures]
            continue
        for artifact in shipping:
            observed, reason = observe(budget, artifact, report.measurements, report.accuracy)
            verdicts.append(_verdict(budget, artifact.name, observed, reason))
    return verdicts


def observe(budget: Budget, artifact: Artifact, measurements: Sequence[Measurement],
            accuracy: Sequence[Accuracy]) -> tuple[Optional[float], str]:
    """The observed value a budget checks, or None and why it is missing."""
    if budget.metric == "size":
        return float(artifact.size_bytes), ""
    if budget.metric == "delegation":
        if artifact.delegation is None:
            return None, f"{artifact.runtime} reports no delegation"
        return float(artifact.delegation.fallback_nodes), ""
    if budget.metric in ("latency", "memory"):
        m = next((m for m in measurements if m.artifact == artifact.name), None)
        if m is None:
            return None, "not measured in this run"
        if budget.metric == "latency":
            return m.latency_ms(budget.stat or "p90"), ""
        if m.peak_over_baseline_bytes is None:
            return None, "the runner reports no peak memory"
        return float(m.peak_over_baseline_bytes), ""
    if budget.metric == "accuracy_drop":
        ref = next((a for name in REFERENCE_ACCURACY for a in accuracy if a.artifact == name), None)
        got = next((a for a in accuracy if a.artifact == artifact.name), None)
        if ref is None or got is None:
            return None, "accuracy was not evaluated (pass --eval DATA)"
        return (ref.top1 - got.top1) * 100.0, ""
    return None, f"unknown budget metric {budget.metric!r}"


def _verdict(budget: Budget, artifact: str, observed: Optional[float], reason: str) -> Verdict:
    if observed is None:
        # a budget that cannot be checked is not met: CI must not pass on a missing number
        return Verdict(budget.name, budget.metric, artifact, budget.limit, None, budget.unit, None, False, reason)
    margin = budget.limit - observed
    return Verdict(budget.name, budget.metric, artifact, budget.limit, observed, budget.unit, margin, margin >= 0,
                   reason)


def format_value(value: Optional[float], unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "bytes":
        for step, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
            if abs(value) >= step:
                return f"{value / step:.2f} {suffix}"
        return f"{value:.0f} B"
    if unit == "ms":
        return f"{value:.3f} ms" if abs(value) < 10 else f"{value:.1f} ms"
    if unit == "pp":
        return f"{value:.2f} pp"
    return f"{value:g} {unit}"


def describe_failure(v: Verdict) -> str:
    if v.metric == "runtimes":
        return f"{v.artifact}: {v.reason}"
    if v.observed is None:
        return f"{v.budget} [{v.artifact}]: not checked — {v.reason}"
    return (f"{v.budget} [{v.artifact}]: observed {format_value(v.observed, v.unit)} > limit "
            f"{format_value(v.limit, v.unit)} (over by {format_value(-(v.margin or 0), v.unit)})")
