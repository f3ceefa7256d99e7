"""ONNX Runtime on NVIDIA GPUs (the cuda target, the `cuda` extra: onnxruntime-gpu): the ONNX export, an FP16 file
converted from it and INT8 QDQ for TensorRT, run through the execution providers the target file lists, in order
(TensorRT, CUDA, CPU by default).

A session that asked for a GPU provider and got only the CPU one stops the build (exit 2): a CPU number is never
labelled a GPU one. Without a GPU, `--device none` builds the same files and checks their numerics on the CPU
provider (the plain onnxruntime package is enough for that), and measures nothing.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgepack.errors import ToolError, UsageError
from edgepack.fileio import atomic_path
from edgepack.records import Artifact, CalibrationInfo, Simplification
from edgepack.runtimes.base import (
    ExportRequest,
    RuntimeBase,
    RuntimeOptions,
    Session,
    TimedSession,
    checked_load,
    option,
    typed_options,
)
from edgepack.runtimes.onnxruntime import (
    BOOLEANS,
    ONNX_FEED_TYPES,
    describe_onnx,
    distribution_conflict,
    quantize_static_qdq,
    session_runner,
    write_fp32_onnx,
)

if TYPE_CHECKING:
    from edgepack.data.dataset import ArrayDataset
    from edgepack.models.bundle import ModelBundle

PROVIDER_NAMES = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
                  "cpu": "CPUExecutionProvider"}
GPU_PROVIDERS = (PROVIDER_NAMES["tensorrt"], PROVIDER_NAMES["cuda"])
# Kept in fp32 in the fp16 file, beside the converter's own list (ops with no fp16 kernel): sums of squares,
# exponentials and their normalisations overflow fp16's largest value (65504) long before fp32's.
KEEP_FP32_OPS = ("Pow", "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL2", "Exp", "Softmax", "LogSoftmax")
# TensorRT's explicit quantization fuses QDQ around these; elsewhere QDQ pairs only add reformatting layers
INT8_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# session settings an artifact may carry (Artifact.session_options), as the app sets them on its session
SESSION_SETTINGS = ("providers", "device_id", "trt_fp16_enable", "trt_int8_enable")
NO_DEVICE = "none"
FP16_MAX = 65504.0  # the largest finite float16
FP16_CHECK_SAMPLES = 16  # calibration samples run through the fp32 file to find values beyond fp16's range


@dataclass(frozen=True)
class OnnxRuntimeGpuOptions(RuntimeOptions):
    """The `runtimes: onnxruntime-gpu:` section of a target file."""

    calibration_samples: int = 256
    providers: tuple[str, ...] = field(default=("tensorrt", "cuda", "cpu"), metadata={
        "doc": "execution providers in order of preference, of: tensorrt, cuda, cpu (at least one GPU provider; the "
               "session takes the first one available, and fails rather than run on the CPU alone)"})
    keep_fp32_ops: tuple[str, ...] = field(default=KEEP_FP32_OPS, metadata={
        "doc": "ONNX operator types the fp16 file keeps in fp32 (numerically sensitive: overflow in fp16)"})
    per_channel: bool = option(True, BOOLEANS, "int8: one weight scale per output channel")
    simplify: bool = option(True, BOOLEANS, "run onnxslim on the fp32 file; its graph is kept only if outputs match")

    def __post_init__(self) -> None:
        for name in ("providers", "keep_fp32_ops"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (list, tuple)) \
                    or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{name}={value!r} must be a list of names")
            object.__setattr__(self, name, tuple(value))  # YAML gives lists; the record keeps tuples
        unknown = [p for p in self.providers if p not in PROVIDER_NAMES]
        if unknown:
            raise ValueError(f"providers: {unknown[0]!r} is not one of: {', '.join(PROVIDER_NAMES)}")
        if len(set(self.providers)) != len(self.providers):
            raise ValueError(f"providers lists one twice: {', '.join(self.providers)}")
        if not any(p != "cpu" for p in self.providers):
            raise ValueError("providers must name tensorrt or cuda (a GPU target that runs on the CPU alone is the "
                             "x86-cpu target)")
        super().__post_init__()


class OnnxRuntimeGpu(RuntimeBase):
    name: ClassVar[str] = "onnxruntime-gpu"
    file_format: ClassVar[str] = "onnx"
    extra: ClassVar[str] = "cuda"
    modules: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime", "onnxscript", "onnxslim")
    # which of the two onnxruntime packages provides the module shows in the report ("not installed" for the other)
    distributions: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime-gpu", "onnxruntime", "onnxscript", "onnxslim")
    options_type: ClassVar[type[RuntimeOptions]] = OnnxRuntimeGpuOptions
    int8_from: ClassVar[str] = "fp32"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    measured_on: ClassVar[str] = "gpu"

    def missing(self) -> list[str]:
        conflict = distribution_conflict()
        return ([conflict] if conflict else []) + super().missing()

    def import_runtime(self) -> None:
        import onnxruntime  # noqa: F401

    def measuring_unavailable(self, device: str) -> str | None:
        if not device.startswith("gpu:"):
            return (f"{self.name} measures on an NVIDIA GPU (--device gpu or gpu:N), or nothing (--device none); "
                    f"not on {device}")
        from edgepack.device.nvidia import find_gpu

        why = gpu_providers_missing()
        if why:
            return why
        gpu, why = find_gpu(int(device.split(":", 1)[1]))
        return why if gpu is None else None

    def session_placement(self, device: str) -> dict[str, str]:
        if device == NO_DEVICE:
            return {"providers": "cpu"}  # numerics checked on the CPU provider; nothing is measured
        if device.startswith("gpu:"):
            return {"device_id": device.split(":", 1)[1]}
        return {}

    # ---- export -------------------------------------------------------------------------------------------------
    def export(self, bundle: ModelBundle, request: ExportRequest) -> Artifact:
        self.check_request(request)
        options = typed_options(request, OnnxRuntimeGpuOptions)
        final = self.artifact_path(bundle.name, request)
        notes: list[str] = []
        simplification: Simplification | None = None
        calibration: CalibrationInfo | None = None
        settings = {"providers": ",".join(options.providers)}
        if request.precision == "fp32":
            dynamic, export_path, simplification = write_fp32_onnx(bundle, final, options.simplify, notes)
            scheme = "fp32"
        else:
            parent = request.parent
            if parent is None:  # check_request refused this already; kept for the type checker
                raise ToolError(f"{self.name} {request.precision} is made from its fp32 artifact")
            dynamic = bool(parent.dynamic_batch)
            if request.precision == "fp16":
                overflowing = fp16_overflows(Path(parent.path), request.calibration)
                if overflowing:
                    notes.append(f"kept in fp32 because they make or read values beyond fp16's range ({FP16_MAX:g}) on "
                                 f"{FP16_CHECK_SAMPLES} calibration samples: "
                                 + ", ".join(f"{node} (up to {peak:.3g})" for node, peak in overflowing.items()))
                with atomic_path(final) as tmp:
                    kept = convert_to_fp16(Path(parent.path), tmp, options.keep_fp32_ops, tuple(overflowing))
                scheme = ("fp16: weights and activations in float16, inputs and outputs float32"
                          + (f"; kept in fp32: {', '.join(f'{op} ({n})' for op, n in kept.items())}" if kept else "")
                          + (f"; {len(overflowing)} node(s) handling values beyond fp16's range kept in fp32"
                             if overflowing else ""))
                export_path = "onnxruntime's float16 converter on the fp32 file"
                settings["trt_fp16_enable"] = "1"
            else:
                with atomic_path(final) as tmp:
                    calibration = quantize_static_qdq(
                        Path(parent.path), tmp, request, notes, bundle, activation_type="int8", weight_type="int8",
                        per_channel=options.per_channel, op_types=INT8_OPS,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
                scheme = (f"INT8 QDQ for TensorRT: symmetric s8 activations, "
                          f"{'per-channel' if options.per_channel else 'per-tensor'} symmetric s8 weights on "
                          f"{'/'.join(INT8_OPS)}; TensorRT runs the rest in fp16")
                export_path = "onnxruntime.quantization on the fp32 file"
                # explicit quantization: TensorRT takes the scales from the QDQ nodes, no calibration table
                settings.update(trt_int8_enable="1", trt_fp16_enable="1")
        artifact = describe_onnx(self, final, request, scheme=scheme, dynamic_batch=dynamic,
                                 simplification=simplification, calibration=calibration, notes=notes)
        return dataclasses.replace(artifact, session_options=settings, export_path=export_path)

    # ---- run ----------------------------------------------------------------------------------------------------
    def load(self, path: Path, threads: int, settings: Mapping[str, str] | None = None) -> Session:
        return session_runner(self._session(path, threads, settings), Path(path))

    def timed_session(self, path: Path, threads: int, settings: Mapping[str, str] | None,
                      inputs: Sequence[np.ndarray]) -> TimedSession:
        """Inputs copied to the device once and outputs left there (I/O binding), so a timed call is the model and
        not the PCIe copies; each call waits for its outputs before the clock stops."""
        import onnxruntime as ort

        from edgepack.device.nvidia import device_memory_used

        device_id = int((settings or {}).get("device_id", "0"))
        on_gpu = any(p != "cpu" for p in (settings or {}).get("providers", "cpu").split(","))
        before = device_memory_used(device_id) if on_gpu else None  # read before the session takes any
        session = self._session(path, threads, settings)
        provider = session.get_providers()[0]
        where = "cuda" if provider in GPU_PROVIDERS else "cpu"
        binding = session.io_binding()
        for meta, x in zip(session.get_inputs(), inputs):
            array = np.ascontiguousarray(x, dtype=ONNX_FEED_TYPES.get(meta.type, np.float32))
            binding.bind_ortvalue_input(meta.name, ort.OrtValue.ortvalue_from_numpy(array, where, device_id))
        for meta in session.get_outputs():
            binding.bind_output(meta.name, where, device_id)

        def run() -> None:
            session.run_with_iobinding(binding)
            binding.synchronize_outputs()

        def facts() -> dict[str, Any]:
            return gpu_facts(provider, device_id, before) if where == "cuda" else {}

        return TimedSession(run=run, facts=facts)

    def _session(self, path: Path, threads: int, settings: Mapping[str, str] | None) -> Any:
        import onnxruntime as ort

        path = checked_load(path, threads, "ONNX model", settings, SESSION_SETTINGS)
        settings = dict(settings or {})
        names = [n for n in settings.get("providers", "cpu").split(",") if n]
        unknown = [n for n in names if n not in PROVIDER_NAMES]
        if unknown or not names:
            raise ToolError(f"providers setting {settings.get('providers')!r}: use names of "
                            f"{', '.join(PROVIDER_NAMES)}")
        device_id = int(settings.get("device_id", "0"))
        flags = {key: settings.get(key, "0") == "1" for key in ("trt_fp16_enable", "trt_int8_enable")}
        providers: list[Any] = []
        for name in names:
            if name == "tensorrt":
                providers.append((PROVIDER_NAMES[name], {"device_id": device_id, **flags}))
            elif name == "cuda":
                providers.append((PROVIDER_NAMES[name], {"device_id": device_id}))
            else:
                providers.append(PROVIDER_NAMES[name])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "provider not available" is checked below, with a reason
            session = ort.InferenceSession(str(path), options, providers=providers)
        asked = [PROVIDER_NAMES[n] for n in names if n != "cpu"]
        running = session.get_providers()
        if asked and not any(p in running for p in asked):
            from edgepack.device.nvidia import find_gpu

            why = (gpu_providers_missing() or find_gpu(device_id)[1]
                   or "the CUDA or TensorRT libraries could not be loaded; ONNX Runtime's log names the missing one")
            raise UsageError(f"{path.name}: asked for {', '.join(asked)}, but the session runs on "
                             f"{', '.join(running)} only ({why}); refusing to measure the CPU and call it the GPU; "
                             f"--device none checks numerics on the CPU without measuring")
        return session


def gpu_providers_missing() -> str | None:
    """Why this onnxruntime cannot run on an NVIDIA GPU (the CPU build, or both packages installed); None: it can."""
    conflict = distribution_conflict()
    if conflict:
        return conflict
    import onnxruntime as ort

    available = ort.get_available_providers()
    if any(p in available for p in GPU_PROVIDERS):
        return None
    return (f"this onnxruntime is a CPU build (its providers: {', '.join(available)}); the cuda target needs "
            f"onnxruntime-gpu: pip install 'edgepack[cuda]' in an environment without onnxruntime")


def gpu_facts(provider: str, device_id: int, memory_before: int | None) -> dict[str, Any]:
    """What ran the timed calls, for the Measurement: the GPU, its driver, the provider, the GPU memory held."""
    from edgepack.device.nvidia import device_memory_used, find_gpu, process_memory
    from edgepack.measure import host_cpu

    gpu, why = find_gpu(device_id)
    memory = process_memory(device_id, os.getpid())
    how = "the measuring process's GPU memory after the timed runs, CUDA context included (NVIDIA driver)"
    if memory is None:
        after = device_memory_used(device_id)
        if after is not None and memory_before is not None:
            memory = max(0, after - memory_before)
            how = ("the GPU's memory in use after the timed runs minus before the session was created (the driver "
                   "does not list this process, e.g. in a container): other processes' use would count")
    name = f"{gpu.name}, driver {gpu.driver}" if gpu else f"GPU {device_id} ({why})"
    return {
        "accelerator": f"{name}, {provider}",
        "where": f"GPU {device_id} ({name}) via {provider}; host {host_cpu()}",
        "device_memory_bytes": memory,
        "notes": ["latency: one call with inputs and outputs bound on the GPU (I/O binding), waiting for the outputs "
                  "before the clock stops; init includes building TensorRT's engine",
                  "memory: " + (how if memory is not None else "GPU memory could not be read")],
    }


def fp16_overflows(fp32: Path, data: ArrayDataset | None) -> dict[str, float]:
    """{node name: largest magnitude} of the nodes of the fp32 file that make or read a float tensor exceeding fp16's
    largest value on the first calibration samples (every intermediate tensor made a graph output and run on ONNX
    Runtime's CPU provider): in fp16 that tensor would be infinite, so those nodes must stay in fp32. A node the
    exporter left unnamed cannot be named to the converter and is not listed."""
    import onnx
    import onnxruntime as ort

    if data is None:
        return {}
    model = onnx.load(str(fp32))
    inferred = onnx.shape_inference.infer_shapes(model)
    floats = {v.name for v in (*inferred.graph.value_info, *inferred.graph.output)
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    producer: dict[str, str] = {}
    listed = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name in floats and node.name:
                producer[name] = node.name
                if name not in listed:
                    model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    values = session_runner(session, fp32)([a[:FP16_CHECK_SAMPLES] for a in data.arrays])
    consumers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            if node.name:
                consumers.setdefault(name, []).append(node.name)
    found: dict[str, float] = {}
    for meta, value in zip(session.get_outputs(), values):
        if meta.name not in producer or not value.size:
            continue
        finite = value[np.isfinite(value)]
        peak = float(np.max(np.abs(finite))) if finite.size else 0.0
        if peak > FP16_MAX:  # the tensor itself must stay fp32: the node making it, and every node reading it
            for node in (producer[meta.name], *consumers.get(meta.name, ())):
                found[node] = max(peak, found.get(node, 0.0))
    return found


def convert_to_fp16(fp32: Path, out: Path, keep_fp32_ops: Sequence[str],
                    keep_fp32_nodes: Sequence[str] = ()) -> dict[str, int]:
    """The fp32 file in float16 by ONNX Runtime's converter, inputs and outputs left float32 (the app feeds the same
    arrays), the converter's ops without fp16 kernels, `keep_fp32_ops` and the nodes named in `keep_fp32_nodes` left
    in fp32. Returns {op: count} of the nodes kept in fp32 by their op type."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(fp32))
    blocked = list(dict.fromkeys([*DEFAULT_OP_BLOCK_LIST, *keep_fp32_ops]))
    kept: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type in blocked:
            kept[node.op_type] = kept.get(node.op_type, 0) + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the converter warns for every value it clamps into fp16's range
        converted = convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked,
                                             node_block_list=list(keep_fp32_nodes))
    _drop_fp16_round_trips(converted.graph)
    onnx.save(converted, str(out))
    return dict(sorted(kept.items()))


def _drop_fp16_round_trips(graph: Any) -> None:
    """Remove each Cast to float16 whose only reader is a Cast back to float: the converter puts such a pair between
    two nodes it keeps in fp32, and the pair would squeeze the very values that had to stay fp32 through fp16 (an
    overflow to infinity). Without the pair the value passes in fp32, as the nodes on both sides compute."""
    import onnx

    def cast_to(node: Any) -> int | None:
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    dropped: set[str] = set()
    for down in [n for n in graph.node if cast_to(n) == onnx.TensorProto.FLOAT16]:
        after = readers.get(down.output[0], [])
        if down.output[0] in outputs or len(after) != 1 or cast_to(after[0]) != onnx.TensorProto.FLOAT:
            continue
        up = after[0]
        if up.output[0] in outputs:
            continue
        for reader in readers.get(up.output[0], []):  # read the fp32 value the pair was made from
            for i, name in enumerate(reader.input):
                if name == up.output[0]:
                    reader.input[i] = down.input[0]
        dropped |= {down.output[0], up.output[0]}
        graph.node.remove(down)
        graph.node.remove(up)
    kept = [v for v in graph.value_info if v.name not in dropped]
    del graph.value_info[:]
    graph.value_info.extend(kept)
