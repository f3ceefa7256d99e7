"""Fine-tuning as a pass: supervised training on the training data, to recover what the passes before it cost."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from edgepack.compress import base
from edgepack.compress.base import PassConfig, PassContext, PassResult, register

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class FinetuneConfig(PassConfig):
    """Supervised fine-tuning on the training data (recovery after the passes before it)."""

    kind: ClassVar[str] = "finetune"
    primary: ClassVar[str | None] = "epochs"
    metavar: ClassVar[str] = "EPOCHS"
    help: ClassVar[str] = "Fine-tune after the passes (on --train data)."
    kind_aliases: ClassVar[tuple[str, ...]] = ("fine-tune", "fine_tune")

    epochs: int
    lr: float = 1e-3
    seed: int = 0
    batch_size: int = 64

    def __post_init__(self) -> None:
        k = "finetune"
        base.integer(k, "epochs", self.epochs, 1, "e.g. --finetune 3")
        base.training(k, self.epochs, self.lr, self.seed)
        base.integer(k, "batch_size", self.batch_size, 1, "e.g. batch_size=64")

    def needs_training_data(self) -> str | None:
        return "finetune"


@register(FinetuneConfig)
def finetune(module: nn.Module, config: FinetuneConfig, ctx: PassContext) -> PassResult:
    from edgepack.training import require_training_data, train_epochs

    data = require_training_data(ctx.train, "finetune")
    training = train_epochs(module, data, epochs=config.epochs, lr=config.lr, seed=config.seed,
                            batch_size=config.batch_size, what="finetune", progress=ctx.progress)
    return PassResult(module, training=training,
                      notes=(f"trained {config.epochs} epoch(s) on {data.name} ({len(data)} samples)",))
