"""OpenVINO: the model as an IR pair (.xml graph, .bin weights) read from edgepack's own ONNX export, INT8 by NNCF
post-training quantization of the fp32 IR (NNCF's transformer model type for graphs with attention).

The ONNX route, rather than `openvino.convert_model` on the module, reuses the exporter every x86 build already
trusts (dynamic batch, dict and integer inputs, the TorchScript fallback), and reading ONNX through `Core` sends no
usage telemetry, which the model converter does unless the user opted out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgepack.data.dataset import feed_array
from edgepack.errors import ToolError, UsageError, one_line
from edgepack.records import Artifact, ArtifactFile, CalibrationInfo, TensorSpec
from edgepack.runtimes._fixed_batch import run_in_chunks
from edgepack.runtimes.base import (
    ExportRequest,
    RuntimeBase,
    RuntimeOptions,
    Session,
    checked_load,
    count_weights,
    op_census,
    option,
    typed_options,
)

if TYPE_CHECKING:
    from edgepack.models.bundle import ModelBundle

DEVICES = ("CPU", "GPU", "NPU")
PRECISION_HINTS = ("f32", "bf16", "f16")
PRESETS = ("performance", "mixed")
BOOLEANS = (True, False)
# session settings an artifact carries (Artifact.session_options), as the app passes them to compile_model
SESSION_SETTINGS = ("device", "inference_precision_hint")
# attention: NNCF's transformer model type keeps the ops that lose accuracy in int8 (softmax, normalization) in float
TRANSFORMER_OPS = {"Softmax", "MVN"}
BOOKKEEPING_OPS = {"Constant", "Parameter", "Result"}
WEIGHTED_OPS = {"Convolution", "GroupConvolution", "ConvolutionBackpropData", "MatMul"}
WEIGHT_PATH_OPS = {"Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze", "FakeQuantize"}
FILE_FORMAT = "xml"


@dataclass(frozen=True)
class OpenVinoOptions(RuntimeOptions):
    """The `runtimes: openvino:` section of a target file."""

    calibration_samples: int = 256
    device: str = option("CPU", DEVICES, "the OpenVINO device plugin that runs the artifact")
    inference_precision: str = option("f32", PRECISION_HINTS,
                                      "precision of the float parts at run time; f32 keeps an fp32 artifact fp32 "
                                      "(the CPU plugin would otherwise pick bf16 on CPUs with AMX)")
    preset: str = option("performance", PRESETS,
                         "NNCF preset: performance = symmetric int8 activations and weights; mixed = asymmetric "
                         "activations (better for activations that are not centred, e.g. after GELU)")
    transformer_model_type: bool = option(True, BOOLEANS,
                                          "quantize graphs with Softmax/MVN (attention) with NNCF's transformer "
                                          "model type")


class OpenVinoRuntime(RuntimeBase):
    name: ClassVar[str] = "openvino"
    file_format: ClassVar[str] = FILE_FORMAT
    extra: ClassVar[str] = "openvino"
    # onnx and onnxscript: the IR is read from edgepack's ONNX export
    modules: ClassVar[tuple[str, ...]] = ("openvino", "nncf", "onnx", "onnxscript")
    distributions: ClassVar[tuple[str, ...]] = ("openvino", "nncf")
    options_type: ClassVar[type[RuntimeOptions]] = OpenVinoOptions
    int8_from: ClassVar[str] = "fp32"  # NNCF quantizes the fp32 IR
    supports_qat: ClassVar[bool] = False
    phone_runner: ClassVar[str | None] = None

    def import_runtime(self) -> None:
        import openvino  # noqa: F401

    # ---- export -------------------------------------------------------------------------------------------------
    def export(self, bundle: ModelBundle, request: ExportRequest) -> Artifact:
        import openvino as ov

        self.check_request(request)
        options = typed_options(request, OpenVinoOptions)
        final = self.artifact_path(bundle.name, request)
        notes: list[str] = []
        calibration: CalibrationInfo | None = None
        core = ov.Core()
        if request.precision == "fp32":
            from edgepack.runtimes.onnxruntime import export_onnx

            with _pair_in_place(final) as tmp_xml:
                onnx_file = tmp_xml.with_suffix(".onnx")
                _, export_path = export_onnx(bundle, onnx_file, notes)
                model = core.read_model(str(onnx_file))
                _save(model, tmp_xml)
            scheme = "fp32"
            export_path = f"{export_path}, read by OpenVINO"
        else:
            parent = request.parent
            if parent is None:  # check_request refused this already; kept for the type checker
                raise ToolError("openvino int8 export needs the fp32 artifact as its parent")
            model = _read(core, Path(parent.path))
            with _pair_in_place(final) as tmp_xml:
                quantized, scheme, calibration = _quantize(model, request, options, notes)
                _save(quantized, tmp_xml)
            export_path = "NNCF post-training quantization of the fp32 IR"
        model = _read(core, final)
        notes.append(f"runs on OpenVINO's {options.device} plugin"
                     f"{_device_name(core, options.device)}, inference precision hint {options.inference_precision}")
        inputs, outputs = _io_specs(model)
        counts = Counter(op.get_type_name() for op in model.get_ordered_ops()
                         if op.get_type_name() not in BOOKKEEPING_OPS)
        artifact = self.describe_file(final, request, inputs=inputs, outputs=outputs, scheme=scheme,
                                      dynamic_batch=_dynamic_batch(model), ops=op_census(counts),
                                      float_ops=op_census(_float_compute_ops(model)) if request.precision == "int8"
                                      else (),
                                      calibration=calibration, notes=notes,
                                      weight_census=count_weights(_constants(model)))
        weights = _weights_file(final)
        from edgepack.fileio import sha256_file

        companion = ArtifactFile(weights.name, weights.stat().st_size, sha256_file(weights))
        return dataclasses.replace(artifact, size_bytes=artifact.size_bytes + companion.size_bytes,
                                   companions=(companion,), export_path=export_path,
                                   session_options={"device": options.device,
                                                    "inference_precision_hint": options.inference_precision})

    # ---- run ----------------------------------------------------------------------------------------------------
    def load(self, path: Path, threads: int, settings: Mapping[str, str] | None = None) -> Session:
        import openvino as ov

        path = checked_load(path, threads, "OpenVINO IR", settings, SESSION_SETTINGS)
        settings = settings or {}
        device = settings.get("device", "CPU")
        hint = settings.get("inference_precision_hint", "f32")
        if hint not in PRECISION_HINTS:
            raise ToolError(f"inference_precision_hint {hint!r} is not one of {', '.join(PRECISION_HINTS)}")
        core = ov.Core()
        if device not in core.available_devices:
            raise UsageError(f"OpenVINO device {device!r} is not available here; available: "
                             f"{', '.join(core.available_devices) or 'none'} (set device: in the target file's "
                             f"openvino section)")
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint}
        if device == "CPU":  # one stream of `threads` threads: the latency setting an app would use
            config.update({"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1})
        compiled = core.compile_model(_read(core, path), device, config)
        infer = compiled.create_infer_request()
        ports = list(compiled.inputs)
        dtypes = [port.get_element_type().to_dtype() for port in ports]
        shapes = [tuple(int(d.get_length()) if d.is_static else -1 for d in port.get_partial_shape())
                  for port in ports]
        dynamic = not ports or shapes[0][:1] == (-1,)

        def run_once(feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
            arrays = [np.ascontiguousarray(x, dtype=t) for x, t in zip(feeds, dtypes)]
            results = infer.infer(arrays)
            return [np.array(results[port], dtype=np.float32) for port in compiled.outputs]

        def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            # a dynamic-batch IR takes any N at once; a fixed one runs in chunks of its batch
            return run_once(inputs) if dynamic else run_in_chunks(run_once, inputs, shapes, path.name)

        return run


# ---- quantization ---------------------------------------------------------------------------------------------------
def _quantize(model: Any, request: ExportRequest, options: OpenVinoOptions,
              notes: list[str]) -> tuple[Any, str, CalibrationInfo]:
    # nncf sends usage telemetry unless this is set before it is imported; edgepack makes no network calls
    os.environ.setdefault("NNCF_CI", "1")
    import logging

    import nncf

    nncf.set_log_level(logging.ERROR)
    if request.calibration is None:
        raise UsageError("openvino int8 export needs calibration data; pass a calibration dataset")
    names = [port.get_any_name() for port in model.inputs]
    arrays = request.calibration.arrays
    if len(arrays) != len(names):
        raise ToolError(f"calibration data has {len(arrays)} input array(s); the IR takes {len(names)}")
    shape = model.inputs[0].get_partial_shape()
    step = shape[0].get_length() if shape.rank.is_static and shape[0].is_static else 1
    samples = len(request.calibration)
    fed = samples - samples % step
    if fed == 0:
        raise UsageError(f"calibration data {request.calibration.name} has {samples} samples; the model is "
                         f"exported at batch {step}, so at least {step} are needed")
    items = [{name: feed_array(a[start:start + step]) for name, a in zip(names, arrays)}
             for start in range(0, fed, step)]
    ops = {op.get_type_name() for op in model.get_ordered_ops()}
    transformer = options.transformer_model_type and bool(TRANSFORMER_OPS & ops)
    kwargs: dict[str, Any] = {"subset_size": len(items),
                              "preset": nncf.QuantizationPreset(options.preset)}
    if transformer:
        kwargs["model_type"] = nncf.ModelType.TRANSFORMER
        notes.append("transformer-like graph (Softmax/MVN): quantized with NNCF's transformer model type, which "
                     "keeps attention's sensitive operations in float")
    try:
        with _quiet():
            quantized = nncf.quantize(model, nncf.Dataset(items), **kwargs)
    except Exception as exc:  # noqa: BLE001 - NNCF raises many types; all mean "this graph was not quantized"
        raise ToolError(f"NNCF could not quantize the IR: {one_line(exc)}") from None
    activations = "symmetric" if options.preset == "performance" else "asymmetric"
    scheme = (f"NNCF post-training INT8: {activations} s8/u8 activations, per-channel s8 weights"
              f"{', transformer model type' if transformer else ''}")
    return quantized, scheme, CalibrationInfo(source=request.calibration.name, samples=fed)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """NNCF draws progress bars on stdout and stderr; the CLI owns both."""
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


# ---- the IR pair -----------------------------------------------------------------------------------------------------
def _weights_file(xml: Path) -> Path:
    """The .bin an IR's .xml reads its weights from: the same name beside it."""
    return xml.with_suffix(".bin")


