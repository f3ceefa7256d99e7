"""NdLinear: a Linear(m*n -> p*q) replaced by one small Linear per axis of the input viewed as an (m, n) grid.

Applying Linear(n -> q) along the last axis and Linear(m -> p) along the other is the linear map W = A (x) B
(Kronecker product, A: p x m, B: q x n), so a trained layer converts by the nearest Kronecker product of its weight
(Van Loan & Pitsianis: rearrange W into R with R[(a, i), (b, j)] = W[(a, b), (i, j)]; the best A (x) B is the best
rank-1 approximation of R). The layer is built from nn.Linear and reshapes only, so MAC counters and exporters see
ordinary ops.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import nn

from edgepack.compress import moduletree
from edgepack.compress.apply import PassContext, PassResult
from edgepack.compress.configs import NdLinearConfig
from edgepack.compress.finetune import require_training_data, train_epochs


class NdLinear(nn.Module):
    """y = (A (x) B) x + bias, computed as Linear(n->q) on the last axis of x.view(m, n), then Linear(m->p)."""

    def __init__(self, in_shape: tuple[int, int], out_shape: tuple[int, int], bias: bool = True) -> None:
        super().__init__()
        (m, n), (p, q) = in_shape, out_shape
        self.in_shape, self.out_shape = (m, n), (p, q)
        self.in_features, self.out_features = m * n, p * q
        self.inner = nn.Linear(n, q, bias=False)  # B, along the last axis
        self.outer = nn.Linear(m, p, bias=False)  # A, along the second-to-last axis
        # one bias per output feature: per-axis biases could only express a structured (rank-limited) bias
        self.bias = nn.Parameter(torch.zeros(p * q)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inner(x.unflatten(-1, self.in_shape))        # (..., m, q)
        h = self.outer(h.transpose(-1, -2)).transpose(-1, -2)  # (..., p, q)
        h = h.flatten(-2)
        return h + self.bias if self.bias is not None else h

    def extra_repr(self) -> str:
        return f"in_shape={self.in_shape}, out_shape={self.out_shape}, bias={self.bias is not None}"

    def weight_matrix(self) -> torch.Tensor:
        """The equivalent dense Linear weight, A (x) B."""
        return torch.kron(self.outer.weight, self.inner.weight)


def factor_pair(size: int) -> Optional[tuple[int, int]]:
    """The most balanced (a, b) with a * b == size and 2 <= a <= b; None for primes (and sizes below 4)."""
    for a in range(math.isqrt(size), 1, -1):
        if size % a == 0:
            return a, size // a
    return None


def nearest_kronecker(weight: torch.Tensor, in_shape: tuple[int, int],
                      out_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(A, B, fit) minimising ||W - A (x) B||_F; fit is the fraction of ||W||_F^2 that A (x) B captures."""
    (m, n), (p, q) = in_shape, out_shape
    w = weight.detach().double().reshape(p, q, m, n)
    r = w.permute(0, 2, 1, 3).reshape(p * m, q * n)
    u, s, vh = torch.linalg.svd(r, full_matrices=False)
    root = s[0].sqrt()
    a = (root * u[:, 0]).reshape(p, m)
    b = (root * vh[0]).reshape(q, n)
    fit = float(s[0] ** 2 / (s**2).sum()) if float((s**2).sum()) > 0 else 1.0
    return a, b, fit


def from_linear(layer: nn.Linear, in_shape: tuple[int, int], out_shape: tuple[int, int]) -> tuple[NdLinear, float]:
    a, b, fit = nearest_kronecker(layer.weight, in_shape, out_shape)
    new = NdLinear(in_shape, out_shape, bias=layer.bias is not None)
    with torch.no_grad():
        new.outer.weight.copy_(a)
        new.inner.weight.copy_(b)
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new.to(layer.weight.device, layer.weight.dtype), fit


def ndlinear(module: nn.Module, config: NdLinearConfig, ctx: PassContext) -> PassResult:
    if config.epochs:
        require_training_data(ctx, f"ndlinear epochs={config.epochs}")
    root = moduletree.user_root(module)
    targets, skipped = moduletree.select(root, (nn.Linear,), layers=config.layers,
                                         keep_classifier=config.keep_classifier, option="ndlinear layers")
    changes: list[dict[str, Any]] = []
    for name, layer in targets:
        refused = moduletree.replacement_refused(root, name)
        reason, shapes = (refused, None) if refused else _plan(layer, config)
        if shapes is None:
            skipped.append({"layer": name, "type": "Linear", "reason": reason})
            continue
        new, fit = from_linear(layer, *shapes)
        moduletree.replace(root, name, new)
        changes.append({"layer": name, "type": "Linear", "in_shape": list(shapes[0]), "out_shape": list(shapes[1]),
                        "params": [_count(layer), _count(new)], "kronecker_fit": round(fit, 6)})
    notes = [f"{len(changes)} Linear layer(s) replaced by NdLinear, initialised by the nearest Kronecker product"]
    if changes and config.epochs:
        losses = train_epochs(module, ctx, epochs=config.epochs, lr=config.lr, seed=config.seed,
                              what="ndlinear fine-tune")
        changes.append({"finetune": losses})
    elif changes:
        notes.append("not fine-tuned (epochs=0): the Kronecker fit alone usually costs accuracy")
    return PassResult(module, changes=changes, skipped=skipped, notes=notes)


def _plan(layer: nn.Linear, config: NdLinearConfig) -> tuple[str, Optional[tuple[tuple[int, int], tuple[int, int]]]]:
    if layer.weight.numel() < config.min_params:
        return f"{layer.weight.numel()} weights < min_params={config.min_params}", None
    in_shape, out_shape = factor_pair(layer.in_features), factor_pair(layer.out_features)
    if in_shape is None or out_shape is None:
        bad = layer.in_features if in_shape is None else layer.out_features
        return f"{bad} features have no factorization m*n with both factors >= 2", None
    return "", (in_shape, out_shape)


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
