"""ExecuTorch runtime: `.pte` programs lowered to the XNNPACK delegate (fp32, or PT2E static int8).

What XNNPACK does not take runs on ExecuTorch's portable CPU kernels, which are much slower; the artifact records
which ops those are and why the partitioner refused them (`Artifact.delegation`), so a user sees it before shipping.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgepack.errors import ToolError, one_line
from edgepack.fileio import atomic_path
from edgepack.records import Artifact, Delegation, FallbackOp, TensorSpec
from edgepack.runtimes._fixed_batch import run_in_chunks
from edgepack.runtimes._pt2e import (
    calibration_count,
    export_program,
    int8_simulation,
    keep_float_by_filter,
    quantize_with_fallback,
    rejection,
    weighted_layer_types,
)
from edgepack.runtimes.base import (
    ExportRequest,
    Int8Simulation,
    RuntimeBase,
    RuntimeOptions,
    Session,
    calibration_info,
    checked_load,
    count_weights,
    mixed_scheme,
    op_census,
    option,
    typed_options,
)

if TYPE_CHECKING:
    import numpy as np

    from edgepack.data.dataset import ArrayDataset
    from edgepack.device.runner_output import RunnerStats
    from edgepack.models.bundle import ModelBundle

PARTITIONERS = ("xnnpack",)  # values of the target file's `partitioner:` that this runtime lowers to
INT8_SCHEME = "PT2E XNNPACK, per-channel symmetric int8 weights, int8 activations (static)"
FP32_SCHEME = "fp32, XNNPACK delegate"
_XNNPACK_LOGGER = "executorch.backends.xnnpack"  # parent of the loggers WhyNoPartition writes to

# ExecuTorch runtime error codes (runtime/core/error.h) that a user can act on.
_LOAD_ERRORS = {
    0x14: "the program uses an operator with no kernel in this ExecuTorch build (see the artifact's "
          "delegation.kernels in report.json)",
    0x20: "the file or method was not found",
    0x23: "the file is not a valid ExecuTorch program",
    0x30: "the program was lowered for a delegate version this runtime does not support",
}

_KOTLIN = """\
```kotlin
// build.gradle: implementation("org.pytorch:executorch-android:<version matching {version}>")
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor

val module = Module.load(context.filesDir.resolve("{file}").absolutePath)
val input = Tensor.fromBlob(pixels /* FloatArray, preprocessed as in manifest.json */, longArrayOf({shape}))
val logits = module.forward(EValue.from(input))[0].toTensor().dataAsFloatArray
```
"""


@dataclass(frozen=True)
class ExecuTorchOptions(RuntimeOptions):
    """The `runtimes: executorch:` section of a target file."""

    calibration_samples: int = 128
    partitioner: str = option("xnnpack", PARTITIONERS, "the delegate the program is lowered to")


class ExecuTorchRuntime(RuntimeBase):
    name: ClassVar[str] = "executorch"
    file_format: ClassVar[str] = "pte"
    extra: ClassVar[str] = "executorch"
    modules: ClassVar[tuple[str, ...]] = ("executorch", "torchao")
    distributions: ClassVar[tuple[str, ...]] = ("executorch", "torchao", "torch")
    options_type: ClassVar[type[RuntimeOptions]] = ExecuTorchOptions
    int8_from: ClassVar[str] = "eager"  # PT2E quantizes the PyTorch graph, then lowers it
    supports_qat: ClassVar[bool] = True
    phone_runner: ClassVar[str | None] = "executor_runner"
    keeps_layers_float: ClassVar[bool] = True  # the kept modules are filtered out of the XNNPACK quantizer

    def import_runtime(self) -> None:
        import executorch.extension.pybindings.portable_lib
        import executorch.runtime  # noqa: F401

    # ---------------------------------------------------------------- export

    def export(self, bundle: ModelBundle, request: ExportRequest) -> Artifact:
        self.check_request(request)
        typed_options(request, ExecuTorchOptions)  # validated on construction; xnnpack is the only partitioner
        calibration = None
        export_path, path_notes = "torch.export, lowered to XNNPACK", list[str]()
        if request.qat is not None:
            program = _qat_program(bundle, request)
            export_path = "PT2E quantization-aware training, lowered to XNNPACK"
            scheme = (f"{INT8_SCHEME}, quantization-aware training: {request.qat.epochs} epoch(s) on "
                      f"{request.qat.train.name}")
        elif request.precision == "int8":
            program, export_path, path_notes = self._quantized_program(bundle, request)
            samples = calibration_count(bundle, request.calibration)
            scheme = f"{INT8_SCHEME}, {samples} calibration samples{mixed_scheme(request.keep_float)}"
            calibration = calibration_info(request.calibration, samples)
        else:
            program = export_program(bundle, self.name)
            scheme = FP32_SCHEME

        lowered, delegation = _lower(program)
        try:
            executorch_program = lowered.to_executorch()
        except Exception as exc:  # e.g. "Missing out variants: {'mylib::op'}" for a custom op
            raise rejection(self.name, "to_executorch", exc) from exc
        kernels = _kernels(executorch_program)
        delegation = dataclasses.replace(delegation, kernels=kernels,
                                         kernels_missing_on_host=_missing_on_host(kernels))

        final = self.artifact_path(bundle.name, request)
        with atomic_path(final) as tmp, open(tmp, "wb") as fh:
            executorch_program.write_to_file(fh)

        artifact = self.describe_file(final, request, inputs=_input_specs(bundle), outputs=_output_specs(program),
                                  scheme=scheme, dynamic_batch=False, delegation=delegation,
                                  calibration=calibration, notes=(*path_notes, *_notes(delegation)),
                                  weight_census=_weight_census(program))
        return dataclasses.replace(artifact, export_path=export_path)

    def _quantized_program(self, bundle: ModelBundle, request: ExportRequest) -> tuple[Any, str, list[str]]:
        """The post-training int8 program, the quantization path taken, and notes on a fallback."""
        import torch

        converted, _, path, notes = quantize_with_fallback(bundle, _quantizers(bundle, request.keep_float),
                                                           request.calibration, self.name)
        try:
            return torch.export.export(converted, tuple(bundle.example_inputs)), path, notes
        except Exception as exc:
            raise rejection(self.name, "torch.export of the quantized graph", exc) from exc

    def int8_simulation(self, bundle: ModelBundle, calibration: ArrayDataset | None) -> Int8Simulation | None:
        return int8_simulation(bundle, _quantizers(bundle, ()), calibration, self.name)

    # ------------------------------------------------------------------ load

    def load(self, path: Path, threads: int, settings: Mapping[str, str] | None = None) -> Session:
        path = checked_load(path, threads, "ExecuTorch program", settings)
        import numpy as np
        import torch
        from executorch.extension.pybindings.portable_lib import (
            _threadpool_get_thread_count,
            _unsafe_reset_threadpool,
        )
        from executorch.runtime import Runtime

        # Private API, but the only way to size the threadpool XNNPACK and the portable kernels share. Reset only
        # when the size changes: each reset tears the pool down and logs a line to stderr.
        if _threadpool_get_thread_count() != threads:
            _unsafe_reset_threadpool(threads)
        try:
            method = Runtime.get().load_program(path).load_method("forward")
        except RuntimeError as exc:
            raise ToolError(f"executorch could not load {path.name}: {_explain_load_error(exc)}") from exc
        meta = method.metadata
        shapes = [tuple(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())]

        def run_one(arrays: list[np.ndarray]) -> list[np.ndarray]:
            outputs = method.execute([torch.from_numpy(a) for a in arrays])
            return [np.array(o.detach().numpy(), dtype=np.float32) for o in outputs]

        def session(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
            return run_in_chunks(run_one, inputs, shapes, f"{path.name}")

        return session

    # ------------------------------------------------------------------ the app and the phone

    def bundle_snippet(self, artifact: Artifact, threads: int, versions: Mapping[str, str]) -> str | None:
        if not artifact.inputs:
            return None
        shape = ", ".join(f"{d}L" for d in artifact.inputs[0].shape)
        return _KOTLIN.format(file=Path(artifact.path).name, shape=shape, version=versions.get("executorch", ""))

    def phone_runner_argv(self, runner: str, model: str, threads: int, warmup: int, runs: int) -> list[str]:
        # executor_runner has no warm-up flag: run warmup + runs and drop the first iterations when parsing.
        return [runner, f"--model_path={model}", f"--num_executions={warmup + runs}", f"--cpu_threads={threads}"]

    def parse_phone_runner_output(self, text: str, warmup: int) -> RunnerStats:
        from edgepack.device.runner_output import parse_executor_runner

        return parse_executor_runner(text, warmup)


def _quantizers(bundle: ModelBundle, keep: tuple[str, ...]) -> Callable[[bool], Any]:
    """The XNNPACK quantizer for the whole graph or, when `weighted_only`, for its Conv/Linear layers only; the
    modules in `keep` left float either way."""

    def make_quantizer(weighted_only: bool) -> Any:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )

        config = get_symmetric_quantization_config(is_per_channel=True)
        if not weighted_only:
            quantizer = XNNPACKQuantizer().set_global(config)
        else:
            quantizer = XNNPACKQuantizer()
            for layer in weighted_layer_types():
                quantizer.set_module_type(layer, config)
        return keep_float_by_filter(quantizer, bundle, keep)

    return make_quantizer


# -------------------------------------------------------------------- lowering and delegation report


def _lower(program: Any) -> tuple[Any, Delegation]:
    """Lower to XNNPACK, capturing the partitioner's WhyNoPartition reasons; return (edge manager, delegation)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackPartitioner,
    )
    from executorch.exir import to_edge_transform_and_lower

    partitioner = XnnpackPartitioner()
    with _why_no_partition() as why:
        try:
            lowered = to_edge_transform_and_lower(program, transform_passes=[_drop_noop_expands],
                                                  partitioner=[partitioner])
        except Exception as exc:
            raise rejection("executorch", "lowering to XNNPACK", exc) from exc
    graph = lowered.exported_program().graph_module
    return lowered, _delegation(graph, set(partitioner.target_partitioner_configs), why)


