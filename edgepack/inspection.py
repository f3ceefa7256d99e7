"""`edgepack inspect`: what a model is made of, and what each runtime of a target would do with it.

The architecture family (CNN, transformer, RNN, MLP, other) is decided from the modules the model holds and where its
multiply-accumulates are, and the evidence is kept with it: `edgepack plan` builds its decisions on it. Per layer: the
parameters, the MACs (torch-pruning's counter), their shares, and for Linear and Conv weights how many singular
values hold 90 % and 99 % of the weight's energy (a low-rank factorization keeps about that many). Per runtime: the
runtime really exports the model at int8 into a scratch directory, and what its artifact record says is reported:
operators left outside the delegate with the partitioner's own reason, operators left in float, the share of weights
stored in 8 bits, the notes; or the one-line reason the export failed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from edgepack.records import FallbackOp, OpCount, Record

if TYPE_CHECKING:
    from torch import nn

    from edgepack.config import Target
    from edgepack.data.dataset import ArrayDataset
    from edgepack.loading import LoadedModel

FAMILIES = ("CNN", "transformer", "RNN", "MLP", "other")
CNN_MAC_SHARE = 0.5  # convolutions carry at least this share of the MACs
MLP_MAC_SHARE = 0.5
HYBRID_CONV_SHARE = 0.3  # a transformer whose convolutions carry this much is a hybrid (MobileViT, LeViT)
ENERGY_LEVELS = (0.90, 0.99)
MAX_SVD_SIDE = 4096  # larger weights are not decomposed (seconds each on a CPU); their ranks stay unreported
INSPECT_CALIBRATION_SAMPLES = 32


@dataclass(frozen=True)
class LayerInfo(Record):
    """One leaf module that holds parameters."""

    name: str  # the model's own module name, e.g. "features.3"
    kind: str  # its class, e.g. "Conv2d"
    params: int
    macs: int
    param_share: float
    mac_share: float
    rank: Optional[int] = None  # full rank of the weight as a matrix (Linear, Conv: out x in*k*k)
    rank_90: Optional[int] = None  # singular values holding 90 % of the weight's energy
    rank_99: Optional[int] = None


@dataclass(frozen=True)
class RuntimeFindings(Record):
    """What one runtime did with the model at int8, read from its real artifact."""

    runtime: str
    status: str  # built | failed | not installed
    reason: str = ""  # why it failed or cannot run
    scheme: str = ""
    size_bytes: Optional[int] = None
    int8_weight_share: Optional[float] = None
    delegation: str = ""  # e.g. "XNNPACK: 40 of 42 nodes in 3 subgraph(s)"
    not_delegated: tuple[FallbackOp, ...] = ()  # with the partitioner's own reason
    float_ops: tuple[OpCount, ...] = ()  # operators still running on float kernels
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Inspection(Record):
    model: str
    params: int
    macs: int
    family: str  # one of FAMILIES
    evidence: tuple[str, ...]
    layers: tuple[LayerInfo, ...]
    target: str = ""
    calibration: str = ""  # the data the runtimes' int8 exports were calibrated on
    runtimes: tuple[RuntimeFindings, ...] = ()


def inspect_model(model: "LoadedModel") -> Inspection:
    """The family and the per-layer table; no runtime is involved."""
    import torch_pruning as tp

    bundle = model.bundle
    module = bundle.module
    inputs = bundle.example_inputs
    # per layer; the totals were counted the same way when the model was loaded (provenance)
    _, _, layer_macs, _ = tp.utils.count_ops_and_params(module, inputs[0] if len(inputs) == 1 else inputs,
                                                        layer_wise=True)
    total_params, total_macs = bundle.provenance.params, bundle.provenance.macs
    named = bundle.own_names()
    leaves = [(name, m) for name, m in named
              if name and not list(m.children()) and any(True for _ in m.parameters(recurse=False))]
    counted_macs = sum(int(layer_macs.get(m) or 0) for _, m in leaves) or 1
    layers = []
    for name, m in leaves:
        params = sum(p.numel() for p in m.parameters(recurse=False))
        macs = int(layer_macs.get(m) or 0)
        layers.append(LayerInfo(name, type(m).__name__, params, macs, params / max(total_params, 1),
                                macs / counted_macs, *_weight_ranks(m)))
    family, evidence = _family(named, layers)
    return Inspection(model=bundle.provenance.source, params=int(total_params), macs=int(total_macs), family=family,
                      evidence=tuple(evidence), layers=tuple(layers))


def inspect_runtimes(inspection: Inspection, model: "LoadedModel", target: "Target", runtimes: Sequence[str],
                     calibration: "ArrayDataset", progress: Callable[[str], Any]) -> Inspection:
    """Each runtime's int8 export of the model, as its artifact record describes it; failures are findings too."""
    from edgepack import exporting
    from edgepack.errors import EdgepackError, one_line
    from edgepack.plan import export_steps, planned_runtime
    from edgepack.runtimes import get_runtime

    findings = []
    with tempfile.TemporaryDirectory(prefix="edgepack-inspect-") as tmp:
        for name in runtimes:
            runtime = get_runtime(name)
            missing = runtime.missing()
            if missing:
                findings.append(RuntimeFindings(name, "not installed", reason=missing[0]))
                continue
            planned = planned_runtime(target, name)
            progress(f"{name}: exporting int8 to see what it does with the model")
            artifacts: dict[str, Any] = {}
            try:
                steps = export_steps(planned, "int8", qat=False)
                needed = {s.artifact for s in steps if s.precision == "int8"} | {s.parent for s in steps}
                for step in (s for s in steps if s.artifact in needed):  # an int8 from the eager model skips fp32
                    parent = None if step.parent == "eager" else artifacts[step.parent]
                    artifacts[step.artifact] = exporting.export(runtime, model.bundle, step, Path(tmp), calibration,
                                                                planned.options, parent, None)
            except Exception as exc:  # noqa: BLE001 - a runtime that cannot take the model is a finding, not a crash
                reason = one_line(exc) if isinstance(exc, EdgepackError) else f"{type(exc).__name__}: {one_line(exc)}"
                findings.append(RuntimeFindings(name, "failed", reason=reason))
                continue
            findings.append(_findings(name, artifacts[f"{name}-int8"]))
    return replace(inspection, target=target.name, calibration=calibration.name, runtimes=tuple(findings))


