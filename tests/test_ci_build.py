"""`edgepack build` with the CI options, end to end on the digits CNN: a baseline, JUnit, the step summary and the
history from one real build (a size regression against a doctored baseline makes it exit 3), and the bad inputs
refused before any work."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from edgepack import history
from edgepack.cli import cli

SHIPPED = "onnxruntime-int8"


@pytest.fixture(scope="module")
def ci_build(digits_build, tmp_path_factory):
    """One build judged against the session's digits build, whose int8 file is made to look 20 % smaller."""
    base_out, saved, base_result = digits_build
    assert base_result.exit_code == 0, base_result.output
    tmp = tmp_path_factory.mktemp("ci_build")
    baseline = json.loads(json.dumps(saved))
    for artifact in baseline["artifacts"]:
        if artifact["name"] == SHIPPED:
            artifact["size_bytes"] = int(artifact["size_bytes"] * 0.8)
    (tmp / "base.json").write_text(json.dumps(baseline))
    summary = tmp / "summary.md"
    args = ["build", "--model", "zoo:digits-cnn", "--target", "x86-cpu", "--budget", "1MB", "--eval", "zoo",
            "--max-latency", "1s", "--latency-tolerance", "pass", "--baseline", str(tmp / "base.json"),
            "--max-regression", "size=5%,accuracy=0.5pp", "--junit", str(tmp / "out" / "junit.xml"), "--history",
            str(tmp / "db" / "h.db"), "--runs", "30", "--out", str(tmp / "out"), "--quiet"]
    result = CliRunner().invoke(cli, args, env={"GITHUB_STEP_SUMMARY": str(summary)})
    report = json.loads((tmp / "out" / "report.json").read_text())
    return tmp, result, report, saved


def test_a_size_regression_fails_the_build_and_is_in_the_report(ci_build):
    tmp, result, report, saved = ci_build
    assert result.exit_code == 3, result.output
    verdicts = {v["metric"]: v for v in report["verdicts"]}
    size = verdicts["size_regression"]
    assert not size["passed"] and size["ratio"] == pytest.approx(1.25, rel=0.01)
    assert verdicts["accuracy_regression"]["passed"] and verdicts["accuracy_regression"]["observed"] == 0
    assert verdicts["size"]["passed"] and verdicts["latency"]["passed"]
    assert verdicts["latency"]["budget"] == "latency (p90)"
    assert next(b for b in report["budgets"] if b["metric"] == "latency")["tolerance"] == "pass"
    assert "FAIL  size regression (≤ +5%) [onnxruntime-int8]" in result.output
    assert "budget failed: size regression" in result.output and "×1.25" in result.output
    assert "size regression" in (tmp / "out" / "report.md").read_text()


def test_junit_has_a_case_per_budget_and_the_failure(ci_build):
    tmp, _, report, _ = ci_build
    root = ET.parse(tmp / "out" / "junit.xml").getroot()  # beside the report, in the --out the build created
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert set(cases) == {(SHIPPED, v["budget"]) for v in report["verdicts"]}
    assert root.get("failures") == "1"
    failure = cases[(SHIPPED, "size regression (≤ +5%)")].find("failure")
    assert failure is not None and "observed" in failure.get("message", "") and "baseline" in failure.get("message", "")


def test_the_step_summary_is_appended(ci_build):
    tmp, _, _, _ = ci_build
    text = (tmp / "summary.md").read_text()
    assert text.startswith("### edgepack build: digits-cnn on x86-cpu — FAIL: 1 of ")
    assert "| ❌ FAIL | size regression (≤ +5%) | onnxruntime-int8 |" in text


def test_the_build_is_in_the_history(ci_build):
    tmp, _, report, _ = ci_build
    (run,) = history.runs(tmp / "db" / "h.db")
    assert (run.model, run.target, run.runtimes, run.passed) == ("digits-cnn", "x86-cpu", "onnxruntime", False)
    assert run.git_commit == history.git_info().commit  # the repository the tests run in, or "" outside one
    size = next(a["size_bytes"] for a in report["artifacts"] if a["name"] == SHIPPED)
    assert [p.value for p in history.trend(tmp / "db" / "h.db", "size", SHIPPED)] == [size]
    result = CliRunner().invoke(cli, ["history", str(tmp / "db" / "h.db"), "--metric", "latency_p50"])
    assert result.exit_code == 0 and SHIPPED in result.output, result.output


def test_bad_ci_options_exit_2_before_any_work(digits_build, tmp_path):
    base_out, saved, _ = digits_build
    other_target = tmp_path / "other.json"
    other_target.write_text(json.dumps({**saved, "target": "android-arm64"}))
    not_a_db = tmp_path / "h.db"
    not_a_db.write_bytes(b"\x00garbage" * 512)
    base = str(base_out / "report.json")
    cases = [
        (["--baseline", str(other_target), "--max-regression", "10%"], "target 'android-arm64'"),
        (["--baseline", base, "--max-regression", "latency=10%,speed=1%"], "unknown metric 'speed'"),
        (["--baseline", base], "--baseline needs --max-regression"),
        (["--history", str(not_a_db)], "not an edgepack history database"),
        (["--junit", str(tmp_path)], "is a directory"),
    ]
    for args, fragment in cases:
        start = time.perf_counter()
        result = CliRunner().invoke(cli, ["build", "--model", "zoo:digits-cnn", "--out", str(tmp_path / "out"),
                                          *args])
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0], (args, result.output)
        assert time.perf_counter() - start < 5 and not (tmp_path / "out").exists()


def test_the_example_workflow_uses_only_real_options():
    """examples/github-actions.yml stays true: valid YAML, every option its edgepack command passes exists, and exit 3
    (a verdict) is told apart from other failures."""
    import re
    from pathlib import Path

    import yaml

    from edgepack.cli.build import command as build_command

    workflow = yaml.safe_load((Path(__file__).parents[1] / "examples" / "github-actions.yml").read_text())
    steps = workflow["jobs"]["budgets"]["steps"]
    script = next(s["run"] for s in steps if "edgepack build" in s.get("run", ""))
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", script))  # the build's options, the baseline's included
    known = {opt for param in build_command.params for opt in param.opts}
    assert {"--baseline", "--max-regression", "--junit"} <= used <= known, used - known
    assert '"$code" -ne 3' in script
    assert any(s.get("if") == "steps.build.outputs.code == '3'" and "exit 3" in s["run"] for s in steps)
    uploads = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert {u["with"]["name"] for u in uploads} == {"edgepack-report", "edgepack-bundle"}
    assert all(u.get("if") == "always()" for u in uploads)
