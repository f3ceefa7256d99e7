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
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Rewrite the JSON of an older edgepack into this version's fields (records that changed override it)."""
        return data

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        data = cls.upgrade(data)
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
class LayerChange(Record):
    """One layer a compression pass changed. A pass fills the fields that describe what it did; the rest stay None.

    Pairs are (before, after).
    """

    layer: str  # the module's name in the user's model, e.g. "features.3"
    type: str  # its class, e.g. "Conv2d"; "attention" for head pruning
    params: Optional[tuple[int, int]] = None
    in_features: Optional[tuple[int, int]] = None  # input channels / features
    out_features: Optional[tuple[int, int]] = None  # output channels / features
    num_heads: Optional[tuple[int, int]] = None
    head_dim: Optional[tuple[Optional[int], Optional[int]]] = None
    rank: Optional[int] = None  # low-rank: the rank kept
    full_rank: Optional[int] = None
    break_even_rank: Optional[float] = None  # the rank above which the factors have more parameters
    energy_kept: Optional[float] = None  # fraction of the squared singular values kept
    spectrum: tuple[float, ...] = ()  # a summary of the normalised singular values
    weights: Optional[int] = None  # unstructured sparsity: weights in the layer and how many are zero
    zeros: Optional[int] = None
    sparsity: Optional[float] = None
    in_shape: tuple[int, ...] = ()  # NdLinear: the grid the input is viewed as, and the output grid
    out_shape: tuple[int, ...] = ()
    kronecker_fit: Optional[float] = None  # relative error of the nearest Kronecker product


@dataclass(frozen=True)
class SkippedLayer(Record):
    """A layer a pass considered and left alone, and why."""

    layer: str
    type: str
    reason: str
    rank: Optional[int] = None
    full_rank: Optional[int] = None


@dataclass(frozen=True)
class TrainingEpoch(Record):
    """One epoch of training inside a pass (fine-tuning, a pruning step's recovery)."""

    epoch: int
    loss: float
    step: Optional[int] = None  # the pruning step it followed, for iterative pruning


@dataclass(frozen=True)
class BlocksDropped(Record):
    """What layer dropping removed from a stack of blocks (indices are positions in the original stack)."""

    container: str
    dropped: tuple[int, ...]
    kept: tuple[int, ...]
    blocks: tuple[int, int]  # count before, after


@dataclass(frozen=True)
class DistillStage(Record):
    """One teacher -> student stage of (progressive) distillation."""

    stage: int
    teacher_params: int
    student_params: int
    ratio: float
    epochs: int
    final_loss: Optional[float] = None
    teacher_top1: Optional[float] = None
    student_top1: Optional[float] = None
    derived_width: Optional[float] = None  # a teacher assistant's width relative to its teacher; None: the student
    seconds: float = 0.0


