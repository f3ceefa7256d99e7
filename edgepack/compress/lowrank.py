"""Low-rank factorization by truncated SVD.

Linear(in, out)          -> Sequential(Linear(in, r, bias=False), Linear(r, out, bias))
Conv2d(in, out, k x k)   -> Sequential(Conv2d(in, r, k x k, same stride/padding, bias=False), Conv2d(r, out, 1x1, bias))

The conv form comes from the SVD of the kernel reshaped to (out, in*k*k). The singular values are split evenly
(sqrt(S) into each factor) so neither factor has an extreme scale, which later INT8 quantization would suffer from.
A layer is only replaced when the factors hold fewer parameters: r < out*in/(out+in) for Linear,
r < out*in*k*k/(in*k*k + out) for conv.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Mapping, cast

from edgepack.compress import base
from edgepack.compress.base import PassConfig, PassContext, PassResult, register
from edgepack.errors import UsageError
from edgepack.records import LayerChange, SkippedLayer

if TYPE_CHECKING:
    import torch
    from torch import nn

LOWRANK_TARGETS = ("linear", "conv", "all")
SPECTRUM_VALUES = 64  # singular values kept in the record, normalised by the largest


@dataclass(frozen=True)
class LowRankConfig(PassConfig):
    """Truncated-SVD factorization of Linear (and, with `targets`, Conv2d) layers into two smaller layers.

    Give exactly one of: `ratio`, the fraction of each layer's full rank min(out, in) that is cut (ratio=0.8 keeps
    20 % of the singular values); `energy`, the fraction of the squared singular values kept; `rank`, the rank itself.
    A layer is skipped (and the record says why) when that rank would not reduce its parameters or it has fewer than
    `min_params` weights.
    """

    kind: ClassVar[str] = "lowrank"
    metavar: ClassVar[str] = "k=v,..."
    help: ClassVar[str] = "Low-rank SVD of Linear/Conv2d: energy=0.9, ratio=0.5 or rank=16; layers=NAME,..."
    choices: ClassVar[Mapping[str, tuple[str, ...]]] = {"targets": LOWRANK_TARGETS}
    kind_aliases: ClassVar[tuple[str, ...]] = ("low-rank", "low_rank")

    ratio: float | None = None
    energy: float | None = None
    rank: int | None = None
    min_params: int = 1024
    targets: str = "linear"  # linear | conv | all: layer types considered when `layers` is empty
    layers: tuple[str, ...] = ()
    keep_classifier: bool = True  # naming the classifier in `layers` factorizes it anyway

    def __post_init__(self) -> None:
        k = "lowrank"
        given = [name for name in ("ratio", "energy", "rank") if getattr(self, name) is not None]
        if len(given) != 1:
            which = "none" if not given else " and ".join(given)
            raise UsageError(f"lowrank needs exactly one of ratio= (fraction of rank cut), energy= (fraction of "
                             f"squared singular values kept) or rank=; got {which}")
        if self.ratio is not None:
            base.fraction(k, "ratio", self.ratio, "it is the fraction of the rank cut, e.g. ratio=0.5")
        if self.energy is not None:
            base.fraction(k, "energy", self.energy, "e.g. energy=0.9 keeps 90 % of the spectrum's energy",
                          closed_top=True)
        if self.rank is not None:
            base.integer(k, "rank", self.rank, 1, "e.g. rank=16")
        base.integer(k, "min_params", self.min_params, 0, "e.g. min_params=1024")
        base.choice(k, "targets", self.targets, LOWRANK_TARGETS)
        base.names(k, "layers", self.layers)
        base.flag(k, "keep_classifier", self.keep_classifier)


def choose_rank(singular_values: torch.Tensor, config: LowRankConfig) -> int:
    """The rank a config asks for, given a layer's singular values (descending)."""
    import torch

    full = len(singular_values)
    if config.rank is not None:
        return config.rank
    if config.ratio is not None:  # fraction of the full rank that is cut
        return max(1, int(full * (1.0 - config.ratio) + 0.5))
    wanted = cast(float, config.energy)  # __post_init__ demands exactly one of rank, ratio, energy
    energy = singular_values.double() ** 2
    cumulative = torch.cumsum(energy, 0) / energy.sum()
    # smallest r whose leading singular values hold `energy` of the total (tolerance for float round-off at 1.0)
    return min(full, int(torch.searchsorted(cumulative, torch.tensor(wanted - 1e-12, dtype=torch.float64))) + 1)


def break_even_rank(layer: nn.Linear | nn.Conv2d) -> float:
    """The rank at which the two factors hold as many weights as the layer; only ranks below it save anything."""
    from torch import nn

    if isinstance(layer, nn.Linear):
        return layer.out_features * layer.in_features / (layer.out_features + layer.in_features)
    k = layer.kernel_size[0] * layer.kernel_size[1]
    return layer.out_channels * layer.in_channels * k / (layer.in_channels * k + layer.out_channels)


