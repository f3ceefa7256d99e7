"""The protocol every runtime implements, the options base class, and helpers they share.

Importing this module (or any runtime module) must stay light: no torch, no runtime library. The planner reads the
runtimes' class attributes (their declared capabilities) in milliseconds, before any heavy import.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, ContextManager, Protocol, TypeVar

from edgepack.errors import ToolError, UsageError
from edgepack.records import (
    Artifact,
    CalibrationInfo,
    Delegation,
    OpCount,
    Simplification,
    TensorSpec,
)

if TYPE_CHECKING:
    import numpy as np
    from typing_extensions import Self

    from edgepack.data.dataset import ArrayDataset
    from edgepack.device.runner_output import RunnerStats
    from edgepack.models.bundle import ModelBundle

# A loaded artifact: takes float32 numpy inputs (one per model input), returns float32 numpy outputs.
# Runtimes with quantized I/O quantize/dequantize inside, so callers always compare floats.
Session = Callable[[Sequence["np.ndarray"]], list["np.ndarray"]]


class Int8Simulation(Protocol):
    """A runtime's plain int8 program, able to run with some layers kept in float without writing an artifact per
    guess: the sensitivity pass's fast path. A rescue still ships only an artifact it built and judged."""

    description: str  # what it runs, for the report: e.g. "its quantizer's int8 graph run in PyTorch"

    def keeping(self, keep: tuple[str, ...]) -> ContextManager[Session]:
        """Within the block, a session with the layers under `keep` in float."""


PRECISIONS = ("fp32", "fp16", "int8")
INT8_SOURCES = ("eager", "fp32")  # the values `int8_from` may declare
EAGER = "eager"  # the parent of an artifact exported straight from the PyTorch model
MOSTLY_FLOAT = 0.5  # an int8 artifact with less of its weights in 8 bits than this gets a warning note

OptionsT = TypeVar("OptionsT", bound="RuntimeOptions")
ValueT = TypeVar("ValueT")


@dataclass(frozen=True)
class TimedSession:
    """What the measuring child times: `run` makes one inference with its inputs already placed where the model runs
    (host memory, or the GPU's), and returns once the results are ready; `facts` is called after the timed runs and
    says what ran it (e.g. the execution provider, the GPU, its driver and memory), as JSON-ready values."""

    run: Callable[[], object]
    facts: Callable[[], dict[str, Any]] = dict


@dataclass(frozen=True)
class QatRequest:
    """Quantization-aware training instead of post-training calibration (`--qat EPOCHS`)."""

    train: ArrayDataset
    epochs: int
    lr: float = 1e-4
    seed: int = 0


def option(default: ValueT, choices: Sequence[ValueT], doc: str) -> ValueT:
    """A target-file key with its allowed values; checked in `RuntimeOptions.__post_init__`, listed in the schema."""
    return field(default=default, metadata={"choices": tuple(choices), "doc": doc})


def _as_written(value: Any) -> str:
    """A value as a target file (YAML) spells it: true/false, not True/False."""
    return str(value).lower() if isinstance(value, bool) else str(value)


@dataclass(frozen=True)
class RuntimeOptions:
    """Base of every runtime's options: its section under `runtimes:` in a target file, validated on load.

    Each runtime declares a frozen subclass as `options_type`; fields are the keys a target file may set, with their
    defaults; `__post_init__` raises ValueError naming the valid values, and the target loader turns that into a
    one-line UsageError naming the file. Fields made with `option(...)` carry their allowed values, so validation,
    error messages and the JSON schema come from one declaration.
    """

    calibration_samples: int = 128  # size of the seeded, class-stratified calibration subset

    def __post_init__(self) -> None:
        if isinstance(self.calibration_samples, bool) or not isinstance(self.calibration_samples, int) \
                or self.calibration_samples < 1:
            raise ValueError(f"calibration_samples={self.calibration_samples!r} must be a whole number >= 1")
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            # compared with their types: True == 1 and 1 == 1.0, but neither is a valid spelling of the other
            if choices is not None and not any(type(value) is type(c) and value == c for c in choices):
                raise ValueError(f"{f.name}={value!r} is not one of: {', '.join(_as_written(c) for c in choices)}")

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Self:
        """Options from a target file's section; an unknown key is a ValueError naming the valid ones."""
        unknown = [key for key in data if key not in cls.option_names()]
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; valid keys: {', '.join(cls.option_names())}")
        return cls(**data)


