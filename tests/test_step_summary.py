"""The Markdown summary appended to $GITHUB_STEP_SUMMARY when the variable is set, and nothing when it is not."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from edgepack.cli import cli
from edgepack.report.step_summary import ENV_VAR, append_step_summary
from tests.ci_reports import latencies, report, write


def test_check_appends_a_verdict_table_when_the_variable_is_set(tmp_path):
    path = write(report(latencies(np.random.default_rng(1), 100), size=2000), tmp_path / "report.json")
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["check", str(path), "--budget", "1KB", "--max-latency", "1s"],
                           env={ENV_VAR: str(summary)})
    assert result.exit_code == 3, result.output
    text = summary.read_text()
    assert text.startswith("earlier step\n")  # appended: other steps of the job write there too
    assert "### edgepack check: tiny on x86-cpu — FAIL: 1 of 2 budget verdicts failed" in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0] == "| result | budget | artifact | observed | limit | details |"
    assert any(r.startswith("| ❌ FAIL | size | rt-int8 | 2.00 KB | 1.00 KB |") for r in rows), rows
    latency = next(r for r in rows if "latency (p90)" in r)
    assert latency.startswith("| ✅ pass |") and "95% interval" in latency and "order statistics" in latency
    result = runner.invoke(cli, ["check", str(path), "--budget", "1MB"], env={ENV_VAR: str(summary)})
    assert result.exit_code == 0
    assert summary.read_text().count("### edgepack check") == 2 and "PASS: all 1 budget verdicts met" in \
        summary.read_text()


def test_nothing_is_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert append_step_summary("text") is None
    path = write(report(), tmp_path / "report.json")
    result = CliRunner().invoke(cli, ["check", str(path), "--budget", "1MB"], env={ENV_VAR: ""})
    assert result.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_an_unwritable_summary_warns_and_keeps_the_verdict(tmp_path):
    path = write(report(), tmp_path / "report.json")
    result = CliRunner().invoke(cli, ["check", str(path), "--budget", "1B"], env={ENV_VAR: str(tmp_path)})
    assert result.exit_code == 3  # the budget's verdict, not an error about the summary
    assert "could not append to $GITHUB_STEP_SUMMARY" in result.output


def test_pipes_in_reasons_do_not_break_the_table():
    from edgepack.records import Verdict
    from edgepack.report.step_summary import summary_markdown

    verdict = Verdict("every runtime builds", "runtimes", "x (failed at export)", 0, 1.0, "failed", -1.0, False,
                      "a | b\nc")
    row = next(line for line in summary_markdown(report(), [verdict], "build").splitlines() if "every runtime" in line)
    assert row.count("|") - row.count("\\|") == 7 and "a \\| b c" in row
