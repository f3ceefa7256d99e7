"""The build history: SQLite round trip, git commit and branch, one transaction per build, bad files exit 2."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgepack import history
from edgepack.budgets import parse_budget
from edgepack.cli import cli
from edgepack.errors import UsageError
from edgepack.gates import judge
from tests.ci_reports import report

GIT = shutil.which("git")


MAIN = history.Git("abc123", "main")


def _record(db: Path, size: int, created: str, git: history.Git = MAIN) -> int:
    built = replace(report([1.0, 1.1, 0.9, 1.05], size=size), created=created)
    return history.record(db, built, judge(built, [parse_budget("size", "1KB")]), git)


def test_round_trip_of_runs_metrics_and_verdicts(tmp_path):
    db = tmp_path / "h.db"
    ids = [_record(db, size, f"2026-01-0{i + 1}T00:00:00+00:00") for i, size in enumerate((900, 950, 1200))]
    assert ids == [1, 2, 3]
    runs = history.runs(db)
    assert [r.id for r in runs] == ids  # oldest first
    assert [(r.passed, r.failed, r.verdicts) for r in runs] == [(True, 0, 1), (True, 0, 1), (False, 1, 1)]
    assert runs[0].model == "tiny" and runs[0].target == "x86-cpu" and runs[0].runtimes == "rt"
    assert (runs[0].git_commit, runs[0].git_branch) == ("abc123", "main")
    sizes = history.trend(db, "size", "rt-int8")
    assert [p.value for p in sizes] == [900, 950, 1200] and sizes[0].unit == "bytes"
    p50 = history.trend(db, "latency_p50")
    assert [p.value for p in p50] == pytest.approx([1.025] * 3) and p50[0].artifact == "rt-int8"
    assert [p.value for p in history.trend(db, "accuracy")] == pytest.approx([95.0] * 3)
    assert [p.run for p in history.trend(db, "size", limit=2)] == [2, 3]
    with sqlite3.connect(db) as conn:
        verdict = conn.execute("SELECT budget, artifact, observed, status, passed FROM verdicts WHERE run_id = 3")
        assert verdict.fetchall() == [("size", "rt-int8", 1200.0, "fail", 0)]
    assert history.runs(db, target="android-arm64") == []


def test_a_failure_mid_record_leaves_no_partial_run(tmp_path, monkeypatch):
    db = tmp_path / "h.db"
    _record(db, 900, "2026-01-01T00:00:00+00:00")

    def broken(_report):
        yield "rt-int8", "size", 1.0
        raise RuntimeError("disk full")

    monkeypatch.setattr(history, "_metrics", broken)
    with pytest.raises(RuntimeError):
        _record(db, 950, "2026-01-02T00:00:00+00:00")
    with sqlite3.connect(db) as conn:
        counts = [conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("runs", "artifacts", "metrics")]
    # only the first build: one run, one artifact, 7 metrics (size, 4 latency statistics, memory, accuracy)
    assert counts == [1, 1, 7]


def test_the_first_record_creates_the_schema_atomically(tmp_path, monkeypatch):
    db = tmp_path / "new.db"
    monkeypatch.setattr(history, "_insert", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        _record(db, 900, "2026-01-01T00:00:00+00:00")
    with sqlite3.connect(db) as conn:  # the schema went with the failed build: the file is an empty database
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == []


@pytest.mark.skipif(GIT is None, reason="git is not installed")
def test_git_commit_and_branch_of_the_working_directory(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    for args in (["init", "-q", "-b", "feature/x"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
                                                      "--allow-empty", "-m", "one"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    assert history.git_info(repo) == history.Git(head, "feature/x")
    subprocess.run(["git", "checkout", "-q", "--detach"], cwd=repo, check=True)
    monkeypatch.setenv("GITHUB_HEAD_REF", "pr-branch")
    assert history.git_info(repo) == history.Git(head, "pr-branch")  # detached, as CI checks out a pull request
    outside = tmp_path / "plain"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    assert history.git_info(outside) == history.Git()


def test_no_git_at_all_is_tolerated(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to be found
    assert history.git_info(tmp_path) == history.Git()


def test_history_command_lists_runs_and_the_trend(tmp_path):
    db = tmp_path / "h.db"
    for i, size in enumerate((900, 1200)):
        _record(db, size, f"2026-01-0{i + 1}T00:00:00+00:00")
    runner = CliRunner()
    listed = runner.invoke(cli, ["history", str(db)])
    assert listed.exit_code == 0, listed.output
    assert "tiny" in listed.output and "abc123" in listed.output and "FAIL 1 of 1" in listed.output
    trend = runner.invoke(cli, ["history", str(db), "--metric", "size", "--artifact", "rt-int8"])
    assert trend.exit_code == 0, trend.output
    assert "900 B" in trend.output and "1.20 KB" in trend.output and "+33.3%" in trend.output
    as_json = runner.invoke(cli, ["history", str(db), "--metric", "size", "--json"])
    assert [p["value"] for p in json.loads(as_json.stdout)] == [900, 1200]


@pytest.mark.parametrize("make,fragment", [
    (lambda p: p.write_bytes(b"this is not a database, just some bytes " * 100), "not an edgepack history database"),
    (lambda p: sqlite3.connect(p).execute("CREATE TABLE other (x)").connection.commit(), "not an edgepack history"),
    (lambda p: (_record(p, 900, "2026-01-01T00:00:00+00:00"),
                sqlite3.connect(p).execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
                .connection.commit()), "newer than this edgepack"),
    (lambda p: None, "no such history file"),
])
def test_bad_history_files_exit_2_with_one_line(tmp_path, make, fragment):
    db = tmp_path / "h.db"
    make(db)
    before = db.read_bytes() if db.exists() else None
    result = CliRunner().invoke(cli, ["history", str(db)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.output
    assert (db.read_bytes() if db.exists() else None) == before  # reading never creates or changes the file
    if before is not None and fragment != "newer than this edgepack":
        with pytest.raises(UsageError, match=fragment):
            history.check_history_file(db)  # and a build is refused before it starts


def test_unknown_metric_or_artifact_names_the_known_ones(tmp_path):
    db = tmp_path / "h.db"
    _record(db, 900, "2026-01-01T00:00:00+00:00")
    runner = CliRunner()
    result = runner.invoke(cli, ["history", str(db), "--metric", "speed"])
    assert result.exit_code == 2 and "latency_p50" in result.output
    result = runner.invoke(cli, ["history", str(db), "--metric", "size", "--artifact", "nope"])
    assert result.exit_code == 2 and "it has: rt-int8" in result.output
