"""Noise-aware latency verdicts: the statistic's confidence interval from the per-run samples decides pass, fail or
too close to call; --latency-tolerance decides what too close to call becomes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import binom

from edgepack.budgets import parse_budget, parse_latency_tolerance, with_latency_tolerance
from edgepack.cli import cli
from edgepack.errors import UsageError
from edgepack.gates import judge
from edgepack.records import FAIL, PASS, TOO_CLOSE, Budget, Verdict
from edgepack.stats import interval, order_statistic_bounds
from tests.ci_reports import latencies, report, true_p90

TRIALS = 400
RUNS = 100


def _latency_budget(limit_ms: float, stat: str = "p90", tolerance: str = "") -> Budget:
    budget = parse_budget("latency", f"{limit_ms}ms", stat)
    return with_latency_tolerance([budget], tolerance)[0] if tolerance else budget


def _verdict(samples, limit_ms: float, stat: str = "p90", tolerance: str = "") -> Verdict:
    return judge(report(samples), [_latency_budget(limit_ms, stat, tolerance)])[0]


@pytest.mark.parametrize("n,q", [(6, 0.5), (100, 0.5), (36, 0.9), (100, 0.9), (1000, 0.9), (368, 0.99), (5000, 0.99)])
def test_order_statistic_bounds_cover_the_quantile_by_the_binomial(n, q):
    low, high = order_statistic_bounds(n, q, 0.95)
    # samples below the true quantile ~ Binomial(n, q): the quantile lies in [x_(low), x_(high)) when low < B <= high
    assert binom.cdf(high, n, q) - binom.cdf(low, n, q) >= 0.95
    # and the bounds are the tightest symmetric ones: one step in on either side loses the tail guarantee
    assert binom.cdf(low + 1, n, q) > 0.025 and binom.cdf(high - 1, n, q) < 0.975


@pytest.mark.parametrize("n,q", [(5, 0.5), (35, 0.9), (100, 0.99)])
def test_too_few_runs_have_no_distribution_free_bound(n, q):
    assert order_statistic_bounds(n, q, 0.95) is None


def test_the_interval_covers_the_true_p90_as_often_as_it_claims():
    rng = np.random.default_rng(7)
    truth = true_p90()
    covered = 0
    for _ in range(TRIALS):
        ci = interval(latencies(rng, RUNS), "p90")
        covered += ci.low <= truth <= ci.high
    assert covered / TRIALS >= 0.93, covered / TRIALS  # nominal 95 %, binomial noise on 400 trials is ~1.1 pp


def test_few_runs_fall_back_to_a_seeded_bootstrap_and_say_so():
    samples = latencies(np.random.default_rng(1), 30)
    ci = interval(samples, "p90")
    assert ci.method.startswith("bootstrap") and "too few for a distribution-free bound" in ci.method
    assert ci == interval(samples, "p90")  # seeded: the same samples always give the same verdict
    assert min(samples) <= ci.low < ci.high <= max(samples)
    mean = interval(samples, "mean")
    assert mean.low < float(np.mean(samples)) < mean.high


def test_clear_pass_clear_fail_and_too_close_to_call():
    samples = latencies(np.random.default_rng(2), RUNS)
    p90 = judge(report(samples), [_latency_budget(1.0)])[0].observed
    assert p90 is not None
    clear_pass = _verdict(samples, p90 * 1.3)
    assert (clear_pass.status, clear_pass.passed) == (PASS, True) and clear_pass.interval is not None
    assert clear_pass.interval[0] <= p90 <= clear_pass.interval[1] < p90 * 1.3
    assert clear_pass.method == f"1 process; order statistics, {RUNS} runs" and clear_pass.confidence == 0.95
    clear_fail = _verdict(samples, p90 * 0.7)
    assert (clear_fail.status, clear_fail.passed) == (FAIL, False)
    edge = _verdict(samples, p90 * 1.001)  # the point value passes, but the interval reaches over the limit
    assert (edge.status, edge.passed) == (TOO_CLOSE, False)
    assert edge.margin is not None and edge.margin > 0
    assert "too close to call" in edge.reason and "--latency-tolerance" in edge.reason


def test_the_tolerance_decides_what_too_close_to_call_becomes():
    samples = latencies(np.random.default_rng(3), RUNS)
    p90 = judge(report(samples), [_latency_budget(1.0)])[0].observed
    assert p90 is not None
    edge = _verdict(samples, p90)
    assert edge.interval is not None
    high = edge.interval[1]
    assert _verdict(samples, p90, tolerance="pass").passed
    assert not _verdict(samples, p90, tolerance="fail").passed
    reach = (high / p90 - 1) * 100  # how far above the limit the interval's upper end lies, in %
    assert _verdict(samples, p90, tolerance=f"{reach * 1.1:.3f}%").passed
    narrow = _verdict(samples, p90, tolerance=f"{reach * 0.9:.3f}%")
    assert not narrow.passed and narrow.status == TOO_CLOSE and "over the limit" in narrow.reason
    # a clear failure stays a failure whatever the tolerance
    assert not _verdict(samples, p90 * 0.7, tolerance="pass").passed


def test_without_samples_the_point_value_decides_as_before():
    old = report()  # three samples: an interval needs two, so strip them to mimic an older report
    from dataclasses import replace

    old = replace(old, measurements=tuple(replace(m, samples_ms=()) for m in old.measurements))
    verdict = judge(old, [_latency_budget(old.measurements[0].p90_ms * 1.0001)])[0]
    assert verdict.passed and verdict.status == PASS and verdict.interval is None


def test_an_unchanged_artifact_at_the_edge_no_longer_flips():
    """The same artifact measured again and again, its true p90 exactly at the limit: the single-number rule passes
    about half the runs and fails the rest; the interval rule calls nearly every run too close to call, and a
    definite pass or fail appears at most at the interval's 2.5 % tail rates each."""
    rng = np.random.default_rng(11)
    limit = true_p90()
    old_passes, statuses = 0, {PASS: 0, FAIL: 0, TOO_CLOSE: 0}
    for _ in range(TRIALS):
        verdict = _verdict(latencies(rng, RUNS), limit)
        old_passes += verdict.observed is not None and verdict.observed <= limit
        statuses[verdict.status] += 1
    assert 0.35 <= old_passes / TRIALS <= 0.65, old_passes  # the old rule is a coin toss here
    assert statuses[FAIL] / TRIALS <= 0.04 and statuses[PASS] / TRIALS <= 0.04, statuses
    assert statuses[TOO_CLOSE] / TRIALS >= 0.92, statuses


