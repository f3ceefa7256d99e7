"""`build --auto` against an exhaustive grid over the same candidate space.

For each case (a model and budgets), the search runs as `build --auto` does (no cache), then every candidate of the
same space is built, verified and measured (no cache), and the grid's answer is the least compressed candidate
that meets every budget. Reported: wall time and candidates built by each, and whether auto found the same recipe,
another one that also meets every budget, or nothing where the grid found something.

    python benchmarks/auto_search.py [--cases digits-20KB,digits-15KB,...] [--runs 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from edgepack.config import load_target
from edgepack.inspection import inspect_model
from edgepack.loading import load_bundle
from edgepack.models.request import ModelRequest
from edgepack.plan import BuildRequest
from edgepack.progress import SilentProgress
from edgepack.records import Budget
from edgepack.budgets import parse_budget
from edgepack.search import Search, _best, _result, candidate_space

CASES = {
    "digits-20KB": ("zoo:digits-cnn", ("size=20KB", "accuracy_drop=3pp")),
    "digits-15KB": ("zoo:digits-cnn", ("size=15KB", "accuracy_drop=5pp")),
    "digits-10KB": ("zoo:digits-cnn", ("size=10KB", "accuracy_drop=5pp")),
    "digits-1KB": ("zoo:digits-cnn", ("size=1KB",)),
    "vit-65KB": ("zoo:digits-vit", ("size=65KB", "accuracy_drop=10pp")),
}


def budgets(texts: tuple[str, ...]) -> tuple[Budget, ...]:
    out = []
    for text in texts:
        metric, _, value = text.partition("=")
        out.append(parse_budget(metric, value, "p90"))
    return tuple(out)


def run_case(name: str, runs: int, work: Path) -> dict[str, object]:
    spec, limits = CASES[name]
    target = load_target("x86-cpu")
    request = BuildRequest(ModelRequest(spec), eval="zoo", runs=runs, budgets=budgets(limits), bundle=False,
                           out=work / name / "auto")
    started = time.perf_counter()
    _, search = Search(request, target, None, SilentProgress()).run(auto=True)
    auto_s = time.perf_counter() - started

    model = load_bundle(ModelRequest(spec))
    space = candidate_space(model, inspect_model(model), has_training_data=True)
    grid = Search(request, target, None, SilentProgress())
    started = time.perf_counter()
    results = []
    for i, candidate in enumerate(space):
        t0 = time.perf_counter()
        report, _ = grid.build(candidate.passes, work / name / f"grid-{i}")
        results.append(_result(i, candidate, report, False, time.perf_counter() - t0))
    grid_s = time.perf_counter() - started
    passing = [r for r in results if r.passed]
    grid_best = _best(passing) if passing else None
    auto_best = next((r for r in search.evaluated if r.index == search.chosen), None) if search.met else None
    if grid_best is None:
        verdict = "both: nothing meets the budgets" if auto_best is None else "auto met them (grid did not?)"
    elif auto_best is None:
        verdict = f"auto found nothing; grid: {grid_best.label}"
    elif auto_best.index == grid_best.index:
        verdict = "same recipe"
    else:
        gap = ((auto_best.accuracy or 0) - (grid_best.accuracy or 0)) * 100
        verdict = f"another recipe within budgets, accuracy {gap:+.2f} pp against the grid's"
    return {"case": name, "auto_s": auto_s, "auto_n": len(search.evaluated), "grid_s": grid_s, "grid_n": len(space),
            "auto": auto_best.label if auto_best else "none", "grid": grid_best.label if grid_best else "none",
            "verdict": verdict}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases.split(","):
            rows.append(run_case(name, args.runs, Path(tmp)))
            print(f"# {rows[-1]}", flush=True)
    print("| case | --auto: candidates built | --auto: wall time | grid: candidates | grid: wall time | --auto chose "
          "| grid's best within budgets | outcome |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['auto_n']} | {r['auto_s']:.0f} s | {r['grid_n']} | {r['grid_s']:.0f} s | "
              f"{r['auto']} | {r['grid']} | {r['verdict']} |")


if __name__ == "__main__":
    main()
