"""Unstructured magnitude pruning: the smallest weights are set to zero and stay in the dense tensors.

torch.nn.utils.prune computes the masks; prune.remove folds them into the weights so the model has no pruning hooks
left and exports like any other. The record carries the sparsity measured afterwards, per layer and overall.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from edgepack.compress import base
from edgepack.compress.base import PassConfig, PassContext, PassResult, register
from edgepack.errors import UsageError
from edgepack.records import LayerChange

if TYPE_CHECKING:
    from torch import nn

DENSE_NOTE = ("unstructured sparsity: the zeros stay in dense weight tensors, so parameter count, MACs, artifact size "
              "and latency on dense runtimes (ONNX Runtime, ExecuTorch XNNPACK, LiteRT) do not improve; only a sparse "
              "kernel or compression of the file would use them")


@dataclass(frozen=True)
class SparseConfig(PassConfig):
    """Unstructured magnitude pruning: zeroes the smallest `ratio` of each layer's weights (or of all, `global`).

    The zeros stay in the weight tensors: dense runtimes run exactly as many MACs as before, so this needs an
    explicit `allow_sparse=True` (`--allow-sparse`).
    """

    kind: ClassVar[str] = "sparse"
    primary: ClassVar[str | None] = "ratio"
    metavar: ClassVar[str] = "RATIO|k=v,..."
    help: ClassVar[str] = ("Unstructured magnitude pruning (needs --allow-sparse; dense runtimes get no speed-up "
                           "from it).")
    aliases: ClassVar[Mapping[str, str]] = {"global": "global_pruning"}

    ratio: float
    allow_sparse: bool = False
    global_pruning: bool = False
    keep_classifier: bool = True
    layers: tuple[str, ...] = ()  # only these layers (and those inside them); empty = every Conv/Linear

    def __post_init__(self) -> None:
        k = "sparse"
        base.fraction(k, "ratio", self.ratio, "use e.g. ratio=0.5 to zero half the weights")
        base.flag(k, "allow_sparse", self.allow_sparse)
        if not self.allow_sparse:
            raise UsageError("sparse (unstructured) pruning only zeroes weights: dense runtimes get no smaller or "
                             "faster model; pass --allow-sparse (allow_sparse=true) to run it anyway, or use --prune")
        base.flag(k, "global", self.global_pruning)
        base.flag(k, "keep_classifier", self.keep_classifier)
        base.names(k, "layers", self.layers)


@register(SparseConfig)
def sparsify(module: nn.Module, config: SparseConfig, ctx: PassContext) -> PassResult:
    from torch import nn
    from torch.nn.utils import prune as torch_prune

    from edgepack.compress import moduletree

    root = moduletree.user_root(module)
    targets, skipped = moduletree.select(root, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d), layers=config.layers,
                                         keep_classifier=config.keep_classifier, option="sparse layers")
    if not targets:
        return PassResult(module, skipped=tuple(skipped),
                          notes=("no Conv/Linear layer selected; nothing zeroed", DENSE_NOTE))
    if config.global_pruning:
        torch_prune.global_unstructured([(m, "weight") for _, m in targets],
                                        pruning_method=torch_prune.L1Unstructured, amount=config.ratio)
    else:
        for _, m in targets:
            torch_prune.l1_unstructured(m, "weight", amount=config.ratio)
    for _, m in targets:
        torch_prune.remove(m, "weight")  # bake the mask in: plain parameters, no forward pre-hooks

    changes = []
    zeros = total = 0
    for name, m in targets:
        weight = m.get_parameter("weight")
        z, n = int((weight == 0).sum()), int(weight.numel())
        zeros, total = zeros + z, total + n
        changes.append(LayerChange(layer=name, type=type(m).__name__, weights=n, zeros=z, sparsity=round(z / n, 6)))
    all_zero = sum(int((p == 0).sum()) for p in module.parameters())
    all_params = sum(p.numel() for p in module.parameters())
    measured = (f"measured sparsity: {zeros / total:.4f} of the {total} weights in the {len(targets)} pruned layers, "
                f"{all_zero / all_params:.4f} of all {all_params} parameters")
    notes = (measured, DENSE_NOTE)
    return PassResult(module, changes=tuple(changes), skipped=tuple(skipped), notes=notes)


def sparsity(module: nn.Module) -> float:
    """Fraction of all parameters that are exactly zero."""
    import torch

    with torch.no_grad():
        params = list(module.parameters())
        return sum(int((p == 0).sum()) for p in params) / max(1, sum(p.numel() for p in params))