@dataclass(frozen=True)
class PassRecord(Record):
    """What one compression pass did: its config, sizes before and after, per-layer changes."""

    name: str
    # the pass config's fields, exactly as `compress.parse_recipe([{name: config}])` reads them back
    config: dict[str, Any]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    seconds: float
    changes: tuple[LayerChange, ...] = ()
    skipped: tuple[SkippedLayer, ...] = ()
    training: tuple[TrainingEpoch, ...] = ()
    stages: tuple[DistillStage, ...] = ()
    dropped: Optional[BlocksDropped] = None
    accuracy_before: Optional[float] = None
    accuracy_after: Optional[float] = None
    notes: tuple[str, ...] = ()

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Reports written before these records were typed kept every per-layer row in `changes` as a dict."""
        rows = data.get("changes") or []
        if not rows:
            return data
        data = dict(data)
        changes, training, stages = [], list(data.get("training") or []), list(data.get("stages") or [])
        for row in rows:
            if "stage" in row:
                stages.append(row)
            elif "epoch" in row:
                training.append(row)
            elif "finetune" in row:
                training += [{"epoch": i, "loss": (e["loss"] if isinstance(e, dict) else e), "step": row.get("step")}
                             for i, e in enumerate(row["finetune"], 1)]
            elif "container" in row:
                data["dropped"] = {"container": row["container"], "dropped": row.get("dropped", []),
                                   "kept": row.get("kept", []), "blocks": row.get("blocks", [0, 0])}
            elif "layer" in row:
                row = dict(row)
                if "in" in row:
                    row["in_features"] = row.pop("in")
                if "out" in row:
                    row["out_features"] = row.pop("out")
                changes.append(row)
        data.update(changes=changes, training=training, stages=stages)
        return data


EMBEDDING_IDS = "ids of the embedding"  # how a ModelInput's range was found when an nn.Embedding reads the input


@dataclass(frozen=True)
class ModelInput(Record):
    """One input of the model: its example shape and dtype, and the values it accepts, so synthetic data, data-file
    checks and the measuring harness all feed it what it can take."""

    name: str
    shape: tuple[int, ...]  # the example's shape, batch included
    dtype: str  # numpy name: float32, int64, int32, bool
    kind: str  # "float": real-valued features; "index": ids into a table, low <= v < high; "mask": ones
    low: int = 0
    high: int = 0
    how: str = ""  # how the valid range was found, for the report

    @property
    def range_is_known(self) -> bool:
        """Whether the valid ids come from the embedding that reads them (data beyond them is an error), not from
        the example's values (a guess)."""
        return self.kind == "index" and self.how.startswith(EMBEDDING_IDS)

    def describe(self) -> str:
        if self.kind == "index":
            return f"{self.name}: uniform {self.dtype} in [{self.low}, {self.high}) ({self.how})"
        if self.kind == "mask":
            return f"{self.name}: all ones ({self.how})"
        return f"{self.name}: N(0,1) {self.dtype}"


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
    # the uncompressed model's spec and input shape when `passes` ran before this load (a .pt2 from `edgepack
    # compress`): accuracy budgets are judged against it, not against the compressed model
    original_source: str = ""
    original_input_shape: tuple[int, ...] = ()
    inputs: tuple[ModelInput, ...] = ()  # every input's dtype and valid values (empty in reports before 0.2)
    original_inputs: str = ""  # the original's --input-shape, written the way the option takes it
    task: str = "classification"  # classification | regression | segmentation | embedding
    task_how: str = ""  # "--task", or what in the output's shape it was inferred from


@dataclass(frozen=True)
class OpCount(Record):
    op: str
    count: int


@dataclass(frozen=True)
class FallbackOp(Record):
    """An operator left outside the accelerated delegate, with the partitioner's own reason."""

    op: str
    count: int
    reason: str


@dataclass(frozen=True)
class Delegation(Record):
    """How much of a program runs inside an accelerated delegate (e.g. XNNPACK) and why the rest does not."""

    backend: str
    subgraphs: int
    delegated_nodes: int
    total_nodes: int
    delegated_ops: tuple[OpCount, ...] = ()
    fallback_ops: tuple[FallbackOp, ...] = ()
    kernels: tuple[str, ...] = ()  # kernels the program calls outside delegates, as the runtime names them
    kernels_missing_on_host: tuple[str, ...] = ()

    @property
    def fallback_nodes(self) -> int:
        return self.total_nodes - self.delegated_nodes


@dataclass(frozen=True)
class Simplification(Record):
    """A graph simplifier's run over an exported model; its graph is kept only when outputs still match."""

    applied: bool
    tool: str = ""
    nodes_before: Optional[int] = None
    nodes_after: Optional[int] = None
    max_abs_diff: Optional[float] = None
    reason: str = ""


@dataclass(frozen=True)
class CalibrationInfo(Record):
    """The data an INT8 artifact was calibrated on."""

    source: str
    samples: int