@dataclass(frozen=True)
class ExportRequest:
    """What the pipeline asks a runtime to produce."""

    precision: str  # fp32 | int8
    out_dir: Path
    calibration: ArrayDataset | None = None
    options: RuntimeOptions = field(default_factory=RuntimeOptions)  # the target file's settings for this runtime
    parent: Artifact | None = None  # the fp32 artifact an int8 one derives from, when the runtime uses it
    qat: QatRequest | None = None  # int8 only: train with fake quantization instead of calibrating
    # int8 only: the model's own module names (e.g. "features.3") whose layers stay in float (mixed precision)
    keep_float: tuple[str, ...] = ()

    @property
    def parent_name(self) -> str:
        """What the artifact derives from: the artifact passed as parent, else the eager model."""
        return self.parent.name if self.parent is not None else EAGER

    @property
    def tag(self) -> str:
        """What names the artifact besides model and runtime: "fp32", "int8", "int8-qat", "int8-mixed"."""
        return self.precision + ("-qat" if self.qat else "") + ("-mixed" if self.keep_float else "")


class Runtime(Protocol):
    name: ClassVar[str]
    file_format: ClassVar[str]  # onnx | pte | tflite
    extra: ClassVar[str]  # the pip extra that installs it
    modules: ClassVar[tuple[str, ...]]  # python modules it needs
    # ---- capabilities: what the planner, the bundle and the device layer ask of a runtime, declared here only
    options_type: ClassVar[type[RuntimeOptions]]  # its target-file options
    int8_from: ClassVar[str]  # "eager": int8 is exported from the PyTorch model; "fp32": from this runtime's fp32 file
    supports_qat: ClassVar[bool]  # has a quantization-aware training path (--qat)
    phone_runner: ClassVar[str | None]  # the native runner that measures it on a phone over adb; None: host only
    keeps_layers_float: ClassVar[bool]  # int8 export can keep named modules in float (ExportRequest.keep_float)
    precisions: ClassVar[tuple[str, ...]]  # what it can export; fp16 derives from its fp32 file
    measured_on: ClassVar[str]  # "host" (this machine's CPU, or a phone with phone_runner) or "gpu"

    def missing(self) -> list[str]:
        """Why this runtime cannot run here (empty when it can)."""

    def measuring_unavailable(self, device: str) -> str | None:
        """Why this runtime cannot measure on `device` ("host", "gpu:N") here; None when it can."""

    def session_placement(self, device: str) -> dict[str, str]:
        """Session settings that put a loaded artifact where the build measures (`--device`), over its own."""

    def timed_session(self, path: Path, threads: int, settings: Mapping[str, str] | None,
                      inputs: Sequence[np.ndarray]) -> TimedSession:
        """The artifact loaded for timing with `inputs` fed to every call (the measuring child times `run`)."""

    def export(self, bundle: ModelBundle, request: ExportRequest) -> Artifact:
        """Write the artifact atomically into request.out_dir and describe it."""

    def load(self, path: Path, threads: int, settings: Mapping[str, str] | None = None) -> Session:
        """Open an artifact for inference with the given intra-op thread count and the artifact's session settings
        (`Artifact.session_options`); a setting the runtime does not know is a ToolError."""

    def import_runtime(self) -> None:
        """Import what `load` needs, nothing more: the memory baseline child calls only this."""

    def versions(self) -> dict[str, str]:
        """Versions of the libraries this runtime uses."""

    def layer_sqnr(self, bundle: ModelBundle, int8: Artifact, fp32: Artifact, data: ArrayDataset,
                   layers: Sequence[str]) -> dict[str, float] | None:
        """SQNR (dB) of each named layer's output in int8 against fp32, computed by this runtime; None: it cannot."""

    def int8_simulation(self, bundle: ModelBundle, calibration: ArrayDataset | None) -> Int8Simulation | None:
        """The plain int8 program, able to run with layers kept in float without writing an artifact per guess (the
        sensitivity pass's fast path: see Int8Simulation); None: this runtime has none."""

    def bundle_snippet(self, artifact: Artifact, threads: int, versions: Mapping[str, str]) -> str | None:
        """Markdown showing how an Android app loads and runs the artifact; None: no snippet for this runtime."""

    def phone_runner_argv(self, runner: str, model: str, threads: int, warmup: int, runs: int) -> list[str]:
        """The phone runner's command line (paths on the device) for warm-up plus timed runs."""

    def parse_phone_runner_output(self, text: str, warmup: int) -> RunnerStats:
        """Latency (and memory, where printed) from what the phone runner printed."""