def _drop_noop_expands(graph_module: Any) -> Any:
    """Remove expand_copy nodes whose output has their input's shape. torch.matmul on 4-D tensors (attention's
    scores) decomposes into expand + view + bmm, and the expand is a no-op when the batch dims already match; XNNPACK
    takes no expand_copy, so each one cut the graph into another delegate partition (a Hugging Face MobileViT: 36 of
    them, 41 partitions before, 23 after, and its fp32 program 15 % faster on this host)."""
    from executorch.exir.dialects._ops import ops as exir_ops
    from torch.fx.passes.infra.pass_base import PassResult

    changed = False
    for node in list(graph_module.graph.nodes):
        if node.op != "call_function" or node.target != exir_ops.edge.aten.expand_copy.default:
            continue
        source = node.args[0]
        before, after = source.meta.get("val"), node.meta.get("val")
        if before is not None and after is not None and tuple(before.shape) == tuple(after.shape) \
                and before.dtype == after.dtype:
            node.replace_all_uses_with(source)
            graph_module.graph.erase_node(node)
            changed = True
    if changed:
        graph_module.recompile()
    return PassResult(graph_module, changed)


@contextlib.contextmanager
def _why_no_partition() -> Iterator[dict[str, list[str]]]:
    """Collect {node name: [reasons]} from the XNNPACK partitioner's WhyNoPartition debug records.

    ExecuTorch only logs these at DEBUG level. The logger is switched to DEBUG for the duration and stops propagating,
    so the debug lines do not reach the user's console; warnings and errors are passed on unchanged.
    """
    reasons: dict[str, list[str]] = {}
    logger = logging.getLogger(_XNNPACK_LOGGER)

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            node, reason = getattr(record.msg, "node", None), getattr(record.msg, "reason", None)
            if node is not None and reason:
                seen = reasons.setdefault(str(node.name), [])
                if reason not in seen:
                    seen.append(str(reason))
            elif record.levelno >= logging.WARNING and logger.parent is not None:
                logger.parent.handle(record)

    handler = _Collect(logging.DEBUG)
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield reasons
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def _op_name(target: Any) -> str:
    return str(getattr(target, "__name__", target))


