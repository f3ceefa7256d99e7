"""Budgets against records: pure functions, so `edgepack check` re-judges a saved report without re-running."""

from __future__ import annotations

from typing import Optional, Sequence

from edgepack.records import Accuracy, Artifact, Budget, Measurement, Report, Verdict



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
            observed, reason = observe(budget, artifact, report.measurements, report.accuracy,
                                       [p.name for p in report.model.passes])
            verdicts.append(_verdict(budget, artifact.name, observed, reason))
    return verdicts


def observe(budget: Budget, artifact: Artifact, measurements: Sequence[Measurement],
            accuracy: Sequence[Accuracy], compression_passes: Sequence[str] = ()) -> tuple[Optional[float], str]:
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
        return _accuracy_drop(artifact, accuracy, compressed=bool(compression_passes))
    return None, f"unknown budget metric {budget.metric!r}"


def _accuracy_drop(artifact: Artifact, accuracy: Sequence[Accuracy], compressed: bool) -> tuple[Optional[float], str]:
    """Top-1 drop against the true original: the uncompressed model when compression ran (in this build or before
    it, in `edgepack compress`), else the eager model as given. A compressed model whose original could not be
    evaluated on the same data fails the budget rather than being judged against itself."""
    got = next((a for a in accuracy if a.artifact == artifact.name), None)
    ref = next((a for a in accuracy if a.artifact == "original"), None)
    if ref is None and not compressed:
        ref = next((a for a in accuracy if a.artifact == "eager"), None)
    if got is None or (ref is None and not compressed):
        return None, "accuracy was not evaluated (pass --eval DATA)"
    if ref is None:
        return None, ("the model was compressed before this build and its uncompressed original's accuracy on this "
                      "data is unknown (the original could not be re-loaded); see the report's warnings")
    if ref.score is None or got.score is None:
        return None, (f"an accuracy drop is defined for top-1, mean IoU and cosine; this model is judged by "
                      f"{got.metric}, which has none")
    return (ref.score - got.score) * 100.0, ""


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