def test_an_unchanged_artifact_clear_of_the_limit_is_not_failed():
    """False alarms: true p90 10 % under the limit, 100 runs: the interval rule never fails it outright, and passes it
    in most runs (the rest are too close to call, never a definite fail)."""
    rng = np.random.default_rng(12)
    limit = true_p90() * 1.10
    statuses = {PASS: 0, FAIL: 0, TOO_CLOSE: 0}
    for _ in range(TRIALS):
        statuses[_verdict(latencies(rng, RUNS), limit).status] += 1
    assert statuses[FAIL] == 0, statuses
    assert statuses[PASS] / TRIALS >= 0.5, statuses


def test_a_real_slowdown_over_the_limit_fails_outright():
    rng = np.random.default_rng(13)
    limit = true_p90() / 1.2  # the artifact is 20 % slower than the budget allows
    fails = sum(_verdict(latencies(rng, RUNS), limit).status == FAIL for _ in range(TRIALS))
    assert fails / TRIALS >= 0.98, fails


@pytest.mark.parametrize("text,normal", [("fail", "fail"), ("PASS", "pass"), ("5%", "5%"), (" 2.5 % ", "2.5%")])
def test_tolerance_forms(text, normal):
    assert parse_latency_tolerance(text) == normal


@pytest.mark.parametrize("text", ["", "maybe", "5", "5ms", "0%", "-1%", "150%", "nan%"])
def test_bad_tolerances_are_refused(text):
    with pytest.raises(UsageError, match="--latency-tolerance"):
        parse_latency_tolerance(text)


def test_a_tolerance_without_a_latency_budget_is_refused():
    with pytest.raises(UsageError, match="there is none"):
        with_latency_tolerance([parse_budget("size", "1MB")], "pass")


def test_build_refuses_a_bad_tolerance_before_any_work():
    for args, fragment in ((["--max-latency", "5ms", "--latency-tolerance", "sometimes"], "fail (the default)"),
                           (["--latency-tolerance", "pass"], "there is none")):
        result = CliRunner().invoke(cli, ["build", "--model", "zoo:digits-cnn", *args])
        assert result.exit_code == 2, result.output
        assert fragment in result.output and len(result.output.strip().splitlines()) == 1