@contextlib.contextmanager
def _pair_in_place(final: Path) -> Iterator[Path]:
    """Yield an .xml path in a temporary directory beside `final`; on success move the .bin, then the .xml, into
    place, so a complete .xml never sits beside a missing or stale .bin. On failure nothing is left behind."""
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final.stem}-", dir=final.parent))
    try:
        tmp_xml = tmp_dir / final.name
        yield tmp_xml
        os.replace(_weights_file(tmp_xml), _weights_file(final))
        os.replace(tmp_xml, final)
    except BaseException:
        _weights_file(final).unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _save(model: Any, xml: Path) -> None:
    import openvino as ov

    ov.save_model(model, str(xml), compress_to_fp16=False)  # fp16 weights would change what fp32 means


def _read(core: Any, xml: Path) -> Any:
    """The IR's model, with a one-line error when its .bin is missing or is not the one it was saved with."""
    weights = _weights_file(xml)
    if not weights.is_file():
        raise UsageError(f"OpenVINO IR {xml.name} needs its weights file {weights.name} beside it, and it is missing")
    try:
        return core.read_model(str(xml), str(weights))
    except RuntimeError as exc:
        raise UsageError(f"OpenVINO could not read IR {xml.name} with weights {weights.name} (a .bin from another "
                         f"export?): {one_line(exc, 160)}") from None


