"""ONNX Runtime: dynamo export to one .onnx file, simplification kept only if outputs still match, INT8 by static
QDQ (per-channel weights, activation type from the target file) or dynamic INT8 on MatMul/Gemm for transformers."""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgepack.data.dataset import feed_array
from edgepack.errors import ToolError, UsageError, one_line, strip_terminal_codes
from edgepack.fileio import atomic_path
from edgepack.records import Artifact, CalibrationInfo, Simplification, TensorSpec
from edgepack.runtimes._fixed_batch import run_in_chunks
from edgepack.runtimes.base import (
    ExportRequest,
    RuntimeBase,
    checked_load,
    count_weights,
    RuntimeOptions,
    Session,
    mixed_scheme,
    op_census,
    option,
    typed_options,
)

if TYPE_CHECKING:
    from edgepack.data.dataset import ArrayDataset
    from edgepack.models.bundle import ModelBundle

SIMPLIFY_TOLERANCE = 1e-4  # max abs diff (relative to output scale) under which a simplified graph is kept
TRANSFORMER_OPS = {"Softmax", "LayerNormalization"}
# operators whose second input may be a weight: in an int8 graph it should come from a DequantizeLinear
WEIGHTED_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm", "LSTM", "GRU", "RNN"}
SCHEMES = ("static-qdq", "dynamic")
INTEGER_TYPES = ("uint8", "int8")
BOOLEANS = (True, False)
# session settings an artifact may carry (Artifact.session_options), as the app would set them on SessionOptions
SESSION_SETTINGS = ("graph_optimization_level", "disabled_optimizers")
OPTIMIZATION_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
                       "all": "ORT_ENABLE_ALL"}
# Tried in order when the fully optimized session of an int8 file disagrees with the same file under basic
# optimizations: ONNX Runtime's fused QDQ kernels can compute a different result than the graph says (its fused
# QLinearAveragePool is wrong when the pooling window is larger than its input, as in EfficientNet's head).
OPTIMIZER_FALLBACKS: tuple[dict[str, str], ...] = ({"disabled_optimizers": "QDQSelectorActionTransformer"},
                                                   {"graph_optimization_level": "basic"})
