"""torch.export and PT2E static quantization, shared by the ExecuTorch and LiteRT runtimes.

Both runtimes quantize the same way (export -> prepare_pt2e with the backend's quantizer -> calibrate -> convert_pt2e);
only the quantizer and what happens to the converted graph differ. torch is imported inside functions so importing
this module stays cheap.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from edgepack.data.dataset import feed_array
from edgepack.errors import UsageError, one_line

if TYPE_CHECKING:
    import torch

    from edgepack.data.dataset import ArrayDataset
    from edgepack.models.bundle import ModelBundle

# "mylib::op", "aten::sort.values", "aten.cumsum.default", "mylib.op.default": how torch, ExecuTorch and
# litert-torch name operators in their messages.
_OP_PATTERN = re.compile(r"\b([A-Za-z_]\w*::[\w.]+|aten\.\w+(?:\.\w+)?|\w+\.\w+\.default)\b")


def calibration_batches(bundle: ModelBundle, calibration: ArrayDataset | None,
                        runtime: str) -> Iterator[tuple[torch.Tensor, ...]]:
    """Calibration samples in chunks of the exported batch size: the exported graph is guarded on that shape."""
    import torch

    if calibration is None or len(calibration) == 0:
        raise UsageError(f"{runtime} int8 export needs calibration data; pass a calibration dataset "
                         "(e.g. the model's dataset or a .npz of representative inputs)")
    examples = bundle.example_inputs
    batch = int(examples[0].shape[0])
    if len(calibration.arrays) != len(examples):
        raise UsageError(f"calibration data {calibration.name} holds {len(calibration.arrays)} input array(s); "
                         f"{bundle.name} takes {len(examples)}")
    for array, example in zip(calibration.arrays, examples):
        if tuple(array.shape[1:]) != tuple(example.shape[1:]):
            raise UsageError(f"calibration data {calibration.name} has samples of shape {tuple(array.shape[1:])}; "
                             f"{bundle.name} takes {tuple(example.shape[1:])}")
    if len(calibration) < batch:
        raise UsageError(f"calibration data {calibration.name} has {len(calibration)} samples; "
                         f"{bundle.name} is exported at batch {batch}, so at least {batch} are needed")
    usable = len(calibration) - len(calibration) % batch  # a partial last batch would not match the exported shape
    for start in range(0, usable, batch):
        yield tuple(torch.from_numpy(feed_array(a[start:start + batch])).to(example.dtype)
                    for a, example in zip(calibration.arrays, examples))


def calibration_count(bundle: ModelBundle, calibration: ArrayDataset | None) -> int:
    """How many calibration samples `calibration_batches` feeds (whole batches of the exported size)."""
    batch = int(bundle.example_inputs[0].shape[0])
    n = len(calibration) if calibration is not None else 0
    return n - n % batch


def export_program(bundle: ModelBundle, runtime: str) -> Any:
    """torch.export the bundle at its example inputs; a model torch.export rejects is a usage error."""
    import torch

    try:
        with torch.no_grad():
            return torch.export.export(bundle.module.eval(), tuple(bundle.example_inputs))
    except Exception as exc:  # torch.export raises many types; all mean "this model can't be captured"
        raise rejection(runtime, "torch.export", exc) from exc


def quantize_static(bundle: ModelBundle, quantizer: Any, calibration: ArrayDataset | None, runtime: str,
                    fold_quantize: bool = True) -> torch.fx.GraphModule:
    """Export, insert observers with `quantizer`, calibrate, and convert to a Q/DQ graph module."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batches = list(calibration_batches(bundle, calibration, runtime))  # validate before the slow export
    graph = keep_integer_arithmetic(export_program(bundle, runtime).module())
    try:
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for batch in batches:
                prepared(*batch)
        return convert_pt2e(prepared, fold_quantize=fold_quantize)
    except Exception as exc:
        rejected = rejection(runtime, "PT2E quantization", exc)
        raise QuantizationRejected(str(rejected)) from exc


class QuantizationRejected(UsageError):
    """The quantizer could not annotate, calibrate or convert the captured graph (the capture itself worked)."""


WHOLE_GRAPH = "PT2E static int8, whole graph"
WEIGHTED_LAYERS_ONLY = "PT2E static int8 on Linear and Conv layers only (whole-graph quantization failed)"


