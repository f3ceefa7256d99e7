"""`edgepack check --history FILE.db`: a re-judged report is recorded like a build, with the verdicts of the check
(not the saved ones); a bad history file exits 2 before anything is judged or written."""

from __future__ import annotations

import sqlite3

from edgepack import history
from edgepack.cli import cli
from tests.ci_reports import report, write


def test_check_records_the_rejudged_report(runner, tmp_path):
    saved = write(report([1.0, 1.1, 0.9, 1.05], size=1000), tmp_path / "report.json")
    db = tmp_path / "db" / "h.db"  # its directory is created, like build's
    failed = runner.invoke(cli, ["check", str(saved), "--budget", "500B", "--history", str(db)])
    assert failed.exit_code == 3, failed.output
    passed = runner.invoke(cli, ["check", str(saved), "--budget", "2KB", "--max-latency", "5ms", "--history", str(db)])
    assert passed.exit_code == 0, passed.output
    runs = history.runs(db)
    assert [(r.passed, r.failed, r.verdicts) for r in runs] == [(False, 1, 1), (True, 0, 2)]
    assert runs[0].model == "tiny" and runs[0].target == "x86-cpu" and runs[0].created == "2026-01-01T00:00:00+00:00"
    assert [p.value for p in history.trend(db, "size", "rt-int8")] == [1000, 1000]
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT run_id, budget, observed, passed FROM verdicts ORDER BY run_id, budget").fetchall()
    assert rows == [(1, "size", 1000.0, 0), (2, "latency (p90)", rows[1][2], 1), (2, "size", 1000.0, 1)]
    listed = runner.invoke(cli, ["history", str(db)])
    assert listed.exit_code == 0 and "FAIL 1 of 1" in listed.output


def test_a_bad_history_file_exits_2_before_anything_is_written(runner, tmp_path):
    saved = write(report(), tmp_path / "report.json")
    db = tmp_path / "h.db"
    db.write_bytes(b"this is not a database, just some bytes " * 100)
    before = db.read_bytes()
    junit, page = tmp_path / "junit.xml", tmp_path / "page.html"
    result = runner.invoke(cli, ["check", str(saved), "--budget", "2KB", "--history", str(db), "--junit", str(junit),
                                 "--html", str(page)])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "not an edgepack history database" in result.output
    assert db.read_bytes() == before and not junit.exists() and not page.exists()
