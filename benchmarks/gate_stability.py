"""How stable the latency gates are on one unchanged artifact measured again and again.

    python benchmarks/gate_stability.py [--repeats 40] [--runs 100] [--children 1] [--model zoo:digits-cnn]
                                        [--stat p90] [--save SAMPLES.json | --load SAMPLES.json]

Builds the model once for x86-cpu, then times its shipped artifact `--repeats` times through the measuring child
process every build uses (a fresh process each time, as each CI build would be), keeping every run's samples
(`--children K` pools K fresh children per repeat). Each repeat also times the artifact in the fresh children a
build adds when a latency verdict is too close to call (remeasure.EXTRA_PROCESSES of RUNS_FACTOR x --runs each);
they are used only when the verdict asks for them, through the build's own remeasure_close_calls. Then:

- the latency budget at the edge (limit = the median of the repeats' p90), 10, 25 and 50 % above it and 20 % below
  it: how often the old single-number rule fails, how often the one-process interval and the build's rule pass,
  fail, or stay too close, how often the gate fails (too close to call fails by default) and flips. Above
  the edge every fail is a false alarm: the unchanged artifact meets its budget in the median process; 20 % below
  it, every pass is a missed overshoot. "build rule" re-measures verdicts too close to call and fails within
  remeasure.FAIL_REACH of the limit (what a build does); "too close only" re-measures verdicts too close to call only;
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
from edgepack.remeasure import EXTRA_PROCESSES, RUNS_FACTOR, remeasure_close_calls
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


class Replay:
    """Stands in for the build's Measurer: hands out the extra children timed beforehand for this repeat."""

    def __init__(self, name: str, extra: list[list[float]]) -> None:
        self.name, self.extra, self.used = name, list(extra), 0

    def measure(self, artifact: object, inputs: object, runs: int | None = None) -> Measurement:
        self.used += 1
        return as_measurement(self.name, self.extra.pop(0))


def one_artifact_report(name: str) -> Report:
    """A report that ships one artifact, `name`: what the verdicts below are judged on (the samples are set in)."""
    from edgepack.records import Artifact, Provenance

    return Report("0", "", "x86-cpu", "", Provenance("", "", "", "", 0, 0, ()), shipping=(name,),
                  artifacts=(Artifact(name, "", "onnx", "onnxruntime", "int8", 0, "", (), ()),))


