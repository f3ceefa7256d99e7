"""The regression gate: a report against a baseline report, on samples and reports that differ by known amounts."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from edgepack.cli import cli
from edgepack.errors import UsageError
from edgepack.regression import (ALPHA, Threshold, check_comparable, compare, latency_verdict,
                                 parse_max_regression)
from tests.ci_reports import latencies, measurement, report, with_samples

TRIALS = 1000
RUNS = 100
TEN_PERCENT = Threshold("latency", 10.0, named=True)


def _regressed(rng: np.random.Generator, slowdown: float, threshold: Threshold = TEN_PERCENT,
               runs: int = RUNS) -> bool:
    before = measurement("a", latencies(rng, runs))
    after = measurement("a", latencies(rng, runs, median_ms=slowdown))
    return not latency_verdict(threshold, "a", after, before).passed


def test_pure_noise_does_not_trigger():
    """Two runs of one unchanged artifact (same distribution, 100 runs each, log-normal spread 0.15), 1000 seeded
    trials: with a 10 % threshold no trial may be flagged (measured: 0 of 1000)."""
    rng = np.random.default_rng(20)
    false_alarms = sum(_regressed(rng, 1.0) for _ in range(TRIALS))
    assert false_alarms == 0, false_alarms


def test_the_rank_test_alone_holds_its_level_on_noise():
    """With no effect threshold the gate is the one-sided U test at p < 0.05: on pure noise it fires in about 5 % of
    trials and must stay below 7 % (1000 trials: one binomial standard deviation is 0.7 pp)."""
    rng = np.random.default_rng(21)
    rate = sum(_regressed(rng, 1.0, Threshold("latency", 0.0, True)) for _ in range(TRIALS)) / TRIALS
    assert 0.02 <= rate <= 0.07, rate


def test_a_real_20_percent_slowdown_is_caught():
    rng = np.random.default_rng(22)
    caught = sum(_regressed(rng, 1.20) for _ in range(TRIALS // 5))
    assert caught == TRIALS // 5, caught


def test_a_significant_slowdown_smaller_than_the_threshold_passes():
    """A true 4 % slowdown under a 10 % threshold: flagged only when noise pushes the p50 ratio of 100 runs each past
    1.10 (a 2.2-sigma excursion: measured 5 of 200 trials), and a long run shows it significant yet small."""
    rng = np.random.default_rng(23)
    flagged = sum(_regressed(rng, 1.04) for _ in range(TRIALS // 5))
    assert flagged / (TRIALS // 5) <= 0.05, flagged
    before, after = measurement("a", latencies(rng, 2000)), measurement("a", latencies(rng, 2000, median_ms=1.04))
    verdict = latency_verdict(TEN_PERCENT, "a", after, before)
    assert verdict.passed and verdict.p_value is not None and verdict.p_value < ALPHA
    assert "significant, but smaller than the threshold" in verdict.reason


def test_a_large_ratio_on_too_few_runs_is_not_significant():
    rng = np.random.default_rng(24)
    before, after = measurement("a", latencies(rng, 3)), measurement("a", latencies(rng, 3, median_ms=1.3))
    verdict = latency_verdict(TEN_PERCENT, "a", after, before)
    # three runs against three: the smallest one-sided U p-value is 1/20 = 0.05, never below ALPHA
    assert verdict.passed and verdict.p_value is not None and verdict.p_value >= ALPHA
    assert "not significant" in verdict.reason


def test_the_verdict_prints_both_values_ratio_p_value_and_threshold():
    before, after = measurement("a", [1.0, 1.01, 0.99] * 10), measurement("a", [1.3, 1.31, 1.29] * 10)
    verdict = latency_verdict(TEN_PERCENT, "a", after, before)
    assert not verdict.passed and verdict.metric == "latency_regression"
    assert verdict.baseline == pytest.approx(1.0) and verdict.observed == pytest.approx(1.3)
    assert verdict.ratio == pytest.approx(1.3) and verdict.limit == pytest.approx(1.1)
    for fragment in ("1.000 ms → 1.300 ms", "×1.300", "+30.0%", "Mann-Whitney U p=", "threshold +10%",
                     "— regression"):
        assert fragment in verdict.reason, verdict.reason


def test_without_samples_the_ratio_alone_decides_and_says_so():
    before = replace(measurement("a", [1.0, 1.0]), samples_ms=())
    after = replace(measurement("a", [1.2, 1.2]), samples_ms=())
    verdict = latency_verdict(TEN_PERCENT, "a", after, before)
    assert not verdict.passed and verdict.p_value is None and "no rank test" in verdict.reason


def test_size_memory_and_accuracy_regressions_by_known_amounts():
    base = report(size=1000, peak=10_000_000, top1=0.95)
    same = compare(base, base, parse_max_regression("10%"), "base.json")
    assert [v.metric for v in same] == ["latency_regression", "memory_regression", "size_regression",
                                        "accuracy_regression"]
    assert all(v.passed for v in same), [v.reason for v in same if not v.passed]
    worse = report(size=1060, peak=11_500_000, top1=0.93)  # +6 % size, +15 % memory, -2 pp accuracy
    verdicts = {v.metric: v for v in compare(worse, base, parse_max_regression(
        "size=5%,memory=20%,accuracy=1pp"), "base.json")}
    assert not verdicts["size_regression"].passed and verdicts["size_regression"].ratio == pytest.approx(1.06)
    assert verdicts["memory_regression"].passed and verdicts["memory_regression"].ratio == pytest.approx(1.15)
    assert not verdicts["accuracy_regression"].passed
    assert verdicts["accuracy_regression"].observed == pytest.approx(2.0)  # percentage points lost
    assert "95.00% → 93.00%" in verdicts["accuracy_regression"].reason
    assert "latency_regression" not in verdicts  # not named: not compared


def test_metrics_the_baseline_lacks_are_left_out_unless_named():
    base, current = report(top1=None, peak=None), report()
    assert {v.metric for v in compare(current, base, parse_max_regression("10%"), "b")} == {
        "latency_regression", "size_regression"}
    named = compare(current, base, parse_max_regression("accuracy=1pp"), "b")
    assert len(named) == 1 and not named[0].passed and "has no accuracy" in named[0].reason
    # the other way round the current report cannot be checked, which fails
    missing = compare(report(top1=None), report(), parse_max_regression("10%"), "b")
    accuracy = next(v for v in missing if v.metric == "accuracy_regression")
    assert not accuracy.passed and accuracy.observed is None and "--eval" in accuracy.reason


def test_an_artifact_the_baseline_does_not_have_fails_by_name():
    base = report()
    base = replace(base, artifacts=tuple(replace(a, name="other-int8") for a in base.artifacts))
    verdicts = compare(report(), base, parse_max_regression("size=5%"), "b.json")
    assert len(verdicts) == 1 and not verdicts[0].passed and "has no artifact rt-int8 (it has: other-int8)" in \
        verdicts[0].reason


@pytest.mark.parametrize("text,expected", [
    ("10%", {"latency": 10, "memory": 10, "size": 10, "accuracy": 10}),
    ("latency=10%, size=5%", {"latency": 10, "size": 5}),
    ("accuracy=0.5pp", {"accuracy": 0.5}),
    ("latency=0%", {"latency": 0}),
])
def test_max_regression_forms(text, expected):
    assert {t.metric: t.limit for t in parse_max_regression(text)} == expected


@pytest.mark.parametrize("text,fragment", [
    ("", "is empty"),
    ("latency=10%,speed=5%", "unknown metric 'speed'; use latency, memory, size, accuracy"),
    ("latncy=10%", "did you mean 'latency'"),
    ("latency=10%,latency=5%", "names latency twice"),
    ("latency=10", "a percentage of the baseline"),
    ("latency=10ms", "a percentage of the baseline"),
    ("size=-5%", "0 or more"),
    ("latency", "a percentage of the baseline"),
    ("latency=10%,", "is not METRIC=AMOUNT"),
])
def test_bad_max_regression_is_one_usage_error(text, fragment):
    with pytest.raises(UsageError, match=None) as info:
        parse_max_regression(text)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_a_baseline_of_another_model_or_target_is_refused():
    with pytest.raises(UsageError, match="target 'android-arm64'"):
        check_comparable(report(), report(target="android-arm64"), "b.json")
    with pytest.raises(UsageError, match="model 'other'"):
        check_comparable(report(), report(model="other"), "b.json")


# ---- through `edgepack check`, on the real digits build ----------------------------------------------------------

@pytest.fixture(scope="module")
def digits_reports(digits_build, tmp_path_factory):
    """The digits build's report with measured-like samples: a baseline, an unchanged re-run and a 30 % slower one."""
    out, saved, result = digits_build
    assert result.exit_code == 0, result.output
    tmp = tmp_path_factory.mktemp("regression")
    names = [m["artifact"] for m in saved["measurements"]]
    paths = {}
    for label, seed, factor in (("base", 1, 1.0), ("same", 2, 1.0), ("slow", 3, 1.3)):
        rng = np.random.default_rng(seed)
        data = with_samples(saved, {n: latencies(rng, RUNS, median_ms=0.02 * factor, sigma=0.1) for n in names})
        paths[label] = tmp / f"{label}.json"
        paths[label].write_text(json.dumps(data))
    return paths, saved