def _is_plumbing(node: Any) -> bool:
    """getitem and the delegate call move tensors; they are not work a backend could take."""
    import operator

    return node.target is operator.getitem or _op_name(node.target) == "executorch_call_delegate"


def _delegation(graph: Any, configured: set[str], why: dict[str, list[str]]) -> Delegation:
    """Count delegated vs portable ops by operator, from the lowered graph and its lowered submodules.

    Counted directly rather than with devtools' get_delegation_info, which names ops by node name and counts
    getitem plumbing as a non-delegated op.
    """
    from executorch.exir.backend.canonical_partitioners.config_partitioner import (
        format_target_name,
    )
    from executorch.exir.lowered_backend_module import LoweredBackendModule

    delegated: Counter[str] = Counter()
    portable: Counter[str] = Counter()
    portable_reasons: dict[str, list[str]] = {}
    subgraphs, backends = 0, set()
    for node in graph.graph.nodes:
        if node.op == "get_attr" and isinstance(getattr(graph, str(node.target), None), LoweredBackendModule):
            lowered = getattr(graph, str(node.target))
            subgraphs += 1
            backends.add(lowered.backend_id)
            for inner in lowered.original_module.graph.nodes:
                if inner.op == "call_function" and not _is_plumbing(inner):
                    delegated[_op_name(inner.target)] += 1
        elif node.op == "call_function" and not _is_plumbing(node):
            op = _op_name(node.target)
            portable[op] += 1
            if node.name in why:
                found = why[node.name]
            elif format_target_name(op) not in configured:
                found = ["XNNPACK has no partitioner config for this operator"]
            else:
                found = ["left outside the XNNPACK partition (the partitioner logged no reason)"]
            merged = portable_reasons.setdefault(op, [])
            merged.extend(r for r in found if r not in merged)
    return Delegation(
        backend=", ".join(sorted(backends)) or "XnnpackBackend",
        subgraphs=subgraphs,
        delegated_nodes=sum(delegated.values()),
        total_nodes=sum(delegated.values()) + sum(portable.values()),
        delegated_ops=op_census(delegated),
        fallback_ops=tuple(FallbackOp(op, count, "; ".join(portable_reasons[op]))
                           for op, count in sorted(portable.items())),
    )


