"""Judging models and artifacts on data: parity against eager PyTorch, accuracy on labelled data, and accuracy under
corruptions (robustness), for the eager model and through every artifact's own runtime."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edgepack.data.dataset import ArrayDataset
from edgepack.errors import ToolError, UsageError
from edgepack.records import Accuracy, Parity, Robustness

if TYPE_CHECKING:
    from edgepack.models.bundle import ModelBundle
    from edgepack.robustness import PredictFn
    from edgepack.runtimes.base import Session

SESSION_BATCH = 64


def eager_outputs(bundle: "ModelBundle", inputs: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """The eager model's outputs; `inputs` is one array or one per model input."""
    from edgepack.training import predict

    n = len(inputs) if isinstance(inputs, np.ndarray) else len(inputs[0])
    batch = int(bundle.example_inputs[0].shape[0])
    if bundle.provenance.kind != "pt2" and batch == 1:
        batch = 256  # plain modules take any batch; exported programs keep the batch they were exported with
    elif n % batch:
        raise UsageError(f"{n} samples do not divide into the model's batch of {batch}")
    return predict(bundle.module, inputs, batch_size=batch)


def session_outputs(session: "Session", inputs: np.ndarray | Sequence[np.ndarray],
                    batch: int = SESSION_BATCH) -> np.ndarray:
    from edgepack.robustness import session_predict

    return session_predict(session, batch_size=batch)(inputs)


def parity(name: str, session: "Session", bundle: "ModelBundle", data: ArrayDataset) -> Parity:
    ref = eager_outputs(bundle, data.arrays)
    got = session_outputs(session, data.arrays)
    if ref.shape != got.shape:
        raise ToolError(f"{name}: output shape {got.shape} differs from eager {ref.shape}")
    return compare_outputs(name, ref, got, bundle.provenance.task, data.name)


def compare_outputs(name: str, ref: np.ndarray, got: np.ndarray, task: str, inputs_from: str) -> Parity:
    """Every figure of how close `got` is to `ref`; class agreement only where the task has classes."""
    ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
    diff = np.abs(ref64 - got64)
    flat_ref, flat_got = ref64.reshape(len(ref), -1), got64.reshape(len(got), -1)
    relative = float(np.linalg.norm(ref64 - got64) / (np.linalg.norm(ref64) or 1.0))
    agreement = None
    if task == "classification":
        agreement = float(np.mean(flat_ref.argmax(1) == flat_got.argmax(1)))
    elif task == "segmentation":
        agreement = float(np.mean(ref.argmax(1) == got.argmax(1)))
    return Parity(name, len(ref), float(diff.max()), float(diff.mean()), agreement, inputs_from,
                  relative_error=relative, cosine=mean_cosine(flat_ref, flat_got), task=task)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of the cosine similarity of two (N, D) arrays; two all-zero rows count as identical."""
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = norms == 0
    return float(np.mean(np.where(both_zero, 1.0, np.sum(a * b, axis=1) / np.where(both_zero, 1.0, norms))))


def _accuracy(name: str, outputs: np.ndarray, data: ArrayDataset, task: str) -> Accuracy:
    """The task's metric of `outputs` against the data's labels: top-1 (and top-5) of class scores, mean IoU of
    per-pixel classes, mean cosine to target vectors, mean abs error of regressed values."""
    from edgepack.training import topk_accuracy

    labels = data.labels
    if labels is None:
        raise UsageError(f"{data.name} has no labels; accuracy needs them")
    n = len(outputs)
    if task == "classification":
        logits = outputs.reshape(n, -1)
        top1 = topk_accuracy(logits, labels, 1)
        top5 = topk_accuracy(logits, labels, 5) if logits.shape[1] > 5 else None
        return Accuracy(name, data.name, n, top1, top5, value=top1)
    if task == "segmentation":
        return Accuracy(name, data.name, n, None, metric="mean IoU", value=mean_iou(outputs.argmax(1), labels,
                                                                                    outputs.shape[1]))
    flat, target = outputs.reshape(n, -1).astype(np.float64), labels.reshape(n, -1).astype(np.float64)
    if task == "embedding":
        return Accuracy(name, data.name, n, None, metric="cosine", value=mean_cosine(flat, target))
    return Accuracy(name, data.name, n, None, metric="mean abs error", value=float(np.mean(np.abs(flat - target))))


def mean_iou(predicted: np.ndarray, labels: np.ndarray, classes: int, ignore: int = 255) -> float:
    """Mean over classes of |pred ∩ label| / |pred ∪ label|, for classes present in either; `ignore` pixels skipped."""
    keep = labels != ignore
    ious = []
    for c in range(classes):
        pred_c, label_c = (predicted == c) & keep, (labels == c) & keep
        union = int(np.count_nonzero(pred_c | label_c))
        if union:
            ious.append(np.count_nonzero(pred_c & label_c) / union)
    return float(np.mean(ious)) if ious else 0.0


def eager_accuracy(bundle: "ModelBundle", data: ArrayDataset, name: str = "eager") -> Accuracy:
    return _accuracy(name, eager_outputs(bundle, data.arrays), data, bundle.provenance.task)


def artifact_accuracy(name: str, session: "Session", data: ArrayDataset, task: str) -> Accuracy:
    return _accuracy(name, session_outputs(session, data.arrays), data, task)


def _robustness(name: str, predict: "PredictFn", data: ArrayDataset) -> Robustness:
    from edgepack.robustness import robustness as corrupted_accuracy

    return Robustness(name, data.name, tuple(corrupted_accuracy(predict, data)))


def eager_robustness(bundle: "ModelBundle", data: ArrayDataset) -> Robustness:
    if bundle.provenance.task != "classification":
        raise UsageError(f"--robustness measures top-1 under corruptions; this model's task is "
                         f"{bundle.provenance.task}: drop --robustness")
    # through eager_outputs, which keeps the batch an exported (.pt2) program was captured with
    return _robustness("eager", lambda inputs: eager_outputs(bundle, inputs), data)


def artifact_robustness(name: str, session: "Session", data: ArrayDataset) -> Robustness:
    return _robustness(name, lambda inputs: session_outputs(session, inputs), data)