def _findings(name: str, artifact: Any) -> RuntimeFindings:
    delegation = artifact.delegation
    described = ""
    if delegation is not None:
        described = (f"{delegation.backend}: {delegation.delegated_nodes} of {delegation.total_nodes} nodes in "
                     f"{delegation.subgraphs} subgraph(s)")
    return RuntimeFindings(name, "built", scheme=artifact.scheme, size_bytes=artifact.size_bytes,
                           int8_weight_share=artifact.int8_weight_share, delegation=described,
                           not_delegated=delegation.fallback_ops if delegation is not None else (),
                           float_ops=artifact.float_ops, notes=artifact.notes)


def _weight_ranks(module: "nn.Module") -> tuple[Optional[int], Optional[int], Optional[int]]:
    """(full rank, rank for 90 % energy, rank for 99 % energy) of a Linear or Conv weight; Nones otherwise."""
    import torch
    from torch import nn

    if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        return None, None, None
    weight = module.weight.detach().float()
    matrix = weight.reshape(weight.shape[0], -1)
    if max(matrix.shape) > MAX_SVD_SIDE or min(matrix.shape) < 2:
        return None, None, None
    energy = torch.linalg.svdvals(matrix).square()
    cumulative = (energy.cumsum(0) / energy.sum().clamp_min(1e-30)).tolist()
    ranks = [next((i + 1 for i, c in enumerate(cumulative) if c >= level), len(cumulative))
             for level in ENERGY_LEVELS]
    return len(cumulative), ranks[0], ranks[1]


def _outermost(names: list[str]) -> list[str]:
    """Module names not nested in another of the list (an attention block counts once, not with its parts)."""
    return [n for n in names if not any(n != o and n.startswith(o + ".") for o in names)]


def _family(named: Sequence[tuple[str, "nn.Module"]], layers: Sequence[LayerInfo]) -> tuple[str, list[str]]:
    from torch import nn

    recurrent = [n for n, m in named if isinstance(m, nn.RNNBase)]
    attention = _outermost([n for n, m in named
                            if n and (isinstance(m, nn.MultiheadAttention) or type(m).__name__.endswith("Attention"))])
    conv = sum(layer.mac_share for layer in layers if "Conv" in layer.kind)
    linear = sum(layer.mac_share for layer in layers if layer.kind == "Linear")
    shares = f"convolutions carry {conv:.0%} of the MACs, linear layers {linear:.0%}"
    if recurrent:
        return "RNN", [f"{len(recurrent)} recurrent module(s): {_listed(recurrent)}", shares]
    if attention:
        evidence = [f"{len(attention)} attention module(s): {_listed(attention)}", shares]
        if conv >= HYBRID_CONV_SHARE:
            evidence.append("a hybrid of convolutions and attention: treated as a transformer, since attention is "
                            "what int8 and pruning must take care of")
        return "transformer", evidence
    if conv >= CNN_MAC_SHARE:
        return "CNN", [shares]
    if linear >= MLP_MAC_SHARE and conv == 0:
        return "MLP", [shares]
    return "other", [shares + "; no recurrent or attention module"]


def _listed(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(f"`{n}`" for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