def _weight_census(program: Any) -> tuple[int, int]:
    """Weight values in 8 bits vs otherwise, over the parameters, buffers and constants the exported program's graph
    uses (the quantized program holds its weights as int8 constants before lowering packs them into the delegate;
    the float originals it no longer reads are not counted)."""
    signature = program.graph_signature
    sources = {**signature.inputs_to_parameters, **signature.inputs_to_buffers,
               **signature.inputs_to_lifted_tensor_constants}
    tensors = {**program.state_dict, **program.constants}
    used = [tensors[sources[node.name]] for node in program.graph.nodes
            if node.op == "placeholder" and node.name in sources and node.users and sources[node.name] in tensors]
    return count_weights((tuple(t.shape), str(t.dtype).replace("torch.", "")) for t in used)


def _kernels(executorch_program: Any) -> tuple[str, ...]:
    """Operator kernels the program calls outside delegates, as the runtime names them ("aten::cumsum.out")."""
    names: list[str] = []
    for plan in executorch_program.executorch_program.execution_plan:
        for op in plan.operators:
            name = f"{op.name}.{op.overload}" if op.overload else op.name
            if name not in names:
                names.append(name)
    return tuple(names)


def _missing_on_host(kernels: Sequence[str]) -> tuple[str, ...]:
    """Kernels the host ExecuTorch build lacks: such a program exports but fails to load (OperatorMissing)."""
    from executorch.runtime import Runtime

    available = Runtime.get().operator_registry.operator_names
    return tuple(k for k in kernels if k not in available)


def _notes(delegation: Delegation) -> tuple[str, ...]:
    notes = []
    if delegation.fallback_ops:
        ops = ", ".join(f"{f.op} x{f.count}" for f in delegation.fallback_ops)
        notes.append(f"not delegated to XNNPACK (portable CPU kernels): {ops}")
    if delegation.kernels_missing_on_host:
        notes.append("no kernel in the host ExecuTorch build for: " + ", ".join(delegation.kernels_missing_on_host))
    return tuple(notes)


# -------------------------------------------------------------------- tensor specs and helpers


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def _input_specs(bundle: ModelBundle) -> tuple[TensorSpec, ...]:
    names = list(bundle.input_names)
    return tuple(
        TensorSpec(names[i] if i < len(names) else f"input_{i}", tuple(int(d) for d in x.shape), _dtype_name(x.dtype))
        for i, x in enumerate(bundle.example_inputs)
    )


def _output_specs(program: Any) -> tuple[TensorSpec, ...]:
    """Output shapes from the exported graph's metadata, so export does not run the model again."""
    output_node = program.graph.output_node()
    values = [getattr(n, "meta", {}).get("val") for n in output_node.args[0]]
    specs = []
    for i, value in enumerate(values):
        name = "output" if len(values) == 1 else f"output_{i}"
        shape = tuple(int(d) for d in value.shape) if value is not None else ()
        specs.append(TensorSpec(name, shape, _dtype_name(value.dtype) if value is not None else "unknown"))
    return tuple(specs)


def _explain_load_error(exc: BaseException) -> str:
    text = one_line(exc)
    match = re.search(r"error:\s*0x:?([0-9a-fA-F]+)", text)
    if match and int(match.group(1), 16) in _LOAD_ERRORS:
        return f"{text} ({_LOAD_ERRORS[int(match.group(1), 16)]})"
    return text


def _qat_program(bundle: ModelBundle, request: ExportRequest) -> Any:
    """PT2E quantization-aware training with the same XNNPACK quantizer, as a program ready for lowering."""
    from edgepack.runtimes.qat import qat_xnnpack

    qat = request.qat
    if qat is None:
        raise ToolError("executorch: a QAT program was asked for without a QAT request")
    return qat_xnnpack(bundle.module, tuple(bundle.example_inputs), qat.train, epochs=qat.epochs, lr=qat.lr,
                       seed=qat.seed, calibration=request.calibration)