def verdict_rates(report: Report, repeats: list[list[float]], extras: list[list[list[float]]],
                  limit_ms: float, stat: str = "p90") -> dict[str, float]:
    name = report.shipping[0]
    budget = parse_budget("latency", f"{limit_ms}ms", stat)
    old, one, new, gate, remeasured = [], [], [], [], 0
    close_only: list[str] = []
    close_only_gate: list[bool] = []
    for samples, extra in zip(repeats, extras):
        first = replace(report, measurements=(as_measurement(name, samples),), budgets=(budget,))
        first = replace(first, verdicts=tuple(judge(first)))
        verdict = first.verdicts[0]
        old.append((verdict.observed or 0) <= limit_ms)
        one.append(verdict.status)
        replay = Replay(name, extra)
        final = remeasure_close_calls(first, replay, []).verdicts[0]  # type: ignore[arg-type]
        remeasured += replay.used > 0
        new.append(final.status)
        gate.append(final.passed)  # the default tolerance: still too close to call fails
        only = remeasure_close_calls(first, Replay(name, extra), [], fails=False).verdicts[0]  # type: ignore[arg-type]
        close_only.append(only.status)
        close_only_gate.append(only.passed)
    n = len(repeats)
    flips = lambda seq: sum(a != b for a, b in zip(seq, seq[1:])) / max(1, n - 1)  # noqa: E731
    return {"old fail": old.count(False) / n, "old flips": flips(old), "one pass": one.count(PASS) / n,
            "one fail": one.count(FAIL) / n, "one close": one.count(TOO_CLOSE) / n, "remeasured": remeasured / n,
            "pass": new.count(PASS) / n, "fail": new.count(FAIL) / n, "too close": new.count(TOO_CLOSE) / n,
            "gate fail": gate.count(False) / n, "gate flips": flips(gate),
            "close-only fail": close_only.count(FAIL) / n, "close-only gate fail": close_only_gate.count(False) / n}


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
    parser.add_argument("--save", type=Path, help="write every repeat's samples (and the re-measures') to this JSON")
    parser.add_argument("--load", type=Path, help="judge the samples a --save run wrote instead of measuring")
    parser.add_argument("--stat", default="p90", choices=("p50", "p90", "p99", "mean"),
                        help="the latency budget's statistic")
    args = parser.parse_args()
    if args.load:
        saved = json.loads(args.load.read_text())
        args.model, args.runs, args.children = saved["model"], saved["runs"], saved.get("children", 1)
        args.repeats, name = len(saved["repeats"]), saved.get("artifact", "onnxruntime-int8")
        report_and_runs(one_artifact_report(name), saved["repeats"], saved["extras"], args)
        return
    with tempfile.TemporaryDirectory(prefix="gate-stability-") as tmp:
        report = build(args.model, Path(tmp) / "out")
        spec = report.artifact(report.shipping[0]).inputs
        inputs = Path(tmp) / "inputs.npz"
        rng = np.random.default_rng(0)
        np.savez(inputs, *[rng.standard_normal([d if isinstance(d, int) else 1 for d in t.shape]).astype(t.dtype)
                           for t in spec])
        repeats, extras = [], []
        for _ in range(args.repeats):
            repeats.append([x for _ in range(args.children) for x in time_once(report, inputs, args.runs)])
            extras.append([time_once(report, inputs, args.runs * RUNS_FACTOR) for _ in range(EXTRA_PROCESSES)])
    if args.save:
        args.save.write_text(json.dumps({"model": args.model, "runs": args.runs, "children": args.children,
                                         "artifact": report.shipping[0], "repeats": repeats, "extras": extras}))
    report_and_runs(one_artifact_report(report.shipping[0]), repeats, extras, args)


def report_and_runs(report: Report, repeats: list[list[float]], extras: list[list[list[float]]],
                    args: argparse.Namespace) -> None:
    p90s = [percentile(sorted(s), 90) for s in repeats]
    p50s = [percentile(sorted(s), 50) for s in repeats]
    stat = args.stat
    edge = statistics.median(as_measurement("a", s).latency_ms(stat) for s in repeats)
    print(f"{report.shipping[0]} of {args.model}: {args.repeats} repeats of {args.children} measuring child(ren) x "
          f"{args.runs} runs; p50 "
          f"{min(p50s):.4f}-{max(p50s):.4f} ms, p90 {min(p90s):.4f}-{max(p90s):.4f} ms across repeats")
    print(f"\nlatency budget on {stat}; the edge: the median {stat} of the repeats, {edge:.4f} ms. Re-measured: "
          f"{EXTRA_PROCESSES} more children of {args.runs * RUNS_FACTOR} runs each")
    print("\n| latency budget | single number: fails | flips | 1 process: pass | fail | too close | re-measured | "
          "build rule: pass | fail | too close | gate fails | gate flips | too close only: fail | gate fails |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, limit in (("20 % below the edge (a real overshoot)", edge / 1.2), (f"at the edge (median {stat})", edge),
                         ("10 % above the edge", edge * 1.1), ("25 % above the edge", edge * 1.25),
                         ("50 % above the edge", edge * 1.5)):
        r = verdict_rates(report, repeats, extras, limit, stat)
        print(f"| {label} | {r['old fail']:.0%} | {r['old flips']:.0%} | {r['one pass']:.0%} | {r['one fail']:.0%} | "
              f"{r['one close']:.0%} | {r['remeasured']:.0%} | {r['pass']:.0%} | {r['fail']:.0%} | "
              f"{r['too close']:.0%} | {r['gate fail']:.0%} | {r['gate flips']:.0%} | {r['close-only fail']:.0%} | "
              f"{r['close-only gate fail']:.0%} |")
    r = regression_rates(repeats)
    print(f"\nregression gate over {r['pairs']} pairs of repeats:")
    for key in ("unchanged, 10% threshold", "unchanged, rank test alone", "20% slower, 10% threshold"):
        print(f"- {key}: flagged {r[key]:.1%}")


if __name__ == "__main__":
    main()
