"""LiteRT (TFLite) runtime: `.tflite` files converted with litert-torch, run with ai-edge-litert's Interpreter.

Conversion goes PyTorch -> .tflite without TensorFlow. INT8 models are fully static (int8 inputs and outputs), so the
session quantizes float inputs with the input scale/zero point and dequantizes outputs: callers always compare floats.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgepack.errors import ToolError, UsageError, one_line
from edgepack.fileio import atomic_path
from edgepack.records import Artifact, OpCount, TensorSpec
from edgepack.runtimes._aeq import CalibratedModel, calibrate
from edgepack.runtimes._fixed_batch import run_in_chunks
from edgepack.runtimes._pt2e import calibration_count, quantize_with_fallback, rejection, weighted_layer_types
from edgepack.runtimes.base import (
    ExportRequest,
    RuntimeBase,
    RuntimeOptions,
    Session,
    calibration_info,
    checked_load,
    count_weights,
    mixed_scheme,
    op_census,
    typed_options,
)

if TYPE_CHECKING:
    import numpy as np

    from edgepack.data.dataset import ArrayDataset
    from edgepack.device.runner_output import RunnerStats
    from edgepack.models.bundle import ModelBundle

INT8_SCHEME = "litert-torch PT2E static, per-channel symmetric int8 weights, int8 activations, int8 I/O"
AEQ_SCHEME = "ai-edge-quantizer static int8 on the fp32 .tflite: int8 weights and activations, int8 I/O"
AEQ_PATH = "ai-edge-quantizer on the converted fp32 .tflite (PT2E int8 conversion failed)"
AEQ_MIXED_PATH = "ai-edge-quantizer on the converted fp32 .tflite (layers kept in float)"
MIXED_NOTE = ("layers kept in float go through ai-edge-quantizer on the converted fp32 .tflite: litert-torch's PT2E "
              "path quantizes a layer left float between int8 neighbours all the same")
FP32_SCHEME = "fp32 (XNNPACK delegate applied by the interpreter at load)"
_CONVERSION_OPS = ("QUANTIZE", "DEQUANTIZE")
_INTEGER_DTYPES = ("int8", "uint8", "int16")
_PROGRESS_ENV = "LITERT_TORCH_SHOW_PROGRESS"

_KOTLIN = """\
```kotlin
// build.gradle: implementation("com.google.ai.edge.litert:litert:<version>")
import org.tensorflow.lite.Interpreter
import java.nio.ByteBuffer
import java.nio.ByteOrder

val interpreter = Interpreter(context.filesDir.resolve("{file}"), Interpreter.Options().setNumThreads({threads}))
{io}
```
"""

_KOTLIN_FLOAT_IO = """val input = ByteBuffer.allocateDirect(4 * {count}).order(ByteOrder.nativeOrder())
pixels.forEach {{ input.putFloat(it) }}  // FloatArray, preprocessed as in manifest.json
val output = Array(1) {{ FloatArray({classes}) }}
interpreter.run(input.rewind(), output)"""

_KOTLIN_INT8_IO = """// int8 model: quantize inputs with the scale/zero point in manifest.json, dequantize outputs
val input = ByteBuffer.allocateDirect({count}).order(ByteOrder.nativeOrder())
pixels.forEach {{ x -> input.put((Math.round(x / {in_scale}f) + {in_zp}).coerceIn(-128, 127).toByte()) }}
val raw = Array(1) {{ ByteArray({classes}) }}
interpreter.run(input.rewind(), raw)
val logits = raw[0].map {{ q -> (q - {out_zp}) * {out_scale}f }}"""


@dataclass(frozen=True)
class LiteRTOptions(RuntimeOptions):
    """The `runtimes: litert:` section of a target file: only the calibration set size so far."""

    calibration_samples: int = 128


class LiteRTRuntime(RuntimeBase):
    name: ClassVar[str] = "litert"
    file_format: ClassVar[str] = "tflite"
    extra: ClassVar[str] = "litert"
    modules: ClassVar[tuple[str, ...]] = ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")
    distributions: ClassVar[tuple[str, ...]] = ("litert-torch", "ai-edge-litert", "ai-edge-quantizer", "torchao",
                                                "torch")
    options_type: ClassVar[type[RuntimeOptions]] = LiteRTOptions
    int8_from: ClassVar[str] = "eager"  # PT2E quantizes the PyTorch graph, then converts it
    supports_qat: ClassVar[bool] = False  # litert-torch's quantizer has no QAT configuration wired here
    phone_runner: ClassVar[str | None] = "benchmark_model"
    # not through PT2E: a layer its quantizer leaves float comes out of litert_torch.convert int8 all the same when
    # its neighbours are quantized (litert-torch 0.10: file, size and accuracy identical to plain int8); a mixed
    # export quantizes the converted fp32 file with ai-edge-quantizer instead, its recipe naming the float ops
    keeps_layers_float: ClassVar[bool] = True
    # the last fp32 conversion calibrated, with the module and data it came from: a rescue's every attempt and its
    # sensitivity pass start from it rather than converting and calibrating again
    _calibrated: tuple[Any, Any, CalibratedModel] | None = None
    _fp32: tuple[Any, bytes] | None = None  # the last fp32 file exported, with its module: the same conversion

    def import_runtime(self) -> None:
        import ai_edge_litert.interpreter  # noqa: F401

    # ---------------------------------------------------------------- export

    def export(self, bundle: ModelBundle, request: ExportRequest) -> Artifact:
        self.check_request(request)
        typed_options(request, LiteRTOptions)
        calibration = None
        export_path, path_notes = "litert_torch.convert", list[str]()
        final = self.artifact_path(bundle.name, request)
        if request.precision == "int8" and request.keep_float:
            calibrated = self._calibrated_model(bundle, request.calibration)
            write = _bytes_writer(calibrated.quantize(bundle.module, request.keep_float))
            export_path, path_notes = AEQ_MIXED_PATH, [MIXED_NOTE]
            scheme = f"{AEQ_SCHEME}, {calibrated.samples} calibration samples{mixed_scheme(request.keep_float)}"
            calibration = calibration_info(request.calibration, calibrated.samples)
        elif request.precision == "int8":
            samples = calibration_count(bundle, request.calibration)
            scheme = f"{INT8_SCHEME}, {samples} calibration samples"
            calibration = calibration_info(request.calibration, samples)
            try:
                converted, export_path, path_notes = self._convert_int8(bundle, request)
                write = _writer(converted, final.name)
            except UsageError as pt2e:  # a known second path: quantize the converted fp32 file instead
                write, samples = self._quantized_after_conversion(bundle, request.calibration, pt2e)
                export_path, scheme = AEQ_PATH, f"{AEQ_SCHEME}, {samples} calibration samples"
                path_notes = [f"PT2E int8 failed ({str(pt2e).split('rejected the model: ', 1)[-1]}); the fp32 "
                              f".tflite was quantized after conversion with ai-edge-quantizer instead"]
                calibration = calibration_info(request.calibration, samples)
        else:
            write = _writer(self._convert_fp32(bundle), final.name)
            scheme = FP32_SCHEME

        with atomic_path(final) as tmp:
            write(tmp)
            # Read the file back before it gets its final name: a file the interpreter can't open is not an artifact.
            inputs, outputs, ops, float_ops = _describe(tmp, bundle)
            weights = _weight_census(tmp)
            if request.precision == "fp32":
                self._fp32 = (bundle.module, tmp.read_bytes())
        # in an fp32 model every op runs on float kernels: the census says something only for int8
        float_ops = float_ops if request.precision == "int8" else ()
        artifact = self.describe_file(final, request, inputs=inputs, outputs=outputs, scheme=scheme,
                                      dynamic_batch=False, ops=ops, float_ops=float_ops, calibration=calibration,
                                      notes=(*path_notes, *_notes(float_ops)), weight_census=weights)
        return dataclasses.replace(artifact, export_path=export_path)

    # ------------------------------------------------------------------ the app and the phone

    def bundle_snippet(self, artifact: Artifact, threads: int, versions: Mapping[str, str]) -> str | None:
        if not artifact.inputs or not artifact.outputs:
            return None
        i, o = artifact.inputs[0], artifact.outputs[0]
        count = 1
        for d in i.shape:
            count *= int(d) if isinstance(d, int) else 1
        classes = o.shape[-1] if o.shape else "N"
        if i.scale is not None:
            io = _KOTLIN_INT8_IO.format(count=count, classes=classes, in_scale=i.scale, in_zp=i.zero_point,
                                        out_scale=o.scale, out_zp=o.zero_point)
        else:
            io = _KOTLIN_FLOAT_IO.format(count=count, classes=classes)
        return _KOTLIN.format(file=Path(artifact.path).name, threads=threads, io=io)

    def phone_runner_argv(self, runner: str, model: str, threads: int, warmup: int, runs: int) -> list[str]:
        return [runner, f"--graph={model}", f"--num_threads={threads}", f"--warmup_runs={warmup}",
                f"--num_runs={runs}", "--report_peak_memory_footprint=true"]

    def parse_phone_runner_output(self, text: str, warmup: int) -> RunnerStats:
        from edgepack.device.runner_output import parse_benchmark_model

        return parse_benchmark_model(text)  # benchmark_model runs and reports its warm-up separately

    def _convert_fp32(self, bundle: ModelBundle) -> Any:
        import litert_torch

        with _quiet_progress():
            try:
                return litert_torch.convert(bundle.module.eval(), tuple(bundle.example_inputs))
            except Exception as exc:
                raise rejection(self.name, "litert_torch.convert", exc) from exc

    def _convert_int8(self, bundle: ModelBundle, request: ExportRequest) -> tuple[Any, str, list[str]]:
        """The converted int8 model, the quantization path taken, and notes on a fallback."""
        import litert_torch
        from litert_torch.quantize.pt2e_quantizer import (
            PT2EQuantizer,
            get_symmetric_quantization_config,
        )
        from litert_torch.quantize.quant_config import QuantConfig

        def make_quantizer(weighted_only: bool) -> Any:
            config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
            if not weighted_only:
                return PT2EQuantizer().set_global(config)
            quantizer = PT2EQuantizer()
            for layer in weighted_layer_types():
                # litert-torch matches the types in a node's nn_module_stack, which torch.export now records as
                # qualified names, not classes: give it the name, or no node ever matches
                quantizer.set_module_type(f"{layer.__module__}.{layer.__qualname__}", config)
            return quantizer

        # litert-torch folds the Q/DQ pairs itself, so convert_pt2e must leave them in place.
        converted, _, path, notes = quantize_with_fallback(bundle, make_quantizer, request.calibration, self.name,
                                                           fold_quantize=False)
        # convert reads only the quantizer's global settings (static, not dynamic), which a quantizer restricted to
        # some layers does not have: it is given the whole-graph one, the graph already carries its Q/DQ pairs
        with _quiet_progress():
            try:
                return (litert_torch.convert(converted, tuple(bundle.example_inputs),
                                             quant_config=QuantConfig(pt2e_quantizer=make_quantizer(False))),
                        path, notes)
            except Exception as exc:
                raise rejection(self.name, "litert_torch.convert (int8)", exc) from exc

    def _quantized_after_conversion(self, bundle: ModelBundle, calibration: ArrayDataset | None,
                                    pt2e: UsageError) -> tuple[Callable[[Path], None], int]:
        """The fp32 conversion quantized by ai-edge-quantizer (static int8 weights and activations, min/max over the
        calibration samples): a writer of the int8 file and the samples used. When this path fails too, the PT2E
        failure is raised with this one's reason added."""
        try:
            calibrated = self._calibrated_model(bundle, calibration)
            model = calibrated.quantize(bundle.module, ())
        except Exception as exc:  # noqa: BLE001 - the second path's failure is reported beside the first's
            raise UsageError(f"{pt2e}; ai-edge-quantizer on the fp32 file failed too: {one_line(exc, 200)}") from None
        return _bytes_writer(model), calibrated.samples

    def _calibrated_model(self, bundle: ModelBundle, calibration: ArrayDataset | None) -> CalibratedModel:
        """The model converted to fp32 (or the fp32 file this runtime exported for it) and calibrated for
        ai-edge-quantizer; the last one is kept for the next export of the same module with the same calibration
        data (a rescue's attempts)."""
        cached = self._calibrated
        if cached is not None and cached[0] is bundle.module and cached[1] is calibration:
            return cached[2]
        if self._fp32 is not None and self._fp32[0] is bundle.module:
            fp32 = self._fp32[1]
        else:
            with tempfile.TemporaryDirectory(prefix="edgepack-aeq-") as tmp:
                path = Path(tmp) / "fp32.tflite"
                _writer(self._convert_fp32(bundle), path.name)(path)
                fp32 = path.read_bytes()
        arrays = calibration.arrays if calibration is not None else ()
        calibrated = calibrate(fp32, arrays, calibration_count(bundle, calibration),
                               int(bundle.example_inputs[0].shape[0]))
        self._calibrated = (bundle.module, calibration, calibrated)
        return calibrated

    def int8_simulation(self, bundle: ModelBundle, calibration: ArrayDataset | None) -> MixedFiles:
        return MixedFiles(self._calibrated_model(bundle, calibration), bundle)

    # ------------------------------------------------------------------ load

    def load(self, path: Path, threads: int, settings: Mapping[str, str] | None = None) -> Session:
        path = checked_load(path, threads, ".tflite file", settings)
        from ai_edge_litert.interpreter import Interpreter

        try:
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ToolError(f"litert could not load {path.name}: {one_line(exc)}") from exc
        return _session(interpreter, path.name)


