"""Budgets judged against records, and the records' JSON round trip."""

from __future__ import annotations

import json
import math

import pytest

from edgepack.budgets import optional_budget, parse_budget
from edgepack.errors import UsageError
from edgepack.gates import delegation_budget, judge
from edgepack.records import Accuracy, Artifact, Delegation, Measurement, Provenance, Report, TensorSpec


def _report(**kw) -> Report:
    prov = Provenance("zoo:x", "zoo", "x", "tensor", 10, 100, ((1, 1, 8, 8),))
    spec = (TensorSpec("input", (1, 1, 8, 8), "float32"),)
    arts = (
        Artifact("rt-fp32", "x-fp32.onnx", "onnx", "rt", "fp32", 4000, "a" * 64, spec, spec),
        Artifact("rt-int8", "x-int8.onnx", "onnx", "rt", "int8", 1000, "b" * 64, spec, spec,
                 delegation=Delegation("xnnpack", subgraphs=1, delegated_nodes=8, total_nodes=10)),
    )
    m = Measurement("rt-int8", "rt", "host", "cpu", 1, 1, 10, 1.0, 2.0, 3.0, 1.5, 0.1, 0.5, 3.5, 4.0, 1.0,
                    60_000_000, 50_000_000, 10_000_000)
    acc = (Accuracy("eager", "d", 100, 0.95), Accuracy("rt-int8", "d", 100, 0.935))
    return Report("0", "now", "t", "out", prov, shipping=("rt-int8",), artifacts=arts, measurements=(m,),
                  accuracy=acc, **kw)


def test_each_metric_observes_the_right_record():
    report = _report()
    budgets = [parse_budget("size", "1000B"), parse_budget("latency", "1.9ms"), parse_budget("memory", "10MB"),
               parse_budget("accuracy_drop", "1pp"), delegation_budget()]
    verdicts = {v.metric: v for v in judge(report, budgets)}
    assert all(v.artifact == "rt-int8" for v in verdicts.values())  # only the shipping artifact is judged
    assert verdicts["size"].observed == 1000 and verdicts["size"].passed and verdicts["size"].margin == 0
    assert verdicts["latency"].observed == 2.0 and not verdicts["latency"].passed  # p90 by default
    assert verdicts["memory"].observed == 10_000_000 and verdicts["memory"].passed
    assert abs(verdicts["accuracy_drop"].observed - 1.5) < 1e-9 and not verdicts["accuracy_drop"].passed
    assert verdicts["delegation"].observed == 2 and not verdicts["delegation"].passed


def test_accuracy_drop_is_against_the_original_model_when_compressed():
    report = _report()
    fields = {f: getattr(report, f) for f in report.__dataclass_fields__}
    compressed = Report(**{**fields, "accuracy": fields["accuracy"] + (Accuracy("original", "d", 100, 0.99),)})
    verdict = judge(compressed, [parse_budget("accuracy_drop", "1pp")])[0]
    assert abs(verdict.observed - 5.5) < 1e-9 and not verdict.passed  # 99 % original vs 93.5 % shipped


def test_latency_stat_is_honoured():
    verdicts = judge(_report(), [parse_budget("latency", "1.9ms", "p50")])
    assert verdicts[0].observed == 1.0 and verdicts[0].passed


def test_missing_observation_fails_with_reason():
    report = _report()
    report = Report(**{**{f: getattr(report, f) for f in report.__dataclass_fields__}, "accuracy": ()})
    verdict = judge(report, [parse_budget("accuracy_drop", "1pp")])[0]
    assert verdict.observed is None and not verdict.passed and "--eval" in verdict.reason


def test_report_json_round_trip_preserves_types():
    report = _report(budgets=(parse_budget("size", "1MB"),))
    report = Report(**{**{f: getattr(report, f) for f in report.__dataclass_fields__},
                       "verdicts": tuple(judge(report))})
    again = Report.from_json(report.to_json())
    assert again == report
    assert isinstance(again.artifacts[0].inputs[0], TensorSpec)
    assert again.model.input_shapes == ((1, 1, 8, 8),)


@pytest.mark.parametrize("metric,text,fragment", [
    ("size", "", "--budget is empty"),
    ("memory", "1e999GB", "too large"),
    ("size", "1e308GB", "too large"),  # finite as typed, infinite once in bytes
    ("memory", "-5MB", "must be greater than zero"),
    ("latency", "0ms", "must be greater than zero"),
    ("accuracy_drop", "200%", "more than 100 percentage points"),
    ("accuracy_drop", "-1pp", "is negative"),
])
def test_budgets_that_cannot_be_meant_are_refused(metric, text, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_budget(metric, text)


def test_only_a_missing_budget_option_means_not_given():
    assert optional_budget("size", None) == []
    with pytest.raises(UsageError, match="is empty"):
        optional_budget("size", "")
    edge = parse_budget("accuracy_drop", "100pp")  # the extremes that can be meant are kept
    assert edge.limit == 100 and parse_budget("accuracy_drop", "0pp").limit == 0


def test_judged_budgets_are_strict_json():
    report = _report(budgets=(parse_budget("memory", "1e290GB"),))
    verdicts = judge(report)
    assert all(math.isfinite(v.limit) for v in verdicts)
    json.loads(json.dumps([v.to_dict() for v in verdicts], allow_nan=False))


def test_a_latency_verdict_on_several_processes_uses_them_and_says_so():
    """A measurement pooled from several measuring processes (a re-measured close call) is judged by the two-level
    bootstrap over its processes, and the verdict names the processes and runs; one process, by order statistics."""
    from dataclasses import replace

    import numpy as np

    from edgepack.stats import percentile

    rng = np.random.default_rng(3)
    runs = [list(1.0 + 0.05 * rng.random(40)), list(1.6 + 0.05 * rng.random(80)), list(1.0 + 0.05 * rng.random(80))]
    pooled = [x for r in runs for x in r]
    ordered = sorted(pooled)
    report = _report(budgets=(parse_budget("latency", "1.2ms"),))
    one = replace(report.measurements[0], samples_ms=tuple(pooled), runs=200, p90_ms=percentile(ordered, 90))
    single = judge(replace(report, measurements=(one,)))[0]
    several = judge(replace(report, measurements=(replace(one, process_runs=(40, 80, 80)),)))[0]
    assert single.method.startswith("1 process; order statistics, 200 runs")
    assert several.method.startswith("re-measured: 3 processes, 200 runs; two-level bootstrap")
    assert several.interval is not None and single.interval is not None
    # the slow process widens the interval: the runs of one process are not independent draws
    assert several.interval[1] - several.interval[0] > 2 * (single.interval[1] - single.interval[0])
    # round trip, and a report written before the field reads as one process
    again = Report.from_json(replace(report, measurements=(replace(one, process_runs=(40, 80, 80)),)).to_json())
    assert again.measurements[0].process_runs == (40, 80, 80)
    data = json.loads(replace(report, measurements=(one,)).to_json())
    del data["measurements"][0]["process_runs"]
    assert Report.from_dict(data).measurements[0].process_runs == ()
