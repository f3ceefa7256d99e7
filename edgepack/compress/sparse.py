"""Unstructured magnitude pruning: the smallest weights are set to zero and stay in the dense tensors.

torch.nn.utils.prune computes the masks; prune.remove folds them into the weights so the model has no pruning hooks
left and exports like any other. The record carries the sparsity measured afterwards, per layer and overall.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from edgepack.compress import moduletree
from edgepack.compress.apply import PassContext, PassResult
from edgepack.compress.configs import SparseConfig

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
DENSE_NOTE = ("unstructured sparsity: the zeros stay in dense weight tensors, so parameter count, MACs, artifact size "
              "and latency on dense runtimes (ONNX Runtime, ExecuTorch XNNPACK, LiteRT) do not improve; only a sparse "
              "kernel or compression of the file would use them")


def sparsify(module: nn.Module, config: SparseConfig, ctx: PassContext) -> PassResult:
    root = moduletree.user_root(module)
    targets, skipped = moduletree.select(root, PRUNABLE, layers=config.layers, keep_classifier=config.keep_classifier,
                                option="sparse layers")
    if not targets:
        return PassResult(module, skipped=skipped, notes=["no Conv/Linear layer selected; nothing zeroed", DENSE_NOTE])
    if config.global_pruning:
        torch_prune.global_unstructured([(m, "weight") for _, m in targets],
                                        pruning_method=torch_prune.L1Unstructured, amount=config.ratio)
    else:
        for _, m in targets:
            torch_prune.l1_unstructured(m, "weight", amount=config.ratio)
    for _, m in targets:
        torch_prune.remove(m, "weight")  # bake the mask in: plain parameters, no forward pre-hooks

    changes: list[dict[str, Any]] = []
    zeros = total = 0
    for name, m in targets:
        z, n = int((m.weight == 0).sum()), m.weight.numel()
        zeros, total = zeros + z, total + n
        changes.append({"layer": name, "type": type(m).__name__, "weights": n, "zeros": z,
                        "sparsity": round(z / n, 6)})
    all_zero = sum(int((p == 0).sum()) for p in module.parameters())
    all_params = sum(p.numel() for p in module.parameters())
    notes = [f"measured sparsity: {zeros / total:.4f} of the {total} weights in the {len(targets)} pruned layers, "
             f"{all_zero / all_params:.4f} of all {all_params} parameters", DENSE_NOTE]
    return PassResult(module, changes=changes, skipped=skipped, notes=notes)


@torch.no_grad()
def sparsity(module: nn.Module) -> float:
    """Fraction of all parameters that are exactly zero."""
    params = list(module.parameters())
    return sum(int((p == 0).sum()) for p in params) / max(1, sum(p.numel() for p in params))
