"""Fine-tuning as a pass (recovery after compression), and the helper other passes use between their steps."""

from __future__ import annotations

from typing import Optional

from torch import nn

from edgepack.compress.apply import PassContext, PassResult
from edgepack.compress.configs import FinetuneConfig
from edgepack.data.dataset import ArrayDataset
from edgepack.errors import UsageError


def require_training_data(ctx: PassContext, what: str) -> ArrayDataset:
    if ctx.train is None or ctx.train.labels is None or len(ctx.train) == 0:
        raise UsageError(f"{what} needs labelled training data (a zoo model's own dataset or --train DATA); "
                         f"none was given")
    return ctx.train


def train_epochs(module: nn.Module, ctx: PassContext, *, epochs: int, lr: float, seed: int, what: str,
                 batch_size: int = 64) -> list[dict[str, float]]:
    """Train in place; returns the mean training loss of each epoch, for the pass record."""
    from edgepack.training import train_classifier

    data = require_training_data(ctx, what)
    losses: list[dict[str, float]] = []

    def on_epoch(epoch: int, loss: float) -> None:
        losses.append({"epoch": epoch, "loss": round(loss, 5)})
        ctx.say(f"{what}: epoch {epoch}/{epochs} loss {loss:.4f}")

    train_classifier(module, data, epochs, lr=lr, seed=seed, batch_size=batch_size, on_epoch=on_epoch)
    return losses


def finetune(module: nn.Module, config: FinetuneConfig, ctx: PassContext) -> PassResult:
    losses = train_epochs(module, ctx, epochs=config.epochs, lr=config.lr, seed=config.seed,
                          batch_size=config.batch_size, what="finetune")
    data: Optional[ArrayDataset] = ctx.train
    notes = [f"trained {config.epochs} epoch(s) on {data.name} ({len(data)} samples)"] if data is not None else []
    return PassResult(module, changes=losses, notes=notes)