def _device_name(core: Any, device: str) -> str:
    try:
        return f" ({core.get_property(device, 'FULL_DEVICE_NAME')})"
    except RuntimeError:  # the device is not on this host: the artifact is still valid for one that has it
        return " (not available on this host)"


def _io_specs(model: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    def specs(ports: Any) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(port.get_any_name(),
                                tuple(int(d.get_length()) if d.is_static else "?" for d in port.get_partial_shape()),
                                np.dtype(port.get_element_type().to_dtype()).name)
                     for port in ports)

    return specs(model.inputs), specs(model.outputs)


def _dynamic_batch(model: Any) -> bool:
    shape = model.inputs[0].get_partial_shape()
    return bool(shape.rank.is_static and shape.rank.get_length() > 0 and shape[0].is_dynamic)


def _float_compute_ops(model: Any) -> Counter[str]:
    """Weighted operators whose weight constant is still float: NNCF left them out (a MatMul of two activations,
    attention's scores, has no weight and is not counted)."""
    counts: Counter[str] = Counter()
    for op in model.get_ordered_ops():
        if op.get_type_name() in WEIGHTED_OPS:
            weight = _constant_behind(op.input_value(1).get_node())
            if weight is not None and np.dtype(weight.get_element_type().to_dtype()).name not in ("int8", "uint8"):
                counts[op.get_type_name()] += 1
    return counts


def _constant_behind(node: Any) -> Any:
    """The Constant a weight input is computed from (through the Convert, Subtract, Multiply, Reshape and Transpose
    that dequantize or lay it out), or None when the input is an activation."""
    for _ in range(8):
        kind = node.get_type_name()
        if kind == "Constant":
            return node
        if kind not in WEIGHT_PATH_OPS:
            return None
        node = node.input_value(0).get_node()
    return None


def _constants(model: Any) -> Iterator[tuple[tuple[int, ...], str]]:
    """(shape, dtype name) of every constant: the weights NNCF stored in 8 bits show as i8/u8 constants."""
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Constant":
            yield tuple(op.get_output_shape(0)), np.dtype(op.get_element_type().to_dtype()).name