def test_check_passes_an_unchanged_rerun_and_prints_the_figures(digits_reports):
    paths, _ = digits_reports
    result = CliRunner().invoke(cli, ["check", str(paths["same"]), "--baseline", str(paths["base"]),
                                      "--max-regression", "10%"])
    assert result.exit_code == 0, result.output
    for metric in ("latency", "memory", "size", "accuracy"):
        assert f"pass  {metric} regression" in result.output
    assert "Mann-Whitney U p=" in result.output and "threshold +10%" in result.output


def test_check_fails_a_30_percent_slowdown_with_exit_3(digits_reports):
    paths, _ = digits_reports
    result = CliRunner().invoke(cli, ["check", str(paths["slow"]), "--baseline", str(paths["base"]),
                                      "--max-regression", "latency=10%,size=5%", "--json"])
    assert result.exit_code == 3, result.output
    verdicts = {v["metric"]: v for v in json.loads(result.stdout)}
    latency = verdicts["latency_regression"]
    assert not latency["passed"] and latency["ratio"] > 1.2 and latency["p_value"] < 1e-6
    assert verdicts["size_regression"]["passed"]


def _write_json(path, data):
    path.write_text(json.dumps(data))
    return path


def test_check_refuses_bad_baselines_with_one_line(digits_reports, tmp_path):
    paths, saved = digits_reports
    other_target = _write_json(tmp_path / "t.json", {**saved, "target": "android-arm64"})
    other_model = _write_json(tmp_path / "m.json", {**saved, "model": {**saved["model"], "model_name": "resnet"}})
    newer = _write_json(tmp_path / "n.json", {**saved, "edgepack_version": "9.0.0"})
    corrupt = tmp_path / "c.json"
    corrupt.write_text('{"edgepack_version": "0.1.0", "measurements": [')
    cases = [
        (["--baseline", str(other_target), "--max-regression", "10%"], "target 'android-arm64'"),
        (["--baseline", str(other_model), "--max-regression", "10%"], "model 'resnet'"),
        (["--baseline", str(newer), "--max-regression", "10%"], "newer than this edgepack"),
        (["--baseline", str(corrupt), "--max-regression", "10%"], "not an edgepack report.json"),
        (["--baseline", str(tmp_path / "none.json"), "--max-regression", "10%"], "no such baseline"),
        (["--baseline", str(paths["base"]), "--max-regression", "speed=5%"], "unknown metric 'speed'"),
        (["--baseline", str(paths["base"])], "--baseline needs --max-regression"),
        (["--max-regression", "10%"], "--max-regression needs --baseline"),
    ]
    for args, fragment in cases:
        result = CliRunner().invoke(cli, ["check", str(paths["same"]), *args])
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (args, result.output)
    result = CliRunner().invoke(cli, ["check", str(newer)])
    assert result.exit_code == 2 and "written by edgepack 9.0.0" in result.output
