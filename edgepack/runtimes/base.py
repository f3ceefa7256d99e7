"""The protocol every runtime implements, and helpers they share."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, Protocol, Sequence

if TYPE_CHECKING:
    import numpy as np

    from edgepack.data.dataset import ArrayDataset
    from edgepack.models.bundle import ModelBundle
    from edgepack.records import Artifact, TensorSpec

# A loaded artifact: takes float32 numpy inputs (one per model input), returns float32 numpy outputs.
# Runtimes with quantized I/O quantize/dequantize inside, so callers always compare floats.
Session = Callable[[Sequence["np.ndarray"]], list["np.ndarray"]]


@dataclass(frozen=True)
class QatRequest:
    """Quantization-aware training instead of post-training calibration (`--qat EPOCHS`)."""

    train: "ArrayDataset"
    epochs: int
    lr: float = 1e-4
    seed: int = 0


@dataclass(frozen=True)
class RuntimeOptions:
    """Base of every runtime's options: its section under `runtimes:` in a target file, validated on load.

    Each runtime declares a frozen subclass as `options_type`; fields are the keys a target file may set, with their
    defaults; `__post_init__` raises ValueError naming the valid values, and the target loader turns that into a
    one-line UsageError naming the file.
    """

    calibration_samples: int = 128  # size of the seeded, class-stratified calibration subset

    def __post_init__(self) -> None:
        if isinstance(self.calibration_samples, bool) or not isinstance(self.calibration_samples, int) \
                or self.calibration_samples < 1:
            raise ValueError(f"calibration_samples={self.calibration_samples!r} must be a whole number >= 1")


@dataclass(frozen=True)
class ExportRequest:
    """What the pipeline asks a runtime to produce."""

    precision: str  # fp32 | int8
    out_dir: Path
    calibration: Optional["ArrayDataset"] = None
    options: RuntimeOptions = field(default_factory=RuntimeOptions)  # the target file's settings for this runtime
    parent: Optional["Artifact"] = None  # the fp32 artifact an int8 one derives from, when the runtime uses it
    qat: Optional[QatRequest] = None  # int8 only: train with fake quantization instead of calibrating

    @property
    def parent_name(self) -> str:
        """What the artifact derives from: the artifact passed as parent, else the eager model."""
        return self.parent.name if self.parent is not None else "eager"

    @property
    def tag(self) -> str:
        """What names the artifact besides model and runtime: "fp32", "int8", "int8-qat"."""
        return self.precision + ("-qat" if self.qat else "")


class Runtime(Protocol):
    name: ClassVar[str]
    file_format: ClassVar[str]  # onnx | pte | tflite
    extra: ClassVar[str]  # the pip extra that installs it
    modules: ClassVar[tuple[str, ...]]  # python modules it needs
    # ---- capabilities: what the planner, the bundle and the device layer ask of a runtime, declared here only
    options_type: ClassVar[type[RuntimeOptions]]  # its target-file options
    int8_from: ClassVar[str]  # "eager": int8 is exported from the PyTorch model; "fp32": from this runtime's fp32 file
    supports_qat: ClassVar[bool]  # has a quantization-aware training path (--qat)
    phone_runner: ClassVar[Optional[str]]  # the native runner that measures it on a phone over adb; None: host only

    def missing(self) -> list[str]:
        """Why this runtime cannot run here (empty when it can)."""

    def export(self, bundle: "ModelBundle", request: ExportRequest) -> "Artifact":
        """Write the artifact atomically into request.out_dir and describe it."""

    def load(self, path: Path, threads: int) -> Session:
        """Open an artifact for inference with the given intra-op thread count."""

    def import_runtime(self) -> None:
        """Import what `load` needs, nothing more: the memory baseline child calls only this."""

    def versions(self) -> dict[str, str]:
        """Versions of the libraries this runtime uses."""


class RuntimeBase:
    """What every runtime answers the same way: missing libraries and their versions, from its class attributes.

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
    phone_runner: ClassVar[Optional[str]] = None

    def missing(self) -> list[str]:
        return missing_modules(self.modules, self.extra)

    def versions(self) -> dict[str, str]:
        return package_versions(*self.distributions)

    def artifact_path(self, model_name: str, request: ExportRequest) -> Path:
        """Where an export writes: <out>/<model>-<fp32|int8|int8-qat>.<format>."""
        return Path(request.out_dir) / f"{model_name}-{request.tag}.{self.file_format}"

    def describe_file(self, path: Path, request: ExportRequest, *, inputs: tuple["TensorSpec", ...],
                      outputs: tuple["TensorSpec", ...], scheme: str, details: dict[str, Any],
                      notes: Sequence[str] = ()) -> "Artifact":
        """The Artifact record of a file this runtime just wrote (size and sha256 read from disk)."""
        from edgepack.fileio import sha256_file
        from edgepack.records import Artifact

        return Artifact(name=f"{self.name}-{request.tag}", path=str(path), format=self.file_format, runtime=self.name,
                        precision=request.precision, size_bytes=path.stat().st_size, sha256=sha256_file(path),
                        inputs=inputs, outputs=outputs, parent=request.parent_name, scheme=scheme, details=details,
                        notes=tuple(notes))


PRECISIONS = ("fp32", "int8")


QAT_RUNTIMES = ("executorch", "onnxruntime")  # runtimes with a PT2E quantization-aware training path


def check_export_request(runtime: "Runtime", precision: str, qat: Optional[QatRequest] = None) -> None:
    """Refuse a precision the runtime cannot build, or a runtime whose libraries are not installed."""
    from edgepack.errors import MissingDependency, UsageError

    if qat is not None and (precision != "int8" or runtime.name not in QAT_RUNTIMES):
        raise UsageError(f"quantization-aware training builds int8 for {', '.join(QAT_RUNTIMES)}; "
                         f"not {precision} for {runtime.name}")
    if precision not in PRECISIONS:
        raise UsageError(f"{runtime.name} cannot export precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    reasons = runtime.missing()
    if reasons:
        raise MissingDependency(f"{runtime.name} runtime unavailable: {'; '.join(reasons)}")


def checked_load(path: Path, threads: int, what: str) -> Path:
    """The artifact path a runtime is about to open, refused early when the file or the thread count is wrong."""
    from edgepack.errors import UsageError

    if threads < 1:
        raise UsageError(f"threads must be at least 1, got {threads}")
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no {what} at {path}")
    return path


def missing_modules(modules: Sequence[str], extra: str) -> list[str]:
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
