"""Executing a BuildPlan: the order of stages, staging of outputs, progress. Decisions live in plan.py, stage logic in
the services (loading, compress, exporting, evaluate, measure, report.publish); this module only runs them in order.

`compress_model` is the same machinery for `edgepack compress` and `edgepack distill`: load, run passes, save a .pt2.
"""

from __future__ import annotations

import contextlib
import datetime
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional, Sequence

from edgepack import __version__
from edgepack.plan import EAGER, BuildPlan, check_writable
from edgepack.progress import Progress, SilentProgress
from edgepack.errors import EdgepackError, ParityBelowFloor
from edgepack.records import (Accuracy, Artifact, Measurement, Parity, Provenance, Report, Rescue, Robustness,
                              RuntimeFailure, StageTiming, Verdict)

if TYPE_CHECKING:
    from edgepack.compress import PassConfig
    from edgepack.data.dataset import ArrayDataset
    from edgepack.loading import BuildData
    from edgepack.measure import Measurer
    from edgepack.plan import PlannedRuntime
    from edgepack.models.bundle import ModelBundle
    from edgepack.models.request import InputSpec, ModelRequest
    from edgepack.runtimes.base import QatRequest, Runtime


def execute(plan: BuildPlan, progress: Optional[Progress] = None,
            more_verdicts: Optional[Callable[[Report], Sequence[Verdict]]] = None) -> Report:
    """Run every stage of the plan; outputs are written into a staging directory and moved into place at the end."""
    from edgepack import evaluate
    from edgepack.gates import judge
    from edgepack.loading import load_build_data, load_bundle
    from edgepack.measure import Measurer, host_info
    from edgepack.runtimes import get_runtime

    progress = _TimedProgress(progress or SilentProgress())
    warnings = list(plan.warnings)
    measurer = Measurer(plan.measure, plan.target.arch)
    runtimes = {rt.name: get_runtime(rt.name) for rt in plan.runtimes}
    with progress.stage("loading model"):
        model = load_bundle(plan.model)
    warnings.extend(model.bundle.load_warnings)
    out = plan.out_dir(model.bundle.name)
    check_writable(out, "--out")
    with progress.stage("loading data"):
        data = load_build_data(plan.data, model, plan.precision == "int8", warnings)
    bundle = model.bundle
    accuracy: list[Accuracy] = []
    if data.eval is not None:
        original = _original_accuracy(bundle, bool(plan.passes), data.eval, progress, warnings)
        accuracy += [original] if original is not None else []
    if plan.passes:
        bundle = _compress(bundle, plan.passes, data.train, data.eval, progress, plan.model)
    qat = _qat_request(plan, data)

    threads = plan.measure.threads
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        artifacts: dict[str, Artifact] = {}
        parity: list[Parity] = []
        robustness: list[Robustness] = []
        measurements: list[Measurement] = []
        if data.eval is not None:
            with progress.stage("accuracy of the eager model"):
                accuracy.append(evaluate.eager_accuracy(bundle, data.eval))
                if plan.robustness:
                    robustness.append(evaluate.eager_robustness(bundle, data.eval))
        failures: list[RuntimeFailure] = []
        rescues: list[Rescue] = []
        ships_instead: dict[str, str] = {}  # a plain int8 artifact -> the mixed-precision one rescued from it
        reference = tuple(accuracy)  # the original's and the eager model's: what accuracy budgets judge against
        for planned in plan.runtimes:
            results = _RuntimeResults()
            try:
                _build_runtime(planned, runtimes[planned.name], plan, bundle, data, qat, staging, measurer, progress,
                               results, reference)
            except Exception as exc:  # contained: the other runtimes' artifacts still ship
                # one runtime has nothing else to ship, except when its artifact was built but judged wrong: the
                # report then shows the figures
                if len(plan.runtimes) == 1 and not isinstance(exc, ParityBelowFloor):
                    raise
                failures.append(_failure(planned.name, results, exc))
                progress.warn(f"{planned.name} failed at {results.stage} of {results.current}: "
                              f"{failures[-1].reason}" + ("; the other runtimes go on" if len(plan.runtimes) > 1
                                                          else ""))
            artifacts.update(results.artifacts)
            rescues += results.rescues
            ships_instead.update(results.ships_instead)
            parity += results.parity
            accuracy += results.accuracy
            robustness += results.robustness
            measurements += results.measurements
        judged_wrong = {f.artifact for f in failures
                        if f.stage == "parity" and f.exit_code == ParityBelowFloor.exit_code}
        if failures and len(failures) == len(plan.runtimes) and not judged_wrong:
            first = failures[0]
            raise _AllRuntimesFailed(first.exit_code, "; ".join(f"{f.runtime}: {f.reason}" for f in failures),
                                     first.evidence)
        report = Report(
            edgepack_version=__version__,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            target=plan.target.name, out_dir=str(out), model=bundle.provenance,
            shipping=tuple(ships_instead.get(name, name) for name in plan.shipping
                           if name in artifacts and name not in judged_wrong),
            artifacts=tuple(artifacts.values()), parity=tuple(parity), accuracy=tuple(accuracy),
            robustness=tuple(robustness), measurements=tuple(measurements), budgets=plan.budgets,
            warnings=tuple(warnings), failures=tuple(failures), timings=progress.timings(),
            versions=_versions(runtimes.values()), host=host_info(), parity_floor=plan.parity_floor.describe(),
            rescues=tuple(rescues),
        )
        report = replace(report, verdicts=tuple(judge(report)))
        from edgepack.remeasure import remeasure_close_calls  # latency too close to call, or a near fail: time again

        report = remeasure_close_calls(report, measurer, [t.numpy() for t in bundle.example_inputs], progress.stage)
        report = replace(report, timings=progress.timings())  # the re-measuring stages too
        if plan.choose_fastest:
            from edgepack.compare import slower_when_interleaved
            from edgepack.selection import choose_fastest

            m = plan.measure
            report = choose_fastest(report, slower_when_interleaved(report, m.threads, m.runs, m.warmup,
                                                                    progress.stage) if m.on_host else None)
            report = replace(report, timings=progress.timings())  # the interleaved comparison's stages too
        if more_verdicts is not None:  # e.g. the regression gate against a baseline report, judged before writing
            report = replace(report, verdicts=report.verdicts + tuple(more_verdicts(report)))
        with progress.stage("writing report"):
            from edgepack.report.publish import publish

            report = publish(report, out, data.calibration, plan.measure.app_threads or threads, plan.bundle,
                             progress.warn)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not report.shipping:  # every artifact that was to ship was judged wrong: nothing to hand over
        raise ParityBelowFloor(f"nothing ships: {'; '.join(f.reason for f in failures)} (report: {out}/report.json)")
    return report