DYNAMO_EXPORTER = "torch.onnx dynamo exporter"
TORCHSCRIPT_EXPORTER = "torch.onnx TorchScript exporter (the dynamo exporter refused the model)"
OPTIMIZER_CHECK_SAMPLES = 64
# the same file under two optimizer settings: only rounding may differ
OPTIMIZER_AGREEMENT = 0.97
OPTIMIZER_RELATIVE_ERROR = 0.02
# ONNX Runtime's input type names -> the numpy dtype fed to them (token ids stay integers)
ONNX_FEED_TYPES: dict[str, Any] = {"tensor(float)": np.float32, "tensor(int64)": np.int64,
                                   "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


@dataclass(frozen=True)
class OnnxRuntimeOptions(RuntimeOptions):
    """The `runtimes: onnxruntime:` section of a target file."""

    calibration_samples: int = 256
    scheme: str = option("static-qdq", SCHEMES,
                         "static-qdq: calibrated QuantizeLinear/DequantizeLinear pairs; dynamic: int8 MatMul/Gemm "
                         "weights, activations quantized at run time")
    activation_type: str = option("uint8", INTEGER_TYPES,
                                  "static-qdq activations; uint8 is what ONNX Runtime fuses on x86 (VNNI)")
    weight_type: str = option("int8", ("int8", "uint8"), "static-qdq weights")
    per_channel: bool = option(True, BOOLEANS, "static-qdq: one weight scale per output channel")
    transformer_scheme: str = option("dynamic", SCHEMES,
                                     "the scheme for graphs with Softmax/LayerNormalization (attention)")
    simplify: bool = option(True, BOOLEANS, "run onnxslim; its graph is kept only if outputs still match")


class OnnxRuntime(RuntimeBase):
    name: ClassVar[str] = "onnxruntime"
    file_format: ClassVar[str] = "onnx"
    extra: ClassVar[str] = "onnx"
    modules: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime", "onnxscript", "onnxslim")
    distributions: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime", "onnxscript", "onnxslim")
    options_type: ClassVar[type[RuntimeOptions]] = OnnxRuntimeOptions
    int8_from: ClassVar[str] = "fp32"  # quantize_static/quantize_dynamic rewrite the fp32 .onnx
    supports_qat: ClassVar[bool] = True
    phone_runner: ClassVar[str | None] = None
    keeps_layers_float: ClassVar[bool] = True  # nodes_to_exclude in quantize_static / quantize_dynamic

    def missing(self) -> list[str]:
        conflict = distribution_conflict()
        return ([conflict] if conflict else []) + super().missing()

    def import_runtime(self) -> None:
        import onnxruntime  # noqa: F401

    # ---- export -------------------------------------------------------------------------------------------------
    def export(self, bundle: ModelBundle, request: ExportRequest) -> Artifact:
        self.check_request(request)
        options = typed_options(request, OnnxRuntimeOptions)
        final = self.artifact_path(bundle.name, request)
        notes: list[str] = []
        simplification: Simplification | None = None
        calibration: CalibrationInfo | None = None
        settings: dict[str, str] = {}
        export_path = "onnxruntime.quantization on the fp32 file"
        if request.precision == "fp32":
            dynamic, export_path, simplification = write_fp32_onnx(bundle, final, options.simplify, notes)
            scheme = "fp32"
        elif request.qat is not None:
            from edgepack.runtimes.qat import ONNX_SCHEME, qat_onnx

            qat = request.qat
            with atomic_path(final) as tmp:
                qat_onnx(bundle.module, tuple(bundle.example_inputs), qat.train, tmp, epochs=qat.epochs, lr=qat.lr,
                         seed=qat.seed, calibration=request.calibration, input_names=list(bundle.input_names))
                if options.simplify:
                    simplification = simplify_if_equal(tmp, bundle, notes)
            dynamic = _fixed_batch(final) is None
            export_path = "PT2E quantization-aware training, then torch.onnx"
            scheme = f"{ONNX_SCHEME}, quantization-aware training: {qat.epochs} epoch(s) on {qat.train.name}"
        else:
            parent = request.parent
            if parent is None:  # check_request refused this already; kept for the type checker
                raise ToolError("onnxruntime int8 export needs the fp32 artifact as its parent")
            with atomic_path(final) as tmp:
                scheme, calibration = _quantize(Path(parent.path), tmp, request, options, notes, bundle)
                settings = self._settings_that_agree(tmp, request, notes, _float_layer_settings(request, notes))
            # quantization keeps the graph's input shapes: the int8 file has its parent's batch axis
            dynamic = parent.dynamic_batch if parent.dynamic_batch is not None else _fixed_batch(final) is None
        artifact = describe_onnx(self, final, request, scheme=scheme, dynamic_batch=dynamic,
                                 simplification=simplification, calibration=calibration, notes=notes)
        return dataclasses.replace(artifact, session_options=settings, export_path=export_path)

    def _settings_that_agree(self, path: Path, request: ExportRequest, notes: list[str],
                             base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (settings the file needs whatever happens) when the fully optimized session computes what the file
        says (the same file under basic optimizations is the reference); else the first fallback setting that does,
        added to `base`, with a note saying why."""
        base = dict(base or {})
        if request.calibration is None:
            return base
        feeds = [a[:OPTIMIZER_CHECK_SAMPLES] for a in request.calibration.arrays]
        reference = self.load(path, 1, _merged(base, {"graph_optimization_level": "basic"}))(feeds)[0]
        optimized = self.load(path, 1, base)(feeds)[0]
        if _same_result(reference, optimized):
            return base
        agreement = _agreement(reference, optimized)
        for fallback in OPTIMIZER_FALLBACKS:
            settings = _merged(base, fallback)
            candidate = self.load(path, 1, settings)(feeds)[0]
            if _same_result(reference, candidate):
                fixed = _agreement(reference, candidate)
                what = ", ".join(f"{k}={v}" for k, v in settings.items())
                notes.append(f"ONNX Runtime's fully optimized session disagrees with this file under basic "
                             f"optimizations (top-1 agreement {agreement:.3f} on {len(feeds[0])} calibration "
                             f"samples); shipped with {what}, which agrees ({fixed:.3f}); set the same on the app's "
                             f"SessionOptions (manifest.json: session_options)")
                return dict(settings)
        raise ToolError(f"ONNX Runtime computes this int8 file differently under full and basic optimizations "
                        f"(top-1 agreement {agreement:.3f}) and no fallback setting agrees")

    def layer_sqnr(self, bundle: ModelBundle, int8: Artifact, fp32: Artifact, data: ArrayDataset,
                   layers: Sequence[str]) -> dict[str, float] | None:
        """Each layer's output tensor (its nodes found by weight, as for keep_float, and by the same node name in the
        int8 file) is made a graph output of both files; both run on `data` in ONNX Runtime, the int8 one with its
        session settings. A layer whose node the int8 file renamed is left out. Accumulated error included: a layer's
        output carries the error of the layers before it, so this only pre-ranks; the metric pass decides."""
        import tempfile

        import onnx

        nodes: dict[str, list[str]] = {}
        for layer in layers:
            try:
                nodes[layer] = _excluded_nodes(Path(fp32.path), bundle, (layer,), [])
            except ToolError:  # no node carries its weights: it is left out of the pre-rank
                continue
        with tempfile.TemporaryDirectory(prefix="edgepack-sqnr-") as tmp:
            names = {n for found in nodes.values() for n in found}
            outputs: dict[str, tuple[str, str]] = {}  # node -> (fp32 tensor, int8 tensor)
            graphs = {}
            for which, artifact in (("fp32", fp32), ("int8", int8)):
                model = onnx.load(artifact.path)
                produced = {node.name: node.output[0] for node in model.graph.node if node.name in names}
                graphs[which] = (model, produced)
            for name in names:
                if name in graphs["fp32"][1] and name in graphs["int8"][1]:
                    outputs[name] = (graphs["fp32"][1][name], graphs["int8"][1][name])
            results = {}
            for index, (which, artifact) in enumerate((("fp32", fp32), ("int8", int8))):
                model = graphs[which][0]
                existing = {o.name for o in model.graph.output}
                for pair in outputs.values():
                    if pair[index] not in existing:
                        model.graph.output.append(onnx.helper.make_tensor_value_info(pair[index],
                                                                                    onnx.TensorProto.FLOAT, None))
                path = Path(tmp) / f"{which}.onnx"
                onnx.save(model, str(path))
                session = self.load(path, 1, artifact.session_options if which == "int8" else None)
                got = session(list(data.arrays))
                by_name = dict(zip([o.name for o in model.graph.output], got))
                results[which] = {node: by_name[pair[index]] for node, pair in outputs.items()}
        sqnr = {}
        for layer, found in nodes.items():
            figures = [_sqnr(results["fp32"][n], results["int8"][n]) for n in found if n in outputs]
            if figures:
                sqnr[layer] = min(figures)
        return sqnr

    # ---- run ----------------------------------------------------------------------------------------------------
    def load(self, path: Path, threads: int, settings: Mapping[str, str] | None = None) -> Session:
        import onnxruntime as ort

        path = checked_load(path, threads, "ONNX model", settings, SESSION_SETTINGS)
        settings = settings or {}
        level = settings.get("graph_optimization_level", "all")
        if level not in OPTIMIZATION_LEVELS:
            raise ToolError(f"graph_optimization_level {level!r} is not one of {', '.join(OPTIMIZATION_LEVELS)}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[level])
        disabled = [o for o in settings.get("disabled_optimizers", "").split(",") if o]
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=disabled)
        return session_runner(session, path)


def session_runner(session: Any, path: Path) -> Session:
    """A Session over an ONNX Runtime InferenceSession: numpy in (cast to each input's type), numpy out; a fixed-batch
    graph runs in chunks of its batch."""
    names = [i.name for i in session.get_inputs()]
    shapes = [tuple(i.shape) for i in session.get_inputs()]
    dtypes = [ONNX_FEED_TYPES.get(i.type, np.float32) for i in session.get_inputs()]
    dynamic = not isinstance(shapes[0][0], int)

    def run_once(feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        arrays = [np.ascontiguousarray(x, dtype=t) for x, t in zip(feeds, dtypes)]
        return list(session.run(None, dict(zip(names, arrays))))

    def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        # a dynamic-batch graph takes any N at once; a fixed one runs in chunks of its batch
        return run_once(inputs) if dynamic else run_in_chunks(run_once, inputs, shapes, path.name)

    return run


def distribution_conflict() -> str | None:
    """Why this environment's `onnxruntime` module cannot be trusted: onnxruntime and onnxruntime-gpu both installed
    provide the same module and overwrite each other's files, so which one runs is an accident of install order."""
    from importlib import metadata

    installed = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            installed.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    if len(installed) < 2:
        return None
    return (f"{' and '.join(installed)} are both installed; they provide the same 'onnxruntime' module and overwrite "
            f"each other's files: pip uninstall -y onnxruntime onnxruntime-gpu, then install one (edgepack[onnx] for "
            f"CPUs, edgepack[cuda] for NVIDIA GPUs, each in its own environment)")


# ---- quantization ---------------------------------------------------------------------------------------------------
def _quantize(fp32: Path, out: Path, request: ExportRequest, options: OnnxRuntimeOptions,
              notes: list[str], bundle: ModelBundle) -> tuple[str, CalibrationInfo | None]:
    """Write the int8 model; return its scheme description and the calibration it used (None: dynamic)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    scheme = options.scheme
    if scheme == "static-qdq" and TRANSFORMER_OPS & set(op_counts(fp32)) and options.transformer_scheme == "dynamic":
        scheme = "dynamic"
        notes.append("transformer-like graph (Softmax/LayerNormalization): dynamic INT8 on MatMul/Gemm, since "
                     "static QDQ loses top-1 agreement on attention; set transformer_scheme: static-qdq to override")
    if scheme == "dynamic":
        excluded = _excluded_nodes(fp32, bundle, request.keep_float, notes)
        with _quiet():
            quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gemm"], per_channel=False, nodes_to_exclude=excluded)
        return ("dynamic INT8: MatMul/Gemm weights int8 per-tensor, activations quantized at run time"
                + mixed_scheme(request.keep_float)), None
    return _quantize_static(fp32, out, request, options, notes, bundle)


def _quantize_static(fp32: Path, out: Path, request: ExportRequest, options: OnnxRuntimeOptions,
                     notes: list[str], bundle: ModelBundle) -> tuple[str, CalibrationInfo]:
    calibration = quantize_static_qdq(fp32, out, request, notes, bundle, activation_type=options.activation_type,
                                      weight_type=options.weight_type, per_channel=options.per_channel)
    a = "u8" if options.activation_type == "uint8" else "s8"
    w = "s8" if options.weight_type == "int8" else "u8"
    scheme = f"static QDQ: {a} activations, {'per-channel' if options.per_channel else 'per-tensor'} {w} weights"
    return scheme + mixed_scheme(request.keep_float), calibration


def quantize_static_qdq(fp32: Path, out: Path, request: ExportRequest, notes: list[str], bundle: ModelBundle, *,
                        activation_type: str, weight_type: str, per_channel: bool,
                        extra_options: Mapping[str, Any] | None = None,
                        op_types: Sequence[str] | None = None) -> CalibrationInfo:
    """Static QDQ quantization of an fp32 file with `quantize_static`, calibrated on the request's data (after ONNX
    Runtime's pre-processing), the request's float layers excluded; returns the calibration it used."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if request.calibration is None:
        raise UsageError("static int8 export needs calibration data; pass a calibration dataset "
                         "(or set scheme: dynamic in the target file)")
    quant_types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    act, weight = quant_types[activation_type], quant_types[weight_type]
    pre = out.with_name(out.name + ".pre.onnx")
    input_names = _input_names(fp32)
    step = _fixed_batch(fp32) or 1  # a fixed-batch graph is calibrated in whole batches of its size
    arrays = request.calibration.arrays
    if len(arrays) != len(input_names):
        raise ToolError(f"calibration data has {len(arrays)} input array(s); the graph takes {len(input_names)}")
    samples = len(request.calibration)
    fed = samples - samples % step
    if fed == 0:
        raise UsageError(f"calibration data {request.calibration.name} has {samples} samples; the model is "
                         f"exported at batch {step}, so at least {step} are needed")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._starts = iter(range(0, fed, step))

        def get_next(self) -> dict[str, np.ndarray] | None:
            start = next(self._starts, None)
            return None if start is None else {name: feed_array(a[start:start + step])
                                               for name, a in zip(input_names, arrays)}

    try:
        try:
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation; quantizing without it works
            notes.append(f"quantization pre-processing skipped: {one_line(exc)}")
            source = fp32
        # node names are read from the file quantize_static is given: pre-processing may fuse nodes
        excluded = _excluded_nodes(source, bundle, request.keep_float, notes)
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, weight_type=weight, activation_type=act,
                            nodes_to_exclude=excluded, extra_options=dict(extra_options or {}),
                            op_types_to_quantize=list(op_types) if op_types else None)
    finally:
        pre.unlink(missing_ok=True)
    return CalibrationInfo(source=request.calibration.name, samples=fed)


# ---- layers kept in float (mixed precision) -------------------------------------------------------------------------
# ONNX Runtime's WeightBiasQuantization (a basic-level graph optimization, 1.2x) quantizes, at session creation, the
# float weights of a Conv/Gemm/MatMul that sits between a DequantizeLinear and a QuantizeLinear: exactly what a layer
# kept in float looks like once QDQPropagation has moved its consumer's QuantizeLinear up to it. A file with layers
# kept in float must run with it disabled, or the session quantizes them anyway (per tensor).
KEEP_FLOAT_SETTINGS = {"disabled_optimizers": "WeightBiasQuantization"}
WEIGHTED_ONNX_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
SAME_WEIGHT_COSINE = 0.9999


def _float_layer_settings(request: ExportRequest, notes: list[str]) -> dict[str, str]:
    if not request.keep_float:
        return {}
    notes.append("runs with ONNX Runtime's WeightBiasQuantization optimizer disabled: it would quantize the layers "
                 "kept in float when the session is created (manifest.json: session_options)")
    return dict(KEEP_FLOAT_SETTINGS)


def _merged(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """Session settings with `extra` added to `base`; disabled optimizers accumulate."""
    out = {**base, **extra}
    disabled = [o for s in (base, extra) for o in s.get("disabled_optimizers", "").split(",") if o]
    if disabled:
        out["disabled_optimizers"] = ",".join(dict.fromkeys(disabled))
    return out


def _excluded_nodes(path: Path, bundle: ModelBundle, modules: Sequence[str], notes: list[str]) -> list[str]:
    """The names of the graph's nodes that compute the weighted layers under `modules` (module names of the eager
    model), found by their weights: a node whose weight equals the layer's up to one factor per output channel is
    that layer (a BatchNorm folded into it by the exporter or by pre-processing scales each channel). Node names and
    metadata do not survive every exporter and simplifier; the weights do."""
    if not modules:
        return []
    import onnx
    from onnx import numpy_helper

    from edgepack.rescue import weighted_layers_under

    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    weighted = [(node.name, numpy_helper.to_array(inits[node.input[1]])) for node in graph.node
                if node.op_type in WEIGHTED_ONNX_OPS and len(node.input) > 1 and node.input[1] in inits]
    excluded: list[str] = []
    for name in modules:
        for layer, weight in weighted_layers_under(bundle.module, name):
            found = [node for node, w in weighted if _same_weight(weight, w)]
            if not found:
                raise ToolError(f"onnxruntime: no node of the exported graph carries the weights of {layer}, so it "
                                f"cannot be kept in float")
            excluded += [n for n in found if n not in excluded]
    notes.append(f"kept in float: {', '.join(modules)} ({len(excluded)} node(s): {', '.join(excluded)})")
    return excluded


def _sqnr(reference: np.ndarray, quantized: np.ndarray) -> float:
    """Signal to quantization noise, in dB (capped at 100 dB when the two are equal)."""
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    noise = float(np.sum((reference.astype(np.float64) - quantized) ** 2))
    return 100.0 if noise <= signal * 1e-10 else 10.0 * float(np.log10(max(signal, 1e-30) / noise))


def _same_weight(module_weight: np.ndarray, onnx_weight: np.ndarray) -> bool:
    """Whether an ONNX weight is the module's, up to one factor per output channel (rows) or per column (a
    transposed MatMul weight, or a ConvTranspose's output axis)."""
    for candidate in (onnx_weight, onnx_weight.T if onnx_weight.ndim == 2 else None):
        if candidate is None or candidate.shape != module_weight.shape:
            continue
        for axis in ((0, 1) if module_weight.ndim >= 2 else (0,)):
            a = np.moveaxis(module_weight.astype(np.float64), axis, 0).reshape(module_weight.shape[axis], -1)
            b = np.moveaxis(candidate.astype(np.float64), axis, 0).reshape(candidate.shape[axis], -1)
            norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            zero = norms == 0
            if np.any(zero & ((np.linalg.norm(a, axis=1) > 0) | (np.linalg.norm(b, axis=1) > 0))):
                continue  # one side has a zero row the other does not
            cosine = np.abs(np.sum(a * b, axis=1)) / np.where(zero, 1.0, norms)
            if np.all(zero | (cosine >= SAME_WEIGHT_COSINE)):
                return True
    return False


def _same_result(reference: np.ndarray, candidate: np.ndarray) -> bool:
    """Whether two sessions of one file computed the same thing up to rounding: the same classes, or outputs
    within 2 % of each other (relative L2), whichever holds."""
    scale = float(np.linalg.norm(reference)) or 1.0
    relative = float(np.linalg.norm(reference.astype(np.float64) - candidate)) / scale
    return relative <= OPTIMIZER_RELATIVE_ERROR or _agreement(reference, candidate) >= OPTIMIZER_AGREEMENT


def _agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """How often two outputs pick the same class (per sample, over the flattened output)."""
    ref, got = reference.reshape(len(reference), -1), candidate.reshape(len(candidate), -1)
    return float(np.mean(ref.argmax(1) == got.argmax(1)))


def write_fp32_onnx(bundle: ModelBundle, final: Path, simplify: bool,
                    notes: list[str]) -> tuple[bool, str, Simplification | None]:
    """The fp32 .onnx written atomically at `final`, onnxslim's graph kept when asked and its outputs still match.
    Returns (whether the batch is dynamic, the exporter that worked, the simplification record)."""
    simplification = None
    with atomic_path(final) as tmp:
        dynamic, export_path = export_onnx(bundle, tmp, notes)
        if simplify:
            simplification = simplify_if_equal(tmp, bundle, notes)
    return dynamic, export_path, simplification


def export_onnx(bundle: ModelBundle, path: Path, notes: list[str]) -> tuple[bool, str]:
    """Export with the dynamo exporter, dynamic batch when the model allows it; when the dynamo exporter refuses the
    model outright, with the TorchScript exporter. Returns (whether the batch is dynamic, the path that worked)."""
    import torch

    kwargs: dict[str, Any] = {"input_names": list(bundle.input_names), "output_names": ["output"],
                              "external_data": False, "verbose": False}
    dims = tuple({0: torch.export.Dim("batch", min=1, max=4096)} for _ in bundle.example_inputs)
    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            torch.onnx.export(bundle.module, bundle.example_inputs, str(path), dynamic_shapes=dims, dynamo=True,
                              **kwargs)
        return True, DYNAMO_EXPORTER
    except Exception as exc:  # noqa: BLE001 - any refusal of a dynamic batch falls back to a fixed one
        notes.append(f"exported with a fixed batch: a dynamic batch was refused ({exporter_reason(exc)})")
    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            torch.onnx.export(bundle.module, bundle.example_inputs, str(path), dynamo=True, **kwargs)
        return False, DYNAMO_EXPORTER
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; all mean "this model won't export"
        dynamo_reason = exporter_reason(exc)
    notes.pop()  # the fixed-batch note: the dynamo exporter did not produce the file at all
    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            torch.onnx.export(bundle.module, bundle.example_inputs, str(path), dynamo=False,
                              dynamic_axes={name: {0: "batch"} for name in bundle.input_names}, **kwargs)
    except Exception as exc:  # noqa: BLE001 - both exporters refused: say why each did
        raise UsageError(f"the ONNX exporter rejected the model: {dynamo_reason}; the TorchScript exporter too: "
                         f"{one_line(exc, 160)}") from None
    notes.append(f"exported with the TorchScript exporter: the dynamo exporter refused the model ({dynamo_reason})")
    return True, TORCHSCRIPT_EXPORTER


def exporter_reason(exc: BaseException) -> str:
    """The most useful line of an exporter failure: the operator it names and the innermost cause."""
    import re

    text = strip_terminal_codes(str(exc))  # the exporter colours its messages
    op = re.search(r"(aten::[\w.]+|aten\.[\w.]+|torch\.ops\.[\w.]+)", text)
    summary = text.split("## Exception summary", 1)
    cause = re.search(r"<class '([\w.]+)'>: (.+)", summary[1]) if len(summary) == 2 else None
    detail = f"{cause.group(1).rsplit('.', 1)[-1]}: {cause.group(2).strip()[:200]}" if cause else one_line(exc, 200)
    return f"operator {op.group(1)} cannot be exported ({detail})" if op else detail


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence library chatter during export and quantization: progress prints on stdout (the CLI owns stdout for
    --json) and advice logged on the root logger (e.g. 'consider pre-processing', which we do for static QDQ)."""
    import io
    import logging

    level = logging.root.level
    logging.root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.root.setLevel(level)


def simplify_if_equal(path: Path, bundle: ModelBundle, notes: list[str]) -> Simplification:
    """Run onnxslim; keep its graph only if ONNX Runtime gives the same outputs as the unsimplified graph."""
    import onnx
    import onnxslim

    before = op_count_total(path)
    try:
        slim = onnxslim.slim(onnx.load(str(path)))
    except Exception as exc:  # noqa: BLE001 - a simplifier failure keeps the exported graph, it is not fatal
        notes.append(f"onnxslim failed, graph kept as exported: {one_line(exc)}")
        return Simplification(applied=False, tool="onnxslim", nodes_before=before, reason=one_line(exc))
    candidate = path.with_name(path.name + ".slim.onnx")
    try:
        onnx.save(slim, str(candidate))
        feeds = [t.numpy() for t in bundle.example_inputs]
        rt = OnnxRuntime()
        ref = rt.load(path, 1)(feeds)[0]
        got = rt.load(candidate, 1)(feeds)[0]
        diff = float(np.max(np.abs(ref - got)))
        scale = max(1.0, float(np.max(np.abs(ref))))
        if diff > SIMPLIFY_TOLERANCE * scale:
            notes.append(f"onnxslim output differed by {diff:.2e}; unsimplified graph kept")
            return Simplification(applied=False, tool="onnxslim", nodes_before=before, max_abs_diff=diff,
                                  reason=f"max abs diff {diff:.2e}")
        after = op_count_total(candidate)
        candidate.replace(path)
        return Simplification(applied=True, tool="onnxslim", nodes_before=before, nodes_after=after,
                              max_abs_diff=diff)
    finally:
        candidate.unlink(missing_ok=True)


# ---- reading .onnx files ------------------------------------------------------------------------------------------
def describe_onnx(runtime: RuntimeBase, path: Path, request: ExportRequest, **record: Any) -> Artifact:
    """The Artifact record of an .onnx file a runtime just wrote, its graph read once: inputs and outputs, the op
    census and, for int8, the weighted ops left in float and the weight census. `record`: describe_file's other
    fields (scheme, dynamic_batch, notes, ...)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    int8 = request.precision == "int8"
    inputs, outputs = _io_specs(graph)
    return runtime.describe_file(path, request, inputs=inputs, outputs=outputs, ops=op_census(_op_counts(graph)),
                                 float_ops=op_census(_float_compute_ops(graph)) if int8 else (),
                                 weight_census=_weight_census(graph) if int8 else None, **record)


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    return _op_counts(onnx.load(str(path), load_external_data=False).graph)


def _op_counts(graph: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _float_compute_ops(graph: Any) -> dict[str, int]:
    """{op: count} of the weighted operators of an int8 graph that still compute in float: they read their weight
    straight from a float initializer, neither dequantized from 8 bits (static QDQ) nor rewritten to an integer
    kernel (dynamic INT8). A MatMul of two activations (attention's scores) has no weight and is not counted."""
    weights = {t.name for t in graph.initializer}
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in weights:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def _weight_census(graph: Any) -> tuple[int, int]:
    """Weight values in 8 bits vs otherwise, over the graph's initializers."""
    import onnx

    return count_weights((tuple(t.dims), onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name)
                         for t in graph.initializer)


def op_count_total(path: Path) -> int:
    return sum(op_counts(path).values())


def _input_names(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in inits]


def _fixed_batch(path: Path) -> int | None:
    import onnx

    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") else None


def _tensor_specs(values: Any) -> tuple[TensorSpec, ...]:
    import onnx

    specs = []
    for v in values:
        t = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
        specs.append(TensorSpec(v.name, shape, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name))
    return tuple(specs)


def _io_specs(graph: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph's real inputs (initializers excluded) and outputs."""
    inits = {i.name for i in graph.initializer}
    return _tensor_specs(i for i in graph.input if i.name not in inits), _tensor_specs(graph.output)