class MixedFiles:
    """LiteRT's int8 files with layers kept in float, made in memory from one calibrated fp32 conversion and run by
    the interpreter: what the sensitivity pass scores each layer on. Not a simulation: each is the file an export
    with those layers kept in float writes. Its plain int8 is ai-edge-quantizer's (no layer in float), which may
    differ from the PT2E file a plain build ships."""

    description = ("litert's int8 files made in memory (ai-edge-quantizer's file for each set of float layers, as a "
                   "mixed export writes it, run by the LiteRT interpreter; effects are against that quantizer's plain "
                   "int8, not the PT2E file)")

    def __init__(self, calibrated: CalibratedModel, bundle: ModelBundle) -> None:
        self.calibrated, self.bundle = calibrated, bundle

    @contextlib.contextmanager
    def keeping(self, keep: tuple[str, ...]) -> Iterator[Session]:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=self.calibrated.quantize(self.bundle.module, keep), num_threads=1)
        interpreter.allocate_tensors()
        yield _session(interpreter, "the mixed int8 file")


def _session(interpreter: Any, name: str) -> Session:
    """A session over an allocated interpreter: float inputs quantized as the file asks, outputs dequantized."""
    in_details = _ordered(interpreter.get_input_details(), "args")
    out_details = _ordered(interpreter.get_output_details(), "output")
    shapes = [tuple(int(d) for d in t["shape"]) for t in in_details]

    def run_one(arrays: list[np.ndarray]) -> list[np.ndarray]:
        for detail, x in zip(in_details, arrays):
            interpreter.set_tensor(detail["index"], _quantize(x, detail))
        interpreter.invoke()
        return [_dequantize(interpreter.get_tensor(d["index"]), d) for d in out_details]

    def session(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return run_in_chunks(run_one, inputs, shapes, name)

    return session


# -------------------------------------------------------------------- inspection


def _writer(converted: Any, name: str) -> Callable[[Path], None]:
    """Writes a litert-torch conversion to a path; a failure to serialise is a tool failure naming the file."""
    def write(path: Path) -> None:
        try:
            with _quiet_progress():
                converted.export(str(path))
        except Exception as exc:
            raise ToolError(f"litert could not write {name}: {one_line(exc)}") from exc
    return write


def _bytes_writer(model: bytes) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(model)
    return write


def _describe(path: Path, bundle: ModelBundle) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...],
                                                    tuple[OpCount, ...], tuple[OpCount, ...]]:
    """Tensor specs, the op census and the ops with float operands of a .tflite, read with the interpreter (no
    delegate, so ops stay visible)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interpreter = Interpreter(model_path=str(path),
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise ToolError(f"litert wrote a .tflite its interpreter cannot load: {one_line(exc)}") from exc
    in_details = _ordered(interpreter.get_input_details(), "args")
    out_details = _ordered(interpreter.get_output_details(), "output")
    names = list(bundle.input_names)
    inputs = tuple(_spec(names[i] if i < len(names) else f"input_{i}", d) for i, d in enumerate(in_details))
    outputs = tuple(_spec("output" if len(out_details) == 1 else f"output_{i}", d)
                    for i, d in enumerate(out_details))

    dtypes = {t["index"]: _dtype_name(t["dtype"]) for t in interpreter.get_tensor_details()}
    ops: Counter[str] = Counter()
    float_ops: Counter[str] = Counter()
    for op in interpreter._get_ops_details():  # private, but the only op listing the interpreter offers
        name = str(op["op_name"])
        ops[name] += 1
        operand_types = [dtypes.get(int(i)) for i in op["inputs"] if int(i) >= 0]
        if name not in _CONVERSION_OPS and "float32" in operand_types:
            float_ops[name] += 1
    return inputs, outputs, op_census(ops), op_census(float_ops)


def _weight_census(path: Path) -> tuple[int, int]:
    """Weight values in 8 bits vs otherwise, over the constant tensors of the .tflite (read from its flatbuffer:
    a tensor whose buffer holds data is a constant)."""
    from ai_edge_litert import schema_py_generated as schema

    type_names = {v: k.lower() for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.Model.GetRootAs(path.read_bytes(), 0)
    constants = []
    for g in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(g)
        for t in range(subgraph.TensorsLength()):
            tensor = subgraph.Tensors(t)
            buffer = model.Buffers(tensor.Buffer())
            if buffer is not None and (buffer.DataLength() > 0 or buffer.Size() > 0):
                constants.append((tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else (),
                                  type_names.get(tensor.Type(), "other")))
    return count_weights(constants)


def _notes(float_ops: tuple[OpCount, ...]) -> tuple[str, ...]:
    if not float_ops:
        return ()
    ops = ", ".join(f"{f.op} x{f.count}" for f in float_ops)
    return (f"ops running on float kernels inside the int8 model: {ops}",)


def _spec(name: str, detail: dict[str, Any]) -> TensorSpec:
    dtype = _dtype_name(detail["dtype"])
    scale, zero_point = detail.get("quantization", (0.0, 0))
    quantized = dtype in _INTEGER_DTYPES and scale != 0.0
    return TensorSpec(name, tuple(int(d) for d in detail["shape"]), dtype,
                      float(scale) if quantized else None, int(zero_point) if quantized else None)


def _ordered(details: list[dict[str, Any]], stem: str) -> list[dict[str, Any]]:
    """Order I/O tensors by signature position ("serving_default_args_1" -> 1): the flatbuffer order may differ."""
    def position(detail: dict[str, Any]) -> int:
        match = re.search(rf"{stem}_(\d+)", str(detail.get("name", "")))
        return int(match.group(1)) if match else -1

    if all(position(d) >= 0 for d in details):
        return sorted(details, key=position)
    return list(details)


def _dtype_name(dtype: Any) -> str:
    return getattr(dtype, "__name__", str(dtype))


def _quantize(x: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype == np.float32 or dtype.kind == "b" or scale == 0.0:  # floats, masks and token ids go in as they are
        return np.ascontiguousarray(x, dtype=dtype)
    info = np.iinfo(dtype)
    q = np.round(x / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    import numpy as np

    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]) == np.float32 or scale == 0.0:
        return np.asarray(y, dtype=np.float32)
    return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """litert-torch prints a progress tree to the console; only the CLI may print, so switch it off while converting."""
    import os

    from litert_torch import config

    saved = os.environ.get(_PROGRESS_ENV)
    config.show_progress = False  # the setter writes the environment variable litert-torch reads
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(_PROGRESS_ENV, None)
        else:
            os.environ[_PROGRESS_ENV] = saved
