"""ONNX Runtime: dynamo export to one .onnx file, simplification kept only if outputs still match, INT8 by static
QDQ (per-channel weights, activation type from the target file) or dynamic INT8 on MatMul/Gemm for transformers."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar, Optional, Sequence

import numpy as np

from edgepack.errors import ToolError, UsageError, one_line
from edgepack.fileio import atomic_path
from edgepack.records import Artifact, TensorSpec
from edgepack.runtimes._fixed_batch import run_in_chunks
from edgepack.runtimes.base import ExportRequest, RuntimeBase, Session, check_export_request

SIMPLIFY_TOLERANCE = 1e-4  # max abs diff (relative to output scale) under which a simplified graph is kept
TRANSFORMER_OPS = {"Softmax", "LayerNormalization"}


class OnnxRuntime(RuntimeBase):
    name: ClassVar[str] = "onnxruntime"
    file_format: ClassVar[str] = "onnx"
    extra: ClassVar[str] = "onnx"
    modules: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime", "onnxscript", "onnxslim")
    distributions: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime", "onnxscript", "onnxslim")


    def import_runtime(self) -> None:
        import onnxruntime  # noqa: F401

    # ---- export -------------------------------------------------------------------------------------------------
    def export(self, bundle: Any, request: ExportRequest) -> Artifact:
        check_export_request(self, request.precision, request.qat)
        final = self.artifact_path(bundle.name, request)
        notes: list[str] = []
        details: dict[str, Any] = {}
        if request.precision == "fp32":
            with atomic_path(final) as tmp:
                dynamic = _export_onnx(bundle, tmp, notes)
                if request.options.get("simplify", True):
                    details["simplify"] = _simplify_if_equal(tmp, bundle, notes)
            scheme = "fp32"
        elif request.qat is not None:
            from edgepack.runtimes.qat import ONNX_SCHEME, qat_onnx

            qat = request.qat
            with atomic_path(final) as tmp:
                qat_onnx(bundle.module, tuple(bundle.example_inputs), qat.train, tmp, epochs=qat.epochs, lr=qat.lr,
                         seed=qat.seed, calibration=request.calibration, input_names=list(bundle.input_names))
                if request.options.get("simplify", True):
                    details["simplify"] = _simplify_if_equal(tmp, bundle, notes)
            dynamic = _fixed_batch(final) is None
            scheme = f"{ONNX_SCHEME}, quantization-aware training: {qat.epochs} epoch(s) on {qat.train.name}"
        else:
            if request.parent is None:
                raise ToolError("onnxruntime int8 export needs the fp32 artifact as its parent")
            dynamic = bool(request.parent.details.get("dynamic_batch"))
            with atomic_path(final) as tmp:
                scheme = self._quantize(Path(request.parent.path), tmp, request, details, notes)
        details["dynamic_batch"] = dynamic
        details["op_counts"] = op_counts(final)
        inputs, outputs = onnx_io_specs(final)
        return self.describe_file(final, request, inputs=inputs, outputs=outputs, scheme=scheme, details=details,
                                  notes=notes)

    def _quantize(self, fp32: Path, out: Path, request: ExportRequest, details: dict, notes: list[str]) -> str:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        opts = request.options
        scheme = str(opts.get("scheme", "static-qdq"))
        if scheme not in ("static-qdq", "dynamic"):
            raise UsageError(f"onnxruntime scheme {scheme!r} is unknown; use static-qdq or dynamic")
        counts = op_counts(fp32)
        if scheme == "static-qdq" and TRANSFORMER_OPS & set(counts) and opts.get("transformer_scheme") == "dynamic":
            scheme = "dynamic"
            notes.append("transformer-like graph (Softmax/LayerNormalization): dynamic INT8 on MatMul/Gemm, since "
                         "static QDQ loses top-1 agreement on attention; set transformer_scheme: static-qdq to override")
        if scheme == "dynamic":
            with _quiet():
                    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul", "Gemm"], per_channel=False)
            return "dynamic INT8: MatMul/Gemm weights int8 per-tensor, activations quantized at run time"
        return self._quantize_static(fp32, out, request, details, notes)

    def _quantize_static(self, fp32: Path, out: Path, request: ExportRequest, details: dict, notes: list[str]) -> str:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process

        if request.calibration is None:
            raise ToolError("static quantization needs calibration data")
        opts = request.options
        act = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[str(opts.get("activation_type", "uint8"))]
        weight = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}[str(opts.get("weight_type", "int8"))]
        per_channel = bool(opts.get("per_channel", True))
        pre = out.with_name(out.name + ".pre.onnx")
        try:
            try:
                quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
                source = pre
            except Exception as exc:  # pre-processing is an optimisation; quantizing without it still works
                notes.append(f"quantization pre-processing skipped: {one_line(exc)}")
                source = fp32
            input_name = _input_names(fp32)[0]
            batch = _fixed_batch(fp32)
            samples = request.calibration.inputs

            class Reader(CalibrationDataReader):
                def __init__(self) -> None:
                    step = batch or 1
                    self._batches = iter(samples[i:i + step] for i in range(0, len(samples) - step + 1, step))

                def get_next(self) -> Optional[dict[str, np.ndarray]]:
                    nxt = next(self._batches, None)
                    return None if nxt is None else {input_name: np.ascontiguousarray(nxt, dtype=np.float32)}

            with warnings.catch_warnings(), _quiet():
                warnings.simplefilter("ignore")
                quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                                weight_type=weight, activation_type=act)
        finally:
            pre.unlink(missing_ok=True)
        details["calibration"] = {"samples": len(request.calibration), "source": request.calibration.name}
        a = "u8" if act == QuantType.QUInt8 else "s8"
        w = "s8" if weight == QuantType.QInt8 else "u8"
        return f"static QDQ: {a} activations, {'per-channel' if per_channel else 'per-tensor'} {w} weights"

    # ---- run ----------------------------------------------------------------------------------------------------
    def load(self, path: Path, threads: int) -> Session:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        shapes = [tuple(i.shape) for i in session.get_inputs()]
        dynamic = not isinstance(shapes[0][0], int)

        def run_once(feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
            arrays = [np.ascontiguousarray(x, dtype=np.float32) for x in feeds]
            return session.run(None, dict(zip(names, arrays)))

        def run(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            # a dynamic-batch graph takes any N at once; a fixed one runs in chunks of its batch
            return run_once(inputs) if dynamic else run_in_chunks(run_once, inputs, shapes, path.name)

        return run


def _export_onnx(bundle: Any, path: Path, notes: list[str]) -> bool:
    """Export with the dynamo exporter; dynamic batch when the model allows it. Returns whether batch is dynamic."""
    import torch

    kwargs = dict(input_names=list(bundle.input_names), output_names=["output"], external_data=False, dynamo=True,
                  verbose=False)
    dims = tuple({0: torch.export.Dim("batch", min=1, max=4096)} for _ in bundle.example_inputs)
    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            torch.onnx.export(bundle.module, bundle.example_inputs, str(path), dynamic_shapes=dims, **kwargs)
        return True
    except Exception as exc:
        notes.append(f"exported with a fixed batch: a dynamic batch was refused ({one_line(exc, 160)})")
    try:
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            torch.onnx.export(bundle.module, bundle.example_inputs, str(path), **kwargs)
    except Exception as exc:
        raise UsageError(f"the ONNX exporter rejected the model: {exporter_reason(exc)}") from None
    return False


def exporter_reason(exc: BaseException) -> str:
    """The most useful line of an exporter failure: the operator it names and the innermost cause."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # the exporter colours its messages
    op = re.search(r"(aten::[\w.]+|aten\.[\w.]+|torch\.ops\.[\w.]+)", text)
    summary = text.split("## Exception summary", 1)
    cause = re.search(r"<class '([\w.]+)'>: (.+)", summary[1]) if len(summary) == 2 else None
    detail = f"{cause.group(1).rsplit('.', 1)[-1]}: {cause.group(2).strip()[:200]}" if cause else one_line(exc, 200)
    return f"operator {op.group(1)} cannot be exported ({detail})" if op else detail