def _original_accuracy(bundle: "ModelBundle", passes_in_build: bool, eval_data: "ArrayDataset", progress: Progress,
                       warnings: list[str]) -> Optional[Accuracy]:
    """Accuracy of the true original on the eval data: the budgets judge every artifact against it.

    A model compressed before this build (a .pt2 from `edgepack compress`) names its uncompressed source: it is
    re-loaded and evaluated on the same data here, since accuracies measured on other data cannot be compared.
    """
    from edgepack import evaluate
    from edgepack.loading import load_bundle
    from edgepack.models.request import ModelRequest

    provenance = bundle.provenance
    if provenance.passes:
        source = provenance.original_source
        if not source:
            warnings.append("the model carries compression history without its original's spec; accuracy budgets "
                            "cannot be judged against the uncompressed model")
            return None
        with progress.stage(f"accuracy of the uncompressed original ({source})"):
            try:
                request = ModelRequest(source, _original_input_specs(provenance), task=provenance.task)
                original = load_bundle(request).bundle
            except EdgepackError as exc:
                warnings.append(f"the uncompressed original {source} could not be re-loaded ({exc}); accuracy "
                                f"budgets cannot be judged against it")
                return None
            figure = evaluate.eager_accuracy(original, eval_data, name="original")
        return replace(figure, how=f"the uncompressed model {source}, re-loaded and evaluated on {eval_data.name} "
                                   f"in this run ({len(provenance.passes)} pass(es) applied before this build)")
    if passes_in_build:
        with progress.stage("accuracy of the original model"):
            figure = evaluate.eager_accuracy(bundle, eval_data, name="original")
        return replace(figure, how="the model as given, before this build's compression passes")
    return None


