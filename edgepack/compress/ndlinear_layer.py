"""NdLinear: a Linear(m*n -> p*q) replaced by one small Linear per axis of the input viewed as an (m, n) grid.

Applying Linear(n -> q) along the last axis and Linear(m -> p) along the other is the linear map W = A (x) B
(Kronecker product, A: p x m, B: q x n), so a trained layer converts by the nearest Kronecker product of its weight
(Van Loan & Pitsianis: rearrange W into R with R[(a, i), (b, j)] = W[(a, b), (i, j)]; the best A (x) B is the best
rank-1 approximation of R). The layer is built from nn.Linear and reshapes only, so MAC counters and exporters see
ordinary ops. The pass that swaps layers for it is in ndlinear.py.
"""

from __future__ import annotations

import math

import torch
from torch import nn


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


def factor_pair(size: int) -> tuple[int, int] | None:
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
        if layer.bias is not None and new.bias is not None:
            new.bias.copy_(layer.bias)
    return new.to(layer.weight.device, layer.weight.dtype), fit
