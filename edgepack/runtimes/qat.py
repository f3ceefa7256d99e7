"""Quantization-aware training with PT2E, for the two INT8 paths edgepack ships:

- ExecuTorch/XNNPACK: XNNPACKQuantizer (s8 per-channel weights, s8 activations); `qat_xnnpack` returns the converted
  program, which the ExecuTorch runtime lowers to a .pte.
- ONNX Runtime: X86InductorQuantizer (s8 per-channel weights, u8 activations, the scheme ONNX Runtime fuses into
  QLinearConv on x86); `qat_onnx` exports the converted module with `torch.onnx.export(dynamo=True)`, which writes
  the quantize/dequantize ops as QuantizeLinear/DequantizeLinear: a QDQ model ONNX Runtime runs as is.

The model is fine-tuned on labelled training data with fake quantization in the graph (conv+batch-norm folded the
way inference will see it); the observers start from a calibration pass and are frozen for the last epoch, so the
weights settle on the scales that ship. `compare_ptq_qat` builds both kinds of artifact through the runtimes.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from edgepack.data.dataset import ArrayDataset
from edgepack.errors import MissingDependency, ToolError, UsageError
from edgepack.fileio import atomic_path
from edgepack.training import predict, set_eval, topk_accuracy, train_classifier

if TYPE_CHECKING:
    from torch.export import ExportedProgram
    from torch.fx import GraphModule

    from edgepack.models.bundle import ModelBundle

ONNX_SCHEME = "PT2E X86InductorQuantizer, QDQ: s8 per-channel symmetric weights, u8 per-tensor activations"
CALIBRATION_SAMPLES = 256  # default calibration: the first inputs of the training data


@dataclass(frozen=True)
class QATConfig:
    epochs: int = 3
    lr: float = 1e-4  # fine-tuning from trained weights: large steps undo what the float model learned
    batch_size: int = 64
    seed: int = 0
    freeze_observers_last_epoch: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"qat {name} must be a whole number >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise UsageError(f"qat seed must be a whole number, got {self.seed!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) \
                or self.lr <= 0:
            raise UsageError(f"qat lr must be > 0, got {self.lr!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def qat_xnnpack(module: nn.Module, example_inputs: tuple[torch.Tensor, ...], train: ArrayDataset, epochs: int = 3,
                lr: float = 1e-4, seed: int = 0, calibration: ArrayDataset | None = None, *,
                batch_size: int = 64) -> ExportedProgram:
    """QAT for ExecuTorch/XNNPACK: the converted program at the shape of `example_inputs`, ready for
    `to_edge_transform_and_lower` with the XnnpackPartitioner (the ExecuTorch runtime does that)."""
    config = QATConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    converted = _quantize(module, example_inputs, _xnnpack_quantizer(), train, calibration, config)
    return torch.export.export(converted, example_inputs)


def qat_onnx(module: nn.Module, example_inputs: tuple[torch.Tensor, ...], train: ArrayDataset, path: Path,
             epochs: int = 3, lr: float = 1e-4, seed: int = 0, calibration: ArrayDataset | None = None, *,
             batch_size: int = 64, input_names: Sequence[str] | None = None) -> Path:
    """QAT for ONNX Runtime; writes a QDQ .onnx (dynamic batch) atomically to `path` and returns it."""
    config = QATConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    converted = _quantize(module, example_inputs, _x86_quantizer(), train, calibration, config)
    return write_onnx(converted, example_inputs, path, input_names)


def write_onnx(converted: GraphModule, example_inputs: tuple[torch.Tensor, ...], path: Path,
               input_names: Sequence[str] | None = None) -> Path:
    """Export a PT2E-converted module to a single-file QDQ ONNX model with a dynamic batch axis."""
    try:
        import onnx
    except ImportError:
        raise MissingDependency("writing ONNX needs onnx and onnxscript (pip install 'edgepack[onnx]')") from None
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(converted, example_inputs, dynamo=True, external_data=False, verbose=False,
                                input_names=list(input_names) if input_names else None,
                                dynamic_shapes=tuple({0: batch} for _ in example_inputs))
    if program is None:  # the dynamo exporter always returns a program; None only comes from the legacy path
        raise ToolError("torch.onnx.export returned no ONNX program for the QAT model")
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(program.model_proto, str(tmp))
    return path


def compare_ptq_qat(bundle: ModelBundle, train: ArrayDataset, test: ArrayDataset, out_dir: Path, *,
                    runtimes: Sequence[str] = ("onnxruntime", "executorch"), epochs: int = 3, lr: float = 1e-4,
                    seed: int = 0, calibration: ArrayDataset | None = None,
                    threads: int = 1) -> list[dict[str, Any]]:
    """Held-out top-1 of each runtime's shipping INT8 artifacts, post-training quantized and QAT-trained.

    Both artifacts are built by the runtime's own `export` (so PTQ is whatever that runtime ships: ONNX Runtime's
    quantize_static, PT2E calibration for ExecuTorch) and run through its own session on this host. Rows:
    {runtime, method ("fp32" | "ptq" | "qat"), scheme, top1, path}; the first row is the eager model.
    """
    from edgepack.runtimes import get_runtime
    from edgepack.runtimes.base import ExportRequest, QatRequest, check_export_request

    if test.labels is None:
        raise UsageError(f"{test.name} has no labels; comparing accuracy needs labelled data")
    QATConfig(epochs=epochs, lr=lr, seed=seed)  # refuse bad settings before any slow export
    calibration = calibration if calibration is not None else train.take(CALIBRATION_SAMPLES)
    qat = QatRequest(train, epochs, lr=lr, seed=seed)
    eager_top1 = topk_accuracy(predict(bundle.module, test.inputs), test.labels, 1)
    rows: list[dict[str, Any]] = [{"runtime": "eager", "method": "fp32", "scheme": "float32", "path": None,
                                   "top1": eager_top1}]
    out = Path(out_dir)
    for name in runtimes:
        runtime = get_runtime(name)
        check_export_request(runtime, "int8", qat)
        fp32 = runtime.export(bundle, ExportRequest("fp32", out, calibration))
        # post-training int8 derives from the fp32 file only where the runtime says so; QAT trains the eager model
        ptq_parent = fp32 if runtime.int8_from == "fp32" else None
        built = [("fp32", fp32),
                 ("ptq", runtime.export(bundle, ExportRequest("int8", out, calibration, parent=ptq_parent))),
                 ("qat", runtime.export(bundle, ExportRequest("int8", out, calibration, qat=qat)))]
        for method, artifact in built:
            logits = runtime.load(Path(artifact.path), threads)([test.inputs])[0]
            rows.append({"runtime": name, "method": method, "scheme": artifact.scheme, "path": artifact.path,
                         "top1": topk_accuracy(logits, test.labels, 1)})
    return rows


def _quantize(module: nn.Module, example_inputs: tuple[torch.Tensor, ...], quantizer: Any, train: ArrayDataset,
              calibration: ArrayDataset | None, config: QATConfig) -> GraphModule:
    """Export with a dynamic batch, insert fake quantizers, calibrate, train, convert to a Q/DQ graph module."""
    from torchao.quantization.pt2e import (
        allow_exported_model_train_eval,
        disable_observer,
        move_exported_model_to_eval,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    if len(example_inputs) != 1:
        raise UsageError(f"QAT trains on one input array; this model takes {len(example_inputs)} inputs")
    if train.labels is None or len(train) == 0:
        raise UsageError(f"{train.name} has no labels; quantization-aware training needs labelled data")
    calibration = calibration if calibration is not None and len(calibration) else train.take(CALIBRATION_SAMPLES)
    model = set_eval(copy.deepcopy(module))
    # export at a batch of 2+ so the batch axis stays symbolic (sizes 0/1 would be specialised)
    sample = torch.from_numpy(np.ascontiguousarray(train.inputs[:2], dtype=np.float32))
    if len(sample) < 2:
        sample = torch.cat([sample, sample])
    with torch.no_grad():
        classes = int(model(sample).shape[-1])
    if train.labels.min() < 0 or train.labels.max() >= classes:
        raise UsageError(f"{train.name} has labels outside the model's {classes} classes (0..{classes - 1})")
    graph = torch.export.export(model, (sample,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},)).module()
    prepared = prepare_qat_pt2e(graph, quantizer)
    allow_exported_model_train_eval(prepared)  # lets the shared training loop call .train()/.eval()
    prepared.eval()
    with torch.no_grad():  # observers start from the deployment-time distribution, with eval-mode batch norm
        for start in range(0, len(calibration), config.batch_size):
            prepared(torch.from_numpy(np.ascontiguousarray(calibration.inputs[start:start + config.batch_size],
                                                           dtype=np.float32)))
    last = config.epochs - 1 if config.freeze_observers_last_epoch and config.epochs > 1 else None

    def on_epoch(epoch: int, _loss: float) -> None:
        if epoch == last:
            prepared.apply(disable_observer)

    train_classifier(prepared, train, config.epochs, lr=config.lr, batch_size=config.batch_size, seed=config.seed,
                     on_epoch=on_epoch)
    prepared.eval()
    converted = convert_pt2e(prepared)
    move_exported_model_to_eval(converted)
    for m in converted.modules():  # exporters warn on modules flagged as training
        m.training = False
    return converted


def _xnnpack_quantizer() -> Any:
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
    except ImportError:
        raise MissingDependency("XNNPACK quantization needs executorch (pip install 'edgepack[executorch]')") from None
    return XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_qat=True))


def _x86_quantizer() -> Any:
    try:
        from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as x86
    except ImportError:
        raise MissingDependency("ONNX QAT needs torchao (pip install 'edgepack[executorch]')") from None
    return x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config(is_qat=True))


