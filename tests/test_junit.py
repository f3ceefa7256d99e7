"""JUnit XML: one test case per (budget, artifact), failures carrying observed vs limit; read back with ElementTree."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
from click.testing import CliRunner

from edgepack.budgets import parse_budget
from edgepack.cli import cli
from edgepack.gates import judge
from edgepack.regression import compare, parse_max_regression
from edgepack.report.junit import junit_xml
from tests.ci_reports import latencies, report, scaled, write


def _cases(root: ET.Element) -> dict[tuple[str, str], ET.Element]:
    return {(c.get("classname", ""), c.get("name", "")): c for c in root.iter("testcase")}


def test_every_verdict_is_a_test_case_and_failures_say_observed_vs_limit():
    current = report(latencies(np.random.default_rng(1), 100), size=2_000_000, top1=None)
    budgets = [parse_budget("size", "1MB"), parse_budget("memory", "1GB"), parse_budget("latency", "10s"),
               parse_budget("accuracy_drop", "1pp")]
    verdicts = judge(current, budgets)
    verdicts += compare(scaled(current, 1.5), current, parse_max_regression("latency=10%"), "base.json")
    root = ET.fromstring(junit_xml(current, verdicts, "check"))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("name") == "edgepack check: tiny on x86-cpu"
    assert (root.get("tests"), root.get("failures")) == ("5", "3")
    cases = _cases(suite)
    assert set(cases) == {("rt-int8", "size"), ("rt-int8", "memory"), ("rt-int8", "latency (p90)"),
                          ("rt-int8", "accuracy_drop"), ("rt-int8", "latency regression (≤ +10%)")}
    size = cases[("rt-int8", "size")].find("failure")
    assert size is not None and size.get("message") == "observed 2.00 MB, limit 1.00 MB"
    assert "over by 1.00 MB" in (size.text or "")
    unchecked = cases[("rt-int8", "accuracy_drop")].find("failure")
    assert unchecked is not None and unchecked.get("type") == "not checked" and "--eval" in unchecked.get("message", "")
    regression = cases[("rt-int8", "latency regression (≤ +10%)")].find("failure")
    assert regression is not None and "baseline" in regression.get("message", "")
    assert "Mann-Whitney U p=" in (regression.text or "")
    for passed in (("rt-int8", "memory"), ("rt-int8", "latency (p90)")):
        assert cases[passed].find("failure") is None
        assert (cases[passed].findtext("system-out") or "").startswith("pass  ")
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["model"] == "zoo:tiny" and properties["target"] == "x86-cpu"


def test_check_writes_junit_and_a_failure_still_exits_3(tmp_path):
    path = write(report(latencies(np.random.default_rng(2), 100)), tmp_path / "report.json")
    xml_file = tmp_path / "not" / "yet" / "out.xml"  # its directory is made when the file is written
    result = CliRunner().invoke(cli, ["check", str(path), "--budget", "500B", "--max-latency", "1s", "--junit",
                                      str(xml_file)])
    assert result.exit_code == 3, result.output
    root = ET.parse(xml_file).getroot()
    cases = _cases(root)
    assert cases[("rt-int8", "size")].find("failure") is not None
    assert cases[("rt-int8", "latency (p90)")].find("failure") is None
    assert root.get("failures") == "1"


def test_an_unwritable_junit_path_is_refused_before_judging(tmp_path):
    path = write(report(), tmp_path / "report.json")
    blocked = tmp_path / "file"
    blocked.write_text("")
    for target, fragment in ((tmp_path, "is a directory"), (blocked / "dir" / "x.xml", "not a writable")):
        result = CliRunner().invoke(cli, ["check", str(path), "--junit", str(target)])
        assert result.exit_code == 2 and fragment in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
