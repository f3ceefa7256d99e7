"""Build history in an SQLite file (`--history FILE.db`): every build's model, target, git commit and branch,
artifacts, metrics and verdicts, so a metric's trend can be read back (`edgepack history`).

One transaction per build: a build is recorded whole or not at all. A file that is not an edgepack history database,
or is from a newer edgepack, is a usage error (one line, exit 2), never overwritten.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

from edgepack.errors import UsageError, one_line
from edgepack.records import Report, Verdict

SCHEMA_VERSION = 1
APP = "edgepack history"
# metric -> unit; the per-artifact figures a build records and `edgepack history --metric` reads
METRICS = {
    "size": "bytes", "latency_p50": "ms", "latency_p90": "ms", "latency_p99": "ms", "latency_mean": "ms",
    "memory": "bytes", "accuracy": "%",
}
SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, created TEXT NOT NULL, recorded TEXT NOT NULL, edgepack_version TEXT NOT NULL,
    model TEXT NOT NULL, source TEXT NOT NULL, target TEXT NOT NULL, runtimes TEXT NOT NULL,
    git_commit TEXT NOT NULL, git_branch TEXT NOT NULL, passed INTEGER NOT NULL, verdicts INTEGER NOT NULL,
    failed INTEGER NOT NULL, out_dir TEXT NOT NULL);
CREATE TABLE artifacts (
    run_id INTEGER NOT NULL REFERENCES runs(id), name TEXT NOT NULL, runtime TEXT NOT NULL, precision TEXT NOT NULL,
    shipped INTEGER NOT NULL, PRIMARY KEY (run_id, name));
CREATE TABLE metrics (
    run_id INTEGER NOT NULL REFERENCES runs(id), artifact TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL,
    unit TEXT NOT NULL, PRIMARY KEY (run_id, artifact, metric));
CREATE TABLE verdicts (
    run_id INTEGER NOT NULL REFERENCES runs(id), budget TEXT NOT NULL, metric TEXT NOT NULL, artifact TEXT NOT NULL,
    limit_value REAL NOT NULL, observed REAL, unit TEXT NOT NULL, status TEXT NOT NULL, passed INTEGER NOT NULL,
    reason TEXT NOT NULL);
"""
TABLES = {"meta", "runs", "artifacts", "metrics", "verdicts"}


@dataclass(frozen=True)
class Git:
    commit: str = ""
    branch: str = ""


@dataclass(frozen=True)
class Run:
    id: int
    created: str
    model: str
    target: str
    runtimes: str
    git_commit: str
    git_branch: str
    passed: bool
    verdicts: int
    failed: int


@dataclass(frozen=True)
class Point:
    """One run's value of a metric for one artifact."""

    run: int
    created: str
    git_commit: str
    git_branch: str
    artifact: str
    value: float
    unit: str


def git_info(cwd: Optional[Path] = None) -> Git:
    """The commit and branch of the git repository `cwd` is in; empty when it is in none or git is missing.

    A detached HEAD (as CI checks out pull requests) takes its branch from GitHub Actions' variables when set."""
    def run(*args: str) -> str:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = run("rev-parse", "HEAD")
    if not commit:
        return Git()
    branch = run("rev-parse", "--abbrev-ref", "HEAD")
    if branch in ("", "HEAD"):
        branch = os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME") or ""
    return Git(commit, branch)


def check_history_file(path: Path) -> None:
    """Before a build: an existing file must be an edgepack history database of a version this edgepack reads, and
    a new one must be creatable, so a bad --history fails in milliseconds instead of after the build."""
    if path.is_dir():
        raise UsageError(f"--history {path} is a directory; name a file")
    if path.exists():
        with contextlib.closing(_connect(path, readonly=True)) as conn:
            _check_schema(conn, path, allow_empty=True)
        return
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--history {path}: {existing} is not a writable directory; choose a writable path")


