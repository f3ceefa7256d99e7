"""The regression gate: a report judged against a baseline report (say, the main branch's) of the same model and
target, artifact by artifact (matched by name), on latency, memory, size and accuracy.

Pure apart from scipy's rank test: (current Report, baseline Report, thresholds) -> [Verdict].

Latency is judged on both runs' per-run samples: a regression needs a one-sided Mann-Whitney U test significant at
ALPHA *and* a p50 ratio above the threshold. The test alone flags differences too small to matter once runs are many;
the ratio alone flags the run-to-run noise of a shared runner. Memory and size are single numbers per run, judged by
their ratio; accuracy by its drop in percentage points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from edgepack.budgets import NUMBER_UNIT
from edgepack.errors import UsageError, did_you_mean
from edgepack.gates import REGRESSION_SUFFIX, format_value
from edgepack.records import Accuracy, Artifact, Measurement, Report, Verdict

METRICS = ("latency", "memory", "size", "accuracy")
ALPHA = 0.05  # the rank test's significance level (one-sided: is the current run slower?)
FORMS = "10% (every metric), or per metric: latency=10%,memory=10%,size=5%,accuracy=1pp"


@dataclass(frozen=True)
class Threshold:
    """How much worse one metric may get: a percentage of the baseline (latency, memory, size) or percentage points
    of accuracy. `named`: the metric was named in --max-regression, so a baseline without it fails rather than being
    left out."""

    metric: str
    limit: float  # % or pp
    named: bool

    @property
    def unit(self) -> str:
        return "pp" if self.metric == "accuracy" else "%"


def parse_max_regression(text: str) -> tuple[Threshold, ...]:
    """`--max-regression 10%` (latency, memory, size by 10 %, accuracy by 10 pp) or `latency=10%,size=5%` (only
    those). Raises UsageError naming the valid metrics and forms."""
    value = str(text).strip()
    if not value:
        raise UsageError(f"--max-regression is empty; use {FORMS}")
    if "=" not in value:
        return tuple(Threshold(m, _amount(m, value, text), named=False) for m in METRICS)
    thresholds: dict[str, Threshold] = {}
    for part in value.split(","):
        metric, sep, amount = (p.strip() for p in part.partition("="))
        if not sep or not metric:
            raise UsageError(f"--max-regression {text!r}: {part.strip()!r} is not METRIC=AMOUNT; use {FORMS}")
        if metric not in METRICS:
            raise UsageError(f"--max-regression {text!r}: unknown metric {metric!r}{did_you_mean(metric, METRICS)}; "
                             f"use {', '.join(METRICS)}")
        if metric in thresholds:
            raise UsageError(f"--max-regression {text!r} names {metric} twice; name each metric once")
        thresholds[metric] = Threshold(metric, _amount(metric, amount, text), named=True)
    return tuple(thresholds.values())


def _amount(metric: str, amount: str, text: str) -> float:
    match = NUMBER_UNIT.match(amount)
    units = ("pp", "%") if metric == "accuracy" else ("%",)
    if not match or match.group(2).lower() not in units:
        what = "percentage points (1pp) or %" if metric == "accuracy" else "a percentage of the baseline (10%)"
        raise UsageError(f"--max-regression {text!r}: {metric} takes {what}; use {FORMS}")
    number = float(match.group(1))
    if not math.isfinite(number) or number < 0:
        raise UsageError(f"--max-regression {text!r}: {amount!r} must be a finite amount of 0 or more")
    return number


def check_comparable(current: Report, baseline: Report, baseline_name: str) -> None:
    """A baseline judges only a report of the same model for the same target; anything else is a usage error."""
    if baseline.target != current.target:
        raise UsageError(f"{baseline_name}: the baseline was built for target {baseline.target!r} and this report for "
                         f"{current.target!r}; compare reports of one target")
    if baseline.model.model_name != current.model.model_name:
        raise UsageError(f"{baseline_name}: the baseline is of model {baseline.model.model_name!r} "
                         f"({baseline.model.source}) and this report of {current.model.model_name!r} "
                         f"({current.model.source}); compare reports of one model")


def compare(current: Report, baseline: Report, thresholds: Sequence[Threshold], baseline_name: str) -> list[Verdict]:
    """One verdict per (threshold, shipped artifact of `current`). A metric the baseline lacks is left out unless it
    was named; a metric the baseline has and the current report lacks fails (it cannot be checked)."""
    shipping = [a for a in current.artifacts if a.name in current.shipping] or list(current.artifacts)
    verdicts = []
    for artifact in shipping:
        old = next((a for a in baseline.artifacts if a.name == artifact.name), None)
        for threshold in thresholds:
            if old is None:
                known = ", ".join(a.name for a in baseline.artifacts) or "none"
                verdicts.append(_unchecked(threshold, artifact.name, f"{baseline_name} has no artifact "
                                                                     f"{artifact.name} (it has: {known})"))
                continue
            verdict = _compare_one(threshold, artifact, old, current, baseline, baseline_name)
            if verdict is not None:
                verdicts.append(verdict)
    return verdicts


def _compare_one(threshold: Threshold, artifact: Artifact, old: Artifact, current: Report, baseline: Report,
                 baseline_name: str) -> Optional[Verdict]:
    metric = threshold.metric
    if metric == "size":
        return _ratio_verdict(threshold, artifact.name, float(artifact.size_bytes), float(old.size_bytes), "bytes",
                              "size")
    if metric == "accuracy":
        now, then = (_accuracy(r.accuracy, artifact.name) for r in (current, baseline))
        if then is None or then.score is None:
            return _missing(threshold, artifact.name, f"{baseline_name} has no accuracy of {artifact.name}")
        if now is None or now.score is None:
            return _unchecked(threshold, artifact.name, "this report has no accuracy of it (pass --eval DATA)")
        return _accuracy_verdict(threshold, artifact.name, now, now.score, then, then.score)
    now_m, then_m = (_measurement(r.measurements, artifact.name) for r in (current, baseline))
    if then_m is None or (metric == "memory" and then_m.memory_bytes is None):
        return _missing(threshold, artifact.name, f"{baseline_name} has no {metric} measurement of {artifact.name}")
    if now_m is None or (metric == "memory" and now_m.memory_bytes is None):
        return _unchecked(threshold, artifact.name, f"this report has no {metric} measurement of it")
    if metric == "memory":
        return _ratio_verdict(threshold, artifact.name, float(now_m.memory_bytes or 0),
                              float(then_m.memory_bytes or 0), "bytes", "peak memory")
    return latency_verdict(threshold, artifact.name, now_m, then_m)


def latency_verdict(threshold: Threshold, artifact: str, now: Measurement, then: Measurement,
                    samples: str = "runs") -> Verdict:
    """Slower only when the rank test says so (p < ALPHA) and the p50 ratio is above 1 + threshold. `samples` names
    what `samples_ms` holds, for the reason ("runs"; `edgepack compare` passes each round's p50)."""
    limit = then.p50_ms * (1.0 + threshold.limit / 100.0)
    ratio = now.p50_ms / then.p50_ms if then.p50_ms > 0 else math.inf
    over = ratio > 1.0 + threshold.limit / 100.0
    figures = (f"p50 {format_value(then.p50_ms, 'ms')} → {format_value(now.p50_ms, 'ms')} "
               f"(×{ratio:.3f}, {_signed_pct(ratio)})")
    if len(now.samples_ms) >= 2 and len(then.samples_ms) >= 2:
        p = rank_test(now.samples_ms, then.samples_ms)
        significant = p < ALPHA
        figures += (f", Mann-Whitney U p={p:.2g} (one-sided, {len(now.samples_ms)} vs {len(then.samples_ms)} "
                    f"{samples}); threshold +{threshold.limit:g}% and p < {ALPHA:g}")
        regressed = over and significant
        outcome = ("regression" if regressed else "slower but not significant" if over else
                   "within the threshold" + ("" if ratio <= 1 else " (significant, but smaller than the threshold)"
                                             if significant else ""))
    else:
        p = None
        regressed = over
        which = "neither report has" if len(now.samples_ms) < 2 and len(then.samples_ms) < 2 else "one report has no"
        figures += (f"; threshold +{threshold.limit:g}%; {which} per-run samples, so no rank test: the ratio alone "
                    f"decides")
        outcome = "regression" if regressed else "within the threshold"
    return Verdict(_name(threshold), threshold.metric + REGRESSION_SUFFIX, artifact, limit, now.p50_ms, "ms",
                   limit - now.p50_ms, not regressed, f"{figures} — {outcome}", baseline=then.p50_ms,
                   ratio=ratio if math.isfinite(ratio) else None, p_value=p)


def rank_test(current: Sequence[float], baseline: Sequence[float]) -> float:
    """p-value of the one-sided Mann-Whitney U test that current latencies tend to be larger than the baseline's."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(list(current), list(baseline), alternative="greater").pvalue)


def _ratio_verdict(threshold: Threshold, artifact: str, now: float, then: float, unit: str, what: str) -> Verdict:
    limit = then * (1.0 + threshold.limit / 100.0)
    figures = f"{what} {format_value(then, unit)} → {format_value(now, unit)}"
    if then <= 0:
        regressed = now > 0
        reason = (f"{figures}; the baseline is 0, so no relative change can be computed — "
                  f"{'regression' if regressed else 'unchanged'}")
        return Verdict(_name(threshold), threshold.metric + REGRESSION_SUFFIX, artifact, limit, now, unit,
                       limit - now, not regressed, reason, baseline=then)
    ratio = now / then
    regressed = ratio > 1.0 + threshold.limit / 100.0
    reason = (f"{figures} (×{ratio:.3f}, {_signed_pct(ratio)}); threshold +{threshold.limit:g}% — "
              f"{'regression' if regressed else 'within the threshold'}")
    return Verdict(_name(threshold), threshold.metric + REGRESSION_SUFFIX, artifact, limit, now, unit, limit - now,
                   not regressed, reason, baseline=then, ratio=ratio)


def _accuracy_verdict(threshold: Threshold, artifact: str, now: Accuracy, now_score: float, then: Accuracy,
                      then_score: float) -> Verdict:
    if now.metric != then.metric:
        return _unchecked(threshold, artifact, f"the baseline's accuracy is {then.metric} and this report's "
                                               f"{now.metric}; they cannot be compared")
    drop = (then_score - now_score) * 100.0
    regressed = drop > threshold.limit
    note = "" if (then.dataset, then.samples) == (now.dataset, now.samples) else (
        f" (evaluated on {then.samples} samples of {then.dataset} then, {now.samples} of {now.dataset} now)")
    reason = (f"{now.metric} {then_score * 100:.2f}% → {now_score * 100:.2f}% (drop {drop:.2f} pp){note}; threshold "
              f"{threshold.limit:g} pp — {'regression' if regressed else 'within the threshold'}")
    return Verdict(_name(threshold), threshold.metric + REGRESSION_SUFFIX, artifact, threshold.limit, drop, "pp",
                   threshold.limit - drop, not regressed, reason)


def _missing(threshold: Threshold, artifact: str, why: str) -> Optional[Verdict]:
    """A metric the baseline does not have: left out when only implied by a bare --max-regression, else failed."""
    return _unchecked(threshold, artifact, why) if threshold.named else None


def _unchecked(threshold: Threshold, artifact: str, why: str) -> Verdict:
    # a regression that cannot be checked is not passed: CI must not go green on a missing number
    return Verdict(_name(threshold), threshold.metric + REGRESSION_SUFFIX, artifact, threshold.limit, None,
                   threshold.unit, None, False, f"not checked — {why}")


def _name(threshold: Threshold) -> str:
    if threshold.unit == "pp":
        return f"{threshold.metric} regression (drop ≤ {threshold.limit:g} pp)"
    return f"{threshold.metric} regression (≤ +{threshold.limit:g}%)"


def _signed_pct(ratio: float) -> str:
    return "+inf%" if not math.isfinite(ratio) else f"{(ratio - 1.0) * 100:+.1f}%"


def _accuracy(records: Sequence[Accuracy], artifact: str) -> Optional[Accuracy]:
    return next((a for a in records if a.artifact == artifact), None)


def _measurement(records: Sequence[Measurement], artifact: str) -> Optional[Measurement]:
    return next((m for m in records if m.artifact == artifact), None)