def test_new_verdict_fields_round_trip_and_old_verdicts_read():
    samples = latencies(np.random.default_rng(4), RUNS)
    verdict = _verdict(samples, 1.0)
    again = Verdict.from_dict(json.loads(json.dumps(verdict.to_dict(), allow_nan=False)))
    assert again == verdict and isinstance(again.interval, tuple)
    old = {"budget": "size", "metric": "size", "artifact": "a", "limit": 1.0, "observed": 2.0, "unit": "bytes",
           "margin": -1.0, "passed": False, "reason": ""}
    assert Verdict.from_dict(old).status == FAIL and Verdict.from_dict({**old, "passed": True}).status == PASS
    budget = _latency_budget(1.0, tolerance="5%")
    assert Budget.from_dict(budget.to_dict()).tolerance == "5%"
    assert math.isclose(Budget.from_dict({k: v for k, v in budget.to_dict().items() if k != "tolerance"}).limit, 1.0)


def test_check_prints_the_interval_and_applies_the_tolerance(tmp_path):
    from tests.ci_reports import write

    samples = latencies(np.random.default_rng(5), RUNS)
    path = write(report(samples), tmp_path / "report.json")
    p90 = judge(report(samples), [_latency_budget(1.0)])[0].observed
    assert p90 is not None
    runner = CliRunner()
    result = runner.invoke(cli, ["check", str(path), "--max-latency", f"{p90:.6f}ms"])
    assert result.exit_code == 3, result.output
    assert "FAIL (too close to call)" in result.output and "order statistics, 100 runs" in result.output
    result = runner.invoke(cli, ["check", str(path), "--max-latency", f"{p90:.6f}ms", "--latency-tolerance", "pass"])
    assert result.exit_code == 0, result.output
    assert "pass (too close to call)" in result.output
    result = runner.invoke(cli, ["check", str(path), "--max-latency", f"{p90 * 1.5:.6f}ms"])
    assert result.exit_code == 0 and "95% interval" in result.output, result.output


# ---- re-measuring a verdict too close to call, in fresh measuring children -----------------------------------------
def test_the_pooled_interval_carries_process_to_process_variation():
    from edgepack.stats import pooled_interval, split_runs

    rng = np.random.default_rng(11)
    # three processes of one unchanged artifact, the third running 60 % slower from start to end
    rounds = [latencies(rng, 100, 1.0), latencies(rng, 200, 1.0), latencies(rng, 200, 1.6)]
    pooled = [x for r in rounds for x in r]
    within = interval(pooled, "p90")  # the 500 runs as if independent: far too sure of itself
    across = pooled_interval(rounds, "p90")
    assert across.high - across.low > 3 * (within.high - within.low), (within, across)
    assert across.method.startswith("two-level bootstrap over 3 measuring processes") and "100+200+200" in across.method
    assert across == pooled_interval(rounds, "p90")  # seeded
    assert split_runs(pooled, (100, 200, 200)) == rounds
    with pytest.raises(ValueError):
        split_runs(pooled, (100, 200))
    with pytest.raises(ValueError):
        pooled_interval(rounds[:1], "p90")
    # processes that agree give an interval about as narrow as their runs allow
    same = [latencies(rng, 200, 1.0) for _ in range(3)]
    tight = pooled_interval(same, "p90")
    assert tight.low < true_p90() < tight.high and tight.high - tight.low < 0.2


def test_only_undecided_one_process_verdicts_are_picked_for_remeasuring():
    from dataclasses import replace

    from edgepack.remeasure import FAIL_REACH, undecided

    samples = latencies(np.random.default_rng(5), RUNS)
    base = report(samples)
    p90 = base.measurements[0].p90_ms

    def picked(limit: float, fails: bool = True) -> list[str]:
        budget = _latency_budget(limit)
        judged = replace(base, budgets=(budget,))
        return undecided(replace(judged, verdicts=tuple(judge(judged))), fails)

    assert picked(p90) == ["rt-int8"]  # too close to call
    assert picked(p90 * 1.5) == []  # a clear pass
    assert picked(p90 * 0.7) == ["rt-int8"]  # a fail one slow process could explain
    assert picked(p90 * 0.7, fails=False) == []
    assert picked(p90 / (FAIL_REACH * 1.2)) == []  # further over the limit than processes ever differ
    two = replace(base, measurements=tuple(replace(m, process_runs=(50, 50)) for m in base.measurements))
    assert undecided(replace(two, budgets=(_latency_budget(p90),), verdicts=tuple(
        judge(replace(two, budgets=(_latency_budget(p90),)))))) == []  # re-measured already


