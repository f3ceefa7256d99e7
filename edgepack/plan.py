"""BuildRequest + Target -> BuildPlan: what a build will do, decided and checked before any heavy import.

Planning is pure and torch-free: it reads the target file, the runtimes' declared capabilities (class attributes,
see runtimes/base.py), the budgets and the options, and refuses every bad input that needs no model here, in
milliseconds. The pipeline then only executes the plan: which runtimes run with which options, every export step with
its true parent, which artifact ships per runtime, what data each stage needs, where and how to measure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from edgepack.budgets import LATENCY_STATS, merge_budgets, with_latency_tolerance
from edgepack.config import Target, load_target, target_budgets
from edgepack.errors import MissingDependency, UsageError
from edgepack.models.request import ModelRequest, check_model_request
from edgepack.records import Budget
from edgepack.rescue import TIME_LIMIT_S
from edgepack.tasks import ParityFloor

if TYPE_CHECKING:
    from edgepack.compress import PassConfig
    from edgepack.runtimes.base import RuntimeOptions

PARITY_SAMPLES = 256
PRECISIONS = ("int8", "fp16", "fp32")
NO_DEVICE = "none"  # --device none: artifacts are built and checked for numerics, nothing is measured
EAGER = "eager"  # the parent of artifacts exported straight from the PyTorch model
AUTO = "auto"  # --runtime auto: build every installed runtime of the target, ship the fastest within budgets


@dataclass(frozen=True)
class BuildRequest:
    """What the user asked for, as given (None: not given, so the target's default applies)."""

    model: ModelRequest
    target: str = "x86-cpu"
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
    passes: tuple["PassConfig", ...] = ()  # compression pass configs, applied in order
    require_full_delegation: bool = False
    bundle: Optional[bool] = None  # None: the target's setting
    device: Optional[str] = None  # "host", "adb" or "adb:SERIAL"; None: the target's
    runners: tuple[tuple[str, str], ...] = ()  # (runtime, path of its arm64 runner binary) for device measurements
    qat_epochs: Optional[int] = None  # quantization-aware training instead of calibration only
    robustness: bool = False  # accuracy under corruptions of the eval data, for eager and every artifact
    allow_partial: bool = False  # a runtime that fails is reported but does not fail the build
    parity_floor: Optional[str] = None  # --parity-floor VALUE|off; None: the target's
    latency_tolerance: Optional[str] = None  # --latency-tolerance fail|pass|N%: latency verdicts too close to call
    sensitivity: bool = False  # --sensitivity: rank the int8 artifact's layers by sensitivity, even within budget
    rescue: bool = True  # int8 below the parity floor or over --max-accuracy-drop: keep sensitive layers in float
    rescue_time_limit_s: Optional[float] = None  # --rescue-time-limit; None: rescue.TIME_LIMIT_S


@dataclass(frozen=True)
class PlannedRuntime:
    """A runtime this build uses, with the capabilities it declares and the target file's options for it."""

    name: str
    file_format: str
    int8_from: str
    supports_qat: bool
    phone_runner: Optional[str]
    options: "RuntimeOptions"
    precisions: tuple[str, ...] = ("fp32", "int8")  # what it can export (fp16 converts its fp32 file)


@dataclass(frozen=True)
class ExportStep:
    """One artifact to build. `parent` is what it is really derived from: "eager" or another step's artifact."""

    runtime: str
    precision: str
    qat: bool
    artifact: str  # the artifact's name, e.g. "onnxruntime-int8"
    parent: str
    ships: bool  # the budgets judge it and the bundle carries it; the others are kept for comparison


@dataclass(frozen=True)
class DataPlan:
    """The data the stages need. Specs are resolved against the model once it is loaded."""

    calibration: Optional[str]  # None: the zoo model's training split, else synthetic inputs (with a warning)
    calibration_samples: int
    eval: Optional[str]
    train: Optional[str]  # None: a zoo model's own training split when training is needed
    needs_training: bool  # compression passes or QAT will train
    parity_samples: int = PARITY_SAMPLES


@dataclass(frozen=True)
class MeasurePlan:
    """Where and how artifacts are timed."""

    device: str  # "host", "adb:SERIAL", "gpu:N" or "none" (nothing is measured)
    threads: int
    runs: int
    warmup: int
    latency_stat: str
    runners: tuple[tuple[str, str], ...] = ()  # runtime -> checked arm64 runner path (device measurements only)
    app_threads: int = 0  # the threads the target (or --threads) asks for, which the bundle's app code sets even when
    # this host has fewer to measure with; 0: the same as `threads`

    @property
    def on_host(self) -> bool:
        return self.device == "host"

    @property
    def measures(self) -> bool:
        return self.device != NO_DEVICE

    @property
    def on_phone(self) -> bool:
        return self.device.startswith("adb")

    def runner(self, runtime: str) -> Path:
        return Path(dict(self.runners)[runtime])


@dataclass(frozen=True)
class BuildPlan:
    model: ModelRequest
    target: Target
    precision: str
    runtimes: tuple[PlannedRuntime, ...]
    steps: tuple[ExportStep, ...]
    data: DataPlan
    measure: MeasurePlan
    budgets: tuple[Budget, ...]
    passes: tuple["PassConfig", ...]
    out: Optional[Path]  # None: build/<model>/<target>, known once the model is loaded
    bundle: bool
    robustness: bool
    qat_epochs: Optional[int]
    warnings: tuple[str, ...] = ()
    parity_floor: ParityFloor = field(default_factory=ParityFloor)  # below it, an artifact fails instead of shipping
    choose_fastest: bool = False  # --runtime auto: of the artifacts that could ship, the fastest within budgets does
    sensitivity: bool = False  # rank the shipping int8 artifact's layers by sensitivity (--sensitivity)
    rescue: bool = True  # keep its most sensitive layers in float when it misses the floor or an accuracy budget
    rescue_time_limit_s: float = TIME_LIMIT_S  # no new sensitivity or rescue build starts after this many seconds

    def steps_of(self, runtime: str) -> tuple[ExportStep, ...]:
        return tuple(s for s in self.steps if s.runtime == runtime)

    @property
    def shipping(self) -> tuple[str, ...]:
        return tuple(s.artifact for s in self.steps if s.ships)

    def out_dir(self, model_name: str) -> Path:
        return self.out if self.out is not None else default_out_dir(model_name, self.target.name)


def plan(request: BuildRequest, target: Optional[Target] = None) -> BuildPlan:
    """Resolve and check everything that needs no model. Raises UsageError (exit 2) on the first bad input."""
    check_model_request(request.model)
    target = target or load_target(request.target)
    warnings: list[str] = []
    precision = request.precision or target.precision
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    auto = tuple(request.runtimes or ()) == (AUTO,)
    names = _installed_runtimes(target, warnings) if auto else resolve_runtimes(target, request.runtimes)
    runtimes = tuple(planned_runtime(target, name) for name in names)
    _check_installed(runtimes)
    _check_precision(precision, runtimes)
    budgets = _budgets(request, target)
    if request.robustness and not request.eval:
        raise UsageError("--robustness needs --eval DATA (labelled data to corrupt and measure accuracy on)")
    qat = _check_qat(request.qat_epochs, precision, runtimes, warnings)
    _check_sensitivity(request, precision, runtimes, warnings)
    data = DataPlan(
        calibration=request.calibration,
        calibration_samples=_calibration_samples(request.calibration_samples, runtimes),
        eval=request.eval, train=request.train,
        needs_training=bool(request.passes) or qat is not None,
    )
    measure = _measure_plan(request, target, runtimes, budgets, warnings)
    if auto and not measure.measures:
        raise UsageError("--runtime auto ships the fastest runtime, which needs measuring; drop --device none")
    if request.out is not None:
        check_writable(request.out, "--out")
    return BuildPlan(
        model=request.model, target=target, precision=precision, runtimes=runtimes,
        steps=tuple(step for rt in runtimes for step in export_steps(rt, precision, qat is not None)),
        data=data, measure=measure, budgets=tuple(budgets),
        passes=tuple(request.passes), out=request.out,
        bundle=target.bundle if request.bundle is None else request.bundle,
        robustness=request.robustness, qat_epochs=qat, warnings=tuple(warnings),
        parity_floor=(target.parity_floor if request.parity_floor is None
                      else target.parity_floor.with_value(request.parity_floor)),
        choose_fastest=auto, sensitivity=request.sensitivity, rescue=request.rescue,
        rescue_time_limit_s=_rescue_time_limit(request.rescue_time_limit_s),
    )


def _installed_runtimes(target: Target, warnings: list[str]) -> list[str]:
    """`--runtime auto`: every runtime the target lists that can run here; the others are named in a warning."""
    from edgepack.runtimes import runtime_class

    names = [r.name for r in target.runtimes]
    missing = {n: runtime_class(n)().missing() for n in names}
    installed = [n for n in names if not missing[n]]
    if not installed:
        raise UsageError(f"--runtime auto: none of target {target.name}'s runtimes can run here "
                         f"({'; '.join(m[0] for m in missing.values() if m)})")
    for name in names:
        if missing[name]:
            warnings.append(f"--runtime auto: {name} is not a candidate: {missing[name][0]}")
    if len(installed) == 1:
        warnings.append(f"--runtime auto: {installed[0]} is the only runtime of target {target.name} installed here, "
                        f"so it is built without a comparison")
    return installed


def resolve_runtimes(target: Target, requested: Optional[Sequence[str]]) -> list[str]:
    names = [r.name for r in target.runtimes]
    if not requested:
        return list(target.default_runtimes)
    if tuple(requested) == ("all",):
        return names
    unknown = [r for r in requested if r not in names]
    if unknown:
        raise UsageError(f"target {target.name} cannot use runtime {unknown[0]!r}; it lists: {', '.join(names)} "
                         f"(or 'all', or 'auto' alone)")
    if len(set(requested)) != len(requested):
        raise UsageError(f"--runtime lists {', '.join(requested)}: name each runtime once")
    return list(requested)


def export_steps(runtime: PlannedRuntime, precision: str, qat: bool) -> list[ExportStep]:
    """The artifacts one runtime builds, in order. fp32 is always built (the reference); fp16, where the runtime has
    it, is converted from the fp32 file and always built (the GPU's own precision, cheap to make, so an int8 build
    shows it beside int8); int8 derives from the eager model or from the fp32 file, as the runtime declares; a QAT
    artifact is trained from the eager model and ships instead of the post-training one, which is kept for
    comparison."""
    fp32 = f"{runtime.name}-fp32"
    steps = [ExportStep(runtime.name, "fp32", False, fp32, EAGER, ships=precision == "fp32")]
    if "fp16" in runtime.precisions:
        steps.append(ExportStep(runtime.name, "fp16", False, f"{runtime.name}-fp16", fp32, ships=precision == "fp16"))
    if precision == "int8":
        with_qat = qat and runtime.supports_qat
        parent = fp32 if runtime.int8_from == "fp32" else EAGER
        steps.append(ExportStep(runtime.name, "int8", False, f"{runtime.name}-int8", parent, ships=not with_qat))
        if with_qat:
            steps.append(ExportStep(runtime.name, "int8", True, f"{runtime.name}-int8-qat", EAGER, ships=True))
    return steps


def default_out_dir(model_name: str, target_name: str) -> Path:
    return Path("build") / model_name / target_name


def check_writable(out: Path, option: str) -> None:
    """Fail before any work if a directory cannot be created or written."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{option} {out}: it exists and is not a directory; choose a directory")
    probe_root = out
    while not probe_root.exists():
        probe_root = probe_root.parent
    if not probe_root.is_dir() or not os.access(probe_root, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {out}: {probe_root} is not a writable directory; choose a writable {option}")


# ---- the checks -----------------------------------------------------------------------------------------------------

def planned_runtime(target: Target, name: str) -> PlannedRuntime:
    from edgepack.runtimes import runtime_class

    cls = runtime_class(name)
    return PlannedRuntime(name=name, file_format=cls.file_format, int8_from=cls.int8_from,
                          supports_qat=cls.supports_qat, phone_runner=cls.phone_runner,
                          options=target.runtime(name).options, precisions=cls.precisions)


def _check_precision(precision: str, runtimes: Sequence[PlannedRuntime]) -> None:
    for rt in runtimes:
        if precision not in rt.precisions:
            raise UsageError(f"--precision {precision}: runtime {rt.name} builds {', '.join(rt.precisions)} "
                             f"(fp16 is the cuda target's: --target cuda)")


def _check_installed(runtimes: Sequence[PlannedRuntime]) -> None:
    from edgepack.runtimes import runtime_class

    for rt in runtimes:
        missing = runtime_class(rt.name)().missing()
        if missing:
            raise MissingDependency(f"runtime {rt.name} cannot run here: {missing[0]}")


def _budgets(request: BuildRequest, target: Target) -> list[Budget]:
    budgets = with_latency_tolerance(merge_budgets(target_budgets(target), list(request.budgets)),
                                     request.latency_tolerance)
    from edgepack.gates import delegation_budget, every_runtime_budget

    if request.require_full_delegation:
        budgets.append(delegation_budget())
    # with --runtime auto a runtime that fails is not a candidate, not a failed build
    if not request.allow_partial and tuple(request.runtimes or ()) != (AUTO,):
        budgets.append(every_runtime_budget())
    if any(b.metric == "accuracy_drop" for b in budgets) and not request.eval:
        raise UsageError("--max-accuracy-drop needs --eval DATA (labelled data to measure accuracy on)")
    return budgets


def _check_qat(epochs: Optional[int], precision: str, runtimes: Sequence[PlannedRuntime],
               warnings: list[str]) -> Optional[int]:
    if epochs is None:
        return None
    if epochs < 1:
        raise UsageError(f"--qat {epochs}: use 1 or more epochs")
    if precision != "int8":
        raise UsageError("--qat trains an int8 model; drop --precision fp32")
    with_qat = [rt.name for rt in runtimes if rt.supports_qat]
    for rt in runtimes:
        if not rt.supports_qat:
            warnings.append(f"{rt.name} has no quantization-aware training path; its int8 artifact is post-training "
                            f"quantized" + (f" (QAT runs for {', '.join(with_qat)})" if with_qat else ""))
    return epochs


def _check_sensitivity(request: BuildRequest, precision: str, runtimes: Sequence[PlannedRuntime],
                       warnings: list[str]) -> None:
    if not request.sensitivity:
        return
    if precision != "int8":
        raise UsageError("--sensitivity ranks layers by what int8 costs them; drop --precision fp32")
    if request.qat_epochs is not None:
        raise UsageError("--sensitivity ranks the layers of the post-training int8 artifact, which --qat replaces; "
                         "drop one of them")
    from edgepack.runtimes import runtime_class

    for rt in runtimes:
        if not runtime_class(rt.name).keeps_layers_float:
            warnings.append(f"--sensitivity: {rt.name} cannot keep layers in float in an int8 export, so its layers "
                            f"are not ranked")


def _rescue_time_limit(given: Optional[float]) -> float:
    if given is None:
        return TIME_LIMIT_S
    if not given > 0:
        raise UsageError(f"--rescue-time-limit {given:g}: give a number of seconds above 0")
    return float(given)


def _calibration_samples(given: Optional[int], runtimes: Sequence[PlannedRuntime]) -> int:
    if given is not None:
        if given < 1:
            raise UsageError(f"--calibration-samples {given}: use 1 or more")
        return given
    return max(rt.options.calibration_samples for rt in runtimes)


def _measure_plan(request: BuildRequest, target: Target, runtimes: Sequence[PlannedRuntime],
                  budgets: Sequence[Budget], warnings: list[str]) -> MeasurePlan:
    for option, value in (("--threads", request.threads), ("--runs", request.runs)):
        if value is not None and value < 1:
            raise UsageError(f"{option} {value}: use 1 or more")
    threads = request.threads if request.threads is not None else target.threads
    runs = request.runs if request.runs is not None else target.runs
    if target.latency_stat not in LATENCY_STATS:
        raise UsageError(f"target {target.name}: latency_stat {target.latency_stat!r}; use one of "
                         f"{', '.join(LATENCY_STATS)}")
    device = request.device or target.device
    if not device.startswith("adb") and request.runners:
        raise UsageError("--runner is for measuring on a phone; add --device adb (or adb:SERIAL), or drop --runner")
    if device == NO_DEVICE or device == "gpu" or device.startswith("gpu:"):
        return _gpu_or_no_measure_plan(target, runtimes, budgets, device, threads, runs, warnings)
    if device == "host":
        reason = _measuring_unavailable(runtimes, "host")
        if reason:
            raise UsageError(f"--device host: {reason}")
        cpus = os.cpu_count() or 1
        measured = min(threads, cpus)
        if threads > cpus:
            warnings.append(f"{threads} threads asked but this host has {cpus} logical CPUs; measured with {cpus}")
        return MeasurePlan("host", measured, runs, target.warmup, target.latency_stat, app_threads=threads)
    if device != "adb" and not device.startswith("adb:"):
        raise UsageError(f"--device {device!r}: use host, adb, adb:SERIAL, gpu, gpu:N or none")
    runners = _phone_runners(device, target, runtimes, dict(request.runners))
    from edgepack.device.adb import AdbDevice

    # a missing or unauthorised phone fails now, not after minutes of exporting; the serial is pinned so every
    # artifact is measured on the phone checked here, even if another one is plugged in meanwhile
    phone = AdbDevice.resolve(device)
    return MeasurePlan(f"adb:{phone.serial}", threads, runs, target.warmup, target.latency_stat, runners)


def _gpu_or_no_measure_plan(target: Target, runtimes: Sequence[PlannedRuntime], budgets: Sequence[Budget],
                            device: str, threads: int, runs: int, warnings: list[str]) -> MeasurePlan:
    """--device gpu[:N]: every runtime must measure on that GPU here, or the build stops now (exit 2) rather than
    time the CPU and call it the GPU. --device none: nothing is measured, so no latency or memory budget can hold."""

    if device == NO_DEVICE:
        timed = [b.name for b in budgets if b.metric in ("latency", "memory")]
        if timed:
            raise UsageError(f"--device none measures nothing, so the {timed[0]} budget cannot be judged; drop it, "
                             f"or measure (--device gpu)")
        warnings.append("--device none: not measured on a GPU (nor anywhere): the artifacts were built and their "
                        "numerics checked on the CPU; no latency or memory figure exists for them")
        return MeasurePlan(NO_DEVICE, threads, runs, target.warmup, target.latency_stat, app_threads=threads)
    device = "gpu:0" if device == "gpu" else device
    reason = _measuring_unavailable(runtimes, device)
    if reason:
        raise MissingDependency(f"cannot measure on {device}: {reason}; --device none builds the artifacts and "
                                f"checks their numerics on the CPU, without measuring")
    return MeasurePlan(device, threads, runs, target.warmup, target.latency_stat, app_threads=threads)


def _measuring_unavailable(runtimes: Sequence[PlannedRuntime], device: str) -> Optional[str]:
    """The first runtime's reason it cannot measure on `device` here; None when every one can."""
    from edgepack.runtimes import runtime_class

    reasons = (runtime_class(rt.name)().measuring_unavailable(device) for rt in runtimes)
    return next((r for r in reasons if r), None)


def _phone_runners(device: str, target: Target, runtimes: Sequence[PlannedRuntime],
                   given: dict[str, str]) -> tuple[tuple[str, str], ...]:
    from edgepack.device.adb import check_arm64_runner

    unknown = sorted(set(given) - {rt.name for rt in runtimes})
    if unknown:
        raise UsageError(f"--runner {unknown[0]}=...: this build does not use runtime {unknown[0]}; it uses "
                         f"{', '.join(rt.name for rt in runtimes)}")
    paths = {**target.runner, **given}
    phone_capable = [rt.name for rt in runtimes if rt.phone_runner]
    resolved = []
    for rt in runtimes:
        if rt.phone_runner is None:
            raise UsageError(f"--device {device} measures on a phone; {rt.name} has no phone runner here (use "
                             f"--runtime {' or '.join(phone_capable) or 'a runtime with a phone runner'})")
        if rt.name not in paths:
            raise UsageError(f"measuring {rt.name} on {device} needs its arm64 {rt.phone_runner} binary: pass "
                             f"--runner {rt.name}=PATH (edgepack never downloads binaries)")
        path = Path(paths[rt.name]).expanduser()
        if not path.is_file():
            raise UsageError(f"--runner {rt.name}={path}: no such file")
        check_arm64_runner(path)
        resolved.append((rt.name, str(path)))
    return tuple(resolved)