@dataclass(frozen=True)
class ArtifactFile(Record):
    """A file an artifact needs beside its main file (an OpenVINO IR's .bin weights), in the same directory."""

    name: str  # file name, no directory: it always sits beside the artifact's main file
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Artifact(Record):
    """One exported model: its main file, and the companion files it cannot be loaded without."""

    name: str  # stable key used by parity/measurement/verdict records, e.g. "onnxruntime-int8"
    path: str
    format: str  # onnx | pte | tflite
    runtime: str
    precision: str  # fp32 | int8
    size_bytes: int
    sha256: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parent: Optional[str] = None  # name of the artifact it was derived from, or "eager" (the PyTorch model)
    scheme: str = ""  # e.g. "static-qdq u8 activations, per-channel s8 weights"
    dynamic_batch: Optional[bool] = None  # None: the runtime does not say
    ops: tuple[OpCount, ...] = ()  # operator census of the file
    float_ops: tuple[OpCount, ...] = ()  # int8 artifacts: operators still running on float kernels
    delegation: Optional[Delegation] = None
    simplification: Optional[Simplification] = None
    calibration: Optional[CalibrationInfo] = None
    notes: tuple[str, ...] = ()
    # runtime session settings the artifact must run with (e.g. an ONNX Runtime optimizer turned off because it
    # computes a wrong result on this graph); the manifest carries them so the app sets them too
    session_options: dict[str, str] = field(default_factory=dict)
    # int8 artifacts: the share of weight values (constant tensors of 2+ dimensions) stored in 8 bits; what is left
    # runs on float kernels, so a low share means an "int8" file that is mostly float
    int8_weight_share: Optional[float] = None
    # how the file was produced when a runtime has more than one way (e.g. "torch.onnx dynamo exporter", or its
    # TorchScript exporter after the dynamo one refused the model); the reason for a fallback is in `notes`
    export_path: str = ""
    # files the main one needs beside it (an OpenVINO IR's .bin); size_bytes counts them too, since they ship
    companions: tuple[ArtifactFile, ...] = ()

    def files(self) -> tuple[Path, ...]:
        """Every file of the artifact, the main one last: whoever moves or deletes them in this order never leaves a
        main file without its companions."""
        main = Path(self.path)
        return (*(main.with_name(c.name) for c in self.companions), main)

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Reports written before these records were typed kept runtime facts in a `details` dict."""
        details = data.get("details")
        if not isinstance(details, dict):
            return data
        data = {k: v for k, v in data.items() if k != "details"}
        if "dynamic_batch" in details:
            data.setdefault("dynamic_batch", details["dynamic_batch"])
        if isinstance(details.get("op_counts"), dict):
            data.setdefault("ops", [{"op": k, "count": v} for k, v in details["op_counts"].items()])
        elif isinstance(details.get("ops"), dict):
            data.setdefault("ops", [{"op": k, "count": v} for k, v in details["ops"].items()])
        if isinstance(details.get("float_ops"), dict):
            data.setdefault("float_ops", [{"op": k, "count": v} for k, v in details["float_ops"].items()])
        if isinstance(details.get("simplify"), dict):
            data.setdefault("simplification", details["simplify"])
        if isinstance(details.get("calibration"), dict):
            data.setdefault("calibration", details["calibration"])
        old = details.get("delegation")
        if isinstance(old, dict):
            delegated = old.get("delegated_ops") or {}
            data.setdefault("delegation", {
                **{k: old[k] for k in ("backend", "subgraphs", "delegated_nodes", "total_nodes", "kernels",
                                       "kernels_missing_on_host") if k in old},
                "delegated_ops": [{"op": k, "count": v} for k, v in delegated.items()],
                "fallback_ops": old.get("portable_ops") or [],
            })
        return data


@dataclass(frozen=True)
class Parity(Record):
    """Artifact outputs compared with eager PyTorch on the same inputs."""

    artifact: str
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    # how often the artifact picks eager's class: per sample for classification, per pixel (axis 1) for segmentation;
    # None for regression and embeddings, where a class means nothing
    top1_agreement: Optional[float]
    inputs_from: str  # which data the comparison ran on
    relative_error: float = 0.0  # ||artifact - eager|| / ||eager|| over every output value
    cosine: Optional[float] = None  # mean over samples of the cosine similarity of the flattened outputs
    task: str = "classification"  # what the output is, which decides the figure judged by the parity floor


@dataclass(frozen=True)
class Accuracy(Record):
    """Accuracy on labelled data, run through the artifact's own runtime ("eager" = PyTorch reference)."""

    artifact: str
    dataset: str
    samples: int
    top1: Optional[float]  # fraction in [0, 1]; classification only
    top5: Optional[float] = None
    how: str = ""  # how the figure was obtained, for the baselines ("original") the budgets judge against
    metric: str = "top-1"  # the task's metric: top-1 | mean IoU | cosine | mean abs error
    value: Optional[float] = None  # its value (reports before 0.2 carry top-1 only)

    @property
    def score(self) -> Optional[float]:
        """The task's figure where higher is better (a fraction: top-1, mean IoU, cosine); None for an error
        metric, which has no "accuracy drop"."""
        if self.metric == "top-1":
            return self.top1 if self.value is None else self.value
        return None if self.metric == "mean abs error" else self.value