class RuntimeBase:
    """What every runtime answers the same way, from its class attributes; subclasses add export, load and hooks.

    Importing a runtime module must not import torch or the runtime's own libraries: the planner reads these class
    attributes in milliseconds, before any heavy import.
    """

    name: ClassVar[str]
    file_format: ClassVar[str]
    extra: ClassVar[str]
    modules: ClassVar[tuple[str, ...]]  # python modules it imports
    distributions: ClassVar[tuple[str, ...]]  # the installed packages whose versions a report records
    options_type: ClassVar[type[RuntimeOptions]] = RuntimeOptions
    int8_from: ClassVar[str] = "eager"
    supports_qat: ClassVar[bool] = False
    phone_runner: ClassVar[str | None] = None
    keeps_layers_float: ClassVar[bool] = False
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "int8")
    measured_on: ClassVar[str] = "host"  # "host": this machine's CPU (or a phone, with phone_runner); "gpu"

    def missing(self) -> list[str]:
        return missing_modules(self.modules, self.extra)

    def measuring_unavailable(self, device: str) -> str | None:
        if device == "host":
            return None
        return f"{self.name} measures on this host's CPU (--device host) or on a phone, not on {device}"

    def session_placement(self, device: str) -> dict[str, str]:
        return {}

    def timed_session(self, path: Path, threads: int, settings: Mapping[str, str] | None,
                      inputs: Sequence[np.ndarray]) -> TimedSession:
        session = self.load(path, threads, settings)  # type: ignore[attr-defined]  # every runtime defines load
        return TimedSession(run=lambda: session(inputs))

    def versions(self) -> dict[str, str]:
        return package_versions(*self.distributions)

    @classmethod
    def derives_from(cls, precision: str, qat: bool) -> str:
        """"eager" or "fp32": what an export of this precision is made from (QAT always trains the eager model; fp16
        is converted from the fp32 file)."""
        if precision == "fp16":
            return "fp32"
        return cls.int8_from if precision == "int8" and not qat else EAGER

    def check_request(self, request: ExportRequest) -> None:
        """Refuse what this runtime cannot build, and a parent that is not what the artifact really derives from."""
        check_export_request(self, request.precision, request.qat)
        if request.keep_float and (request.precision != "int8" or request.qat is not None):
            raise UsageError("layers kept in float are a post-training int8 choice; this export is "
                             f"{request.tag.replace('-mixed', '')}")
        if request.keep_float and not self.keeps_layers_float:
            raise UsageError(f"{self.name} cannot keep layers in float in an int8 export")
        source = self.derives_from(request.precision, request.qat is not None)
        parent = request.parent
        if source == EAGER and parent is not None:
            raise ToolError(f"{self.name} {request.tag} is exported from the eager model; it was given parent "
                            f"{parent.name}, which it does not derive from")
        if source == "fp32" and (parent is None or parent.runtime != self.name or parent.precision != "fp32"):
            given = parent.name if parent is not None else "none"
            raise ToolError(f"{self.name} {request.tag} is made from {self.name}'s fp32 artifact; pass it as parent "
                            f"(given: {given})")

    def artifact_path(self, model_name: str, request: ExportRequest) -> Path:
        """Where an export writes: <out>/<model>-<fp32|int8|int8-qat>.<format>."""
        return Path(request.out_dir) / f"{model_name}-{request.tag}.{self.file_format}"

    def describe_file(self, path: Path, request: ExportRequest, *, inputs: tuple[TensorSpec, ...],
                      outputs: tuple[TensorSpec, ...], scheme: str, dynamic_batch: bool | None = None,
                      ops: tuple[OpCount, ...] = (), float_ops: tuple[OpCount, ...] = (),
                      delegation: Delegation | None = None, simplification: Simplification | None = None,
                      calibration: CalibrationInfo | None = None, notes: Sequence[str] = (),
                      weight_census: tuple[int, int] | None = None) -> Artifact:
        """The Artifact record of a file this runtime just wrote (size and sha256 read from disk).

        `weight_census`: (weight values stored in 8 bits, weight values stored otherwise), for int8 artifacts."""
        from edgepack.fileio import sha256_file

        share = None
        total = weight_census[0] + weight_census[1] if weight_census is not None else 0
        if request.precision == "int8" and weight_census is not None and total:
            share = weight_census[0] / total
            if share == 0:  # an "int8" file that is the fp32 one under another name must not ship as int8
                path.unlink(missing_ok=True)
                why = "".join(f"; {n}" for n in notes if "rejected" in n)
                raise UsageError(f"{self.name} int8: the quantizer left every weight in float (0 of {total:,} "
                                 f"values in 8 bits){why}")
            if share < MOSTLY_FLOAT:
                notes = (*notes, f"only {share:.0%} of the weights are stored in 8 bits: most of this int8 artifact "
                                 f"runs on float kernels, so expect fp32-like size and speed")
        return Artifact(name=f"{self.name}-{request.tag}", path=str(path), format=self.file_format, runtime=self.name,
                        precision=request.precision, size_bytes=path.stat().st_size, sha256=sha256_file(path),
                        inputs=inputs, outputs=outputs, parent=request.parent_name, scheme=scheme,
                        dynamic_batch=dynamic_batch, ops=ops, float_ops=float_ops, delegation=delegation,
                        simplification=simplification, calibration=calibration, notes=tuple(notes),
                        int8_weight_share=share)

    # ---- hooks a runtime overrides when it has the capability ------------------------------------------------------
    def layer_sqnr(self, bundle: ModelBundle, int8: Artifact, fp32: Artifact, data: ArrayDataset,
                   layers: Sequence[str]) -> dict[str, float] | None:
        """SQNR (dB) of each named layer's output in the int8 artifact against the fp32 one, computed by this
        runtime on `data`: a cheap pre-rank for the sensitivity pass. None: this runtime cannot show layer outputs."""
        return None

    def int8_simulation(self, bundle: ModelBundle, calibration: ArrayDataset | None) -> Int8Simulation | None:
        return None

    def bundle_snippet(self, artifact: Artifact, threads: int, versions: Mapping[str, str]) -> str | None:
        return None

    def phone_runner_argv(self, runner: str, model: str, threads: int, warmup: int, runs: int) -> list[str]:
        raise UsageError(f"{self.name} has no phone runner; it is measured on the host only")

    def parse_phone_runner_output(self, text: str, warmup: int) -> RunnerStats:
        raise UsageError(f"{self.name} has no phone runner; it is measured on the host only")


