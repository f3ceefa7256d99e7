"""ai-edge-quantizer on a converted fp32 .tflite: LiteRT's second int8 path and its mixed-precision path.

litert-torch's PT2E path quantizes the PyTorch graph before conversion; when it rejects a model, the fp32 file is
quantized after conversion instead. Keeping layers in float needs this path too: litert-torch quantizes a layer left
float between int8 neighbours all the same, while ai-edge-quantizer leaves alone the ops its recipe names.

The converted file's tensor names carry the PyTorch module path each tensor came from (torch.export's module stack,
as `pkg.Root/pkg.Type_attr/...`), which is how a module name is found among the file's ops.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edgepack.errors import ToolError, UsageError, one_line
from edgepack.quiet import captured

if TYPE_CHECKING:
    import numpy as np


# TFLite ops that carry a layer's weights: what keeping a Conv/Linear module in float leaves unquantized
WEIGHTED_OPS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "CONV_3D", "TRANSPOSE_CONV", "CONV_3D_TRANSPOSE",
                          "FULLY_CONNECTED", "BATCH_MATMUL"})


@dataclass
class CalibratedModel:
    """A converted fp32 .tflite and its tensors' ranges over the calibration samples. Every int8 file made from it
    starts here, so a rescue trying many sets of float layers calibrates once: the ranges of the full int8 recipe
    cover every tensor a narrower recipe quantizes."""

    fp32: bytes
    ranges: Any  # ai-edge-quantizer's calibration result: tensor name -> min/max
    samples: int  # calibration samples the ranges were taken over
    # the module last asked about, its module names and each weighted op's owners (op_owners): computed once
    _owners: tuple[Any, set[str], list[tuple[str, list[str]]]] | None = field(default=None, repr=False)

    def quantize(self, module: Any, keep: Sequence[str]) -> bytes:
        """The static int8 file (int8 weights, activations and I/O) with the ops of the modules under `keep` left in
        float, checked to load on TFLite's own kernels. A name under which no weighted op is found is a UsageError:
        keeping it would change nothing."""
        from ai_edge_quantizer import quantizer, recipe

        plan = list(recipe.static_wi8_ai8())
        for scope in self.float_scopes(module, keep):
            # a later entry wins for the scopes it matches; scopes are matched with re.search
            plan.append({"regex": f"^{re.escape(scope)}$", "operation": "*", "algorithm_key": "no_quantize"})
        try:
            with captured():
                result = quantizer.Quantizer(self.fp32, plan).quantize(self.ranges)
            model = bytes(result.quantized_model or b"")
            load_without_delegates(model)
        except Exception as exc:
            raise ToolError(f"ai-edge-quantizer could not quantize the fp32 .tflite: {one_line(exc)}") from exc
        return model

    def float_scopes(self, module: Any, keep: Sequence[str]) -> list[str]:
        """The scopes (output tensor names, as ai-edge-quantizer matches them) of the weighted ops that belong to the
        modules under `keep` (see `op_owners`)."""
        from edgepack.rescue import is_within

        if not keep:
            return []
        if self._owners is None or self._owners[0] is not module:
            self._owners = (module, {name for name, _ in module.named_modules()},
                            op_owners(weighted_ops(self.fp32), module))
        _, names, owners = self._owners
        scopes: list[str] = []
        for name in keep:
            if name not in names:
                raise UsageError(f"the model has no module named {name!r}")
            found = [scope for scope, named in owners if any(is_within(owner, (name,)) for owner in named)]
            if not found:
                raise UsageError(f"no weighted op of the converted .tflite comes from module {name!r}; "
                                 f"keeping it in float would change nothing")
            scopes += [scope for scope in found if scope not in scopes]
        return scopes


def op_owners(ops: list[WeightedOp], module: Any) -> list[tuple[str, list[str]]]:
    """(scope, the modules it belongs to) of each weighted op. An op's constants carry the places of every PyTorch op
    fused into it (a convolution's bias may also name the previous layer's activation), so an op belongs to the
    Conv/Linear layer among those places. When they name several (constant folding merges the places of a query,
    key and value projection) or none (weights folded with a BatchNorm or attention's scale carry only that module's
    place, or their parent's), the op belongs to the layer among those named, or under the modules named, whose
    weights its own are up to a factor per output channel; failing that, to the only layer under them, or the first
    layer its output names. An op with no layer at all (weights of another module type) belongs to every module it
    names."""
    from edgepack.rescue import is_within, quantizable_layers

    places = ModulePlaces(module)
    modules = dict(module.named_modules())
    layers = [name for name, _ in quantizable_layers(module)]
    owners = []
    for op in ops:
        named = [n for n in (places.module_of(part) for constant in op.constants for part in constant.split(";"))
                 if n is not None]
        outputs = [n for n in (places.module_of(part) for part in op.scope.split(";")) if n is not None]
        ours = [layer for layer in layers if any(is_within(n, (layer,)) for n in named)]
        if len(ours) != 1:
            pool = ours or [layer for layer in layers if any(is_within(layer, (n,)) for n in [*named, *outputs] if n)]
            alike = [layer for layer in pool
                     if op.weight is not None and _same_channels(op.weight, op.out_axis, modules[layer])]
            ours = alike or (pool if len(pool) == 1 else ours)
        if not ours:
            ours = [layer for n in outputs for layer in layers if is_within(n, (layer,))][:1]
        owners.append((op.scope, ours or [*named, *outputs]))
    return owners


def _same_channels(weight: np.ndarray, out_axis: int, layer: Any) -> bool:
    """Whether a file's weight is a layer's up to one factor per output channel: each channel's sorted magnitudes,
    over their largest, agree (layouts differ between PyTorch and TFLite; the values of a channel do not)."""
    import numpy as np

    def profile(w: np.ndarray, axis: int) -> np.ndarray:
        rows = np.sort(np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).astype(np.float64)), axis=1)
        return rows / np.maximum(rows[:, -1:], 1e-30)

    theirs = layer.weight.detach().cpu().numpy()
    axis = 1 if "Transpose" in type(layer).__name__ else 0  # ConvTranspose: (in, out / groups, *kernel)
    if weight.size != theirs.size or weight.shape[out_axis] != theirs.shape[axis]:
        return False
    return bool(np.allclose(profile(weight, out_axis), profile(theirs, axis), atol=1e-4))


def calibrate(fp32: bytes, arrays: Sequence[np.ndarray], samples: int, batch: int) -> CalibratedModel:
    """Run the fp32 file over the first `samples` calibration samples (one array per model input), fed in batches of
    its exported size, and keep the ranges."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    interpreter = Interpreter(model_content=fp32)
    signature = next(iter(interpreter.get_signature_list()))
    dtypes = {name: detail["dtype"]
              for name, detail in interpreter.get_signature_runner(signature).get_input_details().items()}
    names = sorted(dtypes, key=arg_position)
    if len(arrays) != len(names) or samples == 0:
        raise ToolError(f"calibration gives {len(arrays)} input(s) and {samples} sample(s); the model takes "
                        f"{len(names)} input(s)")
    # in the file's own input types: token ids come as int64 and the converted file takes int32
    feeds = [{n: np.ascontiguousarray(a[i:i + batch], dtype=dtypes[n]) for n, a in zip(names, arrays)}
             for i in range(0, samples, batch)]
    with captured():
        qt = quantizer.Quantizer(fp32, recipe.static_wi8_ai8())
        ranges = qt.calibrate({signature: feeds}, num_threads=1)
    return CalibratedModel(fp32=fp32, ranges=ranges, samples=samples)


@dataclass(frozen=True)
class WeightedOp:
    """A TFLite op that carries a layer's weights."""

    kind: str  # CONV_2D, FULLY_CONNECTED, ...
    scope: str  # its output tensor names, as ai-edge-quantizer matches ops
    constants: tuple[str, ...]  # names of its constant inputs
    weight: np.ndarray | None  # its largest constant of two or more dimensions
    out_axis: int  # the weight's output-channel axis


def weighted_ops(model: bytes) -> list[WeightedOp]:
    """Every weighted op in the file's subgraphs."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as fb

    # every builtin op's name (ai-edge-quantizer's own table lists only the ops it quantizes)
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    flat = fb.read_model(model)
    found = []
    for subgraph in flat.subgraphs:
        for op in subgraph.operators:
            kind = names.get(flat.operatorCodes[op.opcodeIndex].builtinCode, "")
            if kind not in WEIGHTED_OPS:
                continue
            constants = [(subgraph.tensors[i], fb.get_tensor_data(subgraph.tensors[i], flat.buffers))
                         for i in op.inputs if i >= 0]
            constants = [(tensor, data) for tensor, data in constants if data is not None]
            arrays = [data for _, data in constants if data.ndim >= 2]
            found.append(WeightedOp(kind=kind, scope=fb.get_op_scope(op, subgraph.tensors),
                                    constants=tuple(fb.get_tensor_name(tensor) for tensor, _ in constants),
                                    weight=max(arrays, key=lambda a: a.size) if arrays else None,
                                    out_axis=3 if kind == "DEPTHWISE_CONV_2D" else 0))  # [1, kh, kw, out]
    return found


class ModulePlaces:
    """Which module a place in a converted file's tensor names is. litert-torch writes torch.export's module stack:
    the root's qualified type, then `/qualified type_attribute` for each module called on the way down, where the
    attribute is the last part of the module's name (`MobileViTLayer_2` for `encoder.layer.2`); a container that is
    never called (a ModuleList) leaves no step. A place is therefore walked step by step, each step matched to the
    nearest module under the previous one whose own step it is."""

    def __init__(self, module: Any) -> None:
        self._root = _qualified(module)
        self._by_step: dict[str, list[str]] = {}
        for name, sub in module.named_modules():
            if name:
                self._by_step.setdefault(f"{_qualified(sub)}_{name.rpartition('.')[2]}", []).append(name)
        self._known: dict[str, str | None] = {}

    def module_of(self, place: str) -> str | None:
        """The module's name ("" for the root); None when the place is not one of this model's."""
        place = place.strip()
        if place not in self._known:
            self._known[place] = self._walk(place.split("/"))
        return self._known[place]

    def _walk(self, steps: list[str]) -> str | None:
        if not steps or steps[0] != self._root:
            return None
        current = ""
        for step in steps[1:]:
            under = [n for n in self._by_step.get(step, ()) if not current or n.startswith(current + ".")]
            if not under:
                return None
            current = min(under, key=lambda n: n.count("."))
        return current


def _qualified(module: Any) -> str:
    return f"{type(module).__module__}.{type(module).__qualname__}"


def arg_position(name: str) -> int:
    """litert-torch names a signature's inputs args_0, args_1, ... in the forward's order."""
    digits = re.findall(r"\d+", name)
    return int(digits[-1]) if digits else 0


def load_without_delegates(model: bytes) -> None:
    """Open and prepare a .tflite with TFLite's built-in kernels only (no XNNPACK): a file they refuse is not an
    artifact."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    Interpreter(model_content=model,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES).allocate_tensors()