@dataclass(frozen=True)
class CorruptionResult(Record):
    """Top-1 under one corruption at one severity; `drop` is clean top-1 minus this (fractions)."""

    corruption: str  # "clean" for the uncorrupted data (severity 0)
    severity: int
    top1: float
    drop: float


@dataclass(frozen=True)
class Robustness(Record):
    """Top-1 under fixed, seeded corruptions (noise, blur, brightness) of the eval data, through one runtime."""

    artifact: str  # "eager" or an artifact name
    dataset: str
    rows: tuple[CorruptionResult, ...]  # the first row is the clean data


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
    # every timed run's latency in run order: the latency gates' confidence intervals and the regression gate's rank
    # test are computed from these; empty in older reports and for runners that print only a summary
    samples_ms: tuple[float, ...] = ()
    # how many of samples_ms each measuring child process ran, in order, when they come from more than one (a latency
    # verdict too close to call is re-measured in fresh processes); empty: all from one process
    process_runs: tuple[int, ...] = ()
    # on a GPU: what ran it ("NVIDIA H200, driver 580.95, TensorrtExecutionProvider") and the measuring process's GPU
    # memory after the timed runs (the memory budget judges it); empty / None on a CPU
    accelerator: str = ""
    device_memory_bytes: Optional[int] = None

    def latency_ms(self, stat: str) -> float:
        return float(getattr(self, f"{stat}_ms"))

    @property
    def memory_bytes(self) -> Optional[int]:
        """The memory figure budgets, regressions and tables use: the GPU's on a GPU, else peak RSS over baseline."""
        return self.device_memory_bytes if self.device_memory_bytes is not None else self.peak_over_baseline_bytes


@dataclass(frozen=True)
class Budget(Record):
    """One limit. `metric` is size | latency | memory | accuracy_drop | delegation."""

    name: str
    metric: str
    limit: float
    unit: str  # bytes | ms | pp | count
    text: str  # what the user wrote, e.g. "1MB"
    stat: str = ""  # for latency: p50 | p90 | p99 | mean
    # latency: what a verdict too close to call becomes: "" or "fail" (fails), "pass", or "N%" (passes when the
    # interval's upper end is within N % above the limit); see budgets.parse_latency_tolerance
    tolerance: str = ""


PASS, FAIL, TOO_CLOSE = "pass", "fail", "too close to call"  # Verdict.status


@dataclass(frozen=True)
class Verdict(Record):
    budget: str
    metric: str
    artifact: str
    limit: float
    observed: Optional[float]
    unit: str
    margin: Optional[float]  # limit - observed, in `unit`; negative means over budget
    passed: bool  # what the gate decided: a verdict too close to call passes only when the budget tolerates it
    reason: str = ""
    status: str = ""  # pass | fail | too close to call: what the measurement says ("" in older reports: from passed)
    # the observed statistic's confidence interval, from the per-run samples (latency budgets), in `unit`
    interval: Optional[tuple[float, float]] = None
    confidence: Optional[float] = None  # e.g. 0.95
    method: str = ""  # how the interval was computed, e.g. "order statistics, 100 runs"
    # regression verdicts: the baseline report's figure (in `unit`), observed / baseline, and the rank test's p-value
    baseline: Optional[float] = None
    ratio: Optional[float] = None
    p_value: Optional[float] = None

    def __post_init__(self) -> None:
        if not self.status:  # verdicts of older reports, and those made without an interval, say what passed says
            object.__setattr__(self, "status", PASS if self.passed else FAIL)