def _original_input_specs(provenance: Provenance) -> tuple["InputSpec", ...]:
    """The inputs the uncompressed original was loaded with, as --input-shape would give them."""
    from edgepack.models.request import InputSpec, parse_input_specs

    if provenance.original_inputs:
        return parse_input_specs(provenance.original_inputs)
    shape = provenance.original_input_shape
    return (InputSpec(None, tuple(shape)),) if shape else ()


class _TimedProgress:
    """Passes progress through and keeps each stage's wall time for report.json."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner
        self._timings: list[StageTiming] = []

    @contextlib.contextmanager
    def stage(self, text: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            with self.inner.stage(text):
                yield
        finally:
            self._timings.append(StageTiming(text, round(time.perf_counter() - start, 3)))

    def say(self, text: str) -> None:
        self.inner.say(text)

    def warn(self, text: str) -> None:
        self.inner.warn(text)

    def timings(self) -> tuple[StageTiming, ...]:
        return tuple(self._timings)


@dataclass
class _RuntimeResults:
    """What one runtime produced, and where it was when it stopped (for a failure record)."""

    artifacts: dict[str, Artifact] = field(default_factory=dict)
    parity: list[Parity] = field(default_factory=list)
    accuracy: list[Accuracy] = field(default_factory=list)
    robustness: list[Robustness] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)
    rescues: list[Rescue] = field(default_factory=list)
    ships_instead: dict[str, str] = field(default_factory=dict)
    stage: str = "export"
    current: str = ""


def _build_runtime(planned: "PlannedRuntime", runtime: "Runtime", plan: BuildPlan, bundle: "ModelBundle",
                   data: "BuildData", qat: Optional["QatRequest"], staging: Path, measurer: "Measurer",
                   progress: Progress, results: _RuntimeResults, reference: Sequence[Accuracy] = ()) -> None:
    """Export, verify and measure each planned artifact of one runtime in turn, so a later step's failure leaves
    the earlier artifacts verified and measured as reference. At the shipping int8 step, a per-layer sensitivity
    ranking and, when the artifact misses the parity floor or an accuracy budget, a mixed-precision rescue."""
    from edgepack import evaluate, exporting, rescue_stage

    threads = plan.measure.threads
    for step in plan.steps_of(planned.name):
        results.stage, results.current = "export", step.artifact
        with progress.stage(f"{planned.name}: exporting {step.precision}{' with QAT' if step.qat else ''}"):
            parent = None if step.parent == EAGER else results.artifacts[step.parent]
            artifact = exporting.export(runtime, bundle, step, staging, data.calibration, planned.options, parent,
                                        qat)
            results.artifacts[step.artifact] = artifact
        results.stage = "parity"
        with progress.stage(f"{artifact.name}: parity against eager"):
            session = exporting.open_session(runtime, artifact, threads, plan.measure.device)
            results.parity.append(evaluate.parity(artifact.name, session, bundle, data.parity))
            shortfall = plan.parity_floor.shortfall(results.parity[-1])
            rescuable = rescue_stage.may_rescue(step, plan) and runtime.keeps_layers_float
            if shortfall and not rescuable:
                cannot = (f"; {runtime.name} cannot keep layers in float, so no rescue was tried"
                          if rescue_stage.may_rescue(step, plan) and plan.rescue else "")
                raise ParityBelowFloor(f"{artifact.name} {shortfall}; it does not ship (see --parity-floor){cannot}")
            if data.eval is not None:
                results.accuracy.append(evaluate.artifact_accuracy(artifact.name, session, data.eval,
                                                                   bundle.provenance.task))
                if plan.robustness:
                    results.robustness.append(evaluate.artifact_robustness(artifact.name, session, data.eval))
        shipped = [artifact]
        if rescue_stage.may_rescue(step, plan):
            rescued = rescue_stage.run_stage(runtime, plan, bundle, data, step, parent, staging, progress, results,
                                             reference, shortfall or "")
            shipped += [rescued] if rescued is not None else []
        for built in shipped if plan.measure.measures else ():  # --device none: built and checked, not timed
            results.stage, results.current = "measure", built.name
            with progress.stage(f"{built.name}: measuring on {measurer.label} ({plan.measure.runs} runs, "
                                f"{threads} thread(s))"):
                results.measurements.append(measurer.measure(built, [t.numpy() for t in bundle.example_inputs]))


def _failure(runtime: str, results: _RuntimeResults, exc: BaseException) -> RuntimeFailure:
    from edgepack.errors import one_line

    reason = one_line(exc) if isinstance(exc, EdgepackError) else f"{type(exc).__name__}: {one_line(exc)}"
    # a runtime that did not finish ships nothing: what it built stays as reference, unverified parts dropped
    for name in list(results.artifacts):
        if name not in {p.artifact for p in results.parity}:
            for file in results.artifacts.pop(name).files():
                file.unlink(missing_ok=True)
    return RuntimeFailure(runtime=runtime, stage=results.stage, artifact=results.current, reason=reason,
                          evidence=getattr(exc, "evidence", "") or "",
                          exit_code=exc.exit_code if isinstance(exc, EdgepackError) else 1)


class _AllRuntimesFailed(EdgepackError):
    """Every runtime failed: nothing was built, so the build stops with the first failure's exit code."""

    def __init__(self, exit_code: int, message: str, evidence: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.evidence = evidence


def compress_model(model_request: "ModelRequest", passes: Sequence["PassConfig"], train_spec: Optional[str],
                   eval_spec: Optional[str], out: Path, progress: Optional[Progress] = None) -> Provenance:
    """`edgepack compress` and `edgepack distill`: run passes on a model and save it as a .pt2 with its history."""
    from edgepack.loading import DataResolver, load_bundle

    progress = progress or SilentProgress()
    check_writable(out.parent, "--out")
    with progress.stage("loading model"):
        model = load_bundle(model_request)
    for warning in model.bundle.load_warnings:
        progress.warn(warning)
    with progress.stage("loading data"):
        train, evaluation = DataResolver(model).training_data(train_spec, eval_spec, needs_training=True)
    compressed = _compress(model.bundle, passes, train, evaluation, progress, model_request)
    save_pt2(compressed, out, progress)
    return compressed.provenance


def save_pt2(bundle: "ModelBundle", out: Path, progress: Progress) -> None:
    """The model as a torch.export program, and its provenance (with every pass record) beside it as .json."""
    import json

    import torch

    from edgepack.errors import ToolError, one_line
    from edgepack.fileio import atomic_path, atomic_write_text
    from edgepack.quiet import captured

    with progress.stage(f"saving {out.name}"), captured():
        try:
            program = torch.export.export(bundle.module, bundle.example_inputs)
        except Exception as exc:
            raise ToolError(f"torch.export could not capture the model: {one_line(exc)}") from None
        with atomic_path(out) as tmp:
            torch.export.save(program, str(tmp))
        atomic_write_text(out.with_suffix(".json"), json.dumps(bundle.provenance.to_dict(), indent=2) + "\n")


def _compress(bundle: "ModelBundle", passes: Sequence["PassConfig"], train: Optional["ArrayDataset"],
              evaluation: Optional["ArrayDataset"], progress: Progress, model_request: "ModelRequest") -> "ModelBundle":
    from edgepack.compress import apply_passes
    from edgepack.quiet import captured

    def load_model(spec: str) -> Any:
        """A model named inside a pass (a distillation student), loaded like --model."""
        from edgepack.loading import load_bundle

        return load_bundle(replace(model_request, spec=spec, factory=None, trust_checkpoint=False)).bundle.module

    with progress.stage(f"compressing ({len(passes)} pass(es))"), captured():
        return apply_passes(bundle, list(passes), train=train, eval=evaluation, progress=progress.say,
                            load_model=load_model)


def _qat_request(plan: BuildPlan, data: "BuildData") -> Optional["QatRequest"]:
    if plan.qat_epochs is None:
        return None
    from edgepack.errors import UsageError
    from edgepack.runtimes.base import QatRequest

    if data.train is None:
        raise UsageError("--qat needs labelled training data: --train DATA (zoo models use their own split)")
    return QatRequest(data.train, plan.qat_epochs)


def _versions(runtimes: Any) -> dict[str, str]:
    from edgepack.runtimes.base import package_versions

    out = {"edgepack": __version__, **package_versions("torch", "numpy")}
    for rt in runtimes:
        out.update(rt.versions())
    return out
