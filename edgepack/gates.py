"""Budgets against records: pure functions, so `edgepack check` re-judges a saved report without re-running."""

from __future__ import annotations

from dataclasses import replace
from typing import Optional, Sequence

from edgepack.budgets import tolerance_fraction
from edgepack.records import FAIL, PASS, TOO_CLOSE, Accuracy, Artifact, Budget, Measurement, Report, Verdict


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
            verdict = _verdict(budget, artifact.name, observed, reason)
            if budget.metric == "latency" and observed is not None:
                m = next(m for m in report.measurements if m.artifact == artifact.name)
                verdict = noise_aware(verdict, budget, m.samples_ms, m.process_runs)
            verdicts.append(verdict)
    return verdicts


def noise_aware(verdict: Verdict, budget: Budget, samples: Sequence[float],
                process_runs: Sequence[int] = ()) -> Verdict:
    """A latency verdict judged by the confidence interval of its statistic rather than by one number: pass when the
    whole interval is within the limit, fail when all of it is over, too close to call when it straddles the limit
    (then the budget's tolerance decides). Without per-run samples the point value decides, as it always did.

    Samples of one measuring process get the within-process interval (order statistics); samples pooled from several
    (`process_runs`: a verdict too close to call re-measured in fresh processes, see remeasure.py) the two-level
    bootstrap over processes and runs, which carries the process-to-process variation."""
    from edgepack.stats import interval, pooled_interval, split_runs

    if len(samples) < 2:
        return verdict
    remeasured = len(process_runs) > 1
    if remeasured:
        ci = pooled_interval(split_runs(samples, process_runs), budget.stat or "p90")
        method = f"re-measured: {len(process_runs)} processes, {len(samples)} runs; {ci.method}"
    else:
        ci = interval(samples, budget.stat or "p90")
        method = f"1 process; {ci.method}"
    limit = budget.limit
    judged = replace(verdict, interval=(ci.low, ci.high), confidence=ci.confidence, method=method)
    if ci.high <= limit:
        return replace(judged, status=PASS, passed=True)
    if ci.low > limit:
        return replace(judged, status=FAIL, passed=False)
    reach = tolerance_fraction(budget.tolerance)
    tolerated = reach is not None and ci.high <= limit * (1.0 + reach)
    how = ("passed: --latency-tolerance pass" if budget.tolerance == "pass" else
           f"passed: its upper end is within --latency-tolerance {budget.tolerance} of the limit" if tolerated else
           f"failed: its upper end is more than {budget.tolerance} over the limit" if reach is not None else
           f"failed: still undecided after re-measuring in {len(process_runs)} processes; give the budget headroom "
           f"or set --latency-tolerance" if remeasured else
           "failed: add --runs for a narrower interval, or set --latency-tolerance")
    span = format_interval(ci.low, ci.high, budget.unit, limit)
    why = (f"too close to call: the {ci.confidence:.0%} interval {span} of {budget.stat or 'p90'} straddles the limit "
           f"{format_value(limit, budget.unit)}; {how}")
    return replace(judged, status=TOO_CLOSE, passed=tolerated, reason=why)


def format_interval(low: float, high: float, unit: str, limit: Optional[float] = None) -> str:
    """An interval, with as many decimals (up to 6) as keep its ends and the limit apart: sub-millisecond latencies
    would otherwise print as [0.020 ms, 0.020 ms]."""
    if unit != "ms":
        return f"[{format_value(low, unit)}, {format_value(high, unit)}]"
    texts = _distinct([low, high] + ([] if limit is None else [limit]))
    return f"[{texts[0]}, {texts[1]}] ms"


def _distinct(values: Sequence[float]) -> list[str]:
    """The values with the fewest decimals (3 to 6) that print different values differently."""
    for decimals in range(3, 7):
        texts = [f"{v:.{decimals}f}" for v in values]
        if len(set(texts)) == len(set(values)):
            break
    return texts


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
        if m.memory_bytes is None:  # on a GPU, the memory that runs out is the GPU's
            return None, "the runner reports no peak memory"
        return float(m.memory_bytes), ""
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
    if v.status == TOO_CLOSE or v.metric.endswith(REGRESSION_SUFFIX):  # the reason carries the figures
        return f"{v.budget} [{v.artifact}]: {v.reason}"
    text = (f"{v.budget} [{v.artifact}]: observed {format_value(v.observed, v.unit)} > limit "
            f"{format_value(v.limit, v.unit)} (over by {format_value(-(v.margin or 0), v.unit)})")
    if v.interval and v.confidence:
        text += f", {v.confidence:.0%} interval {format_interval(*v.interval, v.unit, v.limit)}"
    return text


REGRESSION_SUFFIX = "_regression"  # the metric of a regression verdict: latency_regression, size_regression, ...


def mark(v: Verdict) -> str:
    """The word a verdict line starts with: pass, FAIL, or either with "too close to call"."""
    word = "pass" if v.passed else "FAIL"
    return f"{word} ({TOO_CLOSE})" if v.status == TOO_CLOSE else word


def describe_verdict(v: Verdict) -> str:
    """One line per verdict, passed or not: what was observed against what, with the interval or the comparison."""
    head = f"{mark(v)}  {v.budget} [{v.artifact}]"
    if v.metric == "runtimes":
        return f"{head}: {v.reason}"
    if v.metric.endswith(REGRESSION_SUFFIX):
        return f"{head}: {v.reason}"
    observed, limit = format_value(v.observed, v.unit), format_value(v.limit, v.unit)
    if v.interval and v.unit == "ms" and v.observed is not None:
        observed, limit = (f"{t} ms" for t in _distinct([v.observed, v.limit, *v.interval])[:2])
    text = f"{head}: observed {observed}"
    if v.status == TOO_CLOSE:  # the reason names the interval
        text += f" ({v.method})"
    elif v.interval and v.confidence:
        text += f" ({v.confidence:.0%} interval {format_interval(*v.interval, v.unit, v.limit)}, {v.method})"
    text += f", limit {limit}"
    return text + (f" — {v.reason}" if v.reason and (not v.passed or v.status == TOO_CLOSE) else "")
