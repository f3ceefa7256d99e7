"""The NdLinear pass: Linear(m*n -> p*q) layers become NdLinear layers acting on the (m, n) grid, initialised by the
nearest Kronecker product of their weight (the layer and the math are in ndlinear_layer.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from edgepack.compress import base
from edgepack.compress.base import PassConfig, PassContext, PassResult, register
from edgepack.records import LayerChange, SkippedLayer, TrainingEpoch

if TYPE_CHECKING:
    from torch import nn

Shapes = tuple[tuple[int, int], tuple[int, int]]


@dataclass(frozen=True)
class NdLinearConfig(PassConfig):
    """Replace Linear(m·n -> p·q) layers by a factorized NdLinear acting on the (m, n) grid, one weight per axis.

    Initialised from the original weight by its nearest Kronecker product, then fine-tuned for `epochs` when given
    (needs training data): the Kronecker fit alone usually loses accuracy.
    """

    kind: ClassVar[str] = "ndlinear"
    metavar: ClassVar[str] = "k=v,..."
    help: ClassVar[str] = ("Replace Linear layers on multi-axis states with a factorized NdLinear layer "
                           "(Kronecker init).")

    min_params: int = 1024
    layers: tuple[str, ...] = ()
    keep_classifier: bool = True
    epochs: int = 0
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        k = "ndlinear"
        base.integer(k, "min_params", self.min_params, 0, "e.g. min_params=1024")
        base.names(k, "layers", self.layers)
        base.flag(k, "keep_classifier", self.keep_classifier)
        base.training(k, self.epochs, self.lr, self.seed)

    def needs_training_data(self) -> str | None:
        return f"ndlinear epochs={self.epochs}" if self.epochs else None


@register(NdLinearConfig)
def ndlinear(module: nn.Module, config: NdLinearConfig, ctx: PassContext) -> PassResult:
    from torch import nn

    from edgepack.compress import moduletree
    from edgepack.compress.ndlinear_layer import from_linear
    from edgepack.training import require_training_data, train_epochs

    if config.epochs:
        require_training_data(ctx.train, f"ndlinear epochs={config.epochs}")
    root = moduletree.user_root(module)
    targets, skipped = moduletree.select(root, (nn.Linear,), layers=config.layers,
                                         keep_classifier=config.keep_classifier, option="ndlinear layers")
    changes: list[LayerChange] = []
    for name, layer in targets:
        if not isinstance(layer, nn.Linear):  # select() took only Linear layers; this tells the type checker
            continue
        refused = moduletree.replacement_refused(root, name)
        reason, shapes = (refused, None) if refused else _plan(layer, config)
        if shapes is None:
            skipped.append(SkippedLayer(layer=name, type="Linear", reason=reason))
            continue
        new, fit = from_linear(layer, *shapes)
        moduletree.replace(root, name, new)
        changes.append(LayerChange(layer=name, type="Linear", in_shape=shapes[0], out_shape=shapes[1],
                                   params=(_count(layer), _count(new)), kronecker_fit=round(fit, 6)))
    notes = [f"{len(changes)} Linear layer(s) replaced by NdLinear, initialised by the nearest Kronecker product"]
    training: tuple[TrainingEpoch, ...] = ()
    if changes and config.epochs:
        training = train_epochs(module, ctx.train, epochs=config.epochs, lr=config.lr, seed=config.seed,
                                what="ndlinear fine-tune", progress=ctx.progress)
    elif changes:
        notes.append("not fine-tuned (epochs=0): the Kronecker fit alone usually costs accuracy")
    return PassResult(module, changes=tuple(changes), skipped=tuple(skipped), training=training, notes=tuple(notes))


def _plan(layer: nn.Linear, config: NdLinearConfig) -> tuple[str, Shapes | None]:
    from edgepack.compress.ndlinear_layer import factor_pair

    if layer.weight.numel() < config.min_params:
        return f"{layer.weight.numel()} weights < min_params={config.min_params}", None
    in_shape, out_shape = factor_pair(layer.in_features), factor_pair(layer.out_features)
    if in_shape is None or out_shape is None:
        bad = layer.in_features if in_shape is None else layer.out_features
        return f"{bad} features have no factorization m*n with both factors >= 2", None
    return "", (in_shape, out_shape)


def _count(m: nn.Module) -> int:
    return int(sum(p.numel() for p in m.parameters()))
