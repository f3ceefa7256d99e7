"""`edgepack plan`: the decision framework (architecture x target x budgets -> techniques) made concrete.

The plain build of the model (no compression, the target's precision and runtimes) is run first and judged against
the budgets: a model that already meets them gets no compression at all, and the shrink a failing budget asks for is
read from measured figures, never guessed. The family (from `inspection`) then picks the techniques:

- CNN: structured channel pruning (params and MACs go with the square of the kept channel fraction) and static INT8;
- transformer: dropping whole blocks, low-rank factorization of Linear layers whose weights have the room, and
  INT8 on MatMul/Gemm (ONNX Runtime's dynamic scheme, NNCF's transformer model type) rather than static activations;
- RNN: quantization only (pruning hidden units changes the recurrence itself);
- MLP: low-rank factorization where the ranks allow it, else pruning;
- unstructured sparsity never: no runtime edgepack targets stores or runs sparse weights faster.

Fine-tuning follows a structural pass when training data exists (a zoo model's split, or --train). Every decision
carries its reason; the passes are written as a recipe that `edgepack build --recipe` runs unchanged. The recipe is a
proposal: only a build (or `build --auto`) shows whether it meets the budgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Sequence

from edgepack.records import Record

if TYPE_CHECKING:
    from edgepack.compress import PassConfig
    from edgepack.inspection import Inspection
    from edgepack.loading import LoadedModel
    from edgepack.records import Report, Verdict

SHRINK_METRICS = ("size", "latency", "memory")
HEADROOM = 0.9  # aim 10 % under a limit: measurements move from run to run
PRUNE_RANGE = (0.1, 0.75)  # past 0.75 a CNN keeps a sixteenth of its MACs and rarely recovers by fine-tuning
LOWRANK_ENERGY = 0.9
LOWRANK_ROOM = 0.5  # factorize when 90 % of the energy fits in at most half the rank
FINETUNE_EPOCHS = 3


@dataclass(frozen=True)
class Decision(Record):
    topic: str  # baseline | precision | compression | fine-tuning | sparsity | accuracy
    choice: str
    reason: str


@dataclass(frozen=True)
class Strategy:
    family: str
    decisions: tuple[Decision, ...]
    passes: tuple["PassConfig", ...]

    def recipe(self) -> list[dict[str, Any]]:
        """The passes as recipe steps, `[{kind: {field: value}}]`, which `parse_recipe` reads back."""
        from edgepack.compress import recipe_steps

        return recipe_steps(self.passes)


def propose(model: "LoadedModel", inspection: "Inspection", baseline: "Report", runtimes: Sequence[str],
            has_training_data: bool) -> Strategy:
    """Decisions and passes for a model whose plain build is `baseline` (its verdicts judged on the budgets)."""
    from edgepack.gates import format_value

    decisions = [_precision(inspection.family, runtimes)]
    failing = [v for v in baseline.verdicts if not v.passed]
    shipped = ", ".join(baseline.shipping)
    if not failing:
        met = "; ".join(f"{v.budget} {format_value(v.observed, v.unit)} within {format_value(v.limit, v.unit)}"
                        for v in baseline.verdicts)
        decisions.insert(0, Decision("baseline", "no compression",
                                     f"the plain build ({shipped}) already meets every budget: {met}"))
        decisions.append(_no_sparsity(runtimes))
        return Strategy(inspection.family, tuple(decisions), ())
    missed = "; ".join(f"{v.budget} {format_value(v.observed, v.unit)} over {format_value(v.limit, v.unit)}"
                       if v.observed is not None else f"{v.budget}: {v.reason}" for v in failing)
    decisions.insert(0, Decision("baseline", "compress", f"the plain build ({shipped}) misses: {missed}"))
    passes: list[PassConfig] = []
    shrink = kept_fraction(failing, baseline)
    if shrink is not None:
        structural, why = _structural(model, inspection, shrink)
        passes += structural
        decisions += why
        if structural:
            decisions.append(_finetune(has_training_data, passes))
    if any(v.metric == "accuracy_drop" for v in failing):
        decisions.append(Decision("accuracy", "rescue, not compression",
                                  "the plain build already misses the accuracy budget, which compression would "
                                  "widen; the build's mixed-precision rescue keeps the most sensitive layers in "
                                  "float until it holds (on by default, see --sensitivity)"))
    decisions.append(_no_sparsity(runtimes))
    return Strategy(inspection.family, tuple(decisions), tuple(passes))


def kept_fraction(failing: Sequence["Verdict"], baseline: "Report") -> Optional[float]:
    """The fraction of its weights (or MACs) the shipped model may keep, from the worst failing budget, aiming
    10 % under each limit. A file's size is its weights plus a fixed part (graph, metadata), which does not shrink:
    only the weights' part is scaled."""
    artifacts = {a.name: a for a in baseline.artifacts}
    fractions = []
    for v in failing:
        if v.metric not in SHRINK_METRICS or not v.observed or v.observed <= 0:
            continue
        target, observed = v.limit * HEADROOM, v.observed
        artifact = artifacts.get(v.artifact)
        if v.metric == "size" and artifact is not None:
            share = artifact.int8_weight_share if artifact.int8_weight_share is not None else 0.0
            weights = baseline.model.params * (share + 4 * (1 - share))  # bytes: 1 per int8 value, 4 per float
            fixed = max(0.0, observed - weights)
            target, observed = target - fixed, observed - fixed
        fractions.append(max(target, 0.0) / observed if observed > 0 else 0.0)
    return min(fractions) if fractions else None