@dataclass(frozen=True)
class RuntimeFailure(Record):
    """A runtime that could not build, load, verify or measure its artifacts; the other runtimes went on."""

    runtime: str
    stage: str  # export | parity | measure
    artifact: str  # the artifact being made or checked when it failed
    reason: str  # the upstream reason, one line
    evidence: str = ""  # the tail of the native output captured while it failed
    exit_code: int = 1  # what the failure alone would have exited with: 2 for the model or input, 1 for a tool


@dataclass(frozen=True)
class LayerSensitivity(Record):
    """How much one layer's INT8 costs, measured through the runtime: the metric of the int8 artifact with only this
    layer kept in float, against the plain int8 artifact's."""

    layer: str  # the module's name in the user's model, e.g. "features.3"
    type: str  # its class, e.g. "Conv2d"
    score: Optional[float]  # the metric with this layer alone in float; None: that artifact could not be built
    effect: Optional[float]  # score minus plain int8's score, in the metric's units: what keeping it float recovers
    error: str = ""  # why the artifact with this layer in float could not be built or judged
    sqnr_db: Optional[float] = None  # its output's SQNR in plain int8 (the pre-rank of large models), when measured
    # score and effect stay None, without an error, for a layer the SQNR pre-rank left out of the metric pass


@dataclass(frozen=True)
class RescueAttempt(Record):
    """One int8 artifact the greedy rescue built and judged: the layers it kept in float and what it reached."""

    float_layers: tuple[str, ...]
    score: Optional[float]  # the rescue's metric (Rescue.metric); None: the artifact could not be built
    accuracy_drop: Optional[float] = None  # pp against the original, when an accuracy budget is judged
    shortfall: str = ""  # why it is below the parity floor; "" when it meets the floor
    holds: bool = False  # meets the parity floor and every accuracy budget
    error: str = ""  # why the artifact could not be built or judged
    simulated: bool = False  # judged in the int8 simulation only: it did not hold there, so it was not built


@dataclass(frozen=True)
class Rescue(Record):
    """Per-layer INT8 sensitivity of one runtime's int8 artifact and, when it missed the accuracy budget or the
    parity floor, the mixed-precision rescue: the most sensitive layers kept in float, greedily, until it holds."""

    runtime: str
    artifact: str  # the plain int8 artifact that was judged
    metric: str  # what the scores are, and on which data (e.g. "top-1 on 360 samples of zoo:digits")
    plain_score: float  # the plain int8 artifact's score
    percent: bool  # scores are fractions shown as percentages (effects in percentage points); else raw values
    reason: str  # why it ran: what the plain int8 artifact missed, or "--sensitivity"
    layers: tuple[LayerSensitivity, ...] = ()  # every layer ranked, most sensitive first
    attempts: tuple[RescueAttempt, ...] = ()  # the greedy steps, in order
    max_float_layers: int = 0  # the bound on the layers a rescue may keep in float
    rescued: Optional[str] = None  # the artifact that ships instead of `artifact`; None: only reported, or failed
    float_layers: tuple[str, ...] = ()  # the layers kept in float in `rescued`
    outcome: str = ""  # one line: what happened
    seconds: float = 0.0
    stopped_at_s: Optional[float] = None  # the --rescue-time-limit that stopped the search; None: it ran its course
    # the layers were ranked in the runtime's int8 simulation (layer scores and effects are the simulation's), not
    # each built through the runtime; attempts say which were built
    simulated: bool = False
    simulation: str = ""  # what the simulation runs, when `simulated`


@dataclass(frozen=True)
class StageTiming(Record):
    stage: str
    seconds: float


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
    failures: tuple[RuntimeFailure, ...] = ()
    timings: tuple[StageTiming, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    parity_floor: str = ""  # the floor artifacts were held to, as ParityFloor.describe() wrote it
    selection: tuple[str, ...] = ()  # --runtime auto: each candidate's figures and why the shipped one won
    rescues: tuple[Rescue, ...] = ()  # per-layer int8 sensitivity and mixed-precision rescue, per runtime

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