class _quiet:
    """Silence library chatter during export and quantization: progress prints on stdout (the CLI owns stdout for
    --json) and advice logged on the root logger (e.g. 'consider pre-processing', which we do for static QDQ)."""

    def __enter__(self) -> None:
        import contextlib
        import io
        import logging

        self._stdout = contextlib.redirect_stdout(io.StringIO())
        self._stdout.__enter__()
        self._level = logging.root.level
        logging.root.setLevel(logging.ERROR)

    def __exit__(self, *exc: Any) -> None:
        import logging

        logging.root.setLevel(self._level)
        self._stdout.__exit__(*exc)


def _simplify_if_equal(path: Path, bundle: Any, notes: list[str]) -> dict[str, Any]:
    """Run onnxslim; keep its graph only if ONNX Runtime gives the same outputs as the unsimplified graph."""
    import onnx
    import onnxslim

    before = op_count_total(path)
    try:
        slim = onnxslim.slim(onnx.load(str(path)))
    except Exception as exc:
        notes.append(f"onnxslim failed, graph kept as exported: {one_line(exc)}")
        return {"applied": False, "reason": one_line(exc)}
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
            return {"applied": False, "reason": f"max abs diff {diff:.2e}"}
        after = op_count_total(candidate)
        candidate.replace(path)
        return {"applied": True, "tool": "onnxslim", "nodes_before": before, "nodes_after": after, "max_abs_diff": diff}
    finally:
        candidate.unlink(missing_ok=True)


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def op_count_total(path: Path) -> int:
    return sum(op_counts(path).values())


def _input_names(path: Path) -> list[str]:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return [i.name for i in graph.input if i.name not in inits]


def _fixed_batch(path: Path) -> Optional[int]:
    import onnx

    dim = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") else None


def _tensor_specs(values: Any) -> tuple[TensorSpec, ...]:
    import onnx

    specs = []
    for v in values:
        t = v.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
        specs.append(TensorSpec(v.name, shape, onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name))
    return tuple(specs)


def onnx_io_specs(path: Path) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """The graph's real inputs (initializers excluded) and outputs."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    return _tensor_specs(i for i in graph.input if i.name not in inits), _tensor_specs(graph.output)
