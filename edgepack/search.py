"""`build --auto`: search compression recipes for the budgets, each candidate built, verified and measured for real.

Candidates come from the model's family (see strategy.py), ordered from the least compression to the most: none,
then pruning ratios for a CNN, dropped blocks (with low-rank where the ranks allow) for a transformer, low-rank
energies for an MLP, nothing for an RNN; fine-tuning after each structural pass when training data exists. Each
candidate is a whole build (its int8 accuracy rescue included) in a scratch directory.

The search walks that order instead of trying everything, on two assumptions a build then checks: more compression
never makes a model bigger or slower, and never more accurate. The plain build goes first; if it meets every budget,
nothing is compressed. Otherwise the walk starts at the candidate the measured shortfall points to (strategy's
estimate), goes one step stronger while only size/latency/memory fail, one step weaker while only accuracy fails;
once a candidate meets every budget it tries one step weaker (the estimate may overshoot) and stops at the least
compressed candidate that meets every budget, at a candidate that fails both ways (nothing in between can meet
both), or where it has been. Of those that meet every budget, the most accurate ships (then the smallest).
Candidates it skips are ruled out by what it measured. When nothing meets the budgets, the closest candidate ships
as the build's output and the build exits 3 naming the budgets it misses.

Results are cached by content hash (cache.py), so a repeated search, or an unchanged rebuild, is served from the
cache, and says so with when it was measured.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from edgepack.executors import BuildFailure
from edgepack.records import Record
from edgepack.strategy import SHRINK_METRICS

if TYPE_CHECKING:
    from edgepack.cache import BuildCache
    from edgepack.compress import PassConfig
    from edgepack.config import Target
    from edgepack.executors import Executor
    from edgepack.plan import BuildRequest
    from edgepack.progress import Progress
    from edgepack.records import Report

PRUNE_RATIOS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.75)
LOWRANK_ENERGIES = (0.95, 0.9, 0.8, 0.7)
SEARCHED_METRICS = (*SHRINK_METRICS, "accuracy_drop")  # the budgets a recipe can be searched for


@dataclass(frozen=True)
class CandidateResult(Record):
    """One candidate recipe, built and judged."""

    index: int
    label: str  # e.g. "prune ratio=0.4, finetune epochs=3"
    recipe: tuple[str, ...]  # its passes in the command-line form, in order
    passed: bool
    misses: tuple[str, ...] = ()  # the budgets it fails, as "size: 21.18 KB > 20.00 KB"
    failed_metrics: tuple[str, ...] = ()
    shipped: str = ""
    size_bytes: Optional[float] = None
    latency_ms: Optional[float] = None
    accuracy: Optional[float] = None  # the task's score of the shipped artifact
    seconds: float = 0.0
    cached: bool = False
    measured_at: str = ""  # when its figures were measured (an earlier run's date when served from the cache)
    error: str = ""  # the build failed outright (e.g. every artifact below the parity floor)
    excess: float = 0.0  # how far past its limits, summed over failing budgets ((observed - limit) / limit)


@dataclass(frozen=True)
class SearchResult(Record):
    family: str
    candidates: int  # how many the space held
    evaluated: tuple[CandidateResult, ...]
    chosen: int  # index of the candidate shipped (the closest one when none met every budget)
    met: bool
    pareto: tuple[int, ...]  # indices of the evaluated candidates no other beats on size, latency and accuracy
    steps: tuple[str, ...]  # why the walk went where it went
    seconds: float
    executor: str = "local"  # where the candidate builds ran


@dataclass(frozen=True)
class _Candidate:
    passes: tuple["PassConfig", ...]
    kept: Optional[float]  # estimated fraction of weights/MACs kept; None: unknown (low-rank)

    @property
    def recipe(self) -> tuple[str, ...]:
        from edgepack.compress import recipe_fields

        return tuple(f"{p.kind} " + ",".join(f"{k}={v}" for k, v in recipe_fields(p).items()) for p in self.passes)

    @property
    def label(self) -> str:
        return ", ".join(self.recipe) or "no compression"


def candidate_space(model: Any, inspection: Any, has_training_data: bool) -> list[_Candidate]:
    """The recipes for this family, weakest first; the first is always no compression."""
    from edgepack.compress import DropLayersConfig, FinetuneConfig, LowRankConfig, PruneConfig
    from edgepack.strategy import FINETUNE_EPOCHS, LOWRANK_ENERGY, block_stack, lowrank_room

    tune: tuple[Any, ...] = (FinetuneConfig(epochs=FINETUNE_EPOCHS),) if has_training_data else ()
    out = [_Candidate((), 1.0)]
    family = inspection.family
    if family == "RNN":
        return out
    if family == "transformer":
        depth, share, container = block_stack(model)
        low: tuple[Any, ...] = (LowRankConfig(energy=LOWRANK_ENERGY),) if lowrank_room(inspection) else ()
        if depth >= 2 and share > 0:
            return out + [_Candidate((DropLayersConfig(middle=k, container=container), *low, *tune),
                                     1 - share * k / depth) for k in range(1, depth)]
        if low:
            return out + [_Candidate((LowRankConfig(energy=e), *tune), None) for e in LOWRANK_ENERGIES]
        return out
    if family == "MLP" and lowrank_room(inspection):
        return out + [_Candidate((LowRankConfig(energy=e), *tune), None) for e in LOWRANK_ENERGIES]
    return out + [_Candidate((PruneConfig(ratio=r), *tune), (1 - r) ** 2) for r in PRUNE_RATIOS]


class Search:
    def __init__(self, request: "BuildRequest", target: "Target", cache: Optional["BuildCache"],
                 progress: "Progress", executor: Optional["Executor"] = None) -> None:
        from edgepack.executors import LocalExecutor

        self.request, self.target, self.cache, self.progress = request, target, cache, progress
        self.executor = executor or LocalExecutor()
        self._digest: Optional[str] = None

    # ---- builds, from the cache or for real ---------------------------------------------------------------------
    def build(self, passes: Sequence["PassConfig"], where: Path) -> tuple["Report", bool]:
        """(report, served from the cache) of the request with these passes, its files in `where`."""
        (outcome,) = self.build_many([tuple(passes)], [where])
        if isinstance(outcome, BuildFailure):
            raise _failure(outcome)
        return outcome

    def build_many(self, recipes: Sequence[tuple["PassConfig", ...]],
                   places: Sequence[Path]) -> list[Any]:
        """Each recipe built into its place: (report, cached) or BuildFailure, in order. Cache hits are served here;
        the rest go to the executor together (a Ray executor runs them side by side)."""
        from edgepack.gates import judge
        from edgepack.plan import plan
        from edgepack.report.reading import read_report

        outcomes: list[Any] = [None] * len(recipes)
        jobs, pending = [], []
        for n, (passes, where) in enumerate(zip(recipes, places)):
            request = replace(self.request, passes=tuple(passes), out=where)
            build_plan = plan(request, self.target)
            key = self._key(request, build_plan) if self.cache is not None else ""
            entry = self.cache.lookup(key) if self.cache is not None else None
            if entry is not None:
                shutil.copytree(entry, where, dirs_exist_ok=True)
                report = _relocated(read_report(where / "report.json"), where)
                outcomes[n] = (replace(report, verdicts=tuple(judge(report, build_plan.budgets))), True)
            else:
                jobs.append((request, self.target, where))
                pending.append((n, key))
        for (n, key), outcome in zip(pending, self.executor.run(jobs) if jobs else []):
            if isinstance(outcome, BuildFailure):
                outcomes[n] = outcome
                continue
            where = places[n]
            if self.cache is not None:
                self.cache.store(key, where)
            outcomes[n] = (_relocated(read_report(where / "report.json"), where), False)
        return outcomes

    def _key(self, request: "BuildRequest", build_plan: Any) -> str:
        from edgepack import __version__
        from edgepack.cache import build_key, data_digest
        from edgepack.measure import host_info
        from edgepack.runtimes import get_runtime
        from edgepack.runtimes.base import package_versions

        versions = {"edgepack": __version__, **package_versions("torch", "numpy")}
        for rt in build_plan.runtimes:
            versions.update(get_runtime(rt.name).versions())
        return build_key({
            "model": self.model_digest(build_plan),
            "model_request": repr(request.model), "target": repr(self.target),
            "runtimes": [repr(rt) for rt in build_plan.runtimes], "steps": [repr(s) for s in build_plan.steps],
            "precision": build_plan.precision, "measure": repr(build_plan.measure),
            "data": [data_digest(request.calibration), data_digest(request.eval), data_digest(request.train),
                     repr(build_plan.data)],
            "budgets": [b.to_dict() for b in build_plan.budgets], "passes": [p.to_dict() for p in request.passes],
            "kinds": [p.kind for p in request.passes], "parity_floor": build_plan.parity_floor.describe(),
            "rest": repr((request.latency_tolerance, request.rescue, request.sensitivity, request.robustness,
                          request.qat_epochs, request.require_full_delegation, request.allow_partial)),
            "versions": versions, "host": host_info(),
        })

    def model_digest(self, build_plan: Any) -> str:
        """The model's content hash; `run` sets it from the model it loaded, so only a caller of `build` alone
        (the benchmark's grid) loads the model for it."""
        if self._digest is None:
            from edgepack.loading import load_bundle

            return self._set_digest(load_bundle(build_plan.model).bundle)
        return self._digest

    def _set_digest(self, bundle: Any) -> str:
        from edgepack.cache import model_digest

        self._digest = model_digest(bundle.module, bundle.example_inputs)
        return self._digest

    # ---- the walk -----------------------------------------------------------------------------------------------
    def run(self, auto: bool) -> tuple["Report", SearchResult]:
        """`auto`: search the candidate space; else the request as given, served from the cache when it can be."""
        from edgepack.errors import UsageError
        from edgepack.inspection import inspect_model
        from edgepack.loading import load_bundle
        from edgepack.plan import check_writable, plan
        from edgepack.strategy import kept_fraction

        started = time.perf_counter()
        base = plan(self.request, self.target)
        if auto and not any(b.metric in SEARCHED_METRICS for b in base.budgets):
            raise UsageError("--auto needs a budget to search for: --budget SIZE, --max-latency, --max-memory or "
                             "--max-accuracy-drop (or budgets: in the target file)")
        with self.progress.stage("loading model" + (" and choosing the search space" if auto else "")):
            model = load_bundle(base.model)
            if self.cache is not None:
                self._set_digest(model.bundle)
            out = base.out_dir(model.bundle.name)
            check_writable(out, "--out")
            family = ""
            space = [_Candidate(tuple(self.request.passes), 1.0)]
            if auto:
                inspection = inspect_model(model)
                family = inspection.family
                has_data = self.request.train is not None or (model.zoo_entry is not None
                                                              and model.zoo_entry.dataset is not None)
                space = candidate_space(model, inspection, has_data)
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.auto-", dir=out.parent))
        results: dict[int, CandidateResult] = {}
        reports: dict[int, "Report"] = {}
        steps: list[str] = []

        def evaluate(indices: Sequence[int]) -> None:
            """Build these candidates (together: an executor may run them side by side) and judge them."""
            todo = [i for i in indices if i not in results]
            if not todo:
                return
            what = ", ".join(f"candidate {i}: {space[i].label}" for i in todo)
            t0 = time.perf_counter()
            with self.progress.stage(what + (f" (on {self.executor.name})" if len(todo) > 1 else "")
                                     if auto else "building"):
                outcomes = self.build_many([space[i].passes for i in todo],
                                           [scratch / f"candidate-{i}" for i in todo])
            seconds = (time.perf_counter() - t0) / len(todo)
            for i, outcome in zip(todo, outcomes):
                if isinstance(outcome, BuildFailure):
                    if i == 0:  # the plain build itself fails: as a build without --auto would
                        raise _failure(outcome)
                    results[i] = CandidateResult(i, space[i].label, space[i].recipe, False,
                                                 misses=(outcome.message,), failed_metrics=("accuracy_drop",),
                                                 seconds=round(seconds, 1), error=outcome.message)
                else:
                    reports[i] = outcome[0]
                    results[i] = _result(i, space[i], outcome[0], outcome[1], seconds)
                if auto:
                    self.progress.say(_describe(results[i]))

        try:
            evaluate([0])
            first = results[0]
            i: Optional[int] = None
            if not auto:
                pass
            elif first.passed:
                steps.append("the plain build meets every budget: nothing to compress")
            elif len(space) == 1:
                steps.append(f"the {family} search space holds no compression to try")
            elif not set(first.failed_metrics) & set(SHRINK_METRICS):
                steps.append("only accuracy fails on the plain build: compressing further cannot fix it")
            else:
                keep = kept_fraction([v for v in reports[0].verdicts if not v.passed], reports[0])
                i = _start(space, keep)
                steps.append(f"the plain build misses {', '.join(first.misses)}; the measured shortfall points at "
                             f"candidate {i} ({space[i].label})"
                             + (f", built together with candidate {i - 1}, one step weaker, which the walk visits "
                                f"next when it meets the budgets" if i > 1 else ""))
                evaluate([i, i - 1] if i > 1 else [i])
            visited: set[int] = set()
            while i is not None and 0 < i < len(space) and i not in visited:
                visited.add(i)
                evaluate([i])
                result = results[i]
                failed = set(result.failed_metrics)
                shrink, accuracy = bool(failed & set(SHRINK_METRICS)), bool(failed - set(SHRINK_METRICS))
                if result.passed:
                    weaker = i - 1
                    if weaker > 0 and weaker not in visited:  # the estimate may overshoot: less compression first
                        steps.append(f"candidate {i} meets every budget; one step weaker keeps more of the model: "
                                     f"candidate {weaker}")
                        i = weaker
                        continue
                    steps.append(f"candidate {i} meets every budget, and the next weaker one "
                                 f"{'is the plain build' if weaker == 0 else 'does not'}: stop")
                    break
                if any(results[k].passed for k in visited):
                    best = min(k for k in visited if results[k].passed)
                    steps.append(f"candidate {i} misses {', '.join(result.misses)}: candidate {best} is the least "
                                 f"compressed that meets every budget, stop")
                    break
                if shrink and accuracy:
                    steps.append(f"candidate {i} misses both size/speed and accuracy: no candidate in between can "
                                 f"meet both, stop")
                    break
                i = i + 1 if shrink else i - 1
                if 0 < i < len(space) and i not in visited:
                    next_step = f" (candidate {i})"
                elif i in visited or i == 0:
                    next_step = (f", but candidate {i} was tried and misses {', '.join(results[i].misses)}: no "
                                 f"candidate meets both, stop")
                else:
                    next_step = ", but there is none left to try: stop"
                steps.append(f"candidate {result.index} misses {', '.join(result.misses)}: try "
                             f"{'stronger' if shrink else 'weaker'} compression{next_step}")
            met = [r for r in results.values() if r.passed]
            chosen = _best(met) if met else _closest(list(results.values()))
            if len(met) > 1:
                figure = f" ({chosen.accuracy:.2%})" if chosen.accuracy is not None else ""
                steps.append(f"of the {len(met)} candidates that meet every budget, candidate {chosen.index} is the "
                             f"most accurate{figure}, then the smallest: it ships")
            from edgepack.report.publish import adopt_build

            report = adopt_build(scratch / f"candidate-{chosen.index}", out, self.progress.warn)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        evaluated = tuple(results[k] for k in sorted(results))
        search = SearchResult(family, len(space), evaluated, chosen.index, bool(met), _pareto(evaluated),
                              tuple(steps), round(time.perf_counter() - started, 1), self.executor.name)
        if auto:
            _write_outputs(out, search, space[chosen.index])
        return report, search


def _failure(failed: BuildFailure) -> Exception:
    from edgepack.errors import EdgepackError

    class CandidateBuildFailed(EdgepackError):
        """The plain build failed: the search stops with its message and exit code, as a plain build would."""

        exit_code = failed.exit_code

    return CandidateBuildFailed(failed.message)


def _start(space: Sequence[_Candidate], keep: Optional[float]) -> int:
    """The first candidate whose estimated kept fraction fits the shortfall (the strongest when none does)."""
    if keep is None:
        return 1
    for i, candidate in enumerate(space[1:], start=1):
        if candidate.kept is None or candidate.kept <= keep:
            return i
    return len(space) - 1


def _result(i: int, candidate: _Candidate, report: "Report", cached: bool, seconds: float) -> CandidateResult:
    from edgepack.gates import format_value

    failing = [v for v in report.verdicts if not v.passed]
    shipped = report.shipping[0] if report.shipping else ""
    measured = {m.artifact: m for m in report.measurements}
    sizes = {a.name: a.size_bytes for a in report.artifacts}
    scores = {a.artifact: a.score for a in report.accuracy}
    m = measured.get(shipped)
    misses = tuple(f"{v.budget}: {format_value(v.observed, v.unit)} > {format_value(v.limit, v.unit)}"
                   if v.observed is not None else f"{v.budget}: {v.reason}" for v in failing)
    excess = sum((v.observed - v.limit) / v.limit if v.observed is not None and v.limit > 0 else 1.0
                 for v in failing)
    return CandidateResult(i, candidate.label, candidate.recipe, report.passed and not failing, misses=misses,
                           failed_metrics=tuple(sorted({v.metric for v in failing})), shipped=shipped,
                           size_bytes=sizes.get(shipped), latency_ms=m.p50_ms if m else None,
                           accuracy=scores.get(shipped), seconds=round(seconds, 1), cached=cached,
                           measured_at=report.created, excess=round(excess, 4))


def _describe(result: CandidateResult) -> str:
    from edgepack.cache import age
    from edgepack.gates import format_value

    figures = [f"size {format_value(result.size_bytes, 'bytes')}", f"p50 {format_value(result.latency_ms, 'ms')}"]
    if result.accuracy is not None:
        figures.append(f"accuracy {result.accuracy:.2%}")
    where = f" (served from the cache: measured {age(result.measured_at)})" if result.cached else ""
    verdict = "meets every budget" if result.passed else "misses " + "; ".join(result.misses)
    if result.error:
        return f"candidate {result.index} ({result.label}) failed: {result.error}"
    return f"candidate {result.index} ({result.label}): {', '.join(figures)}; {verdict}{where}"


def _best(met: Sequence[CandidateResult]) -> CandidateResult:
    """Of the candidates that meet every budget: the most accurate, then the smallest, then the fastest, then the
    least compressed. Usually the least compressed is the most accurate; when the measurements say otherwise (a
    fine-tune can recover more after stronger pruning), they decide."""
    return min(met, key=lambda r: (-(r.accuracy if r.accuracy is not None else 0.0), r.size_bytes or 0.0,
                                   r.latency_ms or 0.0, r.index))


def _closest(results: Sequence[CandidateResult]) -> CandidateResult:
    """The candidate least far past its limits (relative excess summed over failing budgets), then the least
    compressed."""
    built = [r for r in results if not r.error] or list(results)
    return min(built, key=lambda r: (r.excess, r.index))


def _pareto(results: Sequence[CandidateResult]) -> tuple[int, ...]:
    """Candidates no other is at least as good as on size, latency and accuracy, and better on one."""
    built = [r for r in results if r.size_bytes is not None and r.latency_ms is not None]

    def key(r: CandidateResult) -> tuple[float, float, float]:
        return (float(r.size_bytes or 0), float(r.latency_ms or 0), -(r.accuracy if r.accuracy is not None else 0))

    front = []
    for r in built:
        dominated = any(all(a <= b for a, b in zip(key(o), key(r))) and key(o) != key(r) for o in built)
        if not dominated:
            front.append(r.index)
    return tuple(front)


def _relocated(report: "Report", where: Path) -> "Report":
    """A cached report whose artifact paths point at the copy in `where`."""
    artifacts = tuple(replace(a, path=str(where / Path(a.path).name)) for a in report.artifacts)
    return replace(report, artifacts=artifacts, out_dir=str(where))


def _write_outputs(out: Path, search: SearchResult, chosen: _Candidate) -> None:
    """search.json (every candidate, the walk, the Pareto front) and recipe.yaml (what was chosen)."""
    import json

    from edgepack.compress import recipe_yaml
    from edgepack.fileio import atomic_write_text

    atomic_write_text(out / "search.json", json.dumps(search.to_dict(), indent=2) + "\n")
    header = (f"chosen by edgepack build --auto ({search.family}, {len(search.evaluated)} of {search.candidates} "
              f"candidates built, {'meets every budget' if search.met else 'closest: misses a budget'})")
    atomic_write_text(out / "recipe.yaml", recipe_yaml(chosen.passes, [header]))


def summary_lines(search: SearchResult, auto: bool) -> list[str]:
    """What the terminal shows after the table: the walk, the Pareto front, the chosen recipe, the time; for a
    cached plain build, only whether it came from the cache."""
    from edgepack.cache import age

    if not auto:
        (only,) = search.evaluated
        return [f"served from the cache: built and measured {age(only.measured_at)} ({only.measured_at}) with the "
                f"same model, settings, data and library versions"] if only.cached else []
    lines = [f"auto: {len(search.evaluated)} of {search.candidates} candidates built ({search.family}) on "
             f"{search.executor}, {search.seconds:.0f} s, {sum(r.cached for r in search.evaluated)} from the cache"]
    lines += [f"  {_describe(r)}" for r in search.evaluated]
    lines += [f"  why: {step}" for step in search.steps]
    lines.append("  Pareto front (size, p50, accuracy): " + ", ".join(f"candidate {i}" for i in search.pareto))
    chosen = next(r for r in search.evaluated if r.index == search.chosen)
    lines.append(f"  {'chosen' if search.met else 'closest (exit 3)'}: candidate {chosen.index} ({chosen.label}); "
                 f"recipe in recipe.yaml, every candidate in search.json")
    return lines