def _structural(model: "LoadedModel", inspection: "Inspection", keep: float) -> tuple[list[Any], list[Decision]]:
    from edgepack.compress import DropLayersConfig, LowRankConfig, PruneConfig

    family = inspection.family
    if keep <= 0:
        return [], [Decision("compression", "none (out of reach)",
                             "the file's fixed part (graph and metadata, measured as the plain artifact's size "
                             "minus its weights) alone exceeds the size budget: no compression of the weights meets "
                             "it")]
    need = f"the budgets leave {keep:.0%} of the weights or MACs (aiming 10 % under each limit)"
    if family == "RNN":
        return [], [Decision("compression", "none (quantization only)",
                             f"{need}, but pruning a recurrent layer's hidden units changes the recurrence itself, "
                             f"and int8 is already applied: the budget is likely out of reach for this architecture")]
    passes: list[Any] = []
    decisions = []
    if family == "transformer":
        depth, share, container = block_stack(model)
        if depth >= 2 and share > 0:
            drop = min(depth - 1, math.ceil(depth * (1 - keep) / share))
            passes.append(DropLayersConfig(middle=drop, container=container))
            decisions.append(Decision("compression", f"drop {drop} of {depth} blocks of {container}",
                                      f"{need}; the blocks hold {share:.0%} of the parameters, and residual blocks "
                                      f"go whole without reshaping anything"))
            keep = max(keep, 1 - share * drop / depth)
        roomy = lowrank_room(inspection)
        if roomy:
            passes.append(LowRankConfig(energy=LOWRANK_ENERGY))
            decisions.append(Decision("compression", f"low-rank factorization at {LOWRANK_ENERGY:.0%} energy",
                                      f"{roomy} Linear layer(s) hold 90 % of their weight energy in at most half "
                                      f"their rank"))
        if not passes:
            decisions.append(Decision("compression", "none found", "no block list to drop from and no Linear "
                                      "weight with low-rank room"))
        return passes, decisions
    if family == "MLP" and lowrank_room(inspection):
        passes.append(LowRankConfig(energy=LOWRANK_ENERGY))
        return passes, [Decision("compression", f"low-rank factorization at {LOWRANK_ENERGY:.0%} energy",
                                 f"{need}; an MLP's cost is its Linear weights, and "
                                 f"{lowrank_room(inspection)} of them hold 90 % of their energy in at most half "
                                 f"their rank")]
    ratio = min(max(1 - math.sqrt(keep), PRUNE_RANGE[0]), PRUNE_RANGE[1])
    ratio = round(ratio * 20) / 20  # steps of 0.05
    passes.append(PruneConfig(ratio=ratio))
    capped = " (capped: more would rarely recover)" if 1 - math.sqrt(keep) > PRUNE_RANGE[1] else ""
    return passes, [Decision("compression", f"channel pruning, ratio {ratio}",
                             f"{need}; params and MACs of a {family} go with the square of the kept channel "
                             f"fraction, so {1 - ratio:.2f}^2 = {(1 - ratio) ** 2:.2f}{capped}")]


def block_stack(model: "LoadedModel") -> tuple[int, float, str]:
    """(depth, share of the parameters in the blocks, container name) of the model's block list; depth 0 if none."""
    from edgepack.compress.layerdrop import block_lists
    from edgepack.compress.moduletree import user_root

    root = user_root(model.bundle.module)
    found = block_lists(root)
    if len(found) != 1:
        return 0, 0.0, ""
    name, blocks = found[0]
    total = sum(p.numel() for p in root.parameters()) or 1
    return len(blocks), sum(p.numel() for p in blocks.parameters()) / total, name


def lowrank_room(inspection: "Inspection") -> int:
    return sum(1 for layer in inspection.layers
               if layer.kind == "Linear" and layer.rank and layer.rank_90 and layer.rank_90 <= LOWRANK_ROOM * layer.rank
               and layer.params >= 1024)


def _finetune(has_training_data: bool, passes: list[Any]) -> Decision:
    from edgepack.compress import FinetuneConfig

    if has_training_data:
        passes.append(FinetuneConfig(epochs=FINETUNE_EPOCHS))
        return Decision("fine-tuning", f"{FINETUNE_EPOCHS} epochs after the structural passes",
                        "removing channels, blocks or rank costs accuracy that a short fine-tune recovers; training "
                        "data is available")
    return Decision("fine-tuning", "none", "no training data (a zoo model's split or --train): the structural "
                    "passes run without recovery, so expect an accuracy drop; pass --train to plan with it")


def _precision(family: str, runtimes: Sequence[str]) -> Decision:
    if family == "transformer":
        return Decision("precision", "INT8 on the weights of MatMul/Gemm, attention kept in float where the runtime "
                        "allows", "static activation quantization loses agreement on attention: ONNX Runtime uses its "
                        "dynamic scheme (transformer_scheme), OpenVINO NNCF's transformer model type; ExecuTorch and "
                        f"LiteRT have static PT2E only (runtimes: {', '.join(runtimes)})")
    if family == "RNN":
        return Decision("precision", "INT8", "the one lever that shrinks a recurrent model without changing its "
                        "recurrence; where a quantizer rejects the recurrent layer, only Linear/Conv are quantized")
    return Decision("precision", "static INT8", f"a {family}'s convolutions and linear layers quantize well with "
                    f"calibrated activations (per-channel weights), the fastest int8 on every runtime of the target "
                    f"({', '.join(runtimes)})")


def _no_sparsity(runtimes: Sequence[str]) -> Decision:
    return Decision("sparsity", "not used", f"none of the runtimes ({', '.join(runtimes)}) stores or runs sparse "
                    f"weights faster: unstructured pruning would only zero weights")
