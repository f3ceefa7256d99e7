"""Low-rank factorization by truncated SVD.

Linear(in, out)          -> Sequential(Linear(in, r, bias=False), Linear(r, out, bias))
Conv2d(in, out, k x k)   -> Sequential(Conv2d(in, r, k x k, same stride/padding, bias=False), Conv2d(r, out, 1x1, bias))

The conv form comes from the SVD of the kernel reshaped to (out, in*k*k). The singular values are split evenly
(sqrt(S) into each factor) so neither factor has an extreme scale, which later INT8 quantization would suffer from.
A layer is only replaced when the factors hold fewer parameters: r < out*in/(out+in) for Linear,
r < out*in*k*k/(in*k*k + out) for conv.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from edgepack.compress import moduletree
from edgepack.compress.apply import PassContext, PassResult
from edgepack.compress.configs import LowRankConfig

SPECTRUM_VALUES = 64  # singular values kept in the record, normalised by the largest


def choose_rank(singular_values: torch.Tensor, config: LowRankConfig) -> int:
    """The rank a config asks for, given a layer's singular values (descending)."""
    full = len(singular_values)
    if config.rank is not None:
        return config.rank
    if config.ratio is not None:  # fraction of the full rank that is cut
        return max(1, int(full * (1.0 - config.ratio) + 0.5))
    energy = singular_values.double() ** 2
    cumulative = torch.cumsum(energy, 0) / energy.sum()
    # smallest r whose leading singular values hold `energy` of the total (tolerance for float round-off at 1.0)
    return min(full, int(torch.searchsorted(cumulative, torch.tensor(config.energy - 1e-12, dtype=torch.float64))) + 1)


def break_even_rank(layer: nn.Module) -> float:
    """The rank at which the two factors hold as many weights as the layer; only ranks below it save anything."""
    if isinstance(layer, nn.Linear):
        return layer.out_features * layer.in_features / (layer.out_features + layer.in_features)
    k = layer.kernel_size[0] * layer.kernel_size[1]
    return layer.out_channels * layer.in_channels * k / (layer.in_channels * k + layer.out_channels)


def factorize_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    u, s, vh = _svd(layer.weight)
    root = s[:rank].sqrt()
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(root[:, None] * vh[:rank])
        second.weight.copy_(u[:, :rank] * root[None, :])
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second).to(layer.weight.device, layer.weight.dtype)


def factorize_conv(layer: nn.Conv2d, rank: int) -> nn.Sequential:
    out_ch, in_ch, kh, kw = layer.weight.shape
    u, s, vh = _svd(layer.weight.reshape(out_ch, in_ch * kh * kw))
    root = s[:rank].sqrt()
    first = nn.Conv2d(in_ch, rank, (kh, kw), stride=layer.stride, padding=layer.padding, dilation=layer.dilation,
                      bias=False, padding_mode=layer.padding_mode)
    second = nn.Conv2d(rank, out_ch, 1, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_((root[:, None] * vh[:rank]).reshape(rank, in_ch, kh, kw))
        second.weight.copy_((u[:, :rank] * root[None, :]).reshape(out_ch, rank, 1, 1))
        if layer.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second).to(layer.weight.device, layer.weight.dtype)


def lowrank(module: nn.Module, config: LowRankConfig, ctx: PassContext) -> PassResult:
    root = moduletree.user_root(module)
    types: tuple[type, ...] = {"linear": (nn.Linear,), "conv": (nn.Conv2d,), "all": (nn.Linear, nn.Conv2d)}[
        config.targets]
    if config.layers:  # named layers are taken whatever `targets` says
        types = (nn.Linear, nn.Conv2d)
    targets, skipped = moduletree.select(root, types, layers=config.layers, keep_classifier=config.keep_classifier,
                                         option="lowrank layers")
    changes: list[dict[str, Any]] = []
    for name, layer in targets:
        reason = moduletree.replacement_refused(root, name) or _unsupported(layer, config)
        if reason:
            skipped.append({"layer": name, "type": type(layer).__name__, "reason": reason})
            continue
        weight = layer.weight.reshape(layer.weight.shape[0], -1)
        s = torch.linalg.svdvals(weight.detach().double())
        rank = choose_rank(s, config)
        limit = break_even_rank(layer)
        spectrum = _spectrum(s)
        if rank >= limit:
            skipped.append({"layer": name, "type": type(layer).__name__, "rank": rank, "full_rank": len(s),
                            "break_even_rank": round(limit, 2), "spectrum": spectrum,
                            "reason": f"rank {rank} >= break-even {limit:.1f}: the factors would not have fewer "
                                      f"parameters"})
            continue
        new = factorize_linear(layer, rank) if isinstance(layer, nn.Linear) else factorize_conv(layer, rank)
        moduletree.replace(root, name, new)
        energy = float((s[:rank] ** 2).sum() / (s**2).sum())
        changes.append({"layer": name, "type": type(layer).__name__, "rank": rank, "full_rank": len(s),
                        "break_even_rank": round(limit, 2), "energy_kept": round(energy, 6),
                        "params": [_count(layer), _count(new)], "spectrum": spectrum})
    notes = [f"{len(changes)} layer(s) factorized, {len(skipped)} left as they were"]
    return PassResult(module, changes=changes, skipped=skipped, notes=notes)


def _unsupported(layer: nn.Module, config: LowRankConfig) -> Optional[str]:
    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        return f"grouped/depthwise conv (groups={layer.groups}) has no dense kernel to factorize"
    if layer.weight.numel() < config.min_params:
        return f"{layer.weight.numel()} weights < min_params={config.min_params}"
    return None


def _svd(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # float64 (the factors are cast back on copy) so a full-rank factorization reproduces the layer closely
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    return u, s, vh


def _spectrum(s: torch.Tensor) -> list[float]:
    top = float(s[0]) if len(s) and float(s[0]) > 0 else 1.0
    return [round(float(v) / top, 6) for v in s[:SPECTRUM_VALUES]]


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
