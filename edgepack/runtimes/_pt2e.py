"""torch.export and PT2E static quantization, shared by the ExecuTorch and LiteRT runtimes.

Both runtimes quantize the same way (export -> prepare_pt2e with the backend's quantizer -> calibrate -> convert_pt2e);
only the quantizer and what happens to the converted graph differ. torch is imported inside functions so importing
this module stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

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
    if len(bundle.example_inputs) != 1:
        raise UsageError(f"{runtime} int8 calibration feeds one input array, but {bundle.name} takes "
                         f"{len(bundle.example_inputs)} inputs; export it at fp32 instead")
    example = bundle.example_inputs[0]
    batch = int(example.shape[0])
    if tuple(calibration.inputs.shape[1:]) != tuple(example.shape[1:]):
        raise UsageError(f"calibration data {calibration.name} has samples of shape "
                         f"{tuple(calibration.inputs.shape[1:])}; {bundle.name} takes {tuple(example.shape[1:])}")
    if len(calibration) < batch:
        raise UsageError(f"calibration data {calibration.name} has {len(calibration)} samples; "
                         f"{bundle.name} is exported at batch {batch}, so at least {batch} are needed")
    usable = len(calibration) - len(calibration) % batch  # a partial last batch would not match the exported shape
    for start in range(0, usable, batch):
        chunk = calibration.inputs[start:start + batch]
        yield (torch.from_numpy(chunk.astype("float32", copy=False)).to(example.dtype),)


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
    graph = export_program(bundle, runtime).module()
    try:
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for batch in batches:
                prepared(*batch)
        return convert_pt2e(prepared, fold_quantize=fold_quantize)
    except Exception as exc:
        raise rejection(runtime, "PT2E quantization", exc) from exc


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