def quantize_with_fallback(bundle: ModelBundle, make_quantizer: Callable[[bool], Any],
                           calibration: ArrayDataset | None, runtime: str,
                           fold_quantize: bool = True) -> tuple[torch.fx.GraphModule, Any, str, list[str]]:
    """Quantize the whole graph; when the quantizer rejects it (an op it annotates but cannot handle, e.g. integer
    index arithmetic or a recurrent cell), quantize only the Linear and Conv layers and leave every other op float.

    `make_quantizer(weighted_only)` builds the runtime's quantizer either way. Returns (graph, the quantizer used,
    the path taken, notes saying why when it fell back)."""
    quantizer = make_quantizer(False)
    try:
        return quantize_static(bundle, quantizer, calibration, runtime, fold_quantize), quantizer, WHOLE_GRAPH, []
    except QuantizationRejected as whole:
        quantizer = make_quantizer(True)
        try:
            graph = quantize_static(bundle, quantizer, calibration, runtime, fold_quantize)
        except QuantizationRejected:
            raise whole from None
        reason = str(whole).split("rejected the model: ", 1)[-1]
        return graph, quantizer, WEIGHTED_LAYERS_ONLY, [
            f"whole-graph int8 quantization was rejected ({reason}); only Linear and Conv layers were quantized, "
            f"every other op runs in float"]


def keep_float_by_filter(quantizer: Any, bundle: ModelBundle, keep: tuple[str, ...]) -> Any:
    """Leave the modules named in `keep` (and everything inside them) unannotated, so their weights and ops stay
    float, through the quantizer's filter function (XNNPACKQuantizer refuses `set_module_name(name, None)`); the
    filter applies to every configuration, the type-restricted fallback included."""
    if not keep:
        return quantizer
    from torchao.quantization.pt2e.quantizer.utils import get_module_name_filter

    from edgepack.rescue import weighted_layers_under

    for name in keep:
        weighted_layers_under(bundle.module, name)  # an unknown name or one without layers is a UsageError
    inside = [get_module_name_filter(name) for name in keep]
    return quantizer.set_filter_function(lambda node: not any(f(node) for f in inside))


def weighted_layer_types() -> tuple[type, ...]:
    """The module types `quantize_with_fallback` quantizes when the whole graph cannot be."""
    from torch import nn

    return (nn.Linear, nn.Conv1d, nn.Conv2d)


