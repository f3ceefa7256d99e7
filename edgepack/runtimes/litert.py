"""LiteRT (TFLite) runtime: `.tflite` files converted with litert-torch, run with ai-edge-litert's Interpreter.

Conversion goes PyTorch -> .tflite without TensorFlow. INT8 models are fully static (int8 inputs and outputs), so the
session quantizes float inputs with the input scale/zero point and dequantizes outputs: callers always compare floats.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Sequence

from edgepack.errors import ToolError, one_line
from edgepack.fileio import atomic_path
from edgepack.records import Artifact, TensorSpec
from edgepack.runtimes._fixed_batch import run_in_chunks
from edgepack.runtimes._pt2e import calibration_count, quantize_static, rejection
from edgepack.runtimes.base import ExportRequest, RuntimeBase, Session, check_export_request, checked_load

if TYPE_CHECKING:
    import numpy as np

    from edgepack.models.bundle import ModelBundle

INT8_SCHEME = "litert-torch PT2E static, per-channel symmetric int8 weights, int8 activations, int8 I/O"
FP32_SCHEME = "fp32 (XNNPACK delegate applied by the interpreter at load)"
_CONVERSION_OPS = ("QUANTIZE", "DEQUANTIZE")
_INTEGER_DTYPES = ("int8", "uint8", "int16")
_PROGRESS_ENV = "LITERT_TORCH_SHOW_PROGRESS"


class LiteRTRuntime(RuntimeBase):
    name: ClassVar[str] = "litert"
    file_format: ClassVar[str] = "tflite"
    extra: ClassVar[str] = "litert"
    modules: ClassVar[tuple[str, ...]] = ("litert_torch", "ai_edge_litert")
    distributions: ClassVar[tuple[str, ...]] = ("litert-torch", "ai-edge-litert", "torchao", "torch")


    def import_runtime(self) -> None:
        import ai_edge_litert.interpreter  # noqa: F401

    # ---------------------------------------------------------------- export

    def export(self, bundle: "ModelBundle", request: ExportRequest) -> Artifact:
        check_export_request(self, request.precision, request.qat)

        if request.precision == "int8":
            converted = self._convert_int8(bundle, request)
            samples = calibration_count(bundle, request.calibration)
            scheme = f"{INT8_SCHEME}, {samples} calibration samples"
        else:
            converted = self._convert_fp32(bundle)
            scheme = FP32_SCHEME

        final = self.artifact_path(bundle.name, request)
        with atomic_path(final) as tmp:
            try:
                with _quiet_progress():
                    converted.export(str(tmp))
            except Exception as exc:
                raise ToolError(f"litert could not write {final.name}: {one_line(exc)}") from exc
            # Read the file back before it gets its final name: a file the interpreter can't open is not an artifact.
            inputs, outputs, details = _describe(tmp, bundle)

        return self.describe_file(final, request, inputs=inputs, outputs=outputs, scheme=scheme, details=details,
                                  notes=_notes(details, request.precision))

    def _convert_fp32(self, bundle: "ModelBundle") -> Any:
        import litert_torch

        with _quiet_progress():
            try:
                return litert_torch.convert(bundle.module.eval(), tuple(bundle.example_inputs))
            except Exception as exc:
                raise rejection(self.name, "litert_torch.convert", exc) from exc

    def _convert_int8(self, bundle: "ModelBundle", request: ExportRequest) -> Any:
        import litert_torch
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig

        quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True,
                                                                                 is_dynamic=False))
        # litert-torch folds the Q/DQ pairs itself, so convert_pt2e must leave them in place.
        converted = quantize_static(bundle, quantizer, request.calibration, self.name, fold_quantize=False)
        with _quiet_progress():
            try:
                return litert_torch.convert(converted, tuple(bundle.example_inputs),
                                            quant_config=QuantConfig(pt2e_quantizer=quantizer))
            except Exception as exc:
                raise rejection(self.name, "litert_torch.convert (int8)", exc) from exc

    # ------------------------------------------------------------------ load

    def load(self, path: Path, threads: int) -> Session:
        path = checked_load(path, threads, ".tflite file")
        from ai_edge_litert.interpreter import Interpreter

        try:
            interpreter = Interpreter(model_path=str(path), num_threads=threads)
            interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ToolError(f"litert could not load {path.name}: {one_line(exc)}") from exc
        in_details = _ordered(interpreter.get_input_details(), "args")
        out_details = _ordered(interpreter.get_output_details(), "output")
        shapes = [tuple(int(d) for d in t["shape"]) for t in in_details]

        def run_one(arrays: list[np.ndarray]) -> list[np.ndarray]:
            for detail, x in zip(in_details, arrays):
                interpreter.set_tensor(detail["index"], _quantize(x, detail))
            interpreter.invoke()
            return [_dequantize(interpreter.get_tensor(d["index"]), d) for d in out_details]

        def session(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            return run_in_chunks(run_one, inputs, shapes, path.name)

        return session


# -------------------------------------------------------------------- inspection


def _describe(path: Path, bundle: "ModelBundle") -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...], dict]:
    """Tensor specs and op statistics of a .tflite, read with the interpreter (no delegate, so ops stay visible)."""
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
    details = {
        "ops": dict(sorted(ops.items())),
        "io_dtypes": {"inputs": [s.dtype for s in inputs], "outputs": [s.dtype for s in outputs]},
        "float_ops": dict(sorted(float_ops.items())),
        "quantize_conversions": {k: ops[k] for k in _CONVERSION_OPS if ops.get(k)},
    }
    return inputs, outputs, details


def _notes(details: dict[str, Any], precision: str) -> tuple[str, ...]:
    if precision != "int8" or not details["float_ops"]:
        return ()
    ops = ", ".join(f"{k} x{v}" for k, v in details["float_ops"].items())
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


def _quantize(x: "np.ndarray", detail: dict[str, Any]) -> "np.ndarray":
    import numpy as np

    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return np.ascontiguousarray(x, dtype=np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    q = np.round(x / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(y: "np.ndarray", detail: dict[str, Any]) -> "np.ndarray":
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
