"""Accuracy under simple, seeded input corruptions: Gaussian noise, blur (Gaussian and box) and brightness shifts.

Corruptions act on ArrayDataset inputs, i.e. in the model's *preprocessed* space (after scaling/normalisation), so
any model and any artifact can be checked with the same arrays. To stay meaningful for any preprocessing, noise and
brightness are scaled by the data's own value range (max - min over the clean inputs) and results are clipped back
into that range, as a camera clips at black and white. Blur widths are in pixels on the spatial axes (H, W from the
dataset's `layout`, NCHW by default). Compression often costs more accuracy on corrupted inputs than on clean ones,
which a clean-accuracy budget alone does not show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from edgepack.data.dataset import ArrayDataset, feed_array
from edgepack.errors import UsageError
from edgepack.records import CorruptionResult

if TYPE_CHECKING:
    from torch import nn

# severity 1..3 -> strength: levels 1, 3 and 5 of the ImageNet-C scales (noise, brightness; fractions of the value
# range) and of CIFAR-10-C's Gaussian blur (pixels); box blur is the window size in pixels
CORRUPTIONS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.08, 0.18, 0.38),
    "gaussian_blur": (0.4, 0.7, 1.0),
    "box_blur": (2, 3, 4),
    "brightness": (0.1, 0.3, 0.5),
}
IMAGE_ONLY = ("gaussian_blur", "box_blur")

# one (N, ...) input array, or one per model input -> (N, classes) logits
PredictFn = Callable[[np.ndarray | Sequence[np.ndarray]], np.ndarray]


def corrupt(inputs: np.ndarray, corruption: str, severity: int, *, seed: int = 0, layout: str = "NCHW",
            value_range: tuple[float, float] | None = None) -> np.ndarray:
    """A corrupted copy of `inputs` (float32). `value_range` defaults to the inputs' own min and max."""
    if corruption not in CORRUPTIONS:
        raise UsageError(f"unknown corruption {corruption!r}; known: {', '.join(CORRUPTIONS)}")
    levels = CORRUPTIONS[corruption]
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= len(levels):
        raise UsageError(f"{corruption} severity must be 1..{len(levels)}, got {severity!r}")
    x = np.asarray(inputs, dtype=np.float32)
    lo, hi = value_range if value_range is not None else (float(x.min()), float(x.max()))
    span = hi - lo
    strength = levels[severity - 1]
    if corruption == "gaussian_noise":
        rng = np.random.default_rng([seed, severity])
        out = x + rng.normal(0.0, strength * span, size=x.shape).astype(np.float32)
    elif corruption == "brightness":
        out = x + np.float32(strength * span)
    else:
        from scipy import ndimage

        axes = _spatial_axes(x, layout, corruption)
        if corruption == "gaussian_blur":
            sigma = [strength if a in axes else 0.0 for a in range(x.ndim)]
            out = ndimage.gaussian_filter(x, sigma=sigma, mode="nearest")
        else:
            size = [int(strength) if a in axes else 1 for a in range(x.ndim)]
            out = ndimage.uniform_filter(x, size=size, mode="nearest")
    return np.clip(out, lo, hi).astype(np.float32)


def robustness(predict: PredictFn, data: ArrayDataset, *, corruptions: Sequence[str] | None = None,
               severities: Sequence[int] = (1, 2, 3), seed: int = 0) -> tuple[CorruptionResult, ...]:
    """Top-1 on clean and corrupted copies of `data`.

    The first row is the clean one (corruption "clean", severity 0); each row's `drop` is clean top-1 minus its
    top-1 (fractions). Without `corruptions`, blurs are skipped for inputs that are not 4-D images.
    """
    if data.labels is None:
        raise UsageError(f"{data.name} has no labels; robustness is measured as accuracy on labelled data")
    if len(data.arrays) != 1 or data.arrays[0].dtype.kind != "f":
        kinds = ", ".join(str(a.dtype) for a in data.arrays)
        raise UsageError(f"--robustness corrupts one real-valued input (images, features); this model takes "
                         f"{len(data.arrays)} input(s) of {kinds}: drop --robustness")
    layout = str(data.preprocessing.get("layout", "NCHW"))
    if corruptions is None:
        corruptions = [c for c in CORRUPTIONS if c not in IMAGE_ONLY or np.ndim(data.inputs) == 4]
    x = np.asarray(data.inputs, dtype=np.float32)
    value_range = (float(x.min()), float(x.max()))
    clean = _top1(predict, x, data.labels)
    rows = [CorruptionResult(corruption="clean", severity=0, top1=clean, drop=0.0)]
    for corruption in corruptions:
        for severity in severities:
            corrupted = corrupt(x, corruption, severity, seed=seed, layout=layout, value_range=value_range)
            top1 = _top1(predict, corrupted, data.labels)
            rows.append(CorruptionResult(corruption=corruption, severity=int(severity), top1=top1, drop=clean - top1))
    return tuple(rows)


def eager_predict(module: nn.Module, batch_size: int = 256) -> PredictFn:
    """A PredictFn for an eager torch module."""
    from edgepack.training import predict

    return lambda inputs: predict(module, inputs, batch_size)


def session_predict(session: Callable[[Sequence[np.ndarray]], list[np.ndarray]],
                    batch_size: int | None = None) -> PredictFn:
    """A PredictFn for a runtime session (list of float32 arrays -> list of outputs; the first output is taken).

    edgepack's sessions take any number of samples (fixed-shape artifacts run in chunks), so by default all inputs
    go in one call; `batch_size` splits them for sessions that do not.
    """
    def run(inputs: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        arrays = (inputs,) if isinstance(inputs, np.ndarray) else tuple(inputs)
        n = len(arrays[0])
        step = batch_size or max(1, n)
        return np.concatenate([np.asarray(session([feed_array(a[i:i + step]) for a in arrays])[0])
                               for i in range(0, n, step)])

    return run


def _top1(predict: PredictFn, inputs: np.ndarray, labels: np.ndarray) -> float:
    logits = np.asarray(predict(inputs))
    if logits.ndim != 2 or len(logits) != len(labels):
        raise UsageError(f"predict returned shape {logits.shape}; expected ({len(labels)}, classes)")
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def _spatial_axes(x: np.ndarray, layout: str, corruption: str) -> tuple[int, int]:
    if x.ndim != 4:
        raise UsageError(f"{corruption} needs 4-D image inputs, got shape {x.shape}")
    if layout.upper() not in ("NCHW", "NHWC"):
        raise UsageError(f"{corruption} needs layout NCHW or NHWC, got {layout!r}")
    return (2, 3) if layout.upper() == "NCHW" else (1, 2)