def factorize_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    import torch
    from torch import nn

    u, s, vh = _svd(layer.weight)
    root = s[:rank].sqrt()
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_(root[:, None] * vh[:rank])
        second.weight.copy_(u[:, :rank] * root[None, :])
        if layer.bias is not None and second.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second).to(layer.weight.device, layer.weight.dtype)


def factorize_conv(layer: nn.Conv2d, rank: int) -> nn.Sequential:
    import torch
    from torch import nn

    out_ch, in_ch, kh, kw = layer.weight.shape
    u, s, vh = _svd(layer.weight.reshape(out_ch, in_ch * kh * kw))
    root = s[:rank].sqrt()
    padding = layer.padding if isinstance(layer.padding, str) else _pair(layer.padding)
    first = nn.Conv2d(in_ch, rank, (kh, kw), stride=_pair(layer.stride), padding=padding,
                      dilation=_pair(layer.dilation), bias=False, padding_mode=layer.padding_mode)
    second = nn.Conv2d(rank, out_ch, 1, bias=layer.bias is not None)
    with torch.no_grad():
        first.weight.copy_((root[:, None] * vh[:rank]).reshape(rank, in_ch, kh, kw))
        second.weight.copy_((u[:, :rank] * root[None, :]).reshape(out_ch, rank, 1, 1))
        if layer.bias is not None and second.bias is not None:
            second.bias.copy_(layer.bias)
    return nn.Sequential(first, second).to(layer.weight.device, layer.weight.dtype)


@register(LowRankConfig)
def lowrank(module: nn.Module, config: LowRankConfig, ctx: PassContext) -> PassResult:
    import torch
    from torch import nn

    from edgepack.compress import moduletree

    root = moduletree.user_root(module)
    types: tuple[type, ...] = {"linear": (nn.Linear,), "conv": (nn.Conv2d,), "all": (nn.Linear, nn.Conv2d)}[
        config.targets]
    if config.layers:  # named layers are taken whatever `targets` says
        types = (nn.Linear, nn.Conv2d)
    targets, skipped = moduletree.select(root, types, layers=config.layers, keep_classifier=config.keep_classifier,
                                         option="lowrank layers")
    changes: list[LayerChange] = []
    for name, layer in targets:
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):  # select() took only these; this tells the type checker
            continue
        reason = moduletree.replacement_refused(root, name) or _unsupported(layer, config)
        if reason:
            skipped.append(SkippedLayer(layer=name, type=type(layer).__name__, reason=reason))
            continue
        weight = layer.weight.reshape(layer.weight.shape[0], -1)
        s = torch.linalg.svdvals(weight.detach().double())
        rank = choose_rank(s, config)
        limit = break_even_rank(layer)
        if rank >= limit:
            skipped.append(SkippedLayer(layer=name, type=type(layer).__name__, rank=rank, full_rank=len(s),
                                        reason=f"rank {rank} >= break-even {limit:.1f}: the factors would not have "
                                               f"fewer parameters"))
            continue
        new = factorize_linear(layer, rank) if isinstance(layer, nn.Linear) else factorize_conv(layer, rank)
        moduletree.replace(root, name, new)
        energy = float((s[:rank] ** 2).sum() / (s**2).sum())
        changes.append(LayerChange(layer=name, type=type(layer).__name__, rank=rank, full_rank=len(s),
                                   break_even_rank=round(limit, 2), energy_kept=round(energy, 6),
                                   params=(_count(layer), _count(new)), spectrum=_spectrum(s)))
    notes = (f"{len(changes)} layer(s) factorized, {len(skipped)} left as they were",)
    return PassResult(module, changes=tuple(changes), skipped=tuple(skipped), notes=notes)


def _unsupported(layer: nn.Linear | nn.Conv2d, config: LowRankConfig) -> str | None:
    from torch import nn

    if isinstance(layer, nn.Conv2d) and layer.groups != 1:
        return f"grouped/depthwise conv (groups={layer.groups}) has no dense kernel to factorize"
    if layer.weight.numel() < config.min_params:
        return f"{layer.weight.numel()} weights < min_params={config.min_params}"
    return None


def _pair(value: tuple[int, ...]) -> tuple[int, int]:
    return value[0], value[1]


def _svd(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import torch

    # float64 (the factors are cast back on copy) so a full-rank factorization reproduces the layer closely
    u, s, vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    return u, s, vh


def _spectrum(s: torch.Tensor) -> tuple[float, ...]:
    top = float(s[0]) if len(s) and float(s[0]) > 0 else 1.0
    return tuple(round(float(v) / top, 6) for v in s[:SPECTRUM_VALUES])


def _count(m: nn.Module) -> int:
    return int(sum(p.numel() for p in m.parameters()))
