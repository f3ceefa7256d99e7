"""The frozen records that flow between pipeline stages.

Every record round-trips through JSON (`to_dict` / `from_dict`), so a saved report can be re-judged later by
`edgepack check` without re-running anything. Stdlib only: importing this module must not import torch.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar

T = TypeVar("T", bound="Record")


class Record:
    """Mixin giving dataclasses a JSON round trip driven by their type hints."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                kwargs[f.name] = _from_jsonable(hints[f.name], data[f.name])
        return cls(**kwargs)


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _from_jsonable(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _from_jsonable(non_none[0], value) if len(non_none) == 1 else value
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_jsonable(args[0], v) for v in value)
        return tuple(value)
    if origin is list:
        return [_from_jsonable(args[0], v) for v in value]
    return value


@dataclass(frozen=True)
class TensorSpec(Record):
    """One input or output of an artifact. `scale`/`zero_point` are set when the runtime takes quantized tensors."""

    name: str
    shape: tuple[Any, ...]
    dtype: str
    scale: Optional[float] = None
    zero_point: Optional[int] = None


@dataclass(frozen=True)
class PassRecord(Record):
    """What one compression pass did: its config, sizes before and after, per-layer changes."""

    name: str
    config: dict[str, Any]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    seconds: float
    changes: tuple[dict[str, Any], ...] = ()
    skipped: tuple[dict[str, Any], ...] = ()
    accuracy_before: Optional[float] = None
    accuracy_after: Optional[float] = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Provenance(Record):
    """Where the model came from and what was done to it before export."""

    source: str
    kind: str  # zoo | python | pt2 | checkpoint
    model_name: str
    output_taken: str  # which output of forward() the artifacts return, e.g. "tensor", "logits", "[0]"
    params: int
    macs: int
    input_shapes: tuple[tuple[int, ...], ...]
    passes: tuple[PassRecord, ...] = ()
    preprocessing: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Artifact(Record):
    """One exported file."""

    name: str  # stable key used by parity/measurement/verdict records, e.g. "onnxruntime-int8"
    path: str
    format: str  # onnx | pte | tflite
    runtime: str
    precision: str  # fp32 | int8
    size_bytes: int
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parent: Optional[str] = None  # name of the artifact (or "eager") it was derived from
    scheme: str = ""  # e.g. "static-qdq u8 activations, per-channel s8 weights"
    details: dict[str, Any] = field(default_factory=dict)  # runtime-specific: delegation, op counts, ...
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Parity(Record):
    """Artifact outputs compared with eager PyTorch on the same inputs."""

    artifact: str
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float  # fraction in [0, 1]
    inputs_from: str  # which data the comparison ran on


@dataclass(frozen=True)
class Accuracy(Record):
    """Accuracy on labelled data, run through the artifact's own runtime ("eager" = PyTorch reference)."""

    artifact: str
    dataset: str
    samples: int
    top1: float  # fraction in [0, 1]
    top5: Optional[float] = None


@dataclass(frozen=True)
class Robustness(Record):
    """Top-1 under fixed, seeded corruptions (noise, blur, brightness) of the eval data, through one runtime."""

    artifact: str  # "eager" or an artifact name
    dataset: str
    rows: tuple[dict[str, Any], ...]  # {corruption, severity, top1, drop}; the first row is the clean data


@dataclass(frozen=True)
class Measurement(Record):
    """Latency and memory measured in a child process on the runtime that ships the artifact."""

    artifact: str
    runtime: str
    where: str  # "host x86_64 (...)" or "device adb:SERIAL (...)"
    cpu: str
    threads: int
    warmup: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    init_ms: Optional[float]
    first_run_ms: Optional[float]
    peak_rss_bytes: Optional[int]
    baseline_rss_bytes: Optional[int]
    peak_over_baseline_bytes: Optional[int]
    versions: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def latency_ms(self, stat: str) -> float:
        return float(getattr(self, f"{stat}_ms"))


@dataclass(frozen=True)
class Budget(Record):
    """One limit. `metric` is size | latency | memory | accuracy_drop | delegation."""

    name: str
    metric: str
    limit: float
    unit: str  # bytes | ms | pp | count
    text: str  # what the user wrote, e.g. "1MB"
    stat: str = ""  # for latency: p50 | p90 | p99 | mean


@dataclass(frozen=True)
class Verdict(Record):
    budget: str
    metric: str
    artifact: str
    limit: float
    observed: Optional[float]
    unit: str
    margin: Optional[float]  # limit - observed, in `unit`; negative means over budget
    passed: bool
    reason: str = ""


@dataclass(frozen=True)
class Report(Record):
    edgepack_version: str
    created: str
    target: str
    out_dir: str
    model: Provenance
    shipping: tuple[str, ...] = ()  # names of the artifacts the budgets judge (the others are kept for comparison)
    artifacts: tuple[Artifact, ...] = ()
    parity: tuple[Parity, ...] = ()
    accuracy: tuple[Accuracy, ...] = ()
    robustness: tuple[Robustness, ...] = ()
    measurements: tuple[Measurement, ...] = ()
    budgets: tuple[Budget, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    warnings: tuple[str, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.verdicts)

    def artifact(self, name: str) -> Artifact:
        for a in self.artifacts:
            if a.name == name:
                return a
        raise KeyError(name)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> "Report":
        return cls.from_dict(json.loads(text))
