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
    assert clear_pass.method == f"order statistics, {RUNS} runs" and clear_pass.confidence == 0.95
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