def record(path: Path, report: Report, verdicts: Sequence[Verdict], git: Git) -> int:
    """Record one build in one transaction (the schema is created in the same one); returns its run id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(_connect(path, readonly=False)) as conn:
        try:
            conn.execute("BEGIN IMMEDIATE")
            if not _check_schema(conn, path, allow_empty=True):
                # statement by statement: executescript would commit the open transaction first
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.executemany("INSERT INTO meta VALUES (?, ?)",
                                 [("app", APP), ("schema_version", str(SCHEMA_VERSION))])
            run_id = _insert(conn, report, verdicts, git)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return run_id


def _insert(conn: sqlite3.Connection, report: Report, verdicts: Sequence[Verdict], git: Git) -> int:
    failed = sum(1 for v in verdicts if not v.passed)
    runtimes = ",".join(sorted({a.runtime for a in report.artifacts}))
    recorded = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    cursor = conn.execute(
        "INSERT INTO runs (created, recorded, edgepack_version, model, source, target, runtimes, git_commit, "
        "git_branch, passed, verdicts, failed, out_dir) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (report.created, recorded, report.edgepack_version, report.model.model_name, report.model.source,
         report.target, runtimes, git.commit, git.branch, int(failed == 0), len(verdicts), failed, report.out_dir))
    run_id = int(cursor.lastrowid or 0)
    conn.executemany("INSERT INTO artifacts VALUES (?, ?, ?, ?, ?)",
                     [(run_id, a.name, a.runtime, a.precision, int(a.name in report.shipping))
                      for a in report.artifacts])
    conn.executemany("INSERT INTO metrics VALUES (?, ?, ?, ?, ?)",
                     [(run_id, artifact, metric, value, METRICS[metric]) for artifact, metric, value in
                      _metrics(report)])
    conn.executemany("INSERT INTO verdicts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [(run_id, v.budget, v.metric, v.artifact, v.limit, v.observed, v.unit, v.status, int(v.passed),
                       v.reason) for v in verdicts])
    return run_id


def _metrics(report: Report) -> Iterator[tuple[str, str, float]]:
    for a in report.artifacts:
        yield a.name, "size", float(a.size_bytes)
    for m in report.measurements:
        for stat in ("p50", "p90", "p99", "mean"):
            yield m.artifact, f"latency_{stat}", m.latency_ms(stat)
        if m.memory_bytes is not None:
            yield m.artifact, "memory", float(m.memory_bytes)
    for acc in report.accuracy:
        if acc.score is not None and acc.artifact in {a.name for a in report.artifacts}:
            yield acc.artifact, "accuracy", acc.score * 100.0


def runs(path: Path, model: Optional[str] = None, target: Optional[str] = None, limit: int = 20) -> list[Run]:
    """The latest `limit` runs, oldest first."""
    clauses, args = _filters(model, target)
    where = "WHERE " + " AND ".join(clauses) if clauses else ""
    with _reader(path) as conn:
        rows = conn.execute(f"SELECT id, created, model, target, runtimes, git_commit, git_branch, passed, verdicts, "
                            f"failed FROM runs {where} ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
    return [Run(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9]) for r in reversed(rows)]


def trend(path: Path, metric: str, artifact: Optional[str] = None, model: Optional[str] = None,
          target: Optional[str] = None, limit: int = 20) -> list[Point]:
    """One metric over the latest `limit` runs, oldest first: of `artifact`, or of every shipped artifact."""
    if metric not in METRICS:
        raise UsageError(f"--metric {metric!r} is unknown; use one of {', '.join(METRICS)}")
    clauses, args = _filters(model, target, prefix="r.")
    with _reader(path) as conn:
        if artifact is not None:
            known = [row[0] for row in conn.execute("SELECT DISTINCT name FROM artifacts ORDER BY name")]
            if artifact not in known:
                raise UsageError(f"--artifact {artifact!r}: {path} records no such artifact; it has: "
                                 f"{', '.join(known) or 'none'}")
            clauses.append("m.artifact = ?")
            args.append(artifact)
        else:
            clauses.append("a.shipped = 1")
        rows = conn.execute(
            "SELECT r.id, r.created, r.git_commit, r.git_branch, m.artifact, m.value, m.unit FROM metrics m "
            "JOIN runs r ON r.id = m.run_id JOIN artifacts a ON a.run_id = m.run_id AND a.name = m.artifact "
            f"WHERE m.metric = ? AND {' AND '.join(clauses)} ORDER BY r.id DESC, m.artifact LIMIT ?",
            (metric, *args, limit)).fetchall()
    return [Point(*row) for row in reversed(rows)]


def _filters(model: Optional[str], target: Optional[str], prefix: str = "") -> tuple[list[str], list[str]]:
    clauses, args = [], []
    for column, value in (("model", model), ("target", target)):
        if value is not None:
            clauses.append(f"{prefix}{column} = ?")
            args.append(value)
    return clauses, args


@contextlib.contextmanager
def _reader(path: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to an existing history file whose schema has been checked."""
    if not path.is_file():
        raise UsageError(f"{path}: no such history file; `edgepack build --history {path}` creates it")
    with contextlib.closing(_connect(path, readonly=True)) as conn:
        if not _check_schema(conn, path, allow_empty=False):
            raise UsageError(f"{path}: an empty database, not an edgepack history file")
        yield conn


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    try:
        if readonly:  # read-only through a URI, so reading never creates or changes a file
            conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        else:
            conn = sqlite3.connect(str(path), timeout=30, isolation_level=None)  # transactions are explicit
    except sqlite3.Error as exc:
        raise UsageError(f"{path}: cannot open the history database ({one_line(exc)})") from None
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path, allow_empty: bool) -> bool:
    """True when the file holds edgepack history this version reads; False when it is an empty database (and
    `allow_empty`); otherwise a UsageError saying what the file is."""
    try:
        if conn.execute("PRAGMA quick_check").fetchone() != ("ok",):
            raise UsageError(f"{path}: the history database is damaged (sqlite quick_check failed); restore it or "
                             f"choose another --history file")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and allow_empty:
            return False
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall()) if "meta" in tables else {}
    except sqlite3.DatabaseError as exc:
        raise UsageError(f"{path}: not an edgepack history database ({one_line(exc)})") from None
    if meta.get("app") != APP or not TABLES <= tables:
        raise UsageError(f"{path}: an SQLite database, but not an edgepack history file; choose another --history "
                         f"file")
    version = meta.get("schema_version", "")
    if not version.isdigit() or int(version) > SCHEMA_VERSION:
        raise UsageError(f"{path}: history schema {version!r} is newer than this edgepack reads "
                         f"({SCHEMA_VERSION}); upgrade edgepack")
    return True
