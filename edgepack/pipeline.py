"""Orchestration of `edgepack build`: the order of stages, staging of outputs, progress. No stage logic lives here."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator, Optional, Protocol, Sequence

from edgepack import __version__
from edgepack.config import Target, load_target, merge_budgets, target_budgets
from edgepack.errors import UsageError
from edgepack.records import Accuracy, Artifact, Budget, Measurement, Parity, Report, Robustness

PARITY_SAMPLES = 256


class Progress(Protocol):
    def stage(self, text: str) -> contextlib.AbstractContextManager[None]: ...

    def warn(self, text: str) -> None: ...


class SilentProgress:
    @contextlib.contextmanager
    def stage(self, text: str) -> Iterator[None]:
        yield

    def warn(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class BuildRequest:
    model: Any  # models.loader.ModelRequest
    target: str
    runtimes: Optional[tuple[str, ...]] = None  # None: the target's defaults; ("all",): every runtime it lists
    precision: Optional[str] = None
    calibration: Optional[str] = None
    calibration_samples: Optional[int] = None  # None: the largest the target's runtimes ask for
    eval: Optional[str] = None
    train: Optional[str] = None
    threads: Optional[int] = None
    runs: Optional[int] = None
    out: Optional[Path] = None
    budgets: tuple[Budget, ...] = ()
    passes: tuple[Any, ...] = ()  # compression pass configs, applied in order
    require_full_delegation: bool = False
    bundle: Optional[bool] = None  # None: the target's setting
    device: Optional[str] = None  # "host", "adb" or "adb:SERIAL"; None: the target's
    runners: tuple[tuple[str, str], ...] = ()  # (runtime, path of its arm64 runner binary) for device measurements
    qat_epochs: Optional[int] = None  # quantization-aware training instead of calibration only
    robustness: bool = False  # accuracy under corruptions of the eval data, for eager and every artifact


def resolve_runtimes(target: Target, requested: Optional[Sequence[str]]) -> list[str]:
    names = [r.name for r in target.runtimes]
    if not requested:
        return list(target.default_runtimes)
    if tuple(requested) == ("all",):
        return names
    unknown = [r for r in requested if r not in names]
    if unknown:
        raise UsageError(f"target {target.name} cannot use runtime {unknown[0]!r}; it lists: {', '.join(names)} "
                         f"(or 'all')")
    return list(requested)


def default_out_dir(model_name: str, target_name: str) -> Path:
    return Path("build") / model_name / target_name


def check_writable(out: Path) -> None:
    """Fail before any work if the output directory cannot be created or written."""
    probe_root = out
    while not probe_root.exists():
        probe_root = probe_root.parent
    if not probe_root.is_dir() or not os.access(probe_root, os.W_OK):
        raise UsageError(f"--out {out}: {probe_root} is not a writable directory; choose a writable --out")


def build(request: BuildRequest, progress: Optional[Progress] = None) -> Report:
    """Run every stage; write outputs into a staging directory and move them into place only at the end."""
    from edgepack import stages

    progress = progress or SilentProgress()
    target = load_target(request.target)
    runtime_names = resolve_runtimes(target, request.runtimes)
    runtimes = stages.available_runtimes(runtime_names)
    precision = request.precision or target.precision
    budgets = merge_budgets(target_budgets(target), list(request.budgets))
    if request.require_full_delegation:
        from edgepack.gates import delegation_budget

        budgets.append(delegation_budget())
    if any(b.metric == "accuracy_drop" for b in budgets) and not request.eval:
        raise UsageError("--max-accuracy-drop needs --eval DATA (labelled data to measure accuracy on)")
    if request.robustness and not request.eval:
        raise UsageError("--robustness needs --eval DATA (labelled data to corrupt and measure accuracy on)")
    if request.out is not None:
        check_writable(request.out)
    warnings: list[str] = []
    # a phone and its runners are checked before any export, so a missing one fails in a second, not minutes
    measurer = stages.measurer(target, request.device, dict(request.runners), runtime_names,
                               request.threads or target.threads, request.runs or target.runs, warnings)

    with progress.stage("loading model"):
        bundle, zoo_entry = stages.load(request.model)
    out = request.out or default_out_dir(bundle.name, target.name)
    check_writable(out)
    with progress.stage("loading data"):
        data = stages.load_data(request, bundle, zoo_entry, target, runtime_names, precision, warnings)
    original_accuracy: list[Accuracy] = []
    if request.passes:
        if data.eval is not None:
            with progress.stage("accuracy of the original model"):
                original_accuracy.append(replace(stages.eager_accuracy(bundle, data.eval), artifact="original"))
        with progress.stage(f"compressing ({len(request.passes)} pass(es))"):
            bundle = stages.compress(bundle, request.passes, data)
    qat = stages.qat_request(request.qat_epochs, precision, data)

    threads = measurer.threads
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
    try:
        artifacts: list[Artifact] = []
        shipping: list[str] = []
        parity: list[Parity] = []
        accuracy: list[Accuracy] = list(original_accuracy)
        robustness: list[Robustness] = []
        measurements: list[Measurement] = []
        if data.eval is not None:
            with progress.stage("accuracy of the eager model"):
                accuracy.append(stages.eager_accuracy(bundle, data.eval))
                if request.robustness:
                    robustness.append(stages.eager_robustness(bundle, data.eval))
        for runtime in runtimes:
            settings = target.runtime(runtime.name)
            plans = stages.export_plans(runtime.name, precision, qat, warnings)
            previous: Optional[Artifact] = None
            for prec, plan_qat in plans:
                with progress.stage(f"{runtime.name}: exporting {prec}{' with QAT' if plan_qat else ''}"):
                    artifact = stages.export(runtime, bundle, prec, staging, data.calibration, settings.options,
                                             previous, plan_qat)
                artifacts.append(artifact)
                previous = artifact
            # the last plan ships: int8-qat over int8 (PTQ, kept as reference), int8 over fp32
            shipping.append(artifacts[-1].name)
            for artifact in artifacts[-len(plans):]:
                with progress.stage(f"{artifact.name}: parity against eager"):
                    session = stages.open_session(runtime, artifact, threads)
                    parity.append(stages.parity(artifact.name, session, bundle, data.parity))
                    if data.eval is not None:
                        accuracy.append(stages.artifact_accuracy(artifact.name, session, data.eval))
                    if request.robustness and data.eval is not None:
                        robustness.append(stages.artifact_robustness(artifact.name, session, data.eval))
                with progress.stage(f"{artifact.name}: measuring on {measurer.label} ({measurer.runs} runs, "
                                    f"{threads} thread(s))"):
                    measurements.append(measurer.measure(artifact, bundle.provenance.input_shapes))
        report = Report(
            edgepack_version=__version__,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            target=target.name, out_dir=str(out), model=bundle.provenance, shipping=tuple(shipping),
            artifacts=tuple(artifacts), parity=tuple(parity), accuracy=tuple(accuracy),
            robustness=tuple(robustness),
            measurements=tuple(measurements), budgets=tuple(budgets), warnings=tuple(warnings),
            versions=stages.versions(runtimes), host=stages.host(),
        )
        from edgepack.gates import judge

        report = replace(report, verdicts=tuple(judge(report)))
        with progress.stage("writing report"):
            want_bundle = target.bundle if request.bundle is None else request.bundle
            report = stages.publish(report, out, data, threads, want_bundle)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report
