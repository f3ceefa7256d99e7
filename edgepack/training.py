"""Plain supervised training and eager evaluation, shared by the zoo script, the compression passes, distillation
and QAT. It knows nothing of passes or model loading: callers hand it a module and an ArrayDataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from edgepack.data.dataset import ArrayDataset, feed_array
from edgepack.errors import UsageError
from edgepack.records import TrainingEpoch

# loss(model_outputs, labels, inputs) -> scalar; distillation passes its own
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def train_classifier(model: nn.Module, data: ArrayDataset, epochs: int, *, lr: float = 1e-3,
                     batch_size: int = 64, seed: int = 0, weight_decay: float = 1e-4,
                     loss_fn: LossFn | None = None,
                     on_epoch: Callable[[int, float], None] | None = None) -> nn.Module:
    """Train in place with AdamW and a cosine schedule; deterministic for a given seed.

    Returns the model in eval mode."""
    if data.labels is None:
        raise ValueError(f"{data.name} has no labels; training needs labelled data")
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    x_all = torch.from_numpy(np.ascontiguousarray(data.inputs, dtype=np.float32))
    y_all = torch.from_numpy(data.labels.astype(np.int64))
    ce = nn.CrossEntropyLoss()
    loss_fn = loss_fn or (lambda out, y, _x: ce(out, y))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = max(1, epochs * ((len(data) + batch_size - 1) // batch_size))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for epoch in range(epochs):
        order = torch.from_numpy(generator.permutation(len(data)))
        total = 0.0
        for start in range(0, len(data), batch_size):
            idx = order[start:start + batch_size]
            x, y = x_all[idx], y_all[idx]
            optimizer.zero_grad()
            loss = loss_fn(model(x), y, x)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        if on_epoch:
            on_epoch(epoch + 1, total / len(data))
    return model.eval()


def require_training_data(data: ArrayDataset | None, what: str, *, labels: bool = True) -> ArrayDataset:
    """`data`, when it can train `what`; otherwise a UsageError naming what needed it."""
    if data is None or len(data) == 0:
        kind = "labelled training data" if labels else "training data"
        raise UsageError(f"{what} needs {kind} (a zoo model's own dataset or --train DATA); none was given")
    if labels and data.labels is None:
        raise UsageError(f"{what} needs labelled training data; {data.name} has no labels")
    given = data.labels
    if labels and given is not None and (given.ndim != 1 or not np.issubdtype(given.dtype, np.integer)):
        raise UsageError(f"{what} trains a classifier (cross-entropy on one class per sample); {data.name} has "
                         f"labels of shape {given.shape[1:]} and dtype {given.dtype}")
    return data


def train_epochs(module: nn.Module, data: ArrayDataset | None, *, epochs: int, lr: float, seed: int, what: str,
                 batch_size: int = 64, step: int | None = None,
                 progress: Callable[[str], None] | None = None) -> tuple[TrainingEpoch, ...]:
    """Train in place for `epochs`, telling `progress` after each one; returns each epoch's mean training loss.

    `what` names the training in messages (e.g. a pass name, or "prune step 2 fine-tune"); `step` is recorded with each
    epoch when the training follows one step of an iterative pass.
    """
    data = require_training_data(data, what)
    epochs_done: list[TrainingEpoch] = []

    def on_epoch(epoch: int, loss: float) -> None:
        epochs_done.append(TrainingEpoch(epoch=epoch, loss=round(loss, 5), step=step))
        if progress is not None:
            progress(f"{what} epoch {epoch}/{epochs}: loss {loss:.4f}")

    train_classifier(module, data, epochs, lr=lr, seed=seed, batch_size=batch_size, on_epoch=on_epoch)
    return tuple(epochs_done)


def set_eval(model: nn.Module) -> nn.Module:
    """model.eval(), except for unlifted torch.export programs, whose mode was fixed at export and which refuse it."""
    try:
        model.eval()
    except NotImplementedError:
        pass
    return model


@torch.no_grad()
def predict(model: nn.Module, inputs: np.ndarray | Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
    """The model's outputs on every sample, in batches; `inputs` is one array or one per model input."""
    set_eval(model)
    arrays = (inputs,) if isinstance(inputs, np.ndarray) else tuple(inputs)
    outs = [model(*(torch.from_numpy(feed_array(a[i:i + batch_size])) for a in arrays)).numpy()
            for i in range(0, len(arrays[0]), batch_size)]
    return np.concatenate(outs)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1)[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def evaluate(model: nn.Module, data: ArrayDataset) -> float:
    """Top-1 accuracy of an eager model, as a fraction."""
    if data.labels is None:
        raise UsageError(f"{data.name} has no labels; accuracy needs labelled data")
    return topk_accuracy(predict(model, data.inputs), data.labels, 1)