def typed_options(request: ExportRequest, options_type: type[OptionsT]) -> OptionsT:
    """The request's options as the runtime's own type. The bare base (no target file, e.g. in the Python API)
    means "this runtime's defaults"; another runtime's options are a caller bug."""
    options = request.options
    if isinstance(options, options_type):
        return options
    if type(options) is RuntimeOptions:
        return options_type()
    raise ToolError(f"export expected {options_type.__name__}, got {type(options).__name__}")


def count_weights(tensors: Iterable[tuple[Sequence[int], str]]) -> tuple[int, int]:
    """(values in 8-bit tensors, values in other tensors) over constant tensors of 2+ dimensions, given as
    (shape, dtype name): the weights of convolutions, linear layers and embeddings, not biases or scales."""
    import math

    eight = other = 0
    for shape, dtype in tensors:
        if len(shape) < 2:
            continue
        n = math.prod(int(d) for d in shape)
        if dtype in ("int8", "uint8"):
            eight += n
        else:
            other += n
    return eight, other


def op_census(counts: Mapping[str, int]) -> tuple[OpCount, ...]:
    """{op: count} -> OpCount records, sorted by operator name."""
    return tuple(OpCount(op, int(n)) for op, n in sorted(counts.items()))


def mixed_scheme(keep: tuple[str, ...]) -> str:
    """The clause an int8 scheme gains when layers were kept in float (a rescue, --keep-float)."""
    return f"; {len(keep)} layer(s) kept in float ({', '.join(keep)})" if keep else ""


def calibration_info(calibration: ArrayDataset | None, samples: int) -> CalibrationInfo | None:
    return None if calibration is None else CalibrationInfo(source=calibration.name, samples=samples)


def check_export_request(runtime: Runtime | RuntimeBase, precision: str, qat: QatRequest | None = None) -> None:
    """Refuse a precision the runtime cannot build, or a runtime whose libraries are not installed."""
    from edgepack.errors import MissingDependency

    if precision not in runtime.precisions:
        raise UsageError(f"{runtime.name} cannot export precision {precision!r}; choose one of "
                         f"{', '.join(runtime.precisions)}")
    if qat is not None and precision != "int8":
        raise UsageError(f"quantization-aware training builds int8, not {precision}")
    if qat is not None and not runtime.supports_qat:
        raise UsageError(f"{runtime.name} has no quantization-aware training path (`edgepack targets` lists the "
                         f"runtimes that have one)")
    reasons = runtime.missing()
    if reasons:
        raise MissingDependency(f"{runtime.name} runtime unavailable: {'; '.join(reasons)}")


def checked_load(path: Path, threads: int, what: str, settings: Mapping[str, str] | None = None,
                 known: Sequence[str] = ()) -> Path:
    """The artifact path a runtime is about to open, refused early when the file, the thread count or a session
    setting is wrong."""
    unknown = [k for k in (settings or {}) if k not in known]
    if unknown:
        raise ToolError(f"{what}: unknown session setting {unknown[0]!r}; this runtime takes "
                        f"{', '.join(known) or 'none'}")
    if threads < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no {what} at {path}")
    return path


def missing_modules(modules: Iterable[str], extra: str) -> list[str]:
    """Reasons for each python module that is not importable, naming the extra that installs it."""
    return [
        f"python module '{m}' is not installed (pip install 'edgepack[{extra}]')"
        for m in modules
        if importlib.util.find_spec(m) is None
    ]


def package_versions(*distributions: str) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in distributions:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out