def keep_integer_arithmetic(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Move integer add/mul with a Python-number operand to their .Scalar overloads, in place.

    XNNPACK's quantizer (transform_for_annotation) turns the number operand of every add.Tensor/mul.Tensor into a
    float32 tensor; on integer arithmetic (position ids, the index tensors of a Hugging Face attention mask) the
    result becomes float and the graph then fails at `aten.index` ("tensors used as indices must be long"). The
    .Scalar overloads compute the same and are left alone.
    """
    import torch

    overloads = {torch.ops.aten.add.Tensor: torch.ops.aten.add.Scalar,
                 torch.ops.aten.mul.Tensor: torch.ops.aten.mul.Scalar}
    changed = False
    for node in graph.graph.nodes:
        value = node.meta.get("val")
        if (node.op == "call_function" and node.target in overloads and len(node.args) == 2
                and isinstance(node.args[1], (int, float)) and isinstance(value, torch.Tensor)
                and not value.is_floating_point()):
            node.target = overloads[node.target]
            changed = True
    if changed:
        graph.recompile()
    return graph


def rejection(runtime: str, stage: str, exc: BaseException) -> UsageError:
    """One line saying which stage rejected the model, the operator involved when the message names one, and why."""
    text = str(exc)
    op = _OP_PATTERN.search(text)
    where = _user_code_line(text)
    parts = [f"{runtime}: {stage} rejected the model"]
    if op:
        parts.append(f"at operator {op.group(1)}")
    message = f"{' '.join(parts)}: {one_line(exc, 200)}"
    if where:
        message += f" (in `{where}`)"
    return UsageError(message)


def _user_code_line(text: str) -> str:
    """The source line torch.export blames ("The following call raised this error: File ..., <code>"), if any."""
    marker = "The following call raised this error:"
    if marker not in text:
        return ""
    lines = [line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()]
    if len(lines) >= 2 and lines[0].startswith("File "):
        return lines[1][:120]
    return ""


class Pt2eSimulation:
    """The runtime's PT2E int8 graph (its own quantizer, the same calibration) run in PyTorch, with the Q/DQ pairs
    of chosen layers bypassed: what that int8 program computes with those layers kept in float, without lowering a
    program per guess. Lowering is what an ExecuTorch export spends its time on (over a minute for a mid-size
    model), so a sensitivity pass ranks every layer here and builds only the sets worth building.

    It approximates the lowered program: the delegate's kernels round differently, and keeping a layer in float in
    a real export also leaves its output unquantized when no later op asks for it; a rescue therefore ships only a
    program it built and judged through the runtime."""

    def __init__(self, graph: torch.fx.GraphModule, shapes: list[tuple[int, ...]], runtime: str) -> None:
        self.graph, self.shapes = graph, shapes
        self.description = (f"{runtime}'s int8 simulation (its quantizer's int8 graph run in PyTorch, that layer's "
                            f"quantize/dequantize pairs bypassed; scores and effects are the simulation's, against its "
                            f"own plain int8)")
        self.layer_nodes = _weighted_nodes_by_layer(graph)

    @contextlib.contextmanager
    def keeping(self, keep: tuple[str, ...]) -> Iterator[Callable[[Sequence[Any]], list[Any]]]:
        """Within the block, a session (numpy inputs to numpy outputs, like a loaded artifact's) with the layers
        under `keep` in float: their weights and input activations skip quantization. The graph is rewired once on
        entry and put back on exit, so every call inside (parity, then accuracy) runs the same program."""
        import numpy as np
        import torch
        from torch.utils._pytree import tree_leaves

        from edgepack.rescue import is_within
        from edgepack.runtimes._fixed_batch import run_in_chunks

        graph = self.graph

        def run_one(arrays: list[Any]) -> list[Any]:
            with torch.no_grad():
                out = graph(*[torch.from_numpy(a) for a in arrays])
            return [np.asarray(t.detach().numpy(), dtype=np.float32) for t in tree_leaves(out)]

        def session(inputs: Sequence[Any]) -> list[Any]:
            return run_in_chunks(run_one, inputs, self.shapes, "the int8 simulation")

        kept = [node for layer, nodes in self.layer_nodes.items() if is_within(layer, keep) for node in nodes]
        saved = [(node, node.args) for node in kept]
        try:
            for node in kept:
                node.args = tuple(_unquantized(arg) for arg in node.args)
            if kept:
                graph.recompile()
            yield session
        finally:
            for node, args in saved:
                node.args = args
            if kept:
                graph.recompile()


SIMULATION_BATCH = 32  # samples per call of the simulation: a batch-1 graph spends its time in Python per sample


def int8_simulation(bundle: ModelBundle, make_quantizer: Callable[[bool], Any], calibration: ArrayDataset | None,
                    runtime: str) -> Pt2eSimulation:
    """The simulation of the int8 program `make_quantizer` gives (whole graph, or its Conv/Linear fallback),
    captured at a batch of SIMULATION_BATCH so that scoring a layer takes one call per 32 samples; a model that
    cannot be captured at that batch (a batch size written into its code) is simulated at its own."""
    examples = bundle.example_inputs
    batch = min(SIMULATION_BATCH, calibration_count(bundle, calibration))
    if int(examples[0].shape[0]) == 1 and batch > 1:
        wide = bundle.replace(example_inputs=tuple(x.expand(batch, *x.shape[1:]).clone() for x in examples))
        try:
            graph, _, _, _ = quantize_with_fallback(wide, make_quantizer, calibration, runtime, fold_quantize=False)
            return Pt2eSimulation(graph, [tuple(x.shape) for x in wide.example_inputs], runtime)
        except UsageError:
            pass
    graph, _, _, _ = quantize_with_fallback(bundle, make_quantizer, calibration, runtime, fold_quantize=False)
    return Pt2eSimulation(graph, [tuple(x.shape) for x in examples], runtime)


_WEIGHTED_OPS = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear")


def _weighted_nodes_by_layer(graph: torch.fx.GraphModule) -> dict[str, list[Any]]:
    """The conv/linear calls of the graph by the module that made them (nn_module_stack's innermost entry)."""
    import torch

    ops = {getattr(torch.ops.aten, name) for name in _WEIGHTED_OPS}  # every overload (conv1d.padding, ...)
    found: dict[str, list[Any]] = {}
    for node in graph.graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if node.op == "call_function" and getattr(node.target, "overloadpacket", None) in ops and stack:
            found.setdefault(list(stack.values())[-1][0], []).append(node)
    return found


def _unquantized(arg: Any) -> Any:
    """The value before a quantize -> dequantize pair, for an argument that is one; the argument itself otherwise."""
    import torch

    if not isinstance(arg, torch.fx.Node) or not _is_quant_op(arg, "dequantize"):
        return arg
    source = arg.args[0]
    if isinstance(source, torch.fx.Node) and _is_quant_op(source, "quantize"):
        return source.args[0]
    return arg


def _is_quant_op(node: Any, kind: str) -> bool:
    return (node.op == "call_function" and getattr(node.target, "namespace", "") == "quantized_decomposed"
            and str(getattr(node.target, "_opname", "")).startswith(f"{kind}_per_"))
