"""How stable the latency gates are on one unchanged artifact measured again and again.

    python benchmarks/gate_stability.py [--repeats 40] [--runs 100] [--children 1] [--model zoo:digits-cnn]

Builds the model once for x86-cpu, then times its shipped artifact `--repeats` times through the measuring child
process every build uses (a fresh process each time, as each CI build would be), keeping every run's samples
(`--children K` pools K fresh children per repeat). Then:

- the latency budget at the edge (limit = the median of the repeats' p90): how often the old single-number rule and
  the interval rule pass, fail, or call it too close, and how often consecutive verdicts flip;
- the same budget 10 % above the edge: false alarms (a definite fail of an artifact that meets its budget);
- the regression gate on every pair of repeats (an unchanged artifact against itself): false alarms at a 10 %
  threshold and with the rank test alone, and the same pairs with the later run's samples made 20 % slower.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from edgepack.budgets import parse_budget
from edgepack.gates import judge
from edgepack.measure import RESULT_PREFIX
from edgepack.records import FAIL, PASS, TOO_CLOSE, Measurement, Report
from edgepack.regression import Threshold, latency_verdict
from edgepack.stats import percentile


def build(model: str, out: Path) -> Report:
    from edgepack.cli import cli

    with contextlib.redirect_stdout(io.StringIO()):  # the build's table; only this script's figures are printed
        code = cli.main(["build", "--model", model, "--target", "x86-cpu", "--out", str(out), "--quiet", "--runs",
                         "10"], standalone_mode=False)
    if code not in (0, 3):
        raise SystemExit(f"the build failed (exit {code})")
    return Report.from_json((out / "report.json").read_text())


def time_once(report: Report, inputs: Path, runs: int) -> list[float]:
    """One measuring child, as a build starts it: the artifact's per-run latencies in ms."""
    artifact = report.artifact(report.shipping[0])
    cmd = [sys.executable, "-m", "edgepack.measure", "--runtime", artifact.runtime, "--inputs", str(inputs),
           "--threads", "1", "--artifact", artifact.path, "--runs", str(runs), "--warmup", "10",
           *[f"--setting={k}={v}" for k, v in artifact.session_options.items()]]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    line = next(line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX))
    return list(json.loads(line[len(RESULT_PREFIX):])["samples_ms"])


def as_measurement(name: str, samples: list[float]) -> Measurement:
    s = sorted(samples)
    return Measurement(name, "", "", "", 1, 10, len(s), percentile(s, 50), percentile(s, 90), percentile(s, 99),
                       sum(s) / len(s), 0.0, s[0], s[-1], None, None, None, None, None, samples_ms=tuple(samples))


def verdict_rates(report: Report, repeats: list[list[float]], limit_ms: float) -> dict[str, float]:
    name = report.shipping[0]
    budget = parse_budget("latency", f"{limit_ms}ms", "p90")
    old, new, gate = [], [], []
    for samples in repeats:
        verdict = judge(replace(report, measurements=(as_measurement(name, samples),)), [budget])[0]
        old.append((verdict.observed or 0) <= limit_ms)
        new.append(verdict.status)
        gate.append(verdict.passed)  # the default tolerance: too close to call fails
    n = len(repeats)
    flips = lambda seq: sum(a != b for a, b in zip(seq, seq[1:])) / max(1, n - 1)  # noqa: E731
    return {"old fail": old.count(False) / n, "old flips": flips(old), "pass": new.count(PASS) / n,
            "fail": new.count(FAIL) / n, "too close": new.count(TOO_CLOSE) / n, "gate fail": gate.count(False) / n,
            "gate flips": flips(gate)}


def regression_rates(repeats: list[list[float]]) -> dict[str, float]:
    pairs = list(itertools.combinations(range(len(repeats)), 2))
    m = [as_measurement("a", s) for s in repeats]
    slower = [as_measurement("a", [x * 1.2 for x in s]) for s in repeats]
    flagged = lambda t, after: sum(not latency_verdict(t, "a", after[j], m[i]).passed  # noqa: E731
                                   for i, j in pairs) / len(pairs)
    return {"pairs": len(pairs), "unchanged, 10% threshold": flagged(Threshold("latency", 10, True), m),
            "unchanged, rank test alone": flagged(Threshold("latency", 0, True), m),
            "20% slower, 10% threshold": flagged(Threshold("latency", 10, True), slower)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="zoo:digits-cnn")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--children", type=int, default=1, help="measuring children pooled into one repeat's samples "
                        "(a build that measures in several fresh processes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gate-stability-") as tmp:
        report = build(args.model, Path(tmp) / "out")
        spec = report.artifact(report.shipping[0]).inputs
        inputs = Path(tmp) / "inputs.npz"
        rng = np.random.default_rng(0)
        np.savez(inputs, *[rng.standard_normal([d if isinstance(d, int) else 1 for d in t.shape]).astype(t.dtype)
                           for t in spec])
        repeats = [[x for _ in range(args.children) for x in time_once(report, inputs, args.runs)]
                   for _ in range(args.repeats)]
    p90s = [percentile(sorted(s), 90) for s in repeats]
    p50s = [percentile(sorted(s), 50) for s in repeats]
    edge = statistics.median(p90s)
    print(f"{report.shipping[0]} of {args.model}: {args.repeats} repeats of {args.children} measuring child(ren) x "
          f"{args.runs} runs; p50 "
          f"{min(p50s):.4f}-{max(p50s):.4f} ms, p90 {min(p90s):.4f}-{max(p90s):.4f} ms across repeats")
    print("\n| latency budget | single number: fails | flips | interval: pass | fail | too close | gate fails | "
          "gate flips |")
    print("|---|---|---|---|---|---|---|---|")
    for label, limit in (("at the edge (median p90)", edge), ("10 % above the edge", edge * 1.1),
                         ("25 % above the edge", edge * 1.25)):
        r = verdict_rates(report, repeats, limit)
        print(f"| {label} | {r['old fail']:.0%} | {r['old flips']:.0%} | {r['pass']:.0%} | {r['fail']:.0%} | "
              f"{r['too close']:.0%} | {r['gate fail']:.0%} | {r['gate flips']:.0%} |")
    r = regression_rates(repeats)
    print(f"\nregression gate over {r['pairs']} pairs of repeats:")
    for key in ("unchanged, 10% threshold", "unchanged, rank test alone", "20% slower, 10% threshold"):
        print(f"- {key}: flagged {r[key]:.1%}")


if __name__ == "__main__":
    main()