def _tiny_onnx(tmp_path):
    import torch

    from edgepack.records import Artifact

    path = tmp_path / "tiny.onnx"
    torch.onnx.export(torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU()).eval(), (torch.randn(1, 64),),
                      str(path), dynamo=True, external_data=False, input_names=["input"])
    return Artifact(name="tiny-fp32", path=str(path), format="onnx", runtime="onnxruntime", precision="fp32",
                    size_bytes=path.stat().st_size, sha256="", inputs=(), outputs=())


def _measured(tmp_path, monkeypatch):
    """A real Measurer, the tiny artifact measured once (40 runs), and the list every measuring child is added to."""
    import edgepack.measure as measure
    from edgepack.plan import MeasurePlan

    artifact = _tiny_onnx(tmp_path)
    children: list[list[str]] = []
    real_child = measure._run_child
    monkeypatch.setattr(measure, "_run_child", lambda cmd, *a: children.append(cmd) or real_child(cmd, *a))
    measurer = measure.Measurer(MeasurePlan("host", 1, 40, 5, "p90"), "x86_64")
    inputs = [np.zeros((1, 64), np.float32)]
    first = measurer.measure(artifact, inputs)
    assert len(first.samples_ms) == 40 and first.process_runs == ()  # a build keeps every run
    return measurer, artifact, inputs, first, children


def _judged(artifact, measurement, budget):
    from dataclasses import replace

    base = report()
    built = replace(base, shipping=(artifact.name,), artifacts=(artifact,), measurements=(measurement,),
                    budgets=(budget,), accuracy=())
    return replace(built, verdicts=tuple(judge(built)))


def test_a_close_call_is_remeasured_in_fresh_children_and_judged_on_every_process(tmp_path, monkeypatch):
    from edgepack.records import Report
    from edgepack.remeasure import EXTRA_PROCESSES, RUNS_FACTOR, remeasure_close_calls
    from edgepack.report.render import markdown

    measurer, artifact, inputs, first, children = _measured(tmp_path, monkeypatch)
    before = len(children)
    budget = parse_budget("latency", f"{first.p90_ms}ms", "p90")  # at the measured p90: the interval straddles it
    judged = _judged(artifact, first, budget)
    assert judged.verdicts[0].status == TOO_CLOSE and judged.verdicts[0].method.startswith("1 process;")
    stages: list[str] = []

    def stage(text):
        import contextlib

        stages.append(text)
        return contextlib.nullcontext()

    again = remeasure_close_calls(judged, measurer, inputs, stage)
    # two more measuring children (the runtime's baseline child is measured once per build), 80 runs each
    new = children[before:]
    assert len(new) == EXTRA_PROCESSES and all("--baseline" not in c for c in new)
    assert all(c[c.index("--runs") + 1] == str(40 * RUNS_FACTOR) for c in new) and len(stages) == EXTRA_PROCESSES
    m = again.measurements[0]
    assert m.process_runs == (40, 80, 80) and m.runs == 200 and len(m.samples_ms) == 200
    assert m.samples_ms[:40] == first.samples_ms  # the first process's runs are kept, then the new ones
    assert any(n.startswith("re-measured: after 1 process of 40 runs its latency verdict was too close to call")
               for n in m.notes)
    v = again.verdicts[0]
    assert v.method.startswith("re-measured: 3 processes, 200 runs; two-level bootstrap over 3 measuring processes")
    assert v.status in (PASS, FAIL, TOO_CLOSE) and v.interval is not None and v.observed == m.p90_ms
    if v.status == TOO_CLOSE:
        assert not v.passed and "still undecided after re-measuring in 3 processes" in v.reason
    # the saved report judges the same again (edgepack check), and report.md says what the verdict rests on
    saved = Report.from_json(again.to_json())
    assert saved.measurements[0].process_runs == (40, 80, 80) and judge(saved) == list(again.verdicts)
    md = markdown(again)
    assert "re-measured: 3 processes, 200 runs" in md and "| 200 in 3 processes |" in md


def test_a_clear_pass_or_fail_is_not_remeasured(tmp_path, monkeypatch):
    from edgepack.remeasure import FAIL_REACH, remeasure_close_calls

    measurer, artifact, inputs, first, children = _measured(tmp_path, monkeypatch)
    before = len(children)
    clear_pass = _judged(artifact, first, parse_budget("latency", f"{first.max_ms * 10}ms", "p90"))
    far_fail = _judged(artifact, first, parse_budget("latency", f"{first.min_ms / (FAIL_REACH * 2)}ms", "p90"))
    assert clear_pass.verdicts[0].status == PASS and far_fail.verdicts[0].status == FAIL
    for judged in (clear_pass, far_fail):
        assert remeasure_close_calls(judged, measurer, inputs) is judged
    assert len(children) == before  # no child was started
